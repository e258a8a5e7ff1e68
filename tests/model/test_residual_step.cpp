// The Mamba mixers' fused residual step (Mixer::step_in_residual overridden through the fused decode
// ops) against the interface's composition (rmsnorm, step, add) on the CPU, step after step, with
// random parameters: Mamba-2 with two groups of the gated norm, Jamba-style Mamba-1 with its dt/B/C
// norms, batch 3.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/random.h"
#include "core/workspace.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

// Every parameter of `mixer` drawn from [-0.4, 0.4] (A_log's -exp keeps A negative).
void randomise(Mixer& mixer, Rng& rng) {
  ParamList params;
  mixer.add_params("m", params);
  for (ParamRef& p : params) *p.tensor = test::random_tensor(p.shape, rng, -0.4, 0.4);
}

void expect_fused_equals_composed(const Mixer& mixer, int64_t d_model, Rng& rng) {
  ASSERT_TRUE(mixer.fuses_residual_step());
  const int64_t batch = 3;
  const Tensor norm = test::random_tensor({d_model}, rng, 0.5, 1.5);
  auto fused_state = mixer.new_state(batch), composed_state = mixer.new_state(batch);
  Workspace ws;
  Tensor fused = test::random_tensor({batch, d_model}, rng, -1, 1), composed = fused.clone();
  for (int step = 0; step < 4; ++step) {
    mixer.step_in_residual(fused, norm, 1e-5f, fused_state.get(), ws);
    mixer.Mixer::step_in_residual(composed, norm, 1e-5f, composed_state.get(), ws);
    EXPECT_LT(test::max_rel_err(test::to_vec(fused), test::to_vec(composed)), 1e-6) << "step " << step;
  }
}

TEST(ResidualStep, Mamba2FusedEqualsComposed) {
  Mamba2Settings s;
  s.d_model = 24;
  s.d_inner = 48;
  s.head_dim = 12;
  s.n_heads = 4;
  s.n_groups = 2;
  s.d_state = 8;
  const auto mixer = s.build();
  Rng rng(3);
  randomise(*mixer, rng);
  expect_fused_equals_composed(*mixer, s.d_model, rng);
}

TEST(ResidualStep, Mamba1FusedEqualsComposed) {
  Mamba1Settings s;
  s.d_model = 24;
  s.d_inner = 40;
  s.d_state = 6;
  s.dt_rank = 5;
  s.dt_bc_norms = true;
  const auto mixer = s.build();
  Rng rng(4);
  randomise(*mixer, rng);
  expect_fused_equals_composed(*mixer, s.d_model, rng);
}

}  // namespace
}  // namespace ssm
