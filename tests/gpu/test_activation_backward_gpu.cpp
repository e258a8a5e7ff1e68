// ops::activation_backward and ops::gated_activation_backward on the GPU against the CPU backward:
// every Activation, F32 and BF16, odd widths, batch > 1, strided rows (gate and up the two halves of
// one projection output, dgate and dup the two halves of one gradient buffer), gate_scale,
// accumulate, a null output, and the aliasing the contract allows (dx = dy; dgate = gate and
// dup = up; an output = dy). Outputs not accumulated into start as NaN.
#include <cmath>
#include <string>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;
using ops::Activation;
using ops::activation_name;

constexpr DType kDtypes[] = {DType::F32, DType::BF16};
constexpr Activation kActivations[] = {Activation::Silu, Activation::Gelu, Activation::GeluTanh, Activation::Relu2,
                                       Activation::Sigmoid};
constexpr int64_t kWidths[] = {1, 7, 33, 1000, 1537};
constexpr int64_t kOffsets[] = {0, 3, 8};  // contiguous, misaligned, 16-byte aligned

TEST(ActivationBackwardGpu, MatchesTheCpu) {
  require_gpu();
  Rng rng(61);
  for (DType dt : kDtypes) {
    for (Activation act : kActivations) {
      for (int64_t width : kWidths) {
        for (int64_t offset : kOffsets) {
          for (bool accumulate : {false, true}) {
            const Shape shape{2, 3, width};
            SCOPED_TRACE(::testing::Message() << "activation_backward " << activation_name(act) << " of "
                                              << shape_str(shape) << " " << dtype_name(dt) << ", column offset "
                                              << offset << ", accumulate " << accumulate);
            const Tensor x = rounded(random_cpu(shape, rng, -6, 6), dt), dy = rounded(random_cpu(shape, rng), dt);
            const Tensor dx0 = rounded(random_cpu(shape, rng), dt);
            Tensor want = accumulate ? dx0.clone() : Tensor::empty(shape);
            ops::activation_backward(act, x, dy, want, accumulate);

            const StridedGpu gx = gpu_rows(shape, dt, offset, &x), gdy = gpu_rows(shape, dt, 11 - offset, &dy);
            StridedGpu gdx = gpu_rows(shape, dt, offset, accumulate ? &dx0 : nullptr);
            ops::activation_backward(act, gx.view, gdy.view, gdx.view, accumulate);
            EXPECT_LT(relative_error(to_cpu(gdx.view), want), backward_tolerance(dt));
            EXPECT_TRUE(gdx.padding_untouched());

            // dx aliasing dy (accumulating: dx = dy + dy act'(x), as the CPU op gives in place).
            Tensor want_in_place = dy.clone();
            ops::activation_backward(act, x, want_in_place, want_in_place, accumulate);
            StridedGpu in_place = gpu_rows(shape, dt, offset, &dy);
            ops::activation_backward(act, gx.view, in_place.view, in_place.view, accumulate);
            EXPECT_LT(relative_error(to_cpu(in_place.view), want_in_place), backward_tolerance(dt)) << "dx = dy";
          }
        }
      }
    }
  }
}

TEST(ActivationBackwardGpu, GatedMatchesTheCpu) {
  require_gpu();
  Rng rng(62);
  for (DType dt : kDtypes) {
    for (Activation act : kActivations) {
      int variant = 0;
      for (int64_t width : kWidths) {
        for (float gate_scale : {1.0f, 0.7f}) {
          for (bool accumulate : {false, true}) {
            // Which outputs: both, dgate only, dup only.
            const int outputs = variant++ % 3;
            const bool with_dgate = outputs != 2, with_dup = outputs != 1;
            const Shape shape{3, 2, width}, both{3, 2, 2 * width};
            SCOPED_TRACE(::testing::Message() << "gated_activation_backward " << activation_name(act) << " of "
                                              << shape_str(shape) << " " << dtype_name(dt) << ", gate_scale "
                                              << gate_scale << ", accumulate " << accumulate << ", dgate "
                                              << with_dgate << ", dup " << with_dup);
            // gate and up: the halves of one [.., 2W] projection output (up a misaligned slice unless W
            // is a multiple of the pack); dgate and dup the halves of one gradient buffer.
            const Tensor gate_up = rounded(random_cpu(both, rng, -6, 6), dt);
            const Tensor gate = gate_up.slice(-1, 0, width), up = gate_up.slice(-1, width, width);
            const Tensor dy = rounded(random_cpu(shape, rng), dt), d0 = rounded(random_cpu(both, rng), dt);
            Tensor want = accumulate ? d0.clone() : Tensor::empty(both);
            Tensor want_dgate = want.slice(-1, 0, width), want_dup = want.slice(-1, width, width);
            ops::gated_activation_backward(act, gate, up, gate_scale, dy, with_dgate ? &want_dgate : nullptr,
                                           with_dup ? &want_dup : nullptr, accumulate);

            const Tensor g_gate_up = to_gpu(gate_up, dt);
            Tensor g_d = accumulate ? to_gpu(d0, dt) : nan_gpu(both, dt);
            Tensor g_dgate = g_d.slice(-1, 0, width), g_dup = g_d.slice(-1, width, width);
            ops::gated_activation_backward(act, g_gate_up.slice(-1, 0, width), g_gate_up.slice(-1, width, width),
                                           gate_scale, to_gpu(dy, dt), with_dgate ? &g_dgate : nullptr,
                                           with_dup ? &g_dup : nullptr, accumulate);
            const Tensor got = to_cpu(g_d);
            if (with_dgate) {
              EXPECT_LT(relative_error(got.slice(-1, 0, width), want_dgate), backward_tolerance(dt)) << "dgate";
            }
            if (with_dup) {
              EXPECT_LT(relative_error(got.slice(-1, width, width), want_dup), backward_tolerance(dt)) << "dup";
            }
            // The output not asked for is untouched (NaN, or the old values when accumulating).
            if (!with_dgate || !with_dup) {
              const int64_t skipped = with_dgate ? width : 0;
              const Tensor untouched = got.slice(-1, skipped, width);
              if (accumulate) {
                EXPECT_EQ(relative_error(untouched, d0.slice(-1, skipped, width)), 0.0) << "the output not asked for";
              } else {
                const Tensor values = untouched.contiguous();
                for (int64_t i = 0; i < values.numel(); ++i)
                  ASSERT_TRUE(std::isnan(values.data<float>()[i])) << "the output not asked for";
              }
            }
          }
        }
      }
    }
  }
}

// The aliasing the contract allows: dgate = gate and dup = up (a backward in place over the saved
// projection output), and dgate = dy or dup = dy; with and without accumulate.
TEST(ActivationBackwardGpu, GatedInPlaceMatchesTheCpu) {
  require_gpu();
  Rng rng(63);
  for (DType dt : kDtypes) {
    for (Activation act : kActivations) {
      for (int64_t width : {7, 1000}) {
        for (bool accumulate : {false, true}) {
          for (int alias : {0, 1, 2}) {  // dgate = gate and dup = up; dgate = dy; dup = dy
            const Shape shape{2, 3, width};
            SCOPED_TRACE(::testing::Message() << "gated_activation_backward in place " << activation_name(act)
                                              << " of " << shape_str(shape) << " " << dtype_name(dt) << ", accumulate "
                                              << accumulate << ", aliasing " << alias);
            const Tensor gate = rounded(random_cpu(shape, rng, -6, 6), dt), up = rounded(random_cpu(shape, rng), dt);
            const Tensor dy = rounded(random_cpu(shape, rng), dt);
            const Tensor dgate0 = rounded(random_cpu(shape, rng), dt), dup0 = rounded(random_cpu(shape, rng), dt);
            // The CPU op with the same aliasing, on host copies.
            Tensor cg = gate.clone(), cu = up.clone(), cdy = dy.clone(), cdg = dgate0.clone(), cdu = dup0.clone();
            Tensor& want_dgate = alias == 0 ? cg : alias == 1 ? cdy : cdg;
            Tensor& want_dup = alias == 0 ? cu : alias == 2 ? cdy : cdu;
            ops::gated_activation_backward(act, cg, cu, 0.7f, cdy, &want_dgate, &want_dup, accumulate);

            Tensor gg = to_gpu(gate, dt), gu = to_gpu(up, dt), gdy = to_gpu(dy, dt);
            Tensor gdg = to_gpu(dgate0, dt), gdu = to_gpu(dup0, dt);
            Tensor& got_dgate = alias == 0 ? gg : alias == 1 ? gdy : gdg;
            Tensor& got_dup = alias == 0 ? gu : alias == 2 ? gdy : gdu;
            ops::gated_activation_backward(act, gg, gu, 0.7f, gdy, &got_dgate, &got_dup, accumulate);
            EXPECT_LT(relative_error(to_cpu(got_dgate), want_dgate), backward_tolerance(dt)) << "dgate";
            EXPECT_LT(relative_error(to_cpu(got_dup), want_dup), backward_tolerance(dt)) << "dup";
          }
        }
      }
    }
  }
}

TEST(ActivationBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(64);
  const Tensor x = to_gpu(random_cpu({4, 16}, rng)), dy = to_gpu(random_cpu({4, 16}, rng));
  Tensor dx = nan_gpu({4, 16});
  test::expect_error([&] { ops::activation_backward(Activation::Silu, random_cpu({4, 16}, rng), dy, dx); },
                     {"activation_backward", "on the GPU"});
  const Tensor dy_bf16 = to_gpu(random_cpu({4, 16}, rng), DType::BF16);
  test::expect_error([&] { ops::activation_backward(Activation::Gelu, x, dy_bf16, dx); },
                     {"activation_backward gelu", "rows of one shape and dtype"});
  Tensor dup_short = nan_gpu({4, 8});
  test::expect_error([&] { ops::gated_activation_backward(Activation::Silu, x, x, 1.0f, dy, nullptr, &dup_short); },
                     {"gated_activation_backward", "dup must be rows of gate's shape and dtype"});
  test::expect_error(
      [&] { ops::gated_activation_backward(Activation::Silu, x, random_cpu({4, 16}, rng), 1.0f, dy, &dx, nullptr); },
      {"gated_activation_backward", "on the GPU"});
}

}  // namespace
}  // namespace ssm
