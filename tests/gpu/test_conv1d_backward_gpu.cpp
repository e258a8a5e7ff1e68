// ops::conv1d_causal_backward on the GPU against the CPU backward: F32 and BF16 activations, odd
// channel counts, batch > 1, T shorter than K and at the edges of the kernel's stages and tiles,
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

struct ConvCase {
  DType dt;
  int64_t batch, T, C, K;
  bool with_state, with_bias, silu, with_dw, with_dbias;
  int64_t offset, dy_offset;  // column offsets of x, dx, state0 and of dy in wider buffers
};

// Runs one case on the GPU (twice) and on the CPU: dx, dw and dbias within the tolerance, dx's
// padding untouched, the second run the same bits.
void expect_matches_the_cpu(const ConvCase& c, Rng& rng) {
  const Shape shape{c.batch, c.T, c.C}, state_shape{c.batch, c.K - 1, c.C};
  SCOPED_TRACE(::testing::Message() << "conv1d_causal_backward " << dtype_name(c.dt) << " x " << shape_str(shape)
                                    << ", K " << c.K << ", state0 " << c.with_state << ", bias " << c.with_bias
                                    << ", silu " << c.silu << ", dw " << c.with_dw << ", dbias " << c.with_dbias
                                    << ", column offsets " << c.offset << " (x, dx, state0), " << c.dy_offset
                                    << " (dy)");
  const Tensor x = rounded(random_cpu(shape, rng), c.dt), dy = rounded(random_cpu(shape, rng), c.dt);
  const Tensor w = random_cpu({c.C, c.K}, rng), bias = c.with_bias ? random_cpu({c.C}, rng) : Tensor();
  const Tensor state0 = c.with_state ? random_cpu(state_shape, rng) : Tensor();
  const Tensor dw0 = random_cpu({c.C, c.K}, rng), dbias0 = random_cpu({c.C}, rng);
  Tensor want_dx = Tensor::empty(shape), want_dw = dw0.clone(), want_dbias = dbias0.clone();
  ops::conv1d_causal_backward(x, w, bias, c.silu, state0, dy, want_dx, c.with_dw ? &want_dw : nullptr,
                              c.with_dbias ? &want_dbias : nullptr);

  const StridedGpu gx = gpu_rows(shape, c.dt, c.offset, &x), gdy = gpu_rows(shape, c.dt, c.dy_offset, &dy);
  const StridedGpu gstate = c.with_state ? gpu_rows(state_shape, DType::F32, c.offset, &state0) : StridedGpu{};
  const Tensor gw = to_gpu(w), gbias = c.with_bias ? to_gpu(bias) : Tensor();
  auto run = [&](StridedGpu& gdx, Tensor& gdw, Tensor& gdbias) {
    gdx = gpu_rows(shape, c.dt, c.offset);
    gdw = to_gpu(dw0);
    gdbias = to_gpu(dbias0);
    ops::conv1d_causal_backward(gx.view, gw, gbias, c.silu, gstate.view, gdy.view, gdx.view,
                                c.with_dw ? &gdw : nullptr, c.with_dbias ? &gdbias : nullptr);
  };
  StridedGpu gdx, gdx2;
  Tensor gdw, gdbias, gdw2, gdbias2;
  run(gdx, gdw, gdbias);
  EXPECT_LT(relative_error(to_cpu(gdx.view), want_dx), backward_tolerance(c.dt)) << "dx";
  EXPECT_TRUE(gdx.padding_untouched()) << "dx";
  EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(c.dt)) << "dw";
  EXPECT_LT(relative_error(to_cpu(gdbias), want_dbias), backward_tolerance(c.dt)) << "dbias";
  run(gdx2, gdw2, gdbias2);
  EXPECT_TRUE(same_bits(gdx.view, gdx2.view) && same_bits(gdw, gdw2) && same_bits(gdbias, gdbias2))
      << "a second run gives other bits";
}

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
            expect_matches_the_cpu({dt, 1 + variant % 3, T, C, K, with_state, variant % 2 == 0, variant / 2 % 2 == 0,
                                    variant % 5 != 0, variant % 7 != 0, kOffsets[variant % 3],
                                    kOffsets[variant / 3 % 3]},
                                   rng);
          }
        }
      }
    }
  }
}

// The kernel's tiling at its edges: a block walks a 64-token tile (plus K-1 halo tokens) in stages of
// 8 tokens over a slab of 128 packs of channels. Lengths of one token, one stage and either side of
// it, one tile and either side of it, and many tiles; one channel, 7 (no packs), and Mamba-2 1.3B's
// 4352 (17 full slabs; 16-byte copies when the column offset allows, element copies when not);
// batch 3; the packed window (K 4, 2) and the one-channel one (K 16).
TEST(Conv1dBackwardGpu, TileEdgesMatchTheCpu) {
  require_gpu();
  Rng rng(54);
  for (DType dt : kDtypes) {
    int variant = 0;
    for (int64_t C : {1, 7, 4352}) {
      for (int64_t K : {4, 2, 16}) {
        for (int64_t T : {1, 7, 8, 9, 63, 64, 65, 300}) {
          ++variant;
          expect_matches_the_cpu({dt, 3, T, C, K, variant % 2 == 0, variant % 3 != 0, variant / 2 % 2 == 0, true, true,
                                  kOffsets[variant % 3], kOffsets[variant / 3 % 3]},
                                 rng);
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
