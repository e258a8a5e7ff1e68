// Backward of ops::linear on the GPU:
//   dx (=|+=) dy · w      cuBLASLt (matmul.h), in the activation dtype
//   dw += dyᵀ · x         cuBLASLt with beta = 1, F32 (BF16 inputs accumulate in F32)
//   dbias += Σ_rows dy    column sums: per slab of rows a partial in a fixed order, then the partials
//                         added slab by slab (no atomics: two runs give the same bits)
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/matmul.h"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda {

namespace {

constexpr int kColumns = 32;          // columns per block: one warp across, coalesced
constexpr int kRowLanes = 8;          // threads down the rows per block
constexpr int64_t kSlabRows = 256;    // rows per partial sum (the number of slabs depends on M only)

// partials[s, n] = Σ_{r in slab s} dy[r, n]: lane y sums rows y, y + 8, ... of the slab, then the
// eight lane sums are added in lane order.
template <class T>
__global__ void column_partials_kernel(Rows<const T> dy, int64_t M, int64_t N, float* partials) {
  __shared__ float lane_sums[kRowLanes][kColumns];
  const int64_t n = int64_t(blockIdx.x) * kColumns + threadIdx.x;
  const int64_t slab = blockIdx.y, r0 = slab * kSlabRows, r1 = min(M, r0 + kSlabRows);
  float sum = 0.0f;
  if (n < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) sum += to_float(dy.at(r, n));
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || n >= N) return;
  float total = 0.0f;
  for (int lane = 0; lane < kRowLanes; ++lane) total += lane_sums[lane][threadIdx.x];
  partials[slab * N + n] = total;
}

// dbias[n] += Σ_s partials[s, n], slab by slab.
__global__ void add_partials_kernel(const float* partials, int64_t slabs, int64_t N, float* dbias) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float total = 0.0f;
  for (int64_t s = 0; s < slabs; ++s) total += partials[s * N + n];
  dbias[n] += total;
}

// dbias[N] += the column sums of the rows tensor dy [M, N] (M, N > 0).
void add_bias_gradient(const Tensor& dy, Tensor& dbias, const char* op) {
  const int64_t M = dy.rows(), N = dy.size(-1), slabs = (M + kSlabRows - 1) / kSlabRows;
  SSM_CHECK(slabs < 65536, "{}: {} rows are more than the bias gradient's grid takes", op, M);
  Tensor partials = Tensor::empty({slabs, N}, DType::F32, Device::CUDA);
  with_activation_type(dy.dtype(), op, [&]<class T>() {
    const dim3 grid(blocks_for(N, kColumns), unsigned(slabs)), block(kColumns, kRowLanes);
    column_partials_kernel<T><<<grid, block, 0, stream()>>>(rows_of<const T>(dy), M, N, partials.data<float>());
    SSM_CUDA_CHECK_LAUNCH("{}: bias gradient partials of [{}, {}]", op, M, N);
  });
  add_partials_kernel<<<blocks_for(N, 256), 256, 0, stream()>>>(partials.data<float>(), slabs, N,
                                                                  dbias.data<float>());
  SSM_CUDA_CHECK_LAUNCH("{}: bias gradient of [{}, {}]", op, M, N);
}

}  // namespace

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dbias,
                     bool accumulate_dx) {
  const char* op = "linear_backward";
  SSM_CHECK(w.defined() && w.device() == Device::CUDA && w.dim() == 2 && w.is_contiguous(),
            "{}: w must be a contiguous [N, K] matrix on the GPU, got {}", op, describe(w));
  const int64_t N = w.size(0), K = w.size(1);
  const DType dt = dy.dtype();
  SSM_CHECK(is_gpu_rows(dy, dt) && is_activation_dtype(dt) && dy.size(-1) == N,
            "{}: dy must be F32 or BF16 rows [..., {}] on the GPU, got {}", op, N, describe(dy));
  const int64_t M = dy.rows();
  if (dx) {
    SSM_CHECK(is_gpu_rows(*dx, dt) && dx->size(-1) == K && dx->rows() == M,
              "{}: dx must be {} rows [{} rows, {}] on the GPU (dy's dtype), got {}", op, dtype_name(dt), M, K,
              describe(*dx));
    SSM_CHECK(w.dtype() == dt, "{}: weights {} with activations {}: a GPU product takes one dtype", op,
              dtype_name(w.dtype()), dtype_name(dt));
  }
  if (dw) {
    SSM_CHECK(detail::is_f32_contig_on(*dw, {N, K}, Device::CUDA),
              "{}: dw must be contiguous F32 [{}, {}] on the GPU, got {}", op, N, K, describe(*dw));
    SSM_CHECK(is_gpu_rows(x, dt) && x.size(-1) == K && x.rows() == M,
              "{}: x must be {} rows [{} rows, {}] on the GPU (dy's dtype), got {}", op, dtype_name(dt), M, K,
              describe(x));
  }
  if (dbias)
    SSM_CHECK(is_gpu_vector(*dbias, N), "{}: dbias must be F32 [{}] on the GPU, got {}", op, N, describe(*dbias));
  // Empty sizes need no cases here: matmul writes zeros for an empty sum (N = 0) when beta is 0.
  if (dx) matmul(matrix_of(dy), false, matrix_of(w), false, matrix_of(*dx), accumulate_dx ? 1.0f : 0.0f, op);
  if (dw) matmul(matrix_of(dy), true, matrix_of(x), false, matrix_of(*dw), 1.0f, op);
  if (dbias && M > 0 && N > 0) add_bias_gradient(dy, *dbias, op);
}

}  // namespace ssm::ops::cuda
