// ops::linear for a few rows of BF16 activations (decoding: one row per sequence, batch <= 8), and the
// fused decode ops built on the same kernel (skinny_kernels.cuh). cuBLASLt runs these products as
// general matrix products of tile 8-64 rows, several times slower than the weight bytes they read
// allow (measured on the H200: 8 us for a 768 x 3352 product, whose 5 MB take 1.3 us at the card's
// bandwidth).
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/pdl.cuh"
#include "ops/cuda/skinny_kernels.cuh"
#include "ops/cuda/skinny_linear.h"

namespace ssm::ops::cuda {

namespace {

namespace sk = skinny;

// The most shared memory a fused kernel's staged input rows may take (8 rows of 6K channels); wider
// calls run unfused.
constexpr size_t kMaxSharedBytes = 96 * 1024;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // what a kernel may take without asking

// Whether x (and w) can feed the kernel: BF16 rows 16-byte aligned, 1-8 of them.
bool takes_input(const Tensor& x, const Tensor& w) {
  return x.dtype() == DType::BF16 && w.dtype() == DType::BF16 && x.rows() >= 1 && x.rows() <= sk::kMaxRows &&
         packs_fit(sk::kPiece, {&x, &w});
}

// Launches skinny_kernel<Input, Output> over w's N columns for `rows` rows.
template <class Input, class Output>
void launch(const Input& in, const Output& out, const Tensor& w, int rows, const char* what) {
  const int64_t N = w.size(0), K = w.size(1);
  const size_t smem = sk::shared_bytes<Input>(rows, K);
  auto run = [&]<int kRows>() {
    auto* kernel = sk::skinny_kernel<Input, Output, kRows>;
    // Read and set once per kernel, at its first call (a decode step runs once before it is recorded).
    static const cudaFuncAttributes attributes = [&] {
      cudaFuncAttributes a{};
      SSM_CUDA_CHECK(cudaFuncGetAttributes(&a, kernel), "{}: reading the kernel's attributes", what);
      return a;
    }();
    if (smem > kDefaultSharedBytes) {
      static const cudaError_t raised =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSharedBytes));
      SSM_CUDA_CHECK(raised, "{}: raising the shared memory limit", what);
    }
    const unsigned grid =
        sk::grid_for(attributes, N, smem, multiprocessor_count(), shared_memory_per_multiprocessor());
    SSM_CUDA_CHECK(pdl::launch_overlapped(kernel, dim3(grid), dim3(sk::kThreads), smem, stream(),
                                          in, out, static_cast<const bf16*>(w.data<bf16>()), N, K, rows),
                   "{} of {} rows [{}] x [{}, {}]ᵀ", what, rows, K, N, K);
  };
  if (rows == 1) run.template operator()<1>();
  else run.template operator()<sk::kMaxRows>();
}

template <class Y>
sk::StoreOutput<Y> store_output(Tensor& y, const Tensor& bias, bool accumulate, const Tensor& column_scale = {}) {
  return {y.data<Y>(), y.row_stride(), bias.defined() ? bias.data<float>() : nullptr,
          column_scale.defined() ? column_scale.data<float>() : nullptr, accumulate};
}

sk::PlainInput plain_input(const Tensor& x) { return {x.data<bf16>(), x.row_stride()}; }

}  // namespace

bool try_skinny_linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  if (!takes_input(x, w)) return false;
  const int rows = int(x.rows());
  if (y.dtype() == DType::BF16) launch(plain_input(x), store_output<bf16>(y, bias, accumulate), w, rows, "linear");
  else if (y.dtype() == DType::F32) launch(plain_input(x), store_output<float>(y, bias, accumulate), w, rows, "linear");
  else return false;
  return true;
}

bool try_skinny_linear_conv_step(const Tensor& x, const LinearConvStep& p, Tensor& conv_state, Tensor& y) {
  const Tensor& norm = p.norm_weight;
  const int rows = int(x.rows());
  const int64_t taps = p.conv_weight.size(1);
  if (!takes_input(x, p.weight) || y.dtype() != DType::BF16 || taps > sk::kMaxConvTaps ||
      (norm.defined() && (!packs_fit(sk::kPiece, {&norm}) ||
                          sk::shared_bytes<sk::NormInput>(rows, x.size(-1)) > kMaxSharedBytes)))
    return false;
  const sk::ConvStepOutput<bf16> out{store_output<bf16>(y, p.bias, false, p.column_scale),
                                     p.conv_offset,
                                     p.conv_weight.size(0),
                                     p.conv_weight.data<float>(),
                                     p.conv_bias.defined() ? p.conv_bias.data<float>() : nullptr,
                                     taps > 1 ? conv_state.data<float>() : nullptr,
                                     taps > 1 ? conv_state.row_stride() : 0,
                                     int(taps)};
  if (norm.defined()) {
    const sk::NormInput in{x.data<bf16>(), x.row_stride(), nullptr, 0, norm.data<float>(), x.size(-1), false,
                           p.norm_eps};
    launch(in, out, p.weight, rows, "linear_conv_step");
  } else {
    launch(plain_input(x), out, p.weight, rows, "linear_conv_step");
  }
  return true;
}

bool try_skinny_gated_rmsnorm_linear(const Tensor& x, const Tensor& z, const Tensor& norm_weight, int64_t group_size,
                                     bool norm_before_gate, float eps, const Tensor& w, const Tensor& bias, Tensor& y,
                                     bool accumulate) {
  const int rows = int(x.rows());
  if (!takes_input(x, w) || group_size % sk::kPiece != 0 || !packs_fit(sk::kPiece, {&z, &norm_weight}) ||
      sk::shared_bytes<sk::NormInput>(rows, x.size(-1)) > kMaxSharedBytes)
    return false;
  const sk::NormInput in{x.data<bf16>(),
                         x.row_stride(),
                         z.defined() ? z.data<bf16>() : nullptr,
                         z.defined() ? z.row_stride() : 0,
                         norm_weight.data<float>(),
                         group_size,
                         norm_before_gate,
                         eps};
  if (y.dtype() == DType::BF16) launch(in, store_output<bf16>(y, bias, accumulate), w, rows, "gated_rmsnorm_linear");
  else if (y.dtype() == DType::F32)
    launch(in, store_output<float>(y, bias, accumulate), w, rows, "gated_rmsnorm_linear");
  else return false;
  return true;
}

}  // namespace ssm::ops::cuda
