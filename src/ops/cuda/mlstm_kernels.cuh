// The kernels of ops::mlstm and ops::mlstm_step (mlstm.cu launches them and says how they split the
// work), apart from the host code so that dev/cuda/mlstm_host_check.cpp can run them on the CPU.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "element.cuh"
#include "reduce.cuh"
#include "rows.cuh"

namespace ssm::ops::cuda::mlstm_kernels {

constexpr int kMaxChunk = 64;
constexpr int kTile = 64;      // rows and columns of C a states block owns; columns of h an outputs block writes
constexpr int kSlab = 32;      // dk rows an outputs block stages at a time
constexpr int kThreads = 256;  // 16 x 16: each thread 4 x 4 elements of a 64 x 64 tile
constexpr int kStepRows = 32;
constexpr int kStepThreads = 128;
constexpr int64_t kStateBudget = int64_t(256) << 20;
constexpr int64_t kSegmentChunks = 64;

// How a forward of B·H heads of T tokens is cut: chunks of L tokens, run in segments of at most
// per_segment chunks (whose start states take at most state_budget bytes); the states kernel's grid is
// row_tiles·col_tiles tiles of C, the outputs kernel's col_tiles tiles of h.
struct Plan {
  int L;
  int64_t chunks, per_segment, row_tiles, col_tiles;
};
inline Plan plan_of(int64_t B, int64_t H, int64_t T, int64_t dk, int64_t dv, int64_t chunk_size,
                    int64_t state_budget = kStateBudget) {
  Plan p;
  p.L = int(std::min<int64_t>(chunk_size, kMaxChunk));
  p.chunks = (T + p.L - 1) / p.L;
  const int64_t state_bytes = B * H * dk * dv * int64_t(sizeof(float));
  p.per_segment = std::clamp<int64_t>(state_budget / state_bytes, 1, std::min<int64_t>(p.chunks, kSegmentChunks));
  p.row_tiles = (dk + kTile - 1) / kTile;
  p.col_tiles = (dv + kTile - 1) / kTile;
  return p;
}

__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }

// The inputs of one call as the kernels see them.
template <class T>
struct Args {
  Rows<const T> q, k, v;
  Rows<const float> i, f;
  Rows<float> h;
  int64_t T_len, H, dk, dv;
  float eps, scale;
  float *dots, *ms;  // optional, [B·H, T]: q̂·n_t and m_t of every token (what the backward starts from)
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
    if (a.dots && blockIdx.x == 0 && tx == 0) {
      a.dots[bh * a.T_len + t0 + t] = den[t];
      a.ms[bh * a.T_len + t0 + t] = m_t[t];
    }
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

}  // namespace ssm::ops::cuda::mlstm_kernels
