// The kernels of ops::mlstm_backward on the GPU (mlstm_backward.cu launches them), apart from the host code so
// that dev/cuda/mlstm_backward_host_check.cpp can run them on the CPU. The equations are ops/cpu/mlstm_backward.cpp's;
// the work is split so that no kernel needs the state C_{t-1} going back:
//   - prep_kernel, a warp per (token, head), from the forward's q̂·n_t and m_t: the gates' f'_t, i'_t, the
//     denominator and the gradient reaching q̂·n_t (ddot) and m_t through it (from Σ dh·h), and Q_t = Σ dh·h +
//     ddot·q̂·n_t.
//   - walks_kernel, a block per (sequence, head, 32 columns of [C | n], direction) with a warp per 32 rows, each
//     lane's column in its registers: forward, C_t and its share of dq̂_t = C_t dnum_t; backward, dC_t, its share of
//     dk_t = i'_t dC_t v_t and, summed over the block's rows, dv_t = i'_t dC_tᵀ k_t. n is one more column, with v ≡ 1
//     and dnum ≡ ddot (n_t = Σ decays · i' k, and its gradient q̂ ddot), so its shares come out of the same walks.
//     Sums over a warp's 32 columns go through a halving exchange that leaves row l's sum in lane l (31 shuffles).
//   - tokens_kernel: dq and dk as the column tiles' shares summed in a fixed order, and K_t = k_t·dk_t.
//   - gates_kernel, a warp per (sequence, head) going back: f'_t ∂L/∂f'_t = Σ_{s≥t} (Q_s − K_s), the pairs (r, s)
//     with r < t ≤ s that f'_t scales (Q_s: all pairs ending at s, K_s = i'_s ∂L/∂i'_s: all starting at s), summed
//     in double; then through m_t = max(a_t, i_t) as the CPU does.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "element.cuh"
#include "mlstm_kernels.cuh"
#include "reduce.cuh"
#include "rows.cuh"

namespace ssm::ops::cuda::mlstm_kernels {

constexpr int kWalkCols = 32;        // columns of [C | n] a walks block owns: one a lane
constexpr int kWarpRows = 32;        // rows a warp owns: one register each a lane
constexpr int kMaxBackwardDk = 512;  // 16 warps a walks block
constexpr int kStage = 16;           // tokens a walks block stages at a time
constexpr int kPrepWarps = 8;

// Per (sequence·head, token) scalars, each [B·H, T].
struct TokenScalars {
  const float *dots, *ms;                  // the forward's q̂·n_t and m_t
  float *forget, *input, *inv_den, *ddot;  // f'_t, i'_t, 1/den_t, ∂L/∂(q̂·n_t)
  float *a, *dm, *q_share, *k_share;       // logσ(f_t) + m_{t-1}; ∂L/∂m_t through e^{−m_t}; Q_t; K_t
};

// Column tile j's shares of dq and dk at slice j, each slice [B·T, H·dk].
struct Shares {
  float *dq, *dk;
  int64_t slice;
};

template <class T>
struct Outputs {
  Rows<T> dq, dk, dv;
  Rows<float> di, df;
};

template <class T>
struct BackwardArgs {
  Args<T> a;  // a.h: the forward's output
  Rows<const float> dh;
  TokenScalars s;
  Shares shares;
  int tiles;
  Outputs<T> out;
};

__device__ __forceinline__ int64_t token_index(int64_t bh, int64_t T_len, int64_t t) { return bh * T_len + t; }

// A token kernel's warp: its (row, head) and that head's scalars' index; false past the last of rows · H.
struct TokenItem {
  int64_t row, hd, at;
};
template <class T>
__device__ __forceinline__ bool token_item(const Args<T>& a, int64_t rows, TokenItem& item) {
  const int64_t i = int64_t(blockIdx.x) * kPrepWarps + threadIdx.x / 32;
  item.row = i / a.H;
  item.hd = i % a.H;
  item.at = token_index((item.row / a.T_len) * a.H + item.hd, a.T_len, item.row % a.T_len);
  return i < rows * a.H;
}

// grid ceil(B·T·H / kPrepWarps), 32·kPrepWarps threads: a warp per (row, head).
template <class T>
__global__ void __launch_bounds__(32 * kPrepWarps) prep_kernel(BackwardArgs<T> g, int64_t rows) {
  const Args<T>& a = g.a;
  TokenItem item;
  if (!token_item(a, rows, item)) return;
  const int lane = int(threadIdx.x % 32);
  const int64_t row = item.row, hd = item.hd, at = item.at, t = row % a.T_len;
  float out_dot = 0.0f;  // Σ dh·h
  for (int64_t c = lane; c < a.dv; c += 32) out_dot += g.dh.at(row, hd * a.dv + c) * a.h.at(row, hd * a.dv + c);
  out_dot = warp_sum(out_dot);
  if (lane != 0) return;
  const float i = a.i.at(row, hd), m_prev = t == 0 ? 0.0f : g.s.ms[at - 1];
  const float prev = log_sigmoid(a.f.at(row, hd)) + m_prev, m = fmaxf(prev, i);
  const float e = expf(-m), dot = g.s.dots[at], abs_dot = fabsf(dot);
  const float den = fmaxf(abs_dot, e) + a.eps, dden = -out_dot / den;
  // Through den = max(|dot|, e^{−m}) + eps, halves at a tie as the CPU does.
  const float ddot_abs = abs_dot > e ? dden : abs_dot < e ? 0.0f : 0.5f * dden;
  const float de = abs_dot > e ? 0.0f : abs_dot < e ? dden : 0.5f * dden;
  const float ddot = dot >= 0.0f ? ddot_abs : -ddot_abs;
  g.s.forget[at] = expf(prev - m);
  g.s.input[at] = expf(i - m);
  g.s.inv_den[at] = 1.0f / den;
  g.s.ddot[at] = ddot;
  g.s.a[at] = prev;
  g.s.dm[at] = -e * de;
  g.s.q_share[at] = out_dot + ddot * dot;
}

// One halving step of sum_rows_across_lanes: lanes with bit kHalf clear keep rows [0, kHalf) and send the others,
// the rest keep [kHalf, 2 kHalf) (into v[0, kHalf)) and send the first. kHalf a constant, so v stays in registers.
template <int kHalf>
__device__ __forceinline__ void halve_rows(float (&v)[kWarpRows], int lane) {
  const bool upper = lane & kHalf;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const float send = upper ? v[i] : v[i + kHalf], keep = upper ? v[i + kHalf] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kHalf);
  }
}

// v[i] holds row i's share of the lane's column; afterwards v[0] of lane l holds row l's sum over the 32 lanes.
__device__ __forceinline__ void sum_rows_across_lanes(float (&v)[kWarpRows]) {
  const int lane = int(threadIdx.x % 32);
  halve_rows<16>(v, lane);
  halve_rows<8>(v, lane);
  halve_rows<4>(v, lane);
  halve_rows<2>(v, lane);
  halve_rows<1>(v, lane);
}

inline __host__ __device__ int walks_warps(int64_t dk) { return int((dk + kWarpRows - 1) / kWarpRows); }

// The walks' shared memory: per staged token, the k rows and (going back) the q̂ rows, zeros past dk up to the
// warps' rows (so that a warp reads its 32 as float4, and rows past dk stay 0 in the state), f'_t and i'_t, and the
// block's columns of [C | n]: v (1 for n's) and dnum (dh / den for C's, ddot for n's; zeros past the last).
struct WalkStage {
  int64_t ld;  // floats a staged row of k or q̂ takes: the warps' rows
  float *q, *k, *forget, *input, *v, *dnum;
  __device__ WalkStage(float* smem, int64_t dk)
      : ld(int64_t(walks_warps(dk)) * kWarpRows),
        q(smem),
        k(q + kStage * ld),
        forget(k + kStage * ld),
        input(forget + kStage),
        v(input + kStage),
        dnum(v + kStage * kWalkCols) {}
  static __host__ __device__ int64_t floats(int64_t dk) {
    return 2 * kStage * int64_t(walks_warps(dk)) * kWarpRows + 2 * kStage + 2 * kStage * kWalkCols;
  }
};

// Stages tokens [t0, t0 + count) of (b, hd) for the block's column tile. The caller syncs.
template <class T>
__device__ void stage_tokens(const BackwardArgs<T>& g, int64_t b, int64_t hd, int64_t tile, int64_t t0, int count,
                             bool with_q, const WalkStage& st) {
  const Args<T>& a = g.a;
  for (int64_t e = threadIdx.x; e < int64_t(count) * st.ld; e += blockDim.x) {
    const int64_t tt = e / st.ld, r = e % st.ld, row = b * a.T_len + t0 + tt;
    const bool in = r < a.dk;
    st.k[e] = in ? to_float(a.k.at(row, hd * a.dk + r)) : 0.0f;
    if (with_q) st.q[e] = in ? a.scale * to_float(a.q.at(row, hd * a.dk + r)) : 0.0f;
  }
  for (int e = int(threadIdx.x); e < count * kWalkCols; e += int(blockDim.x)) {
    const int tt = e / kWalkCols;
    const int64_t col = tile * kWalkCols + e % kWalkCols, row = b * a.T_len + t0 + tt;
    const int64_t at = token_index(b * a.H + hd, a.T_len, t0 + tt);
    float v = 0.0f, dnum = 0.0f;
    if (col < a.dv) {
      v = to_float(a.v.at(row, hd * a.dv + col));
      dnum = g.dh.at(row, hd * a.dv + col) * g.s.inv_den[at];
    } else if (col == a.dv) {
      v = 1.0f;
      dnum = g.s.ddot[at];
    }
    st.v[e] = v;
    st.dnum[e] = dnum;
    if (e % kWalkCols == 0) {
      st.forget[tt] = g.s.forget[at];
      st.input[tt] = g.s.input[at];
    }
  }
}

inline size_t walks_shared_bytes(int64_t dk) {
  return size_t(WalkStage::floats(dk) + kStage * walks_warps(dk) * kWalkCols) * sizeof(float);
}

// A warp's 32 staged rows of k or q̂ into registers, as float4 pieces.
__device__ __forceinline__ void load_rows(const float* staged, float (&rows)[kWarpRows]) {
  const float4* pieces = reinterpret_cast<const float4*>(staged);  // 16-byte aligned: WalkStage's ld is 32 · warps
#pragma unroll
  for (int p = 0; p < kWarpRows / 4; ++p) {
    const float4 piece = pieces[p];
    rows[4 * p] = piece.x;
    rows[4 * p + 1] = piece.y;
    rows[4 * p + 2] = piece.z;
    rows[4 * p + 3] = piece.w;
  }
}

// grid (B·H, column tiles of [C | n], 2: forward then backward), 32·walks_warps(dk) threads, walks_shared_bytes(dk)
// of dynamic shared memory.
template <class T>
__global__ void __launch_bounds__(kMaxBackwardDk) walks_kernel(BackwardArgs<T> g) {
  extern __shared__ __align__(16) float smem[];
  const Args<T>& a = g.a;
  const int64_t bh = blockIdx.x, b = bh / a.H, hd = bh % a.H, tile = blockIdx.y;
  const bool backward = blockIdx.z == 1;
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32), warps = int(blockDim.x / 32);
  const int64_t r0 = int64_t(warp) * kWarpRows;
  const WalkStage st(smem, a.dk);
  float* dv_shares = smem + WalkStage::floats(a.dk);  // [kStage][warps][kWalkCols]
  float* share_out = (backward ? g.shares.dk : g.shares.dq) + tile * g.shares.slice;
  float state[kWarpRows], share[kWarpRows];
#pragma unroll
  for (int i = 0; i < kWarpRows; ++i) state[i] = 0.0f;
  const int64_t chunks = (a.T_len + kStage - 1) / kStage;
  for (int64_t step = 0; step < chunks; ++step) {
    const int64_t t0 = (backward ? chunks - 1 - step : step) * kStage;
    const int count = int(std::min<int64_t>(kStage, a.T_len - t0));
    __syncthreads();  // the previous chunk's reads of the stage and of dv_shares are done
    stage_tokens(g, b, hd, tile, t0, count, backward, st);
    __syncthreads();
    for (int u = 0; u < count; ++u) {
      const int tt = backward ? count - 1 - u : u;
      const int64_t row = b * a.T_len + t0 + tt;
      const float forget = st.forget[tt], input = st.input[tt];
      const float v = st.v[tt * kWalkCols + lane], dnum = st.dnum[tt * kWalkCols + lane];
      float k[kWarpRows];
      load_rows(st.k + tt * st.ld + r0, k);
      if (!backward) {  // C_t = f'C_{t-1} + i' k vᵀ; dq̂'s share C_t dnum
#pragma unroll
        for (int i = 0; i < kWarpRows; ++i) {
          state[i] = forget * state[i] + input * k[i] * v;
          share[i] = state[i] * dnum;
        }
      } else {  // dC_t += q̂ dnumᵀ; dk's share i' dC v, dv's i' dCᵀ k; then dC_{t-1}'s part f' dC_t
        float q[kWarpRows];
        load_rows(st.q + tt * st.ld + r0, q);
        float dv_share = 0.0f;
#pragma unroll
        for (int i = 0; i < kWarpRows; ++i) {
          state[i] += q[i] * dnum;
          share[i] = state[i] * v;
          dv_share += state[i] * k[i];
          state[i] *= forget;
        }
        dv_shares[(tt * warps + warp) * kWalkCols + lane] = dv_share;
      }
      sum_rows_across_lanes(share);
      const int64_t r = r0 + lane;
      if (r < a.dk) share_out[row * a.H * a.dk + hd * a.dk + r] = backward ? input * share[0] : a.scale * share[0];
    }
    if (!backward) continue;
    __syncthreads();  // every warp's dv shares of the chunk
    for (int e = int(threadIdx.x); e < count * kWalkCols; e += int(blockDim.x)) {
      const int tt = e / kWalkCols, j = e % kWalkCols;
      const int64_t column = tile * kWalkCols + j;
      if (column >= a.dv) continue;
      float sum = 0.0f;
      for (int w = 0; w < warps; ++w) sum += dv_shares[(tt * warps + w) * kWalkCols + j];
      g.out.dv.at(b * a.T_len + t0 + tt, hd * a.dv + column) = from_float<T>(st.input[tt] * sum);
    }
  }
}

// grid ceil(B·T·H / kPrepWarps), 32·kPrepWarps threads: a warp per (row, head) sums the tiles' shares of dq and dk
// in order, writes them, and K_t = k_t·dk_t.
template <class T>
__global__ void __launch_bounds__(32 * kPrepWarps) tokens_kernel(BackwardArgs<T> g, int64_t rows) {
  const Args<T>& a = g.a;
  TokenItem item;
  if (!token_item(a, rows, item)) return;
  const int lane = int(threadIdx.x % 32);
  const int64_t row = item.row, hd = item.hd;
  float k_share = 0.0f;
  for (int64_t r = lane; r < a.dk; r += 32) {
    const int64_t x = hd * a.dk + r, at = row * a.H * a.dk + x;
    float dq = 0.0f, dk = 0.0f;
    for (int j = 0; j < g.tiles; ++j) {
      dq += g.shares.dq[j * g.shares.slice + at];
      dk += g.shares.dk[j * g.shares.slice + at];
    }
    g.out.dq.at(row, x) = from_float<T>(dq);
    g.out.dk.at(row, x) = from_float<T>(dk);
    k_share += to_float(a.k.at(row, x)) * dk;
  }
  k_share = warp_sum(k_share);
  if (lane == 0) g.s.k_share[item.at] = k_share;
}

// grid B·H, 32 threads, kGatesShared bytes of dynamic shared memory: a warp per (sequence, head) walks its tokens
// back, 32 at a time: the lanes load a slab's scalars (coalesced), lane 0 carries the sums through it in order, the
// lanes write its di and df.
constexpr size_t kGatesShared = 7 * 32 * sizeof(float);
template <class T>
__global__ void __launch_bounds__(32) gates_kernel(BackwardArgs<T> g) {
  extern __shared__ float smem[];
  float *q_share = smem, *k_share = q_share + 32, *dm = k_share + 32, *prev = dm + 32, *ig = prev + 32, *di = ig + 32,
        *da = di + 32;
  const Args<T>& a = g.a;
  const int64_t bh = blockIdx.x, b = bh / a.H, hd = bh % a.H;
  const int lane = int(threadIdx.x);
  double suffix = 0.0, dm_next = 0.0;  // Σ_{s≥t} (Q_s − K_s); ∂L/∂m_t through a_{t+1}
  for (int64_t end = a.T_len; end > 0; end -= 32) {
    const int64_t t0 = end >= 32 ? end - 32 : 0;
    const int count = int(end - t0);
    if (lane < count) {
      const int64_t at = token_index(bh, a.T_len, t0 + lane);
      q_share[lane] = g.s.q_share[at];
      k_share[lane] = g.s.k_share[at];
      dm[lane] = g.s.dm[at];
      prev[lane] = g.s.a[at];
      ig[lane] = a.i.at(b * a.T_len + t0 + lane, hd);
    }
    __syncwarp();
    if (lane == 0)
      for (int u = count - 1; u >= 0; --u) {
        const double k = k_share[u];
        suffix += double(q_share[u]) - k;
        double d_a = suffix, d_i = k;  // f' ∂L/∂f' and i' ∂L/∂i'
        const double d_m = dm_next + dm[u] - suffix - k;
        if (prev[u] > ig[u])
          d_a += d_m;
        else if (ig[u] > prev[u])
          d_i += d_m;
        else
          d_a += 0.5 * d_m, d_i += 0.5 * d_m;
        di[u] = float(d_i);
        da[u] = float(d_a);
        dm_next = d_a;
      }
    __syncwarp();
    if (lane < count) {
      const int64_t row = b * a.T_len + t0 + lane;
      g.out.di.at(row, hd) = di[lane];
      g.out.df.at(row, hd) = da[lane] / (1.0f + expf(a.f.at(row, hd)));  // d logσ(f) / df = σ(−f)
    }
    __syncwarp();
  }
}

}  // namespace ssm::ops::cuda::mlstm_kernels
