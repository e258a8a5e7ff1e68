// ops::rat (chunked forward) and ops::rat_step on the GPU. The equations are at the top of
// ops/cpu/rat.cpp; the checks are shared with the CPU (ops/cpu/rat_checks.h).
//
// Forward, per call (a chunk is independent of the others: its recurrence restarts at zero):
//   1. chunk_kernel, block (chunk of the call, head, sequence), one thread per channel pair
//      (j, j + dh/2), the in-chunk recurrence in registers. Writes the rotated queries R_c q_t, the
//      rotated key and the value at the end of every chunk that finishes (into the cache's lists, or
//      scratch), and the running pair after the call's last token (scratch: other blocks may still
//      read the cache's).
//   2. BF16: the chunk ends rounded to bf16 for the tensor cores.
//   3. Attention of the rotated queries over the chunk ends with the mask c' < c (the prefill kernels
//      of flash_attention.cuh with the ChunkEnds mask): out_inter and its log-sum-exp, T × T/L work.
//   4. merge_kernel, blocks as in 1: the recurrence again, the running score s = λ q·k̃_t, and the
//      softmax over the union: y = (e^lse out_inter + e^s ṽ_t) / (e^lse + e^s).
//   5. With a cache, finish_kernel: the running pair into the cache, device_tokens += T.
// Step: step_kernel, block (head, sequence): one token of the recurrence into the cache's running
// pair (and its chunk end when the chunk finishes), R_c q and the running score; then the
// flash-decoding kernels of flash_decode.cuh over the chunk ends, the running pair joining the merge
// as its extra key (and the merge advancing device_tokens).
//
// Token counts: the kernels read the cache's device_tokens, never the host's tokens, which only size
// scratch and check capacities (RatCache in ops.h); nothing is read back from the GPU.
#include <algorithm>
#include <climits>

#include "ops/cpu/rat_checks.h"
#include "ops/cuda/attention_args.cuh"  // seq_ptr, gpu_placement
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/flash_attention.cuh"
#include "ops/cuda/flash_decode.cuh"
#include "ops/cuda/reduce.cuh"  // block_sum

namespace ssm::ops::cuda {

namespace {

using flash::SeqPtr;

constexpr int kMaxHalf = 256;  // channel pairs per head: head sizes up to 512

// The rotation's frequency per channel pair, computed on the host exactly as the CPU does.
struct RatFreqs {
  float inv_freq[kMaxHalf];
};

template <class E>
struct RatArgs {
  SeqPtr<const E> q, k;     // [B, T, G*dh] ([B, G*dh] for the step)
  SeqPtr<const E> v, g;     // [B, T, W]
  const float* gate_bias;   // [W]
  const int64_t* tokens;    // [B] on the GPU: tokens before this call, or null (from 0, no cache)
  const float* run_key;     // [B, W]: the running pair the call starts from (the cache's), or null
  const float* run_value;
  int T, heads, groups, head_dim, chunk;
  float scale;
  __host__ __device__ int64_t width() const { return int64_t(heads) * head_dim; }
};

// The channel pair (j, j + dh/2) of head h: its columns in the W-wide and the G*dh-wide tensors.
struct Pair {
  int64_t col1, col2, qk1, qk2;
  __device__ Pair(int h, int j, int head_dim, int groups) {
    col1 = int64_t(h) * head_dim + j;
    col2 = col1 + head_dim / 2;
    qk1 = int64_t(h % groups) * head_dim + j;
    qk2 = qk1 + head_dim / 2;
  }
};

// The running key and value of a channel pair.
struct Running {
  float k1 = 0.0f, k2 = 0.0f, v1 = 0.0f, v2 = 0.0f;
};

// One token of the recurrence: a = σ(g + gate_bias), k̃ = a k̃ + (1 - a) k, ṽ = a ṽ + (1 - a) v.
template <class T>
__device__ __forceinline__ void advance(const RatArgs<T>& a, const Pair& p, int b, int64_t t, float bias1,
                                        float bias2, Running& r) {
  const T* g = a.g.row(b, t);
  const T* k = a.k.row(b, t);
  const T* v = a.v.row(b, t);
  const float e1 = expf(-(to_float(g[p.col1]) + bias1)), e2 = expf(-(to_float(g[p.col2]) + bias2));
  const float a1 = 1.0f / (1.0f + e1), a2 = 1.0f / (1.0f + e2);
  const float om1 = e1 * a1, om2 = e2 * a2;  // 1 - a without the cancellation
  r.k1 = a1 * r.k1 + om1 * to_float(k[p.qk1]);
  r.k2 = a2 * r.k2 + om2 * to_float(k[p.qk2]);
  r.v1 = a1 * r.v1 + om1 * to_float(v[p.col1]);
  r.v2 = a2 * r.v2 + om2 * to_float(v[p.col2]);
}

// cos and sin of chunk index c's angle for a pair, as the CPU rounds them.
__device__ __forceinline__ void rotation(float inv_freq, int64_t c, float& cs, float& sn) {
  const float angle = float(c) * inv_freq;
  cs = float(cos(double(angle)));
  sn = float(sin(double(angle)));
}

// The tokens [t0, t1) of the call in chunk c, the j-th chunk the call touches of a sequence that
// starts at `start` tokens; false when the sequence's part of the call has fewer chunks.
struct Span {
  int64_t c, t0, t1;
  bool continues;  // starts from the running pair of earlier tokens
  bool finishes;   // the chunk's last token is in the call
  bool last;       // the call's last chunk
};
__device__ __forceinline__ bool span_of(int64_t start, int T, int L, int j, Span& s) {
  const int64_t n_local = (start % L + T + L - 1) / L;
  if (j >= n_local) return false;
  s.c = start / L + j;
  s.t0 = max(s.c * L, start) - start;
  s.t1 = min((s.c + 1) * L, start + T) - start;
  s.continues = (start + s.t0) % L != 0;
  s.finishes = start + s.t1 == (s.c + 1) * L;
  s.last = j == n_local - 1;
  return true;
}

template <class T>
__device__ __forceinline__ Running running_start(const RatArgs<T>& a, const Pair& p, int b, bool continues) {
  Running r;
  if (continues) {
    const int64_t row = int64_t(b) * a.width();
    r = {a.run_key[row + p.col1], a.run_key[row + p.col2], a.run_value[row + p.col1], a.run_value[row + p.col2]};
  }
  return r;
}

// Step 1 of the forward (see the top of the file). Grid (chunks of the call, heads, batch).
template <class T>
__global__ void chunk_kernel(RatArgs<T> a, RatFreqs f, SeqPtr<T> q_rot, float* ends_k, float* ends_v,
                             int64_t ends_capacity, float* final_pair) {
  const int h = blockIdx.y, b = blockIdx.z, j = threadIdx.x;
  if (j >= a.head_dim / 2) return;
  Span s;
  if (!span_of(a.tokens ? a.tokens[b] : 0, a.T, a.chunk, blockIdx.x, s)) return;
  const Pair p(h, j, a.head_dim, a.groups);
  const float bias1 = a.gate_bias[p.col1], bias2 = a.gate_bias[p.col2];
  float cs, sn;
  rotation(f.inv_freq[j], s.c, cs, sn);
  Running r = running_start(a, p, b, s.continues);
  for (int64_t t = s.t0; t < s.t1; ++t) {
    advance(a, p, b, t, bias1, bias2, r);
    const T* q = a.q.row(b, t);
    const float q1 = to_float(q[p.qk1]), q2 = to_float(q[p.qk2]);
    T* out = q_rot.row(b, t);
    out[p.col1] = from_float<T>(q1 * cs - q2 * sn);
    out[p.col2] = from_float<T>(q2 * cs + q1 * sn);
  }
  const int64_t W = a.width();
  if (s.finishes) {
    const int64_t at = (int64_t(b) * ends_capacity + s.c) * W;
    ends_k[at + p.col1] = r.k1 * cs - r.k2 * sn;
    ends_k[at + p.col2] = r.k2 * cs + r.k1 * sn;
    ends_v[at + p.col1] = r.v1;
    ends_v[at + p.col2] = r.v2;
  }
  if (s.last && final_pair) {
    float* keys = final_pair + int64_t(b) * 2 * W;
    keys[p.col1] = r.k1;
    keys[p.col2] = r.k2;
    keys[W + p.col1] = r.v1;
    keys[W + p.col2] = r.v2;
  }
}

// Rows [0, rows) of every sequence's chunk ends ([B, capacity, W] f32) as bf16 [B, rows, W].
__global__ void ends_to_bf16_kernel(const float* src, int64_t capacity, bf16* dst, int64_t rows, int64_t width,
                                    int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t b = i / (rows * width), rest = i - b * rows * width;
  dst[i] = __float2bfloat16(src[b * capacity * width + rest]);
}

// RAT's visibility over the chunk ends: query t of sequence b (in chunk (start + t) / L) sees the
// ends of the chunks before its own.
struct ChunkEnds {
  const int64_t* tokens;  // or null: every sequence from 0
  int64_t chunk;
  __device__ __forceinline__ int64_t last(int b, int64_t t) const { return ((tokens ? tokens[b] : 0) + t) / chunk - 1; }
  __device__ __forceinline__ int64_t first(int, int64_t) const { return 0; }
};

// Step 4 of the forward. Grid as chunk_kernel; blockDim a multiple of 32 (block_sum).
template <class T>
__global__ void merge_kernel(RatArgs<T> a, SeqPtr<const T> out_inter, const float* lse, SeqPtr<T> y) {
  const int h = blockIdx.y, b = blockIdx.z, j = threadIdx.x;
  Span s;
  if (!span_of(a.tokens ? a.tokens[b] : 0, a.T, a.chunk, blockIdx.x, s)) return;  // the whole block
  const bool active = j < a.head_dim / 2;
  const Pair p(h, active ? j : 0, a.head_dim, a.groups);
  const float bias1 = active ? a.gate_bias[p.col1] : 0.0f, bias2 = active ? a.gate_bias[p.col2] : 0.0f;
  Running r = active ? running_start(a, p, b, s.continues) : Running{};
  for (int64_t t = s.t0; t < s.t1; ++t) {
    float part = 0.0f;
    if (active) {
      advance(a, p, b, t, bias1, bias2, r);
      const T* q = a.q.row(b, t);
      part = to_float(q[p.qk1]) * r.k1 + to_float(q[p.qk2]) * r.k2;
    }
    const float s_run = block_sum(part) * a.scale;
    if (!active) continue;
    const float l_inter = lse[(int64_t(b) * a.heads + h) * a.T + t];
    const float mx = fmaxf(l_inter, s_run);
    const float w_inter = expf(l_inter - mx), w_run = expf(s_run - mx), inv = 1.0f / (w_inter + w_run);
    const T* o = out_inter.row(b, t);
    T* out = y.row(b, t);
    out[p.col1] = from_float<T>((w_inter * to_float(o[p.col1]) + w_run * r.v1) * inv);
    out[p.col2] = from_float<T>((w_inter * to_float(o[p.col2]) + w_run * r.v2) * inv);
  }
}

// Step 5 of the forward: final_pair [B, 2, W] into the cache's running pair; tokens += T.
__global__ void finish_kernel(const float* final_pair, float* key, float* value, int64_t* tokens, int64_t width,
                              int64_t total, int T) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t b = i / width, c = i - b * width;
  key[i] = final_pair[b * 2 * width + c];
  value[i] = final_pair[b * 2 * width + width + c];
  if (c == 0) tokens[b] += T;
}

// The step's recurrence and the operands of its attention. Grid (heads, batch); blockDim a multiple
// of 32. q_rot [B, W] f32 gets R_c q; run_score [B, H] the running score λ q·k̃ in the exp2 domain.
template <class T>
__global__ void step_kernel(RatArgs<T> a, RatFreqs f, float* key, float* value, float* ends_k, float* ends_v,
                            int64_t capacity, float* q_rot, float* run_score) {
  const int h = blockIdx.x, b = blockIdx.y, j = threadIdx.x;
  const bool active = j < a.head_dim / 2;
  const int64_t n = a.tokens[b], c = n / a.chunk, W = a.width();
  float part = 0.0f;
  if (active) {
    const Pair p(h, j, a.head_dim, a.groups);
    Running r = running_start(a, p, b, n % a.chunk != 0);
    advance(a, p, b, 0, a.gate_bias[p.col1], a.gate_bias[p.col2], r);
    const int64_t row = int64_t(b) * W;
    key[row + p.col1] = r.k1;
    key[row + p.col2] = r.k2;
    value[row + p.col1] = r.v1;
    value[row + p.col2] = r.v2;
    float cs, sn;
    rotation(f.inv_freq[j], c, cs, sn);
    if (n % a.chunk == a.chunk - 1 && c < capacity) {  // the chunk ends here
      const int64_t at = (int64_t(b) * capacity + c) * W;
      ends_k[at + p.col1] = r.k1 * cs - r.k2 * sn;
      ends_k[at + p.col2] = r.k2 * cs + r.k1 * sn;
      ends_v[at + p.col1] = r.v1;
      ends_v[at + p.col2] = r.v2;
    }
    const T* q = a.q.row(b, 0);
    const float q1 = to_float(q[p.qk1]), q2 = to_float(q[p.qk2]);
    q_rot[row + p.col1] = q1 * cs - q2 * sn;
    q_rot[row + p.col2] = q2 * cs + q1 * sn;
    part = q1 * r.k1 + q2 * r.k2;
  }
  const float s = block_sum(part);
  if (threadIdx.x == 0) run_score[int64_t(b) * a.heads + h] = s * a.scale * flash::kLog2e;
}

// The step's chunk ends: rows [0, tokens / L) of the cache's lists.
struct EndRows {
  const int64_t* tokens;
  int64_t chunk, capacity;
  __device__ __forceinline__ flash::RowRange operator()(int b) const {
    return {0, min(capacity, tokens[b] / chunk)};
  }
};

// The running pair as the decode merge's extra key; the merge then advances the sequence's count.
struct RunningPair : flash::NoExtra {
  const float* score_log2;  // [B, H]
  const float* values;      // [B, W]: ṽ after this token
  int64_t* tokens;
  int heads, head_dim;
  __device__ __forceinline__ float score(int b, int h) const { return score_log2[int64_t(b) * heads + h]; }
  __device__ __forceinline__ float value(int b, int h, int c) const {
    return values[(int64_t(b) * heads + h) * head_dim + c];
  }
  __device__ __forceinline__ void finish(int b, int h) const {
    if (h == 0) tokens[b] += 1;
  }
};

// The checks both ops share on top of rat_check_inputs; returns the frequency table.
RatFreqs check_and_freqs(const char* op, const RatInputs& in, const detail::RatDims& d, const Tensor& y,
                         const detail::Placement& where) {
  SSM_CHECK(detail::is_rows(y, where) && y.shape() == in.v.shape(), "{}: y must be {} rows of v's shape {}, got {}",
            op, where.str(), shape_str(in.v.shape()), detail::describe(y));
  SSM_CHECK(d.head_dim <= 2 * kMaxHalf, "{}: the GPU takes head sizes up to {}, got {}", op, 2 * kMaxHalf,
            d.head_dim);
  SSM_CHECK(d.batch <= 65535 && d.heads <= 65535 && d.T < INT_MAX && d.chunk < INT_MAX,
            "{}: the GPU kernels take batch and n_heads up to 65535 and T, chunk_size below 2^31, got batch {} "
            "n_heads {} T {} chunk_size {}",
            op, d.batch, d.heads, d.T, d.chunk);
  RatFreqs f{};
  for (int64_t j = 0; j < d.head_dim / 2; ++j) f.inv_freq[j] = detail::rope_inv_freq(in.rope_theta, d.head_dim, j);
  return f;
}

template <class T>
RatArgs<T> rat_args(const RatInputs& in, const detail::RatDims& d, const RatCache* cache) {
  return {seq_ptr<const T>(in.q),
          seq_ptr<const T>(in.k),
          seq_ptr<const T>(in.v),
          seq_ptr<const T>(in.g),
          in.gate_bias.data<float>(),
          cache ? cache->device_tokens.data<int64_t>() : nullptr,
          cache ? cache->key.data<float>() : nullptr,
          cache ? cache->value.data<float>() : nullptr,
          int(d.T),
          int(d.heads),
          int(d.groups),
          int(d.head_dim),
          int(d.chunk),
          d.scale};
}

// Threads per block for one thread per channel pair: a multiple of 32 (block_sum).
int pair_threads(const detail::RatDims& d) { return int((d.head_dim / 2 + 31) / 32 * 32); }

}  // namespace

void rat(const RatInputs& in, RatCache* cache, Tensor& y) {
  constexpr const char* op = "rat";
  const detail::Placement where = gpu_placement(op, in.v, "v");
  const detail::RatDims d = detail::rat_check_inputs(op, in, 3, where);
  const RatFreqs freqs = check_and_freqs(op, in, d, y, where);
  if (cache) detail::rat_check_cache(op, *cache, d, d.T, Device::CUDA);
  if (d.batch == 0 || d.T == 0) return;
  const int64_t B = d.batch, T = d.T, H = d.heads, W = d.width, L = d.chunk;

  // Sizes from the host's counts (the kernels read the GPU's): the chunks a sequence's part of the
  // call can touch, and the chunk-end rows its queries can see.
  int64_t furthest = 0;
  if (cache)
    for (int64_t b = 0; b < B; ++b) furthest = std::max(furthest, cache->tokens.data<int64_t>()[b]);
  const int64_t local_chunks = cache ? (T + 2 * L - 2) / L : (T + L - 1) / L;
  const int64_t end_rows = (furthest + T) / L;

  // Chunk ends: the cache's lists, or scratch.
  Tensor own_k, own_v;
  float *ends_k, *ends_v;
  int64_t ends_capacity;
  if (cache) {
    ends_k = cache->chunk_keys.data<float>();
    ends_v = cache->chunk_values.data<float>();
    ends_capacity = cache->capacity();
  } else {
    own_k = Tensor::empty({B, std::max<int64_t>(1, end_rows), W}, DType::F32, Device::CUDA);
    own_v = Tensor::empty(own_k.shape(), DType::F32, Device::CUDA);
    ends_k = own_k.data<float>();
    ends_v = own_v.data<float>();
    ends_capacity = own_k.size(1);
  }
  Tensor q_rot = Tensor::empty({B, T, W}, where.dtype, Device::CUDA);
  Tensor out_inter = Tensor::empty({B, T, W}, where.dtype, Device::CUDA);
  Tensor lse = Tensor::empty({B, H, T}, DType::F32, Device::CUDA);
  Tensor final_pair = cache ? Tensor::empty({B, 2, W}, DType::F32, Device::CUDA) : Tensor{};

  with_activation_type(where.dtype, op, [&]<class T_>() {
    const RatArgs<T_> args = rat_args<T_>(in, d, cache);
    const dim3 grid{unsigned(local_chunks), unsigned(H), unsigned(B)};
    const int threads = pair_threads(d);
    chunk_kernel<T_><<<grid, threads, 0, stream()>>>(args, freqs, seq_ptr<T_>(q_rot), ends_k, ends_v, ends_capacity,
                                                     cache ? final_pair.data<float>() : nullptr);
    SSM_CUDA_CHECK_LAUNCH("{}: chunk recurrence of v {}", op, shape_str(in.v.shape()));

    // The chunk ends as the attention reads them: f32 in place, or bf16 copies for the tensor cores.
    SeqPtr<const T_> keys{}, values{};
    Tensor ends16_k, ends16_v;
    if constexpr (sizeof(T_) == 2) {
      ends16_k = Tensor::empty({B, std::max<int64_t>(1, end_rows), W}, DType::BF16, Device::CUDA);
      ends16_v = Tensor::empty(ends16_k.shape(), DType::BF16, Device::CUDA);
      const int64_t total = B * end_rows * W;
      if (total > 0) {
        ends_to_bf16_kernel<<<blocks_for(total, 256), 256, 0, stream()>>>(ends_k, ends_capacity,
                                                                          ends16_k.data<bf16>(), end_rows, W, total);
        ends_to_bf16_kernel<<<blocks_for(total, 256), 256, 0, stream()>>>(ends_v, ends_capacity,
                                                                          ends16_v.data<bf16>(), end_rows, W, total);
        SSM_CUDA_CHECK_LAUNCH("{}: chunk ends to bf16 ({} rows)", op, end_rows);
      }
      keys = {ends16_k.data<bf16>(), end_rows * W, W};
      values = {ends16_v.data<bf16>(), end_rows * W, W};
    } else {
      keys = {ends_k, ends_capacity * W, W};
      values = {ends_v, ends_capacity * W, W};
    }
    const flash::FlashArgs<T_> attend{seq_ptr<const T_>(q_rot),
                                      keys,
                                      values,
                                      seq_ptr<T_>(out_inter),
                                      lse.data<float>(),
                                      int(B),
                                      int(T),
                                      int(std::min<int64_t>(end_rows, INT_MAX - 1)),
                                      int(H),
                                      int(H),
                                      int(d.head_dim),
                                      d.scale * flash::kLog2e};
    SSM_CUDA_CHECK(flash::launch(attend, ChunkEnds{args.tokens, L}, stream()), "{}: attention over {} chunk ends",
                   op, end_rows);

    merge_kernel<T_><<<grid, threads, 0, stream()>>>(args, seq_ptr<const T_>(out_inter), lse.data<float>(),
                                                     seq_ptr<T_>(y));
    SSM_CUDA_CHECK_LAUNCH("{}: merge of v {}", op, shape_str(in.v.shape()));
    if (cache) {
      finish_kernel<<<blocks_for(B * W, 256), 256, 0, stream()>>>(final_pair.data<float>(), cache->key.data<float>(),
                                                                  cache->value.data<float>(),
                                                                  cache->device_tokens.data<int64_t>(), W, B * W,
                                                                  int(T));
      SSM_CUDA_CHECK_LAUNCH("{}: cache update of batch {}", op, B);
    }
  });
  if (cache)
    for (int64_t b = 0; b < B; ++b) cache->tokens.data<int64_t>()[b] += T;
}

void rat_step(const RatInputs& in, RatCache& cache, Tensor& y) {
  constexpr const char* op = "rat_step";
  const detail::Placement where = gpu_placement(op, in.v, "v");
  const detail::RatDims d = detail::rat_check_inputs(op, in, 2, where);
  const RatFreqs freqs = check_and_freqs(op, in, d, y, where);
  detail::rat_check_cache(op, cache, d, 1, Device::CUDA);
  if (d.batch == 0) return;
  const int64_t B = d.batch, H = d.heads, W = d.width, capacity = cache.capacity();

  const int splits = flash::decode_splits(int(B), int(H), capacity, multiprocessor_count());
  Tensor q_rot = Tensor::empty({B, W}, DType::F32, Device::CUDA);
  Tensor run_score = Tensor::empty({B, H}, DType::F32, Device::CUDA);
  Tensor partials = Tensor::empty({B, H, splits, d.head_dim + 2}, DType::F32, Device::CUDA);
  int64_t* tokens = cache.device_tokens.data<int64_t>();

  with_activation_type(where.dtype, op, [&]<class T_>() {
    const RatArgs<T_> args = rat_args<T_>(in, d, &cache);
    step_kernel<T_><<<dim3{unsigned(H), unsigned(B)}, pair_threads(d), 0, stream()>>>(
        args, freqs, cache.key.data<float>(), cache.value.data<float>(), cache.chunk_keys.data<float>(),
        cache.chunk_values.data<float>(), capacity, q_rot.data<float>(), run_score.data<float>());
    SSM_CUDA_CHECK_LAUNCH("{}: recurrence of v {}", op, shape_str(in.v.shape()));

    const flash::DecodeArgs<float, float> attend{{q_rot.data<float>(), W, 0},
                                                 {cache.chunk_keys.data<float>(), capacity * W, W},
                                                 {cache.chunk_values.data<float>(), capacity * W, W},
                                                 partials.data<float>(),
                                                 int(B),
                                                 int(H),
                                                 int(H),
                                                 int(d.head_dim),
                                                 splits,
                                                 d.scale * flash::kLog2e};
    RunningPair running{};
    running.score_log2 = run_score.data<float>();
    running.values = cache.value.data<float>();
    running.tokens = tokens;
    running.heads = int(H);
    running.head_dim = int(d.head_dim);
    SSM_CUDA_CHECK(flash::launch_decode(attend, EndRows{tokens, d.chunk, capacity}, seq_ptr<T_>(y), running, stream()),
                   "{}: attention over the chunk ends (capacity {}, {} splits)", op, capacity, splits);
  });
  for (int64_t b = 0; b < B; ++b) ++cache.tokens.data<int64_t>()[b];
}

}  // namespace ssm::ops::cuda
