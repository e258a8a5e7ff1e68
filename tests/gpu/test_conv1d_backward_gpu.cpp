// ops::conv1d_causal_backward on the GPU against the CPU backward: F32 and BF16 activations, odd
// channel counts, batch > 1, T shorter than K and not a multiple of the kernel's 32-token tile,
// K = 1, 4 (the packed window), 5 and 16 (the one-channel window), with and without state0, bias
// and SiLU, strided x, dy, dx and state0 (x and dx column slices of wider buffers, as in the mixers),
// optional dw and dbias, and two runs giving the same bits. dx starts as NaN; dw and dbias start
// from random values (they accumulate).
#include <string>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

constexpr DType kDtypes[] = {DType::F32, DType::BF16};
constexpr int64_t kOffsets[] = {0, 3, 8};  // contiguous, misaligned, 16-byte aligned

TEST(Conv1dBackwardGpu, MatchesTheCpu) {
  require_gpu();
  Rng rng(51);
  for (DType dt : kDtypes) {
    int variant = 0;
    for (int64_t C : {1, 7, 33, 1000, 1537}) {
      for (int64_t K : {4, 1, 5, 16}) {
        for (int64_t T : {1, 2, 3, 33, 100}) {
          for (bool with_state : {false, true}) {
            // Rotate bias, SiLU, the wanted gradients and the column offsets over the cases.
            ++variant;
            const bool with_bias = variant % 2 == 0, silu = variant / 2 % 2 == 0;
            const bool with_dw = variant % 5 != 0, with_dbias = variant % 7 != 0;
            const int64_t offset = kOffsets[variant % 3], dy_offset = kOffsets[variant / 3 % 3];
            const int64_t batch = 1 + variant % 3;
            const Shape shape{batch, T, C}, state_shape{batch, K - 1, C};
            SCOPED_TRACE(::testing::Message()
                         << "conv1d_causal_backward " << dtype_name(dt) << " x " << shape_str(shape) << ", K " << K
                         << ", state0 " << with_state << ", bias " << with_bias << ", silu " << silu << ", dw "
                         << with_dw << ", dbias " << with_dbias << ", column offsets " << offset << " (x, dx, state0), "
                         << dy_offset << " (dy)");
            const Tensor x = rounded(random_cpu(shape, rng), dt), dy = rounded(random_cpu(shape, rng), dt);
            const Tensor w = random_cpu({C, K}, rng), bias = with_bias ? random_cpu({C}, rng) : Tensor();
            const Tensor state0 = with_state ? random_cpu(state_shape, rng) : Tensor();
            const Tensor dw0 = random_cpu({C, K}, rng), dbias0 = random_cpu({C}, rng);
            Tensor want_dx = Tensor::empty(shape), want_dw = dw0.clone(), want_dbias = dbias0.clone();
            ops::conv1d_causal_backward(x, w, bias, silu, state0, dy, want_dx, with_dw ? &want_dw : nullptr,
                                        with_dbias ? &want_dbias : nullptr);

            const StridedGpu gx = gpu_rows(shape, dt, offset, &x), gdy = gpu_rows(shape, dt, dy_offset, &dy);
            const StridedGpu gstate = with_state ? gpu_rows(state_shape, DType::F32, offset, &state0) : StridedGpu{};
            const Tensor gw = to_gpu(w), gbias = with_bias ? to_gpu(bias) : Tensor();
            auto run = [&](StridedGpu& gdx, Tensor& gdw, Tensor& gdbias) {
              gdx = gpu_rows(shape, dt, offset);
              gdw = to_gpu(dw0);
              gdbias = to_gpu(dbias0);
              ops::conv1d_causal_backward(gx.view, gw, gbias, silu, gstate.view, gdy.view, gdx.view,
                                          with_dw ? &gdw : nullptr, with_dbias ? &gdbias : nullptr);
            };
            StridedGpu gdx, gdx2;
            Tensor gdw, gdbias, gdw2, gdbias2;
            run(gdx, gdw, gdbias);
            EXPECT_LT(relative_error(to_cpu(gdx.view), want_dx), backward_tolerance(dt)) << "dx";
            EXPECT_TRUE(gdx.padding_untouched()) << "dx";
            EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(dt)) << "dw";
            EXPECT_LT(relative_error(to_cpu(gdbias), want_dbias), backward_tolerance(dt)) << "dbias";
            run(gdx2, gdw2, gdbias2);
            EXPECT_TRUE(same_bits(gdx.view, gdx2.view) && same_bits(gdw, gdw2) && same_bits(gdbias, gdbias2))
                << "a second run gives other bits";
          }
        }
      }
    }
  }
}

// A Mamba-2-like layer: batch 4, 1000 tokens, 1792 channels, K 4, SiLU, bias: many tiles summed into
// dw and dbias.
TEST(Conv1dBackwardGpu, LongSequenceMatchesTheCpu) {
  require_gpu();
  Rng rng(52);
  for (DType dt : kDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const int64_t batch = 4, T = 1000, C = 1792, K = 4;
    const Shape shape{batch, T, C};
    const Tensor x = rounded(random_cpu(shape, rng), dt), dy = rounded(random_cpu(shape, rng), dt);
    const Tensor w = random_cpu({C, K}, rng), bias = random_cpu({C}, rng);
    const Tensor dw0 = random_cpu({C, K}, rng), dbias0 = random_cpu({C}, rng);
    Tensor want_dx = Tensor::empty(shape), want_dw = dw0.clone(), want_dbias = dbias0.clone();
    ops::conv1d_causal_backward(x, w, bias, true, Tensor(), dy, want_dx, &want_dw, &want_dbias);

    Tensor gdx = nan_gpu(shape, dt), gdw = to_gpu(dw0), gdbias = to_gpu(dbias0);
    ops::conv1d_causal_backward(to_gpu(x, dt), to_gpu(w), to_gpu(bias), true, Tensor(), to_gpu(dy, dt), gdx, &gdw,
                                &gdbias);
    EXPECT_LT(relative_error(to_cpu(gdx), want_dx), backward_tolerance(dt)) << "dx";
    EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(dt)) << "dw";
    EXPECT_LT(relative_error(to_cpu(gdbias), want_dbias), backward_tolerance(dt)) << "dbias";
  }
}

TEST(Conv1dBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(53);
  const Tensor x = to_gpu(random_cpu({2, 5, 8}, rng)), dy = to_gpu(random_cpu({2, 5, 8}, rng));
  const Tensor w = to_gpu(random_cpu({8, 4}, rng));
  Tensor dx = nan_gpu({2, 5, 8}), dw = to_gpu(random_cpu({8, 4}, rng)), dbias = to_gpu(random_cpu({8}, rng));
  const char* op = "conv1d_causal_backward";
  test::expect_error([&] { ops::conv1d_causal_backward(x, random_cpu({8, 4}, rng), Tensor(), true, Tensor(), dy, dx,
                                                       &dw, &dbias); },
                     {op, "on the GPU"});
  test::expect_error([&] { ops::conv1d_causal_backward(x, to_gpu(random_cpu({8, 17}, rng)), Tensor(), true, Tensor(),
                                                       dy, dx, &dw, &dbias); },
                     {op, "K = 17 taps; the GPU kernel takes at most 16"});
  Tensor dw_wrong = to_gpu(random_cpu({8, 3}, rng));
  test::expect_error([&] { ops::conv1d_causal_backward(x, w, Tensor(), true, Tensor(), dy, dx, &dw_wrong, &dbias); },
                     {op, "dw must be contiguous F32 [8, 4]"});
  const Tensor state_wrong = to_gpu(random_cpu({2, 2, 8}, rng));
  test::expect_error([&] { ops::conv1d_causal_backward(x, w, Tensor(), true, state_wrong, dy, dx, &dw, &dbias); },
                     {op, "state0 must be F32 rows [2, 3, 8]"});
  const Tensor dy_bf16 = to_gpu(random_cpu({2, 5, 8}, rng), DType::BF16);
  test::expect_error([&] { ops::conv1d_causal_backward(x, w, Tensor(), true, Tensor(), dy_bf16, dx, &dw, &dbias); },
                     {op, "dy must be rows of x's shape and dtype"});
}

}  // namespace
}  // namespace ssm
