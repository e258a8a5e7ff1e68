// ops::mlstm and ops::mlstm_step on the GPU (xLSTM's matrix memory; the equations are in ops.h and ops/cpu/mlstm.cpp).
// q, k and v in the activation dtype; the gates, h, the state and all arithmetic F32 (cuda_ops.h says why).
//
// The forward runs in chunks of at most kMaxChunk tokens, the CPU's chunkwise form split in two kernels:
//   - chunk_states_kernel: a block per (sequence, head, 64 x 64 tile of C) walks the chunks in order, writing each
//     chunk's starting state (its tile of C; n and m where the tile owns them) and then advancing it:
//     C' = e^{g+m−m'} C + Σ_s e^{a_s−m'} k_s v_sᵀ. Every block of a head computes the gates' scalars itself, with the
//     same arithmetic, so they agree to the bit.
//   - chunk_outputs_kernel: a block per (sequence, head, chunk, 64 columns of h) forms the chunk's scores q̂_t·k_s and
//     its starting state's share q̂_tᵀC over dk in slabs of 32, weighs the scores by their decays, and adds their
//     product with v.
// The chunk states take B·H·chunks·dk·dv floats, so a long sequence runs as segments of at most kSegmentChunks chunks
// whose states fit kStateBudget bytes, the state carried from one to the next.
//
// The step: step_rows_kernel, a block per (sequence, head, 32 rows of C), updates its rows of C and n and sums its
// rows' share of q̂ᵀC and q̂·n; step_finish_kernel adds the shares in order, divides and writes m, which every block of
// the first kernel has read.
#include <algorithm>
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/reduce.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kMaxChunk = 64;
constexpr int kTile = 64;      // rows and columns of C a states block owns; columns of h an outputs block writes
constexpr int kSlab = 32;      // dk rows an outputs block stages at a time
constexpr int kThreads = 256;  // 16 x 16: each thread 4 x 4 elements of a 64 x 64 tile
constexpr int kStepRows = 32;
constexpr int kStepThreads = 128;
constexpr int64_t kStateBudget = int64_t(256) << 20;
constexpr int64_t kSegmentChunks = 64;

__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }

// The inputs of one call as the kernels see them.
template <class T>
struct Args {
  Rows<const T> q, k, v;
  Rows<const float> i, f;
  Rows<float> h;
  int64_t T_len, H, dk, dv;
  float eps, scale;
};

// The gates of the chunk of nc tokens starting at token t0 of sequence b, head hd, by warp 0: b_cum[t] = Σ_{s≤t}
// logσ(f_s) and ig[t] = i_t for t < nc. The caller synchronises before reading.
template <class T>
__device__ void load_chunk_gates(const Args<T>& a, int64_t b, int64_t hd, int64_t t0, int nc, float* b_cum, float* ig) {
  if (threadIdx.x >= 32) return;
  const int lane = int(threadIdx.x);
  float carry = 0.0f;
  for (int base = 0; base < nc; base += 32) {
    const int t = base + lane;
    const int64_t row = b * a.T_len + t0 + t;
    float v = t < nc ? log_sigmoid(a.f.at(row, hd)) : 0.0f;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const float up = __shfl_up_sync(0xffffffffu, v, offset);
      if (lane >= offset) v += up;
    }
    v += carry;
    if (t < nc) {
      b_cum[t] = v;
      ig[t] = a.i.at(row, hd);
    }
    carry = __shfl_sync(0xffffffffu, v, 31);
  }
}

// Chunk c's starting state: C [dk, dv], n [dk] and m, with the segment's final m after the last chunk.
struct ChunkStates {
  float* C;  // [B·H, chunks, dk, dv]
  float* n;  // [B·H, chunks, dk]
  float* m;  // [B·H, chunks + 1]
  int chunks;
};

struct State {
  float *C, *n, *m;  // [B·H, dk, dv], [B·H, dk], [B·H]
};

// grid (row tiles x column tiles, B·H); walks the chunks of tokens [t_begin, t_begin + chunks·L).
template <class T>
__global__ void __launch_bounds__(kThreads)
    chunk_states_kernel(Args<T> a, State state, ChunkStates out, int64_t t_begin, int L, int64_t col_tiles) {
  __shared__ float k_tile[kMaxChunk][kTile], v_tile[kMaxChunk][kTile];
  __shared__ float b_cum[kMaxChunk], ig[kMaxChunk], weight[kMaxChunk];
  __shared__ float decay_shared;
  const int64_t bh = blockIdx.y, b = bh / a.H, hd = bh % a.H;
  const int64_t r0 = int64_t(blockIdx.x / col_tiles) * kTile, c0 = int64_t(blockIdx.x % col_tiles) * kTile;
  const int tx = int(threadIdx.x % 16), ty = int(threadIdx.x / 16);
  const bool owns_n = c0 == 0 && tx == 0, owns_m = blockIdx.x == 0 && threadIdx.x == 0;
  float C[4][4], n[4];
  float* C_state = state.C + bh * a.dk * a.dv;
#pragma unroll
  for (int y = 0; y < 4; ++y) {
    const int64_t r = r0 + ty + 16 * y;
    n[y] = owns_n && r < a.dk ? state.n[bh * a.dk + r] : 0.0f;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int64_t col = c0 + tx + 16 * x;
      C[y][x] = r < a.dk && col < a.dv ? C_state[r * a.dv + col] : 0.0f;
    }
  }
  float m = state.m[bh];
  for (int c = 0; c < out.chunks; ++c) {
    const int64_t t0 = t_begin + int64_t(c) * L;
    const int nc = int(std::min<int64_t>(L, a.T_len - t0));
    // The chunk's starting state.
    float* C_out = out.C + (bh * out.chunks + c) * a.dk * a.dv;
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      const int64_t r = r0 + ty + 16 * y;
      if (r >= a.dk) continue;
      if (owns_n) out.n[(bh * out.chunks + c) * a.dk + r] = n[y];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int64_t col = c0 + tx + 16 * x;
        if (col < a.dv) C_out[r * a.dv + col] = C[y][x];
      }
    }
    if (owns_m) out.m[bh * (out.chunks + 1) + c] = m;
    // The chunk's k and v tiles, zero beyond the chunk and the head.
    for (int e = int(threadIdx.x); e < kMaxChunk * kTile; e += kThreads) {
      const int s = e / kTile, col = e % kTile;
      const int64_t row = b * a.T_len + t0 + s;
      const bool in_chunk = s < nc;
      k_tile[s][col] = in_chunk && r0 + col < a.dk ? to_float(a.k.at(row, hd * a.dk + r0 + col)) : 0.0f;
      v_tile[s][col] = in_chunk && c0 + col < a.dv ? to_float(a.v.at(row, hd * a.dv + c0 + col)) : 0.0f;
    }
    load_chunk_gates(a, b, hd, t0, nc, b_cum, ig);
    __syncwarp();
    float m_next = 0.0f;
    if (threadIdx.x < 32) {
      // m' = max(g + m, max_s (g − b_s + i_s)), g the chunk's whole logσ(f) sum.
      const float g = b_cum[nc - 1];
      float a_max = g + m;
      for (int s = int(threadIdx.x); s < nc; s += 32) a_max = fmaxf(a_max, g - b_cum[s] + ig[s]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) a_max = fmaxf(a_max, __shfl_xor_sync(0xffffffffu, a_max, offset));
      m_next = a_max;
      for (int s = int(threadIdx.x); s < kMaxChunk; s += 32)
        weight[s] = s < nc ? expf(g - b_cum[s] + ig[s] - m_next) : 0.0f;
      if (threadIdx.x == 0) decay_shared = expf(g + m - m_next);
    }
    __syncthreads();
    m = __shfl_sync(0xffffffffu, m_next,
                    0);  // warp 0's lanes keep m; the others never read it
    const float decay = decay_shared;
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      n[y] *= decay;
#pragma unroll
      for (int x = 0; x < 4; ++x) C[y][x] *= decay;
    }
    for (int s = 0; s < nc; ++s) {
      const float w = weight[s];
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        const float wk = w * k_tile[s][ty + 16 * y];
        n[y] += wk;
#pragma unroll
        for (int x = 0; x < 4; ++x) C[y][x] = fmaf(wk, v_tile[s][tx + 16 * x], C[y][x]);
      }
    }
    __syncthreads();  // the tiles and weights are rewritten by the next chunk
  }
  // The carried state (each block writes only what it owns; m goes through out.m, read by the outputs kernel, because
  // other blocks of this head may still be reading state.m).
#pragma unroll
  for (int y = 0; y < 4; ++y) {
    const int64_t r = r0 + ty + 16 * y;
    if (r >= a.dk) continue;
    if (owns_n) state.n[bh * a.dk + r] = n[y];
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int64_t col = c0 + tx + 16 * x;
      if (col < a.dv) C_state[r * a.dv + col] = C[y][x];
    }
  }
  if (owns_m) out.m[bh * (out.chunks + 1) + out.chunks] = m;
}

// grid (column tiles of h, chunks, B·H).
template <class T>
__global__ void __launch_bounds__(kThreads)
    chunk_outputs_kernel(Args<T> a, ChunkStates states, float* state_m, int64_t t_begin, int L) {
  __shared__ float qk_slab[2][kMaxChunk][kSlab + 1];  // q then k; v [kMaxChunk][kTile] reuses it
  __shared__ float C_slab[kSlab][kTile], n_slab[kSlab];
  __shared__ float W[kMaxChunk][kMaxChunk + 1];
  __shared__ float b_cum[kMaxChunk], ig[kMaxChunk], m_t[kMaxChunk], inter[kMaxChunk], den[kMaxChunk];
  const int64_t bh = blockIdx.z, b = bh / a.H, hd = bh % a.H, c = blockIdx.y;
  const int64_t c0 = int64_t(blockIdx.x) * kTile, t0 = t_begin + c * L;
  const int nc = int(std::min<int64_t>(L, a.T_len - t0));
  const int tx = int(threadIdx.x % 16), ty = int(threadIdx.x / 16);
  const float m0 = states.m[bh * (states.chunks + 1) + c];
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
    state_m[bh] = states.m[bh * (states.chunks + 1) + states.chunks];
  load_chunk_gates(a, b, hd, t0, nc, b_cum, ig);
  __syncwarp();
  if (threadIdx.x < 32) {
    // m_t = max(b_t + m0, max_{s≤t} (b_t − b_s + i_s)): a running maximum of i_s − b_s.
    float running = -INFINITY;
    for (int base = 0; base < nc; base += 32) {
      const int t = base + int(threadIdx.x);
      float v = t < nc ? ig[t] - b_cum[t] : -INFINITY;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const float up = __shfl_up_sync(0xffffffffu, v, offset);
        if (int(threadIdx.x) >= offset) v = fmaxf(v, up);
      }
      v = fmaxf(v, running);
      if (t < nc) {
        const float mt = fmaxf(b_cum[t] + m0, b_cum[t] + v);
        m_t[t] = mt;
        inter[t] = expf(b_cum[t] + m0 - mt) * a.scale;
      }
      running = __shfl_sync(0xffffffffu, v, 31);
    }
  }
  float S[4][4] = {}, QC[4][4] = {}, qn = 0.0f;
  const float* C_start = states.C + (bh * states.chunks + c) * a.dk * a.dv;
  const float* n_start = states.n + (bh * states.chunks + c) * a.dk;
  for (int64_t r0 = 0; r0 < a.dk; r0 += kSlab) {
    __syncthreads();  // the slabs of the last pass have been read
    for (int e = int(threadIdx.x); e < kMaxChunk * kSlab; e += kThreads) {
      const int t = e / kSlab, rr = e % kSlab;
      const bool in = t < nc && r0 + rr < a.dk;
      const int64_t row = b * a.T_len + t0 + t;
      qk_slab[0][t][rr] = in ? to_float(a.q.at(row, hd * a.dk + r0 + rr)) : 0.0f;
      qk_slab[1][t][rr] = in ? to_float(a.k.at(row, hd * a.dk + r0 + rr)) : 0.0f;
    }
    for (int e = int(threadIdx.x); e < kSlab * kTile; e += kThreads) {
      const int rr = e / kTile, col = e % kTile;
      C_slab[rr][col] = r0 + rr < a.dk && c0 + col < a.dv ? C_start[(r0 + rr) * a.dv + c0 + col] : 0.0f;
    }
    if (threadIdx.x < kSlab) n_slab[threadIdx.x] = r0 + threadIdx.x < a.dk ? n_start[r0 + threadIdx.x] : 0.0f;
    __syncthreads();
    for (int rr = 0; rr < kSlab; ++rr) {
      float q[4];
#pragma unroll
      for (int y = 0; y < 4; ++y) q[y] = qk_slab[0][ty + 16 * y][rr];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const float k = qk_slab[1][tx + 16 * x][rr], C = C_slab[rr][tx + 16 * x];
#pragma unroll
        for (int y = 0; y < 4; ++y) {
          S[y][x] = fmaf(q[y], k, S[y][x]);
          QC[y][x] = fmaf(q[y], C, QC[y][x]);
        }
      }
    }
    if (threadIdx.x < kMaxChunk)
      for (int rr = 0; rr < kSlab; ++rr) qn = fmaf(qk_slab[0][threadIdx.x][rr], n_slab[rr], qn);
  }
  // The scores weighed by their decays: W[t][s] = q̂_t·k_s e^{b_t − b_s + i_s − m_t} for s ≤ t.
#pragma unroll
  for (int y = 0; y < 4; ++y) {
    const int t = ty + 16 * y;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int s = tx + 16 * x;
      W[t][s] = s <= t && t < nc ? S[y][x] * a.scale * expf(b_cum[t] - b_cum[s] + ig[s] - m_t[t]) : 0.0f;
    }
  }
  __syncthreads();  // W written; the q and k slabs read
  float(*v_tile)[kTile] = reinterpret_cast<float(*)[kTile]>(&qk_slab[0][0][0]);
  for (int e = int(threadIdx.x); e < kMaxChunk * kTile; e += kThreads) {
    const int s = e / kTile, col = e % kTile;
    v_tile[s][col] = s < nc && c0 + col < a.dv ? to_float(a.v.at(b * a.T_len + t0 + s, hd * a.dv + c0 + col)) : 0.0f;
  }
  if (threadIdx.x < kMaxChunk) {
    const int t = int(threadIdx.x);
    float sum = t < nc ? inter[t] * qn : 0.0f;
    for (int s = 0; s <= t && s < nc; ++s) sum += W[t][s];
    den[t] = sum;
  }
  __syncthreads();
#pragma unroll
  for (int y = 0; y < 4; ++y) {
    const int t = ty + 16 * y;
    if (t >= nc) continue;
    float num[4];
#pragma unroll
    for (int x = 0; x < 4; ++x) num[x] = QC[y][x] * inter[t];
    for (int s = 0; s <= t; ++s) {
      const float w = W[t][s];
#pragma unroll
      for (int x = 0; x < 4; ++x) num[x] = fmaf(w, v_tile[s][tx + 16 * x], num[x]);
    }
    const float denom = fmaxf(fabsf(den[t]), expf(-m_t[t])) + a.eps;
    const int64_t row = b * a.T_len + t0 + t;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int64_t col = c0 + tx + 16 * x;
      if (col < a.dv) a.h.at(row, hd * a.dv + col) = num[x] / denom;
    }
  }
}

// The gates' scalars of one step: m' = max(logσ(f) + m, i), and the decays of the old state and the input.
struct StepGates {
  float m_next, forget, input;
};
template <class T>
__device__ __forceinline__ StepGates step_gates(const Args<T>& a, int64_t b, int64_t hd, float m) {
  const float i = a.i.at(b, hd), lf = log_sigmoid(a.f.at(b, hd));
  const float m_next = fmaxf(lf + m, i);
  return {m_next, expf(lf + m - m_next), expf(i - m_next)};
}

// grid (row splits, B·H): rows [split · kStepRows, +kStepRows) of C and n, their share of q̂ᵀC and q̂·n.
template <class T>
__global__ void __launch_bounds__(kStepThreads)
    step_rows_kernel(Args<T> a, State state, float* partial_h, float* partial_dot) {
  __shared__ float q_rows[kStepRows], k_rows[kStepRows];
  const int64_t bh = blockIdx.y, b = bh / a.H, hd = bh % a.H, splits = gridDim.x;
  const int64_t r0 = int64_t(blockIdx.x) * kStepRows;
  const int rows = int(std::min<int64_t>(kStepRows, a.dk - r0));
  const StepGates gates = step_gates(a, b, hd, state.m[bh]);
  if (threadIdx.x < rows) {
    q_rows[threadIdx.x] = to_float(a.q.at(b, hd * a.dk + r0 + threadIdx.x)) * a.scale;
    k_rows[threadIdx.x] = to_float(a.k.at(b, hd * a.dk + r0 + threadIdx.x));
  }
  __syncthreads();
  float* C = state.C + (bh * a.dk + r0) * a.dv;
  for (int64_t j = threadIdx.x; j < a.dv; j += kStepThreads) {
    const float v = to_float(a.v.at(b, hd * a.dv + j));
    float acc = 0.0f;
#pragma unroll 8
    for (int r = 0; r < rows; ++r) {
      const float updated = gates.forget * C[r * a.dv + j] + gates.input * k_rows[r] * v;
      C[r * a.dv + j] = updated;
      acc += q_rows[r] * updated;
    }
    partial_h[(bh * splits + blockIdx.x) * a.dv + j] = acc;
  }
  float dot = 0.0f;
  if (threadIdx.x < rows) {
    float* n = state.n + bh * a.dk + r0 + threadIdx.x;
    const float updated = gates.forget * *n + gates.input * k_rows[threadIdx.x];
    *n = updated;
    dot = q_rows[threadIdx.x] * updated;
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) partial_dot[bh * splits + blockIdx.x] = dot;
}

// grid B·H: h = Σ shares of q̂ᵀC / (max(|Σ shares of q̂·n|, e^{−m'}) + eps); m = m'.
template <class T>
__global__ void __launch_bounds__(kStepThreads)
    step_finish_kernel(Args<T> a, float* state_m, const float* partial_h, const float* partial_dot, int splits) {
  const int64_t bh = blockIdx.x, b = bh / a.H, hd = bh % a.H;
  const StepGates gates = step_gates(a, b, hd, state_m[bh]);
  float dot = 0.0f;
  for (int s = 0; s < splits; ++s) dot += partial_dot[bh * splits + s];
  const float denom = fmaxf(fabsf(dot), expf(-gates.m_next)) + a.eps;
  for (int64_t j = threadIdx.x; j < a.dv; j += kStepThreads) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial_h[(bh * splits + s) * a.dv + j];
    a.h.at(b, hd * a.dv + j) = sum / denom;
  }
  __syncthreads();  // every thread has read m before it changes
  if (threadIdx.x == 0) state_m[bh] = gates.m_next;
}

struct Dims {
  int64_t B, T, H, dk, dv;
};

// Checks the inputs ([B,T,·] rows or [B,·] for a step: q, k, v in one activation dtype, i, f F32), h (F32) and the
// state.
Dims check(const char* op, const MlstmInputs& in, const MlstmState* state, const Tensor& h, bool step) {
  check_on_gpu(op, {&in.q, &in.k, &in.v, &in.i, &in.f, &h});
  const DType dtype = in.q.dtype();
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(in.q, dtype) && in.q.dim() == dims,
            "{}: q must be F32 or BF16 rows of {} dims, got {}", op, dims, describe(in.q));
  Dims d{in.q.size(0), step ? 1 : in.q.size(1), in.n_heads, 0, 0};
  SSM_CHECK(in.q.size(-1) % d.H == 0 && in.v.dim() == dims && in.v.size(-1) % d.H == 0,
            "{}: q's width {} and v's {} must be multiples of {} heads", op, in.q.size(-1), in.v.size(-1), d.H);
  d.dk = in.q.size(-1) / d.H;
  d.dv = in.v.size(-1) / d.H;
  const auto rows = [&](int64_t width) { return step ? Shape{d.B, width} : Shape{d.B, d.T, width}; };
  SSM_CHECK(is_gpu_rows(in.k, dtype, in.q.shape()) && is_gpu_rows(in.v, dtype, rows(d.H * d.dv)),
            "{}: k {} and v {} must be rows of q's dtype {}, got {} and {}", op, shape_str(in.q.shape()),
            shape_str(rows(d.H * d.dv)), dtype_name(dtype), describe(in.k), describe(in.v));
  SSM_CHECK(is_gpu_rows(in.i, DType::F32, rows(d.H)) && is_gpu_rows(in.f, DType::F32, rows(d.H)) &&
                is_gpu_rows(h, DType::F32, rows(d.H * d.dv)),
            "{}: i and f {} and h {} must be F32 rows, got {}, {} and {}", op, shape_str(rows(d.H)),
            shape_str(rows(d.H * d.dv)), describe(in.i), describe(in.f), describe(h));
  SSM_CHECK(d.dk > 0 && d.dv > 0, "{}: empty heads (dk {}, dv {})", op, d.dk, d.dv);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  SSM_CHECK(std::isfinite(in.eps) && in.eps >= 0, "{}: eps must not be negative, got {}", op, in.eps);
  if (state) {
    const auto on_gpu = [](const Tensor& t, const Shape& shape) {
      return t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape &&
             t.is_contiguous();
    };
    SSM_CHECK(
        on_gpu(state->C, {d.B, d.H, d.dk, d.dv}) && on_gpu(state->n, {d.B, d.H, d.dk}) && on_gpu(state->m, {d.B, d.H}),
        "{}: the state must be contiguous F32 on the GPU, C [{}, {}, {}, "
        "{}], n [{}, {}, {}], m [{}, {}], got "
        "{}, {} and {}",
        op, d.B, d.H, d.dk, d.dv, d.B, d.H, d.dk, d.B, d.H, describe(state->C), describe(state->n), describe(state->m));
  }
  return d;
}

template <class T>
Args<T> args_of(const MlstmInputs& in, const Dims& d, Tensor& h) {
  return {rows_of<const T>(in.q),
          rows_of<const T>(in.k),
          rows_of<const T>(in.v),
          rows_of<const float>(in.i),
          rows_of<const float>(in.f),
          rows_of<float>(h),
          d.T,
          d.H,
          d.dk,
          d.dv,
          in.eps,
          1.0f / std::sqrt(float(d.dk))};
}

State state_of(MlstmState& s) { return {s.C.data<float>(), s.n.data<float>(), s.m.data<float>()}; }

}  // namespace

void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h) {
  const char* op = "mlstm";
  const Dims d = check(op, in, state, h, false);
  if (d.B == 0 || d.T == 0) return;
  MlstmState own;
  if (!state) {
    own = MlstmState::zeros(d.B, d.H, d.dk, d.dv, Device::CUDA);
    state = &own;
  }
  const int L = int(std::min<int64_t>(in.chunk_size, kMaxChunk));
  const int64_t chunks = (d.T + L - 1) / L, state_bytes = d.B * d.H * d.dk * d.dv * int64_t(sizeof(float));
  const int64_t per_segment =
      std::clamp<int64_t>(kStateBudget / state_bytes, 1, std::min<int64_t>(chunks, kSegmentChunks));
  Tensor Cs = Tensor::empty({d.B * d.H, per_segment, d.dk, d.dv}, DType::F32, Device::CUDA);
  Tensor ns = Tensor::empty({d.B * d.H, per_segment, d.dk}, DType::F32, Device::CUDA);
  Tensor ms = Tensor::empty({d.B * d.H, per_segment + 1}, DType::F32, Device::CUDA);
  const int64_t row_tiles = (d.dk + kTile - 1) / kTile, col_tiles = (d.dv + kTile - 1) / kTile;
  with_activation_type(in.q.dtype(), op, [&]<class T>() {
    const Args<T> a = args_of<T>(in, d, h);
    for (int64_t first = 0; first < chunks; first += per_segment) {
      const int count = int(std::min(per_segment, chunks - first));
      const ChunkStates out{Cs.data<float>(), ns.data<float>(), ms.data<float>(), count};
      const int64_t t_begin = first * L;
      chunk_states_kernel<T><<<dim3(unsigned(row_tiles * col_tiles), unsigned(d.B * d.H)), kThreads, 0, stream()>>>(
          a, state_of(*state), out, t_begin, L, col_tiles);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk states of B {} T {} heads {} dk {} dv {}", op, d.B, d.T, d.H, d.dk, d.dv);
      chunk_outputs_kernel<T>
          <<<dim3(unsigned(col_tiles), unsigned(count), unsigned(d.B * d.H)), kThreads, 0, stream()>>>(
              a, out, state->m.data<float>(), t_begin, L);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk outputs of B {} T {} heads {} dk {} dv {}", op, d.B, d.T, d.H, d.dk, d.dv);
    }
  });
}

void mlstm_step(const MlstmInputs& in, MlstmState& state, Tensor& h) {
  const char* op = "mlstm_step";
  const Dims d = check(op, in, &state, h, true);
  if (d.B == 0) return;
  const int64_t splits = (d.dk + kStepRows - 1) / kStepRows;
  Tensor partial_h = Tensor::empty({d.B * d.H * splits, d.dv}, DType::F32, Device::CUDA);
  Tensor partial_dot = Tensor::empty({d.B * d.H * splits}, DType::F32, Device::CUDA);
  with_activation_type(in.q.dtype(), op, [&]<class T>() {
    const Args<T> a = args_of<T>(in, d, h);
    step_rows_kernel<T><<<dim3(unsigned(splits), unsigned(d.B * d.H)), kStepThreads, 0, stream()>>>(
        a, state_of(state), partial_h.data<float>(), partial_dot.data<float>());
    SSM_CUDA_CHECK_LAUNCH("{}: rows of B {} heads {} dk {} dv {}", op, d.B, d.H, d.dk, d.dv);
    step_finish_kernel<T><<<unsigned(d.B * d.H), kStepThreads, 0, stream()>>>(
        a, state.m.data<float>(), partial_h.data<float>(), partial_dot.data<float>(), int(splits));
    SSM_CUDA_CHECK_LAUNCH("{}: outputs of B {} heads {} dk {} dv {}", op, d.B, d.H, d.dk, d.dv);
  });
}

}  // namespace ssm::ops::cuda
