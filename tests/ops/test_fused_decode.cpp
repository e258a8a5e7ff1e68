// The fused decode ops on the CPU (ops::linear_conv_step, ops::gated_rmsnorm_linear) against the
// unfused ops they compose, called one by one: the same values bit for bit, strided inputs, every
// output element written, and bad input as one clear error.
#include <gtest/gtest.h>

#include <limits>

#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

TEST(OpsFusedDecode, LinearConvStepIsTheUnfusedOps) {
  Rng rng(5);
  const int64_t K = 13, N = 29, offset = 7, C = 15, taps = 4;
  for (const int64_t batch : {1, 3}) {
    for (const bool norm_and_scale : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "batch " << batch << ", norm and scale " << norm_and_scale);
      const Tensor x = test::random_tensor({batch, K}, rng, -2, 2, /*strided=*/true);
      const Tensor norm = norm_and_scale ? test::random_tensor({K}, rng, 0.5, 1.5) : Tensor();
      const Tensor scale = norm_and_scale ? test::random_tensor({N}, rng, 0.5, 2) : Tensor();
      const Tensor w = test::random_tensor({N, K}, rng), bias = test::random_tensor({N}, rng);
      const Tensor conv_w = test::random_tensor({C, taps}, rng), conv_b = test::random_tensor({C}, rng);
      const Tensor state0 = test::random_tensor({batch, taps - 1, C}, rng);

      Tensor input = x, want = Tensor::empty({batch, N}), want_state = state0.clone();
      if (norm_and_scale) {
        input = Tensor::empty({batch, K});
        ops::rmsnorm(x, norm, 1e-6f, input);
      }
      ops::linear(input, w, bias, want);
      if (norm_and_scale) ops::scale_columns(want, scale);
      const Tensor conv_in = want.slice(1, offset, C).clone();  // a copy: the conv writes over its columns
      Tensor conv_out = want.slice(1, offset, C);
      ops::conv1d_causal_step(conv_in, conv_w, conv_b, true, want_state, conv_out);

      const ops::LinearConvStep p{norm, 1e-6f, w, bias, scale, offset, conv_w, conv_b};
      Tensor got = test::nan_tensor({batch, N}, /*strided=*/true), state = state0.clone();
      ops::linear_conv_step(x, p, state, got);
      EXPECT_EQ(test::to_vec(got), test::to_vec(want));
      EXPECT_EQ(test::to_vec(state), test::to_vec(want_state));
    }
  }
}

TEST(OpsFusedDecode, GatedRmsnormLinearIsTheUnfusedOps) {
  Rng rng(6);
  const int64_t K = 24, N = 11;
  for (const int64_t groups : {1, 2}) {
    for (int gate = 0; gate < 3; ++gate) {  // no z, norm before gate, gate before norm
      for (const bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "groups " << groups << ", gate " << gate << ", accumulate " << accumulate);
        const int64_t batch = 3;
        const Tensor x = test::random_tensor({batch, K}, rng, -2, 2, true), z = test::random_tensor({batch, K}, rng);
        const Tensor norm = test::random_tensor({K}, rng, 0.5, 1.5), w = test::random_tensor({N, K}, rng);
        const Tensor bias = test::random_tensor({N}, rng), y0 = test::random_tensor({batch, N}, rng);
        const Tensor zz = gate ? z : Tensor();
        Tensor gated = Tensor::empty({batch, K}), want = y0.clone();
        ops::gated_rmsnorm(x, zz, norm, K / groups, gate == 1, 1e-5f, gated);
        ops::linear(gated, w, bias, want, accumulate);

        Tensor got = test::nan_tensor({batch, N}, true);
        if (accumulate) got.copy_from(y0);
        ops::gated_rmsnorm_linear(x, zz, norm, K / groups, gate == 1, 1e-5f, w, bias, got, accumulate);
        EXPECT_EQ(test::to_vec(got), test::to_vec(want));
      }
    }
  }
}

// The scan's inputs of one token: u, B, C, z as column slices of wider rows (x_proj's and in_proj's
// outputs), A negative, an optional D.
ops::SelectiveScanInputs scan_step_inputs(Rng& rng, int64_t batch, int64_t D, int64_t N) {
  ops::SelectiveScanInputs in;
  in.u = test::random_tensor({batch, D}, rng, -1, 1, true);
  in.delta_bias = test::random_tensor({D}, rng, -4, -1);
  in.A = test::random_tensor({D, N}, rng, -3, -0.1);
  in.B = test::random_tensor({batch, N}, rng, -1, 1, true);
  in.C = test::random_tensor({batch, N}, rng, -1, 1, true);
  in.D = test::random_tensor({D}, rng, 0.5, 1.5);
  in.z = test::random_tensor({batch, D}, rng, -2, 2, true);
  return in;
}

TEST(OpsFusedDecode, DtProjSelectiveScanStepIsTheUnfusedOps) {
  Rng rng(8);
  const int64_t batch = 3, D = 37, N = 16, R = 5;
  const ops::SelectiveScanInputs in = scan_step_inputs(rng, batch, D, N);
  const Tensor dt_low = test::random_tensor({batch, R}, rng, -1, 1, true), w = test::random_tensor({D, R}, rng);
  const Tensor state0 = test::random_tensor({batch, D, N}, rng);

  ops::SelectiveScanInputs with_delta = in;
  with_delta.delta = Tensor::empty({batch, D});
  ops::linear(dt_low, w, Tensor(), with_delta.delta);
  Tensor want = Tensor::empty({batch, D}), want_state = state0.clone();
  ops::selective_scan_step(with_delta, want_state, want);

  Tensor got = test::nan_tensor({batch, D}, true), state = state0.clone();
  ops::dt_proj_selective_scan_step(dt_low, w, in, state, got);
  EXPECT_EQ(test::to_vec(got), test::to_vec(want));
  EXPECT_EQ(test::to_vec(state), test::to_vec(want_state));
  test::expect_error([&] { ops::dt_proj_selective_scan_step(dt_low, w, with_delta, state, got); },
                     {"dt_proj_selective_scan_step", "delta"});
}

TEST(OpsFusedDecode, BadInputIsOneClearError) {
  Rng rng(7);
  const Tensor x = test::random_tensor({2, 16}, rng), w = test::random_tensor({40, 16}, rng);
  Tensor y = Tensor::empty({2, 40}), state = test::random_tensor({2, 3, 12}, rng);
  ops::LinearConvStep p;
  p.weight = w;
  p.conv_offset = 30;
  p.conv_weight = test::random_tensor({12, 4}, rng);
  test::expect_error([&] { ops::linear_conv_step(x, p, state, y); }, {"linear_conv_step", "12 channels"});
  test::expect_error(
      [&] { ops::gated_rmsnorm_linear(x, Tensor(), test::random_tensor({16}, rng), 5, false, 1e-5f, w, Tensor(), y); },
      {"gated_rmsnorm", "5"});
}

}  // namespace
}  // namespace ssm
