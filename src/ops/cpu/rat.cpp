// ops::rat (chunked forward), ops::rat_step and RatCache on the CPU.
//
// The equations, as the authors' code computes them (CLAIRE-Labo/RAT: src/model/backbone/rat/rat.py,
// src/model/op/merge_lastt.py, src/model/embedding/pe.py, src/model/backbone/util.py), for one
// sequence, head h of H (dh channels, columns h·dh ...), token t in chunk c = ⌊t/L⌋, positions counted
// from the start of the sequence:
//   group        γ(h) = h mod G. q and k hold G groups of dh and are TILED over the heads before
//                anything else (k.repeat(1, 1, H/G)): q_t^h = q_t[γ(h)·dh ..], k_t^h = k_t[γ(h)·dh ..].
//                So k meets the per-channel gate as an H·dh-wide tensor: every head runs its own k̃.
//   gate (fp32)  a_t = σ(g_t + gate_bias), per channel (H·dh).
//   recurrence   k̃_t = a_t ⊙ k̃_{t-1} + (1 − a_t) ⊙ k_t^h,   ṽ_t = a_t ⊙ ṽ_{t-1} + (1 − a_t) ⊙ v_t^h,
//                k̃_{t-1} = ṽ_{t-1} = 0 when t mod L = 0 (states restart at every chunk). q has none.
//   rotation     "InterRoPE": R_p x = x ⊙ cos(p θ) + rotate_half(x) ⊙ sin(p θ), rotate_half(x) =
//                [−x_{dh/2..dh}, x_{0..dh/2}] (transformers' form, over the whole head),
//                θ_j = θ_{j+dh/2} = 1 / base^(2j/dh) for j < dh/2 (base 10000 in their configs),
//                angles p·θ_j in float32 as torch computes them; p is a CHUNK index.
//   keys         chunk c' ends at e(c') = c'L + L − 1: K_{c'} = R_{c'} k̃_{e(c')}, V_{c'} = ṽ_{e(c')}.
//                The current chunk's running pair is rotated too, at the query's own position c:
//                (R_c k̃_t, ṽ_t).
//   scores       s_{t,c'} = λ (R_c q_t^h)·K_{c'} for c' < c;  s_{t,run} = λ (R_c q_t^h)·(R_c k̃_t) = λ q_t^h·k̃_t
//                (one rotation on both sides cancels; the kernels use the right-hand form).
//                λ = dh^(−1/2) (softmax_scale). No normalisation of q or k exists.
//   output       y_t = (Σ_{c'<c} e^{s_{t,c'}} V_{c'} + e^{s_{t,run}} ṽ_t) / (Σ_{c'<c} e^{s_{t,c'}} + e^{s_{t,run}}).
// The authors compute y_t as flex attention over the chunk ends with the mask c' < c (out_inter,
// lse_inter) merged with the running key by log-sum-exp weights,
//   y_t = out_inter·σ(lse_inter − s_run) + ṽ_t·σ(s_run − lse_inter),
// which is the softmax over the union above. In chunk 0 y_t = ṽ_t (their step returns ṽ there), so
// with L ≥ T the op is the gated RNN y_t = ṽ_t. The mixer then computes out_proj(σ(z) ⊙ y); the σ(z)
// gate is not fused here (the authors apply it outside the merge too).
// Beyond the authors' code (which needs T mod L = 0 and one position for the whole batch): a last
// partial chunk, and a cache from which every sequence continues at its own position.
//
// Kernel: every chunk restarts its recurrence, so chunks are independent. Pass 1, per (b, h, chunk):
// the state at the chunk's end, rotated, into the list of chunk ends (the cache's, or scratch).
// Pass 2, per (b, h, chunk): the chunk's running states again (O(L·dh)), its queries rotated,
// S = Q Kᵀ against the c earlier ends (one [L, c] tile), the softmax with the running score, Y = P V.
// Cost O(T·T/L·dh) + O(T·dh); memory O(T/L·H·dh) for the ends plus a [L, T/L] tile per thread.

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/op_util.h"
#include "ops/cpu/rat_common.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace detail {

RatDims rat_check_inputs(const char* op, const RatInputs& in, int64_t seq_dims, const Placement& where) {
  const char* lead = seq_dims == 3 ? "[B,T," : "[B,";
  const std::string w = where.str();
  SSM_CHECK(is_rows(in.v, where) && in.v.dim() == seq_dims, "{}: v must be {} rows {}H*dh], got {}", op, w, lead,
            describe(in.v));
  RatDims d{};
  d.batch = in.v.size(0);
  d.T = seq_dims == 3 ? in.v.size(1) : 1;
  d.heads = in.n_heads;
  d.groups = in.n_groups;
  d.chunk = in.chunk_size;
  d.width = in.v.size(-1);
  SSM_CHECK(d.heads >= 1 && d.groups >= 1 && d.heads % d.groups == 0, "{}: n_groups {} does not divide n_heads {}", op,
            d.groups, d.heads);
  SSM_CHECK(d.width > 0 && d.width % d.heads == 0 && (d.width / d.heads) % 2 == 0,
            "{}: v width {} is not n_heads {} times an even head size (the rotation pairs channels)", op, d.width,
            d.heads);
  d.head_dim = d.width / d.heads;
  const int64_t qk_width = d.groups * d.head_dim;
  const struct {
    const Tensor* t;
    const char* name;
    int64_t width;
  } seq_inputs[] = {{&in.g, "g", d.width}, {&in.q, "q", qk_width}, {&in.k, "k", qk_width}};
  for (const auto& [t, name, width] : seq_inputs) {
    Shape want = in.v.shape();
    want.back() = width;
    SSM_CHECK(is_rows(*t, where) && t->shape() == want,
              "{}: {} must be {} rows {} (n_heads {}, n_groups {}, head size {}), got {}", op, name, w,
              shape_str(want), d.heads, d.groups, d.head_dim, describe(*t));
  }
  SSM_CHECK(is_f32_contig_on(in.gate_bias, {d.width}, where.device), "{}: gate_bias must be F32 [{}]{}, got {}", op,
            d.width, on_device(where.device), describe(in.gate_bias));
  SSM_CHECK(d.chunk >= 1, "{}: chunk_size must be positive, got {}", op, d.chunk);
  SSM_CHECK(std::isfinite(in.rope_theta) && in.rope_theta > 0.0f, "{}: rope_theta must be positive, got {}", op,
            in.rope_theta);
  SSM_CHECK(std::isfinite(in.softmax_scale) && in.softmax_scale >= 0.0f,
            "{}: softmax_scale must be positive (or 0 for dh^-1/2), got {}", op, in.softmax_scale);
  d.scale = in.softmax_scale > 0.0f ? in.softmax_scale : 1.0f / std::sqrt(float(d.head_dim));
  return d;
}

void rat_check_cache(const char* op, const RatCache& cache, const RatDims& d, int64_t new_tokens, Device device) {
  SSM_CHECK(cache.tokens.defined() && cache.tokens.device() == Device::CPU && cache.tokens.dtype() == DType::I64 &&
                cache.tokens.dim() == 1 && cache.tokens.is_contiguous(),
            "{}: cache.tokens must be contiguous I64 [B] on the host, got {}", op, describe(cache.tokens));
  SSM_CHECK(cache.tokens.size(0) == d.batch, "{}: the cache holds {} sequences, the inputs {}", op,
            cache.tokens.size(0), d.batch);
  const Shape counts{d.batch};
  if (device == Device::CUDA)
    SSM_CHECK(cache.device_tokens.defined() && cache.device_tokens.device() == Device::CUDA &&
                  cache.device_tokens.dtype() == DType::I64 && cache.device_tokens.shape() == counts &&
                  cache.device_tokens.is_contiguous(),
              "{}: a GPU cache needs device_tokens, contiguous I64 [{}] on the GPU (RatCache::zeros), got {}", op,
              d.batch, describe(cache.device_tokens));
  const Shape running{d.batch, d.width};
  const char* where = on_device(device);
  SSM_CHECK(is_f32_contig_on(cache.key, running, device) && is_f32_contig_on(cache.value, running, device),
            "{}: cache.key and cache.value must be contiguous F32 {}{}, got {} and {}", op, shape_str(running), where,
            describe(cache.key), describe(cache.value));
  const bool ends_ok = cache.chunk_keys.defined() && cache.chunk_keys.dim() == 3 &&
                       is_f32_contig_on(cache.chunk_keys, {d.batch, cache.chunk_keys.size(1), d.width}, device) &&
                       is_f32_contig_on(cache.chunk_values, cache.chunk_keys.shape(), device);
  SSM_CHECK(ends_ok,
            "{}: cache.chunk_keys and cache.chunk_values must be contiguous F32 [{}, capacity, {}]{}, got {} and {}",
            op, d.batch, d.width, where, describe(cache.chunk_keys), describe(cache.chunk_values));
  const int64_t* tokens = cache.tokens.data<int64_t>();
  int64_t needed = 0;
  for (int64_t b = 0; b < d.batch; ++b) {
    SSM_CHECK(tokens[b] >= 0, "{}: cache.tokens[{}] is negative ({})", op, b, tokens[b]);
    needed = std::max(needed, (tokens[b] + new_tokens) / d.chunk);
  }
  SSM_CHECK(needed <= cache.capacity(), "{}: the cache has room for {} chunks, {} are needed (RatCache::reserve)", op,
            cache.capacity(), needed);
}

RatPointers rat_pointers(const RatInputs& in) {
  return {in.q.data<float>(), in.k.data<float>(), in.v.data<float>(), in.g.data<float>(), in.gate_bias.data<float>(),
          in.q.row_stride(),  in.k.row_stride(),  in.v.row_stride(),  in.g.row_stride()};
}

RatRope::RatRope(int64_t head_dim, float theta, int64_t first, int64_t count)
    : half_(head_dim / 2), first_(first), cos_(size_t(count * half_)), sin_(size_t(count * half_)) {
  for (int64_t j = 0; j < half_; ++j) {
    // torch: inv_freq = 1 / base^(arange(0, dh, 2) / dh), angles = position * inv_freq, in float32.
    const float inv_freq = rope_inv_freq(theta, head_dim, j);
    for (int64_t i = 0; i < count; ++i) {
      const float angle = float(first + i) * inv_freq;
      cos_[size_t(i * half_ + j)] = float(std::cos(double(angle)));
      sin_[size_t(i * half_ + j)] = float(std::sin(double(angle)));
    }
  }
}

void RatRope::rotate(const float* x, int64_t p, float scale, float* out) const {
  const float* c = cos_.data() + (p - first_) * half_;
  const float* s = sin_.data() + (p - first_) * half_;
  const int64_t h = half_;
#pragma omp simd
  for (int64_t j = 0; j < h; ++j) {
    const float x1 = x[j], x2 = x[j + h];
    out[j] = scale * (x1 * c[j] - x2 * s[j]);
    out[j + h] = scale * (x2 * c[j] + x1 * s[j]);
  }
}

void RatRope::rotate_back(const float* x, int64_t p, float scale, float* out) const {
  const float* c = cos_.data() + (p - first_) * half_;
  const float* s = sin_.data() + (p - first_) * half_;
  const int64_t h = half_;
#pragma omp simd
  for (int64_t j = 0; j < h; ++j) {
    const float x1 = x[j], x2 = x[j + h];
    out[j] = scale * (x1 * c[j] + x2 * s[j]);
    out[j + h] = scale * (x2 * c[j] - x1 * s[j]);
  }
}

void rat_scan(const RatPointers& p, const RatDims& d, int64_t b, int64_t h, int64_t t0, int64_t t1, const float* k0,
              const float* v0, float* ks, float* vs) {
  const int64_t dh = d.head_dim, col = h * dh, qk_col = (h % d.groups) * dh;
  const float* bias = p.gate_bias + col;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = b * d.T + t, i = t - t0;
    const float* kr = p.k + row * p.ldk + qk_col;
    const float* vr = p.v + row * p.ldv + col;
    const float* gr = p.g + row * p.ldg + col;
    const float* kprev = i > 0 ? ks + (i - 1) * dh : k0;
    const float* vprev = i > 0 ? vs + (i - 1) * dh : v0;
    float* ko = ks + i * dh;
    float* vo = vs + i * dh;
    if (kprev) {
#pragma omp simd
      for (int64_t j = 0; j < dh; ++j) {
        float a, om;
        rat_gate(gr[j] + bias[j], a, om);
        ko[j] = a * kprev[j] + om * kr[j];
        vo[j] = a * vprev[j] + om * vr[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < dh; ++j) {
        float a, om;
        rat_gate(gr[j] + bias[j], a, om);
        ko[j] = om * kr[j];
        vo[j] = om * vr[j];
      }
    }
  }
}

void RatScratch::reserve(int64_t rows, int64_t head_dim, int64_t keys) {
  const size_t n = size_t(rows * head_dim);
  for (std::vector<float>* v : {&ks, &vs, &qr, &out})
    if (v->size() < n) v->resize(n);
  if (probs.size() < size_t(rows * keys)) probs.resize(size_t(rows * keys));
  if (run_probs.size() < size_t(rows)) run_probs.resize(size_t(rows));
}

void rat_attend(const RatPointers& p, const RatDims& d, const RatRope& rope, int64_t b, int64_t h, int64_t t0,
                int64_t t1, int64_t c, const RatEnds& ends, RatScratch& s, float* y, int64_t ldy, float* lse) {
  const int64_t n = t1 - t0, dh = d.head_dim, qk_col = (h % d.groups) * dh, W = d.width;
  const float* ends_k = c > 0 ? ends.keys + b * ends.capacity * W + h * dh : nullptr;
  const float* ends_v = c > 0 ? ends.values + b * ends.capacity * W + h * dh : nullptr;
  s.reserve(n, dh, c);
  float* qr = s.qr.data();
  float* P = s.probs.data();
  for (int64_t i = 0; i < n; ++i) rope.rotate(p.q + (b * d.T + t0 + i) * p.ldq + qk_col, c, d.scale, qr + i * dh);
  if (c > 0) gemm::sgemm(false, true, n, c, dh, qr, dh, ends_k, W, 0.0f, P, c);
  for (int64_t i = 0; i < n; ++i) {
    const float* q = p.q + (b * d.T + t0 + i) * p.ldq + qk_col;
    const float* k = s.ks.data() + i * dh;
    float run = 0.0f;
#pragma omp simd reduction(+ : run)
    for (int64_t j = 0; j < dh; ++j) run += q[j] * k[j];
    run *= d.scale;
    float* pr = P + i * c;
    float m = run;
    for (int64_t j = 0; j < c; ++j) m = std::max(m, pr[j]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < c; ++j) {
      pr[j] = vec::fast_exp(pr[j] - m);
      sum += pr[j];
    }
    const float run_e = vec::fast_exp(run - m);
    sum += run_e;
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) pr[j] *= inv;
    s.run_probs[size_t(i)] = run_e * inv;
    if (lse) lse[i] = m + std::log(sum);
  }
  if (!y) return;
  if (c > 0) gemm::sgemm(false, false, n, dh, c, P, c, ends_v, W, 0.0f, s.out.data(), dh);
  for (int64_t i = 0; i < n; ++i) {
    const float pr = s.run_probs[size_t(i)];
    const float* o = s.out.data() + i * dh;
    const float* v = s.vs.data() + i * dh;
    float* yr = y + i * ldy;
    if (c > 0) {
#pragma omp simd
      for (int64_t j = 0; j < dh; ++j) yr[j] = o[j] + pr * v[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < dh; ++j) yr[j] = pr * v[j];
    }
  }
}

}  // namespace detail

RatCache RatCache::zeros(int64_t batch, int64_t width, int64_t capacity, Device device) {
  SSM_CHECK(batch >= 0 && width > 0 && capacity >= 0, "RatCache::zeros: bad sizes batch {} width {} capacity {}", batch,
            width, capacity);
  RatCache c;
  c.chunk_keys = Tensor::zeros({batch, capacity, width}, DType::F32, device);
  c.chunk_values = Tensor::zeros({batch, capacity, width}, DType::F32, device);
  c.key = Tensor::zeros({batch, width}, DType::F32, device);
  c.value = Tensor::zeros({batch, width}, DType::F32, device);
  c.tokens = Tensor::zeros({batch}, DType::I64);
  if (device != Device::CPU) c.device_tokens = Tensor::zeros({batch}, DType::I64, device);
  return c;
}

void RatCache::reserve(int64_t wanted) {
  SSM_CHECK(chunk_keys.defined() && chunk_keys.dim() == 3 && chunk_keys.is_contiguous() && chunk_values.defined() &&
                chunk_values.shape() == chunk_keys.shape() && chunk_values.is_contiguous(),
            "RatCache::reserve: chunk_keys/chunk_values must be contiguous [B, capacity, width] (RatCache::zeros), got "
            "{} and {}",
            detail::describe(chunk_keys), detail::describe(chunk_values));
  const int64_t old = capacity();
  if (wanted <= old) return;
  const int64_t batch = chunk_keys.size(0), width = chunk_keys.size(2);
  const int64_t grown = std::max(wanted, 2 * old);  // doubling: decoding reserves one chunk at a time
  for (Tensor* t : {&chunk_keys, &chunk_values}) {
    Tensor bigger = Tensor::zeros({batch, grown, width}, DType::F32, t->device());
    if (batch > 0 && old > 0) bigger.slice(1, 0, old).copy_from(*t);
    *t = bigger;
  }
}

void RatCache::set_tokens(int64_t sequence, int64_t count) {
  SSM_CHECK(tokens.defined() && sequence >= 0 && sequence < tokens.size(0) && count >= 0,
            "RatCache::set_tokens: sequence {} of {}, count {}", sequence, tokens.defined() ? tokens.size(0) : 0,
            count);
  tokens.data<int64_t>()[sequence] = count;
  if (device_tokens.defined()) device_tokens.slice(0, sequence, 1).copy_from(tokens.slice(0, sequence, 1));
}

void rat(const RatInputs& in, RatCache* cache, Tensor& y) {
  SSM_GPU_DISPATCH(y, rat, in, cache, y);
  const char* op = "rat";
  const detail::RatDims d = detail::rat_check_inputs(op, in, 3);
  SSM_CHECK(detail::is_f32_rows(y, in.v.shape()), "{}: y must be F32 rows of v's shape {}, got {}", op,
            shape_str(in.v.shape()), detail::describe(y));
  if (cache) detail::rat_check_cache(op, *cache, d, d.T);
  const int64_t Bt = d.batch, T = d.T, H = d.heads, W = d.width, dh = d.head_dim, L = d.chunk;
  if (Bt == 0 || T == 0) return;

  // Where every sequence starts, and the running pairs the sequences start from (copied: pass 2
  // overwrites the cache's with the final ones while other chunks may still read them).
  std::vector<int64_t> start(size_t(Bt), 0);
  std::vector<float> run_k, run_v;
  if (cache) {
    std::copy_n(cache->tokens.data<int64_t>(), Bt, start.begin());
    run_k.assign(cache->key.data<float>(), cache->key.data<float>() + Bt * W);
    run_v.assign(cache->value.data<float>(), cache->value.data<float>() + Bt * W);
  }
  // Chunks of the call per sequence (the first may continue a cached one), and the positions seen.
  auto n_local = [&](int64_t b) { return (start[size_t(b)] % L + T + L - 1) / L; };
  int64_t max_local = 0, first_chunk = start[0] / L, last_chunk = 0;
  for (int64_t b = 0; b < Bt; ++b) {
    max_local = std::max(max_local, n_local(b));
    first_chunk = std::min(first_chunk, start[size_t(b)] / L);
    last_chunk = std::max(last_chunk, (start[size_t(b)] + T - 1) / L);
  }
  const detail::RatRope rope(dh, in.rope_theta, first_chunk, last_chunk - first_chunk + 1);

  // Chunk ends: the cache's lists, or scratch when there is no cache.
  std::vector<float> own_k, own_v;
  detail::RatEnds ends;
  if (cache) {
    ends = {cache->chunk_keys.data<float>(), cache->chunk_values.data<float>(), cache->capacity()};
  } else {
    own_k.resize(size_t(Bt * (T / L) * W));
    own_v.resize(own_k.size());
    ends = {own_k.data(), own_v.data(), T / L};
  }

  const detail::RatPointers p = detail::rat_pointers(in);
  float* yp = y.data<float>();
  const int64_t ldy = y.row_stride();
  const int64_t n_items = Bt * H * max_local;
  // Item → (b, h, chunk of the call j, absolute chunk c, tokens [t0, t1) of the call, the running
  // pair it starts from). Later chunks (more keys) first; the heads of one chunk in a row, so that
  // the chunk's input rows are still in cache for the next head.
  struct Item {
    int64_t b, h, j, c, t0, t1;
    const float *k0, *v0;
  };
  auto item_at = [&](int64_t index, Item& it) {
    it.b = index / (H * max_local);
    it.j = max_local - 1 - index / H % max_local;
    it.h = index % H;
    if (it.j >= n_local(it.b)) return false;
    const int64_t s = start[size_t(it.b)];
    it.c = s / L + it.j;
    it.t0 = std::max(it.c * L, s) - s;
    it.t1 = std::min((it.c + 1) * L, s + T) - s;
    const bool continues = (s + it.t0) % L != 0;
    it.k0 = continues ? run_k.data() + it.b * W + it.h * dh : nullptr;
    it.v0 = continues ? run_v.data() + it.b * W + it.h * dh : nullptr;
    return true;
  };

#pragma omp parallel
  {
    thread_local detail::RatScratch s;  // grow-only, kept between calls
    s.reserve(L, dh, last_chunk);
    // Pass 1: the ends of the chunks that finish in this call.
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < n_items; ++index) {
      Item it;
      if (!item_at(index, it) || start[size_t(it.b)] + it.t1 != (it.c + 1) * L) continue;
      detail::rat_scan(p, d, it.b, it.h, it.t0, it.t1, it.k0, it.v0, s.ks.data(), s.vs.data());
      const int64_t last = (it.t1 - it.t0 - 1) * dh, at = (it.b * ends.capacity + it.c) * W + it.h * dh;
      rope.rotate(s.ks.data() + last, it.c, 1.0f, ends.keys + at);
      std::copy_n(s.vs.data() + last, dh, ends.values + at);
    }
    // Pass 2: the attention of every chunk's queries.
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < n_items; ++index) {
      Item it;
      if (!item_at(index, it)) continue;
      detail::rat_scan(p, d, it.b, it.h, it.t0, it.t1, it.k0, it.v0, s.ks.data(), s.vs.data());
      detail::rat_attend(p, d, rope, it.b, it.h, it.t0, it.t1, it.c, ends, s, yp + (it.b * T + it.t0) * ldy + it.h * dh,
                         ldy, nullptr);
      if (cache && it.j == n_local(it.b) - 1) {
        const int64_t last = (it.t1 - it.t0 - 1) * dh, at = it.b * W + it.h * dh;
        std::copy_n(s.ks.data() + last, dh, cache->key.data<float>() + at);
        std::copy_n(s.vs.data() + last, dh, cache->value.data<float>() + at);
      }
    }
  }
  if (cache)
    for (int64_t b = 0; b < Bt; ++b) cache->tokens.data<int64_t>()[b] += T;
}

void rat_step(const RatInputs& in, RatCache& cache, Tensor& y) {
  SSM_GPU_DISPATCH(y, rat_step, in, cache, y);
  const char* op = "rat_step";
  const detail::RatDims d = detail::rat_check_inputs(op, in, 2);
  SSM_CHECK(detail::is_f32_rows(y, in.v.shape()), "{}: y must be F32 rows of v's shape {}, got {}", op,
            shape_str(in.v.shape()), detail::describe(y));
  detail::rat_check_cache(op, cache, d, 1);
  const int64_t Bt = d.batch, H = d.heads, W = d.width, dh = d.head_dim, L = d.chunk;
  if (Bt == 0) return;
  const detail::RatPointers p = detail::rat_pointers(in);
  int64_t* tokens = cache.tokens.data<int64_t>();
  // One rotation per sequence: sequences may be far apart, so no table over all their positions.
  std::vector<detail::RatRope> ropes;
  ropes.reserve(size_t(Bt));
  int64_t max_chunk = 0;
  for (int64_t b = 0; b < Bt; ++b) {
    ropes.emplace_back(dh, in.rope_theta, tokens[b] / L, 1);
    max_chunk = std::max(max_chunk, tokens[b] / L);
  }
  const detail::RatEnds ends{cache.chunk_keys.data<float>(), cache.chunk_values.data<float>(), cache.capacity()};
  float* yp = y.data<float>();
  const int64_t ldy = y.row_stride();

#pragma omp parallel if (Bt * H * (max_chunk + 1) * dh >= (1 << 16))
  {
    thread_local detail::RatScratch s;  // grow-only, kept between calls
    s.reserve(1, dh, max_chunk);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < Bt * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, c = tokens[b] / L, at = b * W + h * dh;
      const bool continues = tokens[b] % L != 0;
      float* key = cache.key.data<float>() + at;
      float* value = cache.value.data<float>() + at;
      detail::rat_scan(p, d, b, h, 0, 1, continues ? key : nullptr, continues ? value : nullptr, s.ks.data(),
                       s.vs.data());
      detail::rat_attend(p, d, ropes[size_t(b)], b, h, 0, 1, c, ends, s, yp + b * ldy + h * dh, ldy, nullptr);
      std::copy_n(s.ks.data(), dh, key);
      std::copy_n(s.vs.data(), dh, value);
      if (tokens[b] % L == L - 1) {  // the chunk ends here
        const int64_t end = (b * ends.capacity + c) * W + h * dh;
        ropes[size_t(b)].rotate(s.ks.data(), c, 1.0f, ends.keys + end);
        std::copy_n(s.vs.data(), dh, ends.values + end);
      }
    }
  }
  for (int64_t b = 0; b < Bt; ++b) ++tokens[b];
}

}  // namespace ssm::ops
