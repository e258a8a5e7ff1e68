// The language-model head fused with the cross-entropy loss and its backward, on the CPU.
//
// Rows are taken in blocks of `row_block`; for each block the vocabulary is walked in chunks of
// `vocab_chunk` columns: logits = H_blk W_cᵀ (gemm::sgemm), an online log-sum-exp per row (running
// max and rescaled sum), and the target's logit when it falls in the chunk. With gradients, a second
// walk recomputes each chunk's logits, turns them into dlogits = scale (softmax − onehot) and applies
// dH_blk += dlogits W_c, dW_c += dlogitsᵀ H_blk. When the whole vocabulary fits in one chunk the
// logits are kept and not recomputed. At most row_block × vocab_chunk logits exist at any time.
// With a soft cap the chunk's logits become z = cap · tanh(logit / cap) right after their product, and
// dlogits take the cap's derivative, 1 − (z / cap)².

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/vec_math.h"
#include "ops/cpu/weights.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

using detail::describe;
using detail::is_f32_rows;

double cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, Tensor* dhidden,
                     Tensor* dweight, const CrossEntropyOptions& options, int64_t* counted) {
  SSM_GPU_DISPATCH(hidden, cross_entropy, hidden, weight, targets, dhidden, dweight, options, counted);
  const char* op = "cross_entropy";
  SSM_CHECK(is_f32_rows(hidden) && hidden.dim() == 2, "{}: hidden must be F32 rows [M, D], got {}", op,
            describe(hidden));
  const int64_t M = hidden.size(0), Dm = hidden.size(1);
  SSM_CHECK(weight.defined() && weight.device() == Device::CPU && weight.dim() == 2 && weight.size(1) == Dm &&
                weight.is_contiguous() && detail::is_weight_dtype(weight.dtype()),
            "{}: weight must be contiguous F32/BF16/F16 [V, {}] on the host, got {}", op, Dm, describe(weight));
  const int64_t V = weight.size(0);
  SSM_CHECK(V > 0, "{}: empty vocabulary", op);
  SSM_CHECK(targets.defined() && targets.device() == Device::CPU && targets.dtype() == DType::I32 &&
                targets.numel() == M && targets.is_contiguous(),
            "{}: targets must be contiguous I32 with {} values on the host, got {}", op, M, describe(targets));
  if (dhidden)
    SSM_CHECK(is_f32_rows(*dhidden, hidden.shape()), "{}: dhidden must be F32 rows {}, got {}", op,
              shape_str(hidden.shape()), describe(*dhidden));
  if (dweight)
    SSM_CHECK(detail::is_f32_contig(*dweight, weight.shape()), "{}: dweight must be contiguous F32 {}, got {}", op,
              shape_str(weight.shape()), describe(*dweight));
  SSM_CHECK(options.vocab_chunk >= 1 && options.row_block >= 1, "{}: vocab_chunk and row_block must be positive", op);
  const float cap = options.logit_soft_cap;
  SSM_CHECK(std::isfinite(cap) && cap >= 0, "{}: the logit soft cap must be positive or 0 (none), got {}", op, cap);

  const int32_t* tg = targets.data<int32_t>();
  int64_t n_valid = 0;
  for (int64_t i = 0; i < M; ++i) {
    SSM_CHECK(tg[i] < V, "{}: target {} at row {} is outside the vocabulary [0, {})", op, tg[i], i, V);
    if (tg[i] >= 0) ++n_valid;
  }
  if (counted) *counted = n_valid;
  if (dhidden) detail::zero_rows(*dhidden);
  if (M == 0 || n_valid == 0) return 0.0;

  thread_local detail::Scratch widened, tile_scratch, row_scratch;
  const float* wp = detail::weights_as_f32(weight, widened);
  const float* hp = hidden.data<float>();
  const int64_t ldh = hidden.row_stride();
  const bool grads = dhidden || dweight;
  const float scale = options.grad_scale / float(n_valid);
  const int64_t Vc = std::min(options.vocab_chunk, V);
  const int64_t Mr = std::min(options.row_block, M);
  const int64_t n_vchunks = (V + Vc - 1) / Vc;
  float* tile = tile_scratch.get<float>(size_t(Mr * Vc));
  float* run_max = row_scratch.get<float>(4 * size_t(Mr));  // four per-row arrays of Mr
  float* run_sum = run_max + Mr;
  float* target_logit = run_sum + Mr;
  float* lse = target_logit + Mr;
  double total = 0.0;
  // The chunk's logits [rows, nv] of the row block, capped when asked.
  const auto chunk_logits = [&](const float* hb, int64_t rows, int64_t v0, int64_t nv) {
    gemm::sgemm(false, true, rows, nv, Dm, hb, ldh, wp + v0 * Dm, Dm, 0.0f, tile, nv);
    if (cap > 0)
#pragma omp parallel for schedule(static) if (rows * nv >= 32768)
      for (int64_t e = 0; e < rows * nv; ++e) tile[e] = cap * std::tanh(tile[e] / cap);
  };

  for (int64_t r0 = 0; r0 < M; r0 += Mr) {
    const int64_t rows = std::min(Mr, M - r0);
    const float* hb = hp + r0 * ldh;
    std::fill(run_max, run_max + Mr, -std::numeric_limits<float>::infinity());
    std::fill(run_sum, run_sum + Mr, 0.0f);
    std::fill(target_logit, target_logit + Mr, 0.0f);
    for (int64_t vc = 0; vc < n_vchunks; ++vc) {
      const int64_t v0 = vc * Vc, nv = std::min(Vc, V - v0);
      chunk_logits(hb, rows, v0, nv);
#pragma omp parallel for schedule(static) if (rows * nv >= 32768)
      for (int64_t i = 0; i < rows; ++i) {
        const float* lr = tile + i * nv;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < nv; ++j) mx = std::max(mx, lr[j]);
        const float new_max = std::max(run_max[i], mx);
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < nv; ++j) s += vec::fast_exp(lr[j] - new_max);
        run_sum[i] = run_sum[i] * std::exp(run_max[i] - new_max) + s;
        run_max[i] = new_max;
        const int32_t t = tg[r0 + i];
        if (t >= v0 && t < v0 + nv) target_logit[i] = lr[t - v0];
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      lse[i] = run_max[i] + std::log(run_sum[i]);
      if (tg[r0 + i] >= 0) total += double(lse[i]) - double(target_logit[i]);
    }
    if (!grads) continue;
    for (int64_t vc = 0; vc < n_vchunks; ++vc) {
      const int64_t v0 = vc * Vc, nv = std::min(Vc, V - v0);
      if (n_vchunks > 1) chunk_logits(hb, rows, v0, nv);  // one chunk: the tile still holds these logits
#pragma omp parallel for schedule(static) if (rows * nv >= 32768)
      for (int64_t i = 0; i < rows; ++i) {
        float* lr = tile + i * nv;
        const int32_t t = tg[r0 + i];
        if (t < 0) {
          std::fill(lr, lr + nv, 0.0f);
          continue;
        }
        const float l = lse[i];
        if (cap > 0) {
          for (int64_t j = 0; j < nv; ++j) {
            const float z = lr[j], d = scale * vec::fast_exp(z - l) - (v0 + j == t ? scale : 0.0f);
            lr[j] = d * (1.0f - (z / cap) * (z / cap));
          }
          continue;
        }
#pragma omp simd
        for (int64_t j = 0; j < nv; ++j) lr[j] = scale * vec::fast_exp(lr[j] - l);
        if (t >= v0 && t < v0 + nv) lr[t - v0] -= scale;
      }
      if (dhidden)
        gemm::sgemm(false, false, rows, Dm, nv, tile, nv, wp + v0 * Dm, Dm, 1.0f,
                    dhidden->data<float>() + r0 * dhidden->row_stride(), dhidden->row_stride());
      if (dweight)
        gemm::sgemm(true, false, nv, Dm, rows, tile, nv, hb, ldh, 1.0f, dweight->data<float>() + v0 * Dm, Dm);
    }
  }
  return total / double(n_valid);
}

}  // namespace ssm::ops
