// ops::rmsnorm_backward and ops::gated_rmsnorm_backward on the GPU against the CPU backward: F32 and
// BF16 activations, odd widths, segments longer than the kernel keeps in registers, more rows than
// the kernel has row blocks (several rows summed into one block's partial dw), strided inputs and
// outputs (dz a column slice of a wider gradient buffer, as in the Mamba-2 mixer), accumulate_dx,
// both gate orders and no gate, n_groups 1 and 2, optional dz and dw, and two runs giving the same
// bits. Activation gradients start as NaN; dw starts from random values (it accumulates).
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

constexpr DType kDtypes[] = {DType::F32, DType::BF16};
constexpr float kEps = 1e-5f;

struct NormCase {
  Shape shape;
  int64_t offset;  // column offset of the strided tensors; 0: contiguous
};

// Few rows at every width (odd ones take the one-element path; 3000 and 7000 keep two packs a thread
// in registers in F32 and BF16; 1537, 20000 and 20001 are longer than the registers hold), and more
// rows than row blocks (2^17 threads over the blocks: 2048 blocks at width 33, 512 at 1000 F32, 256 at
// 4097), not a multiple of them, at a narrow, a packed and a long width. No group of one channel: its
// dx = g r eps / (x² + eps) is all cancellation, F32 rounding noise.
std::vector<NormCase> norm_cases() {
  constexpr int64_t kOffsets[] = {0, 3, 8};  // contiguous, misaligned, 16-byte aligned
  std::vector<NormCase> cases;
  int i = 0;
  for (int64_t width : {3, 7, 33, 1000, 1537, 20000, 20001}) cases.push_back({{2, 3, width}, kOffsets[i++ % 3]});
  cases.push_back({{2, 3, 3000}, 8});
  cases.push_back({{2, 3, 7000}, 0});
  cases.push_back({{5, 421, 33}, 3});
  cases.push_back({{2, 550, 1000}, 8});
  cases.push_back({{2, 600, 4097}, 0});
  return cases;
}

TEST(NormBackwardGpu, RmsnormMatchesTheCpu) {
  require_gpu();
  Rng rng(41);
  for (DType dt : kDtypes) {
    int variant = 0;
    for (const NormCase& c : norm_cases()) {
      for (bool accumulate : {false, true}) {
        const bool with_dw = ++variant % 4 != 0;
        const int64_t width = c.shape.back();
        SCOPED_TRACE(::testing::Message() << "rmsnorm_backward of " << shape_str(c.shape) << " " << dtype_name(dt)
                                          << ", column offset " << c.offset << ", accumulate_dx " << accumulate
                                          << ", dw " << with_dw);
        const Tensor x = rounded(random_cpu(c.shape, rng, -2, 2), dt), dy = rounded(random_cpu(c.shape, rng), dt);
        const Tensor dx0 = rounded(random_cpu(c.shape, rng), dt);
        const Tensor w = random_cpu({width}, rng, 0.5, 1.5), dw0 = random_cpu({width}, rng);
        Tensor want_dx = accumulate ? dx0.clone() : Tensor::empty(c.shape), want_dw = dw0.clone();
        ops::rmsnorm_backward(x, w, kEps, dy, want_dx, with_dw ? &want_dw : nullptr, accumulate);

        const StridedGpu gx = gpu_rows(c.shape, dt, c.offset, &x), gdy = gpu_rows(c.shape, dt, c.offset, &dy);
        const Tensor gw = to_gpu(w);
        auto run = [&](StridedGpu& gdx, Tensor& gdw) {
          gdx = gpu_rows(c.shape, dt, c.offset, accumulate ? &dx0 : nullptr);
          gdw = to_gpu(dw0);
          ops::rmsnorm_backward(gx.view, gw, kEps, gdy.view, gdx.view, with_dw ? &gdw : nullptr, accumulate);
        };
        StridedGpu gdx, gdx2;
        Tensor gdw, gdw2;
        run(gdx, gdw);
        EXPECT_LT(relative_error(to_cpu(gdx.view), want_dx), backward_tolerance(dt)) << "dx";
        EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(dt)) << "dw";
        EXPECT_TRUE(gdx.padding_untouched()) << "dx";
        run(gdx2, gdw2);
        EXPECT_TRUE(same_bits(gdx.view, gdx2.view) && same_bits(gdw, gdw2)) << "a second run gives other bits";
      }
    }
  }
}

TEST(NormBackwardGpu, GatedRmsnormMatchesTheCpu) {
  require_gpu();
  Rng rng(42);
  for (DType dt : kDtypes) {
    int variant = 0;
    for (int64_t group_size : {3, 7, 33, 1000, 1537, 3000, 7000, 20001}) {
      for (int64_t groups : {1, 2}) {
        for (int gate : {0, 1, 2}) {  // no z, norm before gate, gate before norm
          ++variant;
          const bool has_z = gate != 0, norm_before_gate = gate == 1;
          const bool with_dz = has_z && variant % 3 != 0, with_dw = variant % 4 != 0;
          const int64_t width = group_size * groups, offset = (group_size + gate) % 2 ? 3 : 8;
          const Shape shape{3, 2, width};
          SCOPED_TRACE(::testing::Message() << "gated_rmsnorm_backward of " << shape_str(shape) << " " << dtype_name(dt)
                                            << ", group_size " << group_size << ", z " << has_z << ", norm_before_gate "
                                            << norm_before_gate << ", column offset " << offset << ", dz " << with_dz
                                            << ", dw " << with_dw);
          const Tensor x = rounded(random_cpu(shape, rng, -2, 2), dt), z = rounded(random_cpu(shape, rng, -3, 3), dt);
          const Tensor dy = rounded(random_cpu(shape, rng), dt);
          const Tensor w = random_cpu({width}, rng, 0.5, 1.5), dw0 = random_cpu({width}, rng);
          Tensor want_dx = Tensor::empty(shape), want_dz = Tensor::empty(shape), want_dw = dw0.clone();
          ops::gated_rmsnorm_backward(x, has_z ? z : Tensor(), w, group_size, norm_before_gate, kEps, dy, want_dx,
                                      with_dz ? &want_dz : nullptr, with_dw ? &want_dw : nullptr);

          // x, z and dz strided (dz at another offset of its own wider buffer), dy and dx contiguous.
          const StridedGpu gx = gpu_rows(shape, dt, offset, &x), gz = gpu_rows(shape, dt, offset, &z);
          const Tensor gdy = to_gpu(dy, dt), gw = to_gpu(w);
          auto run = [&](StridedGpu& gdx, StridedGpu& gdz, Tensor& gdw) {
            gdx = gpu_rows(shape, dt, 0);
            gdz = gpu_rows(shape, dt, 11 - offset);
            gdw = to_gpu(dw0);
            ops::gated_rmsnorm_backward(gx.view, has_z ? gz.view : Tensor(), gw, group_size, norm_before_gate, kEps,
                                        gdy, gdx.view, with_dz ? &gdz.view : nullptr, with_dw ? &gdw : nullptr);
          };
          StridedGpu gdx, gdz, gdx2, gdz2;
          Tensor gdw, gdw2;
          run(gdx, gdz, gdw);
          EXPECT_LT(relative_error(to_cpu(gdx.view), want_dx), backward_tolerance(dt)) << "dx";
          if (with_dz) {
            EXPECT_LT(relative_error(to_cpu(gdz.view), want_dz), backward_tolerance(dt)) << "dz";
          }
          EXPECT_TRUE(gdz.padding_untouched()) << "dz";
          EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(dt)) << "dw";
          run(gdx2, gdz2, gdw2);
          EXPECT_TRUE(same_bits(gdx.view, gdx2.view) && same_bits(gdz.view, gdz2.view) && same_bits(gdw, gdw2))
              << "a second run gives other bits";
        }
      }
    }
  }
}

// More rows than row blocks, both gate orders, two groups: several rows per block's partial dw (3000:
// two packs a thread in registers in F32).
TEST(NormBackwardGpu, GatedRmsnormManyRows) {
  require_gpu();
  Rng rng(43);
  for (DType dt : kDtypes) {
    for (int64_t group_size : {33, 1024, 3000, 4097}) {
      for (bool norm_before_gate : {true, false}) {
        const Shape shape{2, 520, 2 * group_size};
        const int64_t width = shape.back();
        SCOPED_TRACE(::testing::Message() << "gated_rmsnorm_backward of " << shape_str(shape) << " " << dtype_name(dt)
                                          << ", group_size " << group_size << ", norm_before_gate "
                                          << norm_before_gate);
        const Tensor x = rounded(random_cpu(shape, rng, -2, 2), dt), z = rounded(random_cpu(shape, rng, -3, 3), dt);
        const Tensor dy = rounded(random_cpu(shape, rng), dt);
        const Tensor w = random_cpu({width}, rng, 0.5, 1.5), dw0 = random_cpu({width}, rng);
        Tensor want_dx = Tensor::empty(shape), want_dz = Tensor::empty(shape), want_dw = dw0.clone();
        ops::gated_rmsnorm_backward(x, z, w, group_size, norm_before_gate, kEps, dy, want_dx, &want_dz, &want_dw);

        Tensor gdx = nan_gpu(shape, dt), gdz = nan_gpu(shape, dt), gdw = to_gpu(dw0);
        ops::gated_rmsnorm_backward(to_gpu(x, dt), to_gpu(z, dt), to_gpu(w), group_size, norm_before_gate, kEps,
                                    to_gpu(dy, dt), gdx, &gdz, &gdw);
        EXPECT_LT(relative_error(to_cpu(gdx), want_dx), backward_tolerance(dt)) << "dx";
        EXPECT_LT(relative_error(to_cpu(gdz), want_dz), backward_tolerance(dt)) << "dz";
        EXPECT_LT(relative_error(to_cpu(gdw), want_dw), backward_tolerance(dt)) << "dw";
      }
    }
  }
}

TEST(NormBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(44);
  const Tensor x = to_gpu(random_cpu({4, 16}, rng)), w = to_gpu(random_cpu({16}, rng));
  const Tensor dy = to_gpu(random_cpu({4, 16}, rng));
  Tensor dx = nan_gpu({4, 16}), dz = nan_gpu({4, 16}), dw = to_gpu(random_cpu({16}, rng));
  test::expect_error([&] { ops::rmsnorm_backward(x, random_cpu({16}, rng), kEps, dy, dx, &dw); },
                     {"rmsnorm_backward", "on the GPU"});
  Tensor dw_bf16 = to_gpu(random_cpu({16}, rng), DType::BF16);
  test::expect_error([&] { ops::rmsnorm_backward(x, w, kEps, dy, dx, &dw_bf16); },
                     {"rmsnorm_backward", "dw must be F32 [16]"});
  Tensor dx_bf16 = nan_gpu({4, 16}, DType::BF16);
  test::expect_error([&] { ops::rmsnorm_backward(x, w, kEps, dy, dx_bf16, &dw); },
                     {"rmsnorm_backward", "dx must be rows of x's shape and dtype"});
  test::expect_error([&] { ops::gated_rmsnorm_backward(x, x, w, 5, true, kEps, dy, dx, &dz, &dw); },
                     {"gated_rmsnorm_backward", "group_size 5 does not divide the width 16"});
  test::expect_error([&] { ops::gated_rmsnorm_backward(x, Tensor(), w, 8, true, kEps, dy, dx, &dz, &dw); },
                     {"gated_rmsnorm_backward", "dz asked for without z"});
  Tensor dz_short = nan_gpu({4, 8});
  test::expect_error([&] { ops::gated_rmsnorm_backward(x, x, w, 8, true, kEps, dy, dx, &dz_short, &dw); },
                     {"gated_rmsnorm_backward", "dz must be rows of x's shape"});
}

}  // namespace
}  // namespace ssm
