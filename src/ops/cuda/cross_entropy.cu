// ops::cross_entropy on the GPU: the language-model head fused with the loss and its backward, the
// CPU op's algorithm (ops/cpu/cross_entropy.cpp) with cuBLASLt products (matmul.h). Rows are taken in
// blocks of row_block and the vocabulary in chunks of vocab_chunk, so at most row_block × vocab_chunk
// logits exist at once. For each block of rows:
//   1. per chunk: logits = H_blk W_cᵀ (F32) into scratch; per row (one block of threads) an online
//      log-sum-exp update across chunks and the target's logit when it falls in the chunk; after the
//      last chunk lse and the row's loss, lse − target logit (in double), kept for the final sum;
//   2. with gradients, per chunk: the logits again (not when one chunk holds the vocabulary),
//      dlogits = scale (softmax − onehot) in the activation dtype (0 for an ignored row; with a logit soft cap
//      the logits are z = cap · tanh(logit / cap), soft_cap's, and dlogits take 1 − (z / cap)²), then
//      dH_blk (=|+=) dlogits W_c and dW_c += dlogitsᵀ H_blk (F32).
// dhidden accumulates over the chunks in F32: directly when it is F32, else in an F32 scratch block
// converted once at the end. The count of rows that count, scale = grad_scale / count and the loss sum
// (a fixed-order reduction) are all computed on the GPU, so targets on the GPU need no early wait; the
// op waits once, at its end, to return the loss.
#include <cmath>
#include <limits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/matmul.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/upload.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kRowThreads = 256;  // threads per row in the log-sum-exp kernel
constexpr int kSumThreads = 512;  // threads of the one-block count and loss sums

// What the op reads back at its end.
struct Totals {
  long long count;     // rows whose target is >= 0
  long long bad_row;   // the first row whose target is >= V, or -1
  int bad_target;      // its target
  double loss;         // Σ over counted rows of lse − target logit
};

// totals->count, bad_row and bad_target from targets [M] (one block).
__global__ void count_targets_kernel(const int32_t* targets, int64_t M, int64_t V, Totals* totals) {
  __shared__ unsigned long long count;
  __shared__ unsigned long long first_bad;
  if (threadIdx.x == 0) {
    count = 0;
    first_bad = ~0ull;
  }
  __syncthreads();
  unsigned long long mine = 0, my_bad = ~0ull;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int32_t t = targets[i];
    if (t >= 0) ++mine;
    if (t >= V && my_bad == ~0ull) my_bad = (unsigned long long)i;
  }
  atomicAdd(&count, mine);  // integer sums and minima: the same whatever the order
  atomicMin(&first_bad, my_bad);
  __syncthreads();
  if (threadIdx.x != 0) return;
  totals->count = (long long)count;
  totals->bad_row = first_bad == ~0ull ? -1 : (long long)first_bad;
  totals->bad_target = first_bad == ~0ull ? 0 : targets[first_bad];
  totals->loss = 0.0;
}

// A (max, Σ exp(x − max)) pair of a log-sum-exp; (−inf, 0) is empty.
struct MaxSum {
  float max, sum;
};
__device__ __forceinline__ float rescaled(float sum, float from_max, float to_max) {
  return from_max == -INFINITY ? 0.0f : sum * fast_exp2((from_max - to_max) * kLog2e);
}
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  return {m, rescaled(a.sum, a.max, m) + rescaled(b.sum, b.max, m)};
}

// One block per row i of the chunk's logits [rows, nv] (row stride ld): the row's running (max, sum)
// takes in the chunk, and the target's logit is kept when it is in [v0, v0 + nv). On the first chunk
// the running values start empty; after the last, lse = max + log(sum) and the row's loss are written.
__global__ void __launch_bounds__(kRowThreads)
    lse_update_kernel(const float* logits, int64_t ld, int64_t nv, int64_t v0, const int32_t* targets,
                      float* run_max, float* run_sum, float* target_logit, float* lse, double* row_loss, bool first,
                      bool last) {
  const int64_t i = blockIdx.x;
  const float* row = logits + i * ld;
  MaxSum mine{-INFINITY, 0.0f};
  for (int64_t j = threadIdx.x; j < nv; j += kRowThreads) {
    const float x = row[j];
    if (x > mine.max) {
      mine.sum = rescaled(mine.sum, mine.max, x) + 1.0f;
      mine.max = x;
    } else {
      mine.sum += fast_exp2((x - mine.max) * kLog2e);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, mine.max, offset), __shfl_xor_sync(0xffffffffu, mine.sum, offset)};
    mine = combine(mine, other);
  }
  __shared__ MaxSum warp_pairs[kRowThreads / 32];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  if (lane == 0) warp_pairs[warp] = mine;
  __syncthreads();
  if (threadIdx.x != 0) return;
  MaxSum chunk = warp_pairs[0];
  for (int w = 1; w < kRowThreads / 32; ++w) chunk = combine(chunk, warp_pairs[w]);
  const MaxSum running = combine(first ? MaxSum{-INFINITY, 0.0f} : MaxSum{run_max[i], run_sum[i]}, chunk);
  const int32_t t = targets[i];
  float target = first ? 0.0f : target_logit[i];
  if (t >= v0 && t < v0 + nv) target = row[t - v0];
  if (!last) {
    run_max[i] = running.max;
    run_sum[i] = running.sum;
    target_logit[i] = target;
    return;
  }
  const float row_lse = running.max + logf(running.sum);
  lse[i] = row_lse;
  row_loss[i] = t >= 0 ? double(row_lse) - double(target) : 0.0;
}

// dlogits[i, j] = scale (exp(logits[i, j] − lse[i]) − [v0 + j == target]) with scale = grad_scale /
// count, 0 for an ignored row; times 1 − (z / cap)² where the logits z are soft-capped (cap > 0).
// dlogits may be the logits (F32): each element is read, then written.
template <class T>
__global__ void dlogits_kernel(const float* logits, T* dlogits, int64_t ld, int64_t rows, int64_t nv, int64_t v0,
                               const int32_t* targets, const float* lse, const Totals* totals, float grad_scale,
                               float cap) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * nv) return;
  const int64_t i = e / nv, j = e % nv;
  const int32_t t = targets[i];
  float d = 0.0f;
  if (t >= 0) {
    const long long count = totals->count;
    const float scale = count > 0 ? grad_scale / float(count) : 0.0f;
    const float z = logits[i * ld + j];
    d = scale * fast_exp2((z - lse[i]) * kLog2e);
    if (v0 + j == t) d -= scale;
    if (cap > 0.0f) d *= 1.0f - (z / cap) * (z / cap);
  }
  dlogits[i * ld + j] = from_float<T>(d);
}

// totals->loss = Σ row_loss (one block, fixed order: strided per-thread sums, then a tree).
__global__ void __launch_bounds__(kSumThreads) sum_losses_kernel(const double* row_loss, int64_t M, Totals* totals) {
  __shared__ double partial[kSumThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < M; i += kSumThreads) sum += row_loss[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) totals->loss = partial[0];
}

// The host's view of the targets: the count of rows that count, after the CPU op's check.
int64_t count_host_targets(const Tensor& targets, int64_t V) {
  const int32_t* tg = targets.data<int32_t>();
  int64_t count = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) {
    SSM_CHECK(tg[i] < V, "cross_entropy: target {} at row {} is outside the vocabulary [0, {})", tg[i], i, V);
    if (tg[i] >= 0) ++count;
  }
  return count;
}

}  // namespace

double cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, Tensor* dhidden,
                     Tensor* dweight, const CrossEntropyOptions& options, int64_t* counted) {
  const char* op = "cross_entropy";
  const DType dt = hidden.dtype();
  SSM_CHECK(is_gpu_rows(hidden, dt) && is_activation_dtype(dt) && hidden.dim() == 2,
            "{}: hidden must be F32 or BF16 rows [M, D] on the GPU, got {}", op, describe(hidden));
  const int64_t M = hidden.size(0), D = hidden.size(1);
  SSM_CHECK(weight.defined() && weight.device() == Device::CUDA && weight.dim() == 2 && weight.size(1) == D &&
                weight.is_contiguous() && weight.dtype() == dt,
            "{}: weight must be contiguous {} [V, {}] on the GPU (hidden's dtype), got {}", op, dtype_name(dt), D,
            describe(weight));
  const int64_t V = weight.size(0);
  SSM_CHECK(V > 0, "{}: empty vocabulary", op);
  SSM_CHECK(targets.defined() && targets.dtype() == DType::I32 && targets.numel() == M && targets.is_contiguous(),
            "{}: targets must be contiguous I32 with {} values (on the host or the GPU), got {}", op, M,
            describe(targets));
  if (dhidden)
    SSM_CHECK(is_gpu_rows(*dhidden, dt, hidden.shape()), "{}: dhidden must be {} rows {} on the GPU, got {}", op,
              dtype_name(dt), shape_str(hidden.shape()), describe(*dhidden));
  if (dweight)
    SSM_CHECK(detail::is_f32_contig_on(*dweight, weight.shape(), Device::CUDA),
              "{}: dweight must be contiguous F32 {} on the GPU, got {}", op, shape_str(weight.shape()),
              describe(*dweight));
  SSM_CHECK(options.vocab_chunk >= 1 && options.row_block >= 1, "{}: vocab_chunk and row_block must be positive", op);
  const float cap = options.logit_soft_cap;
  SSM_CHECK(std::isfinite(cap) && cap >= 0, "{}: the logit soft cap must be positive or 0 (none), got {}", op, cap);

  // Targets on the host are checked and counted there (the CPU op's errors, before any output is
  // touched); either way the GPU counts them too, for the gradient's scale.
  const bool host_targets = targets.device() == Device::CPU;
  const int64_t host_count = host_targets ? count_host_targets(targets, V) : 0;
  if (M == 0 || (host_targets && host_count == 0)) {
    if (counted) *counted = 0;
    if (dhidden && M > 0) fill(*dhidden, 0.0f);
    return 0.0;
  }
  const Tensor gpu_targets = host_targets ? upload(targets.raw(), {M}, DType::I32, op) : targets;
  const int32_t* tg = gpu_targets.data<int32_t>();
  Tensor totals_storage = Tensor::empty({int64_t(sizeof(Totals))}, DType::I8, Device::CUDA);
  Totals* totals = static_cast<Totals*>(totals_storage.raw());
  count_targets_kernel<<<1, kSumThreads, 0, stream()>>>(tg, M, V, totals);
  SSM_CUDA_CHECK_LAUNCH("{}: counting {} targets", op, M);

  const int64_t Vc = std::min(options.vocab_chunk, V), Mr = std::min(options.row_block, M);
  const int64_t n_chunks = (V + Vc - 1) / Vc;
  const int64_t ld_tile = (Vc + 7) / 8 * 8;  // 16-byte aligned tile rows for the products
  const bool grads = dhidden || dweight;
  Tensor logits = Tensor::empty({Mr, ld_tile}, DType::F32, Device::CUDA);
  // The gradient products take dlogits in the weights' dtype: F32 ones overwrite the logits.
  Tensor dlogits = grads && dt != DType::F32 ? Tensor::empty({Mr, ld_tile}, dt, Device::CUDA) : logits;
  Tensor row_state = Tensor::empty({4, Mr}, DType::F32, Device::CUDA);  // running max, sum, target logit, lse
  float* run_max = row_state.data<float>();
  float* run_sum = run_max + Mr;
  float* target_logit = run_sum + Mr;
  float* lse = target_logit + Mr;
  Tensor row_loss_storage = Tensor::empty({M}, DType::I64, Device::CUDA);  // doubles (there is no F64 dtype)
  double* row_loss = static_cast<double*>(row_loss_storage.raw());
  // dhidden's F32 accumulator: dhidden itself, or a scratch block when it is BF16.
  const bool dhidden_scratch = dhidden && dt != DType::F32;
  Tensor dh_block = dhidden_scratch ? Tensor::empty({Mr, D}, DType::F32, Device::CUDA) : Tensor();

  const Matrix h_all = matrix_of(hidden), w_all = matrix_of(weight);
  for (int64_t r0 = 0; r0 < M; r0 += Mr) {
    const int64_t rows = std::min(Mr, M - r0);
    const Matrix h = row_range(h_all, r0, rows);
    const auto chunk_logits = [&](int64_t v0, int64_t nv) {
      matmul(h, false, row_range(w_all, v0, nv), true, Matrix{logits.raw(), DType::F32, rows, nv, ld_tile}, 0.0f, op);
      if (cap > 0) {
        Tensor tile = logits.slice(0, 0, rows).slice(1, 0, nv);
        soft_cap(tile, cap, tile);
      }
    };
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t v0 = c * Vc, nv = std::min(Vc, V - v0);
      chunk_logits(v0, nv);
      lse_update_kernel<<<unsigned(rows), kRowThreads, 0, stream()>>>(
          logits.data<float>(), ld_tile, nv, v0, tg + r0, run_max, run_sum, target_logit, lse,
          row_loss + r0, c == 0, c == n_chunks - 1);
      SSM_CUDA_CHECK_LAUNCH("{}: log-sum-exp of rows [{}, {}) over vocabulary [{}, {})", op, r0, r0 + rows, v0,
                            v0 + nv);
    }
    if (!grads) continue;
    // dH_blk in F32: dhidden's rows of the block, or the scratch block.
    const Matrix dh = dhidden_scratch ? row_range(matrix_of(dh_block), 0, rows)
                      : dhidden       ? row_range(matrix_of(*dhidden), r0, rows)
                                      : Matrix{};
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t v0 = c * Vc, nv = std::min(Vc, V - v0);
      if (n_chunks > 1) chunk_logits(v0, nv);  // one chunk: the tile still holds these logits
      with_activation_type(dt, op, [&]<class T>() {
        dlogits_kernel<T><<<blocks_for(rows * nv, 256), 256, 0, stream()>>>(
            logits.data<float>(), dlogits.data<T>(), ld_tile, rows, nv, v0, tg + r0, lse, totals,
            options.grad_scale, cap);
        SSM_CUDA_CHECK_LAUNCH("{}: dlogits of rows [{}, {}) over vocabulary [{}, {})", op, r0, r0 + rows, v0,
                              v0 + nv);
      });
      const Matrix dl{dlogits.raw(), dt, rows, nv, ld_tile};
      const Matrix w = row_range(w_all, v0, nv);
      if (dhidden) matmul(dl, false, w, false, dh, c == 0 ? 0.0f : 1.0f, op);
      if (dweight) matmul(dl, true, h, false, row_range(matrix_of(*dweight), v0, nv), 1.0f, op);
    }
    if (dhidden_scratch) {
      Tensor block = dhidden->slice(0, r0, rows);
      scale(dh_block.slice(0, 0, rows), 1.0f, block);
    }
  }

  sum_losses_kernel<<<1, kSumThreads, 0, stream()>>>(row_loss, M, totals);
  SSM_CUDA_CHECK_LAUNCH("{}: the loss of {} rows", op, M);
  Totals result{};
  SSM_CUDA_CHECK(cudaMemcpyAsync(&result, totals, sizeof result, cudaMemcpyDeviceToHost, stream()),
                 "{}: reading the loss back", op);
  SSM_CUDA_CHECK(cudaStreamSynchronize(stream()), "{}: waiting for the loss", op);
  if (result.bad_row >= 0)
    fail("{}: target {} at row {} is outside the vocabulary [0, {})", op, result.bad_target, result.bad_row, V);
  if (counted) *counted = result.count;
  return result.count > 0 ? result.loss / double(result.count) : 0.0;
}

}  // namespace ssm::ops::cuda
