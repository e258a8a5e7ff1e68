// ops::rmsnorm, ops::add_rmsnorm and ops::gated_rmsnorm on the GPU against the CPU ops: F32 and BF16 activations, odd
// widths, rows longer than the kernel keeps in registers, batch > 1, strided inputs and outputs, y
// aliasing an input, n_groups 1 and 2, both gate orders and no gate.
#include <string>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

class NormGpu : public ::testing::TestWithParam<DType> {};

// Widths: odd ones (the one-element path), 1000 (the 16-byte path), and rows longer than the kernel
// keeps in registers (its second-read path), odd and not.
constexpr int64_t kWidths[] = {1, 7, 33, 1000, 1537, 20000, 20001};

TEST_P(NormGpu, RmsnormMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(11);
  for (int64_t width : kWidths) {
    for (int64_t offset : {0, 3, 8}) {
      const Shape shape{2, 3, width};
      SCOPED_TRACE(::testing::Message() << "rmsnorm of " << shape_str(shape) << " " << dtype_name(dt)
                                        << ", column offset " << offset);
      const Tensor x = rounded(random_cpu(shape, rng, -2, 2), dt), w = random_cpu({width}, rng, 0.5, 1.5);
      Tensor want = Tensor::empty(shape);
      ops::rmsnorm(x, w, 1e-5f, want);

      const StridedGpu xs = strided_gpu(shape, dt, offset, &x);
      StridedGpu ys = strided_gpu(shape, dt, offset);
      const Tensor gx = offset ? xs.view : to_gpu(x, dt);
      Tensor gy = offset ? ys.view : nan_gpu(shape, dt);
      ops::rmsnorm(gx, to_gpu(w), 1e-5f, gy);
      EXPECT_LT(relative_error(to_cpu(gy), want), tolerance(dt));
      if (offset) {
        EXPECT_TRUE(ys.padding_untouched());
      }
    }
  }
  // In place (y aliases x), one row.
  const Tensor x = rounded(random_cpu({1537}, rng), dt), w = random_cpu({1537}, rng, 0.5, 1.5);
  Tensor want = Tensor::empty({1537});
  ops::rmsnorm(x, w, 1e-6f, want);
  Tensor g = to_gpu(x, dt);
  ops::rmsnorm(g, to_gpu(w), 1e-6f, g);
  EXPECT_LT(relative_error(to_cpu(g), want), tolerance(dt)) << "in place";
}

// The residual add fused into the norm: the same y and the same h as the CPU's add_rmsnorm (h rounded
// to the activation dtype before the norm reads it).
TEST_P(NormGpu, AddRmsnormMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(13);
  for (int64_t width : kWidths) {
    for (int64_t offset : {0, 3}) {
      const Shape shape{2, 3, width};
      SCOPED_TRACE(::testing::Message() << "add_rmsnorm of " << shape_str(shape) << " " << dtype_name(dt)
                                        << ", column offset " << offset);
      Tensor h = rounded(random_cpu(shape, rng, -2, 2), dt);
      const Tensor delta = rounded(random_cpu(shape, rng, -2, 2), dt), w = random_cpu({width}, rng, 0.5, 1.5);
      const StridedGpu hs = strided_gpu(shape, dt, offset, &h), ds = strided_gpu(shape, dt, offset, &delta);
      StridedGpu ys = strided_gpu(shape, dt, offset);
      Tensor gh = offset ? hs.view : to_gpu(h, dt), gy = offset ? ys.view : nan_gpu(shape, dt);
      ops::add_rmsnorm(gh, offset ? ds.view : to_gpu(delta, dt), 0.5f, to_gpu(w), 1e-5f, gy);
      Tensor want = Tensor::empty(shape);
      ops::add_rmsnorm(h, delta, 0.5f, w, 1e-5f, want);
      EXPECT_LT(relative_error(to_cpu(gh), h), tolerance(dt)) << "h";
      EXPECT_LT(relative_error(to_cpu(gy), want), tolerance(dt)) << "y";
      if (offset) {
        EXPECT_TRUE(ys.padding_untouched());
      }
    }
  }
}

TEST_P(NormGpu, GatedRmsnormMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(12);
  for (int64_t group_size : {1, 7, 33, 1000, 1537, 20001}) {
    for (int64_t groups : {1, 2}) {
      for (int gate : {0, 1, 2}) {  // no z, norm before gate, gate before norm
        const bool has_z = gate != 0, norm_before_gate = gate == 1;
        const int64_t width = group_size * groups, offset = (group_size + gate) % 2 ? 3 : 8;
        const Shape shape{3, 2, width};
        SCOPED_TRACE(::testing::Message() << "gated_rmsnorm of " << shape_str(shape) << " " << dtype_name(dt)
                                          << ", group_size " << group_size << ", z " << has_z
                                          << ", norm_before_gate " << norm_before_gate << ", column offset " << offset);
        const Tensor x = rounded(random_cpu(shape, rng, -2, 2), dt), z = rounded(random_cpu(shape, rng, -3, 3), dt);
        const Tensor w = random_cpu({width}, rng, 0.5, 1.5);
        Tensor want = Tensor::empty(shape);
        ops::gated_rmsnorm(x, has_z ? z : Tensor(), w, group_size, norm_before_gate, 1e-5f, want);

        const StridedGpu xs = strided_gpu(shape, dt, offset, &x), zs = strided_gpu(shape, dt, offset, &z);
        StridedGpu ys = strided_gpu(shape, dt, offset);
        ops::gated_rmsnorm(xs.view, has_z ? zs.view : Tensor(), to_gpu(w), group_size, norm_before_gate, 1e-5f,
                           ys.view);
        EXPECT_LT(relative_error(to_cpu(ys.view), want), tolerance(dt));
        EXPECT_TRUE(ys.padding_untouched());

        // Contiguous, with y aliasing z (or x without a gate).
        Tensor gx = to_gpu(x, dt), gz = to_gpu(z, dt);
        Tensor& gy = has_z ? gz : gx;
        ops::gated_rmsnorm(gx, has_z ? gz : Tensor(), to_gpu(w), group_size, norm_before_gate, 1e-5f, gy);
        EXPECT_LT(relative_error(to_cpu(gy), want), tolerance(dt)) << "in place";
      }
    }
  }
}

TEST(NormGpuErrors, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(13);
  const Tensor x = to_gpu(random_cpu({4, 16}, rng)), w = to_gpu(random_cpu({16}, rng));
  Tensor y = nan_gpu({4, 16});
  // Mixed devices, whichever side the output is on.
  test::expect_error([&] { ops::rmsnorm(x, random_cpu({16}, rng), 1e-5f, y); }, {"rmsnorm", "GPU"});
  Tensor cpu_y = Tensor::empty({4, 16});
  test::expect_error([&] { ops::rmsnorm(x, random_cpu({16}, rng), 1e-5f, cpu_y); }, {"rmsnorm: x", "on the GPU"});
  const Tensor cpu_x = random_cpu({4, 16}, rng);
  test::expect_error([&] { ops::gated_rmsnorm(cpu_x, cpu_x, w, 8, true, 1e-5f, cpu_y); },
                     {"gated_rmsnorm: w", "on the GPU"});
  test::expect_error([&] { ops::rmsnorm(x, to_gpu(random_cpu({16}, rng), DType::BF16), 1e-5f, y); },
                     {"rmsnorm", "w must be F32 [16]"});
  Tensor y_bf16 = nan_gpu({4, 16}, DType::BF16);
  test::expect_error([&] { ops::rmsnorm(x, w, 1e-5f, y_bf16); }, {"rmsnorm", "y must be rows of x's shape and dtype"});
  Tensor y_f16 = Tensor::empty({4, 16}, DType::F16, Device::CUDA);
  test::expect_error([&] { ops::rmsnorm(y_f16, w, 1e-5f, y_f16); }, {"rmsnorm", "F32 or BF16"});
  test::expect_error([&] { ops::gated_rmsnorm(x, x, w, 5, true, 1e-5f, y); },
                     {"gated_rmsnorm", "group_size 5 does not divide the width 16"});
  const Tensor z_bf16 = to_gpu(random_cpu({4, 16}, rng), DType::BF16);
  test::expect_error([&] { ops::gated_rmsnorm(x, z_bf16, w, 8, true, 1e-5f, y); },
                     {"gated_rmsnorm", "z must be rows of x's shape and dtype"});
  test::expect_error([&] { ops::gated_rmsnorm(x, random_cpu({4, 16}, rng), w, 8, true, 1e-5f, y); },
                     {"gated_rmsnorm", "GPU"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, NormGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
