// The kernels of ops::mamba3_backward on the GPU (ops/cuda/mamba3_backward.cu launches them in this order; the
// forward's kernels and staging are mamba3_kernels.cuh). With G_t = dL/dh_t = α_{t+1} G_{t+1} + Σ_r dy_t,r q_t,rᵀ and
// the gradients of ops/cpu/mamba3_backward.cpp, every token's gradient is a few sums over the state's rows or columns:
//
// 1. forward_walk_kernel walks Ĥ (the forward's form, h_t = Ĥ_t − β̂_{t+1} Σ_r x_t,r k_t,rᵀ) and keeps, per token,
//    Ĥ_tᵀ dy_t,r (dq before the Ĥ correction) and the dots x_t,r'·dy_t,r, each summed over the block's rows, and the
//    angles φ_t.
// 2. backward_walk_kernel walks G back from the last token. Before token t's update it holds G_{t+1}, and
//      G_t k_t,r = α_{t+1} G_{t+1} k_t,r + Σ_r' dy_t,r' (q_t,r'·k_t,r),   G_tᵀ x_t,r = α_{t+1} G_{t+1}ᵀ x_t,r + Σ_r' q_t,r' (dy_t,r'·x_t,r),
//    so dx_t (rows: G_{t+1} k_t over the row's lanes) is written there, and it keeps W_t,r = G_{t+1}ᵀ x_t,r and the
//    scalar Q_t = Σ_r x_t,rᵀ G_{t+1} k_t,r summed over the rows (dk, dγ and dβ follow), and the dots k_t,r'·q_t,r.
// 3. tokens_kernel, every token at once: dq and dk (turned back by φ), each rotation pair's angle gradient, and
//    e_t = Σ_r q_t,r·dq_t,r = ⟨Σ_r dy_t,r q_t,rᵀ, h_t⟩.
// 4. scalars_kernel, per (sequence, head) from the last token: the angles' gradient sums, and the decay's gradient
//    without h_{t−1}: with c_t = ⟨G_t, h_t⟩ = e_t + c_{t+1} − ⟨G_{t+1}, u_{t+1}⟩ (u_t = h_t − α_t h_{t−1}, whose
//    product with G_t is β_t dβ_t + γ_t dγ_t), α_t ⟨G_t, h_{t−1}⟩ = c_t − β_t dβ_t − γ_t dγ_t: a suffix sum, in double.
// 5. head_sums_kernel and parameter_sums_kernel: dB, dC and the angles' gradient over the heads that share them, the
//    biases, D and dt_bias over the sequences and tokens, each in a fixed order (the same bits every run).
// Phases 1 and 2 walk a whole sequence per block (rows of the state over blocks, as the forward): parallel over
// sequences, heads and rows, which a training batch fills.
#pragma once
#include "mamba3_kernels.cuh"

namespace ssm::ops::cuda::mamba3_kernels {

constexpr int kMaxRank = 8;      // ranks the tokens kernel holds in registers
constexpr int kTileTokens = 8;   // tokens a block of tokens_kernel takes
constexpr int kScalarTile = 32;  // tokens a round of scalars_kernel (a lane each)

template <class T>
struct BackArgs {
  Rows<const T> dy;                        // like y
  Rows<T> dx, dB, dC, ddt, dA, dtrap, dangles;  // like their inputs; data null: not wanted
  float *ddt_bias, *dB_bias, *dC_bias, *dD;     // accumulated into; null: not wanted
  int batch, row_blocks;
  // Scratch (F32), bh = b·H + h, rb the row block:
  float* phi;       // [BH, T, S] φ after token t
  float* dq_part;   // [BH, RB, T, R·N] Σ_p Ĥ_t[p, n] dy_t,r[p] over the block's rows
  float* xdy_part;  // [BH, RB, T, R·R] Σ_p x_t,r'[p] dy_t,r[p] at r'·R + r
  float* w_part;    // [BH, RB, T, R·N] Σ_p x_t,r[p] G_{t+1}[p, n]
  float* q_part;    // [BH, RB, T] Σ_r Σ_p x_t,r[p] (G_{t+1} k_t,r)[p]
  float* kq;        // [BH, T, R·R] k_t,r'·q_t,r at r'·R + r
  float* dk_head;   // [BH, T, R·N] the head's dk (to be summed over the group's heads), unturned
  float* dq_head;   // [BH, T, R·N]
  float* dphi;      // [BH, T, S] the pair's angle gradient from token t alone
  float* e;         // [BH, T]
  float* dangles_head;  // [BH, T, S]
  float *head_dD, *head_ddt_bias;  // [BH]
};

// A walk's shared memory past Staged: dy of the tile's tokens [kStage, R, rows], then two buffers (one per token,
// alternating) of each warp's sums [warps, width]: R·N columns, then the scalars, 16-byte aligned rows.
struct BackStaged {
  float *dy, *sums;
  int width;
  __host__ __device__ static int width_of(int R, int N) { return (R * N + R * R + 3) / 4 * 4; }
  __host__ __device__ static size_t floats(int R, int N, int rows, int S, int warps) {
    return Staged::floats(R, N, rows, S) + size_t(kStage) * R * rows + 2 * size_t(warps) * width_of(R, N);
  }
  __device__ BackStaged(float* shared, int R, int N, int rows, int S, int warps) {
    dy = shared + Staged::floats(R, N, rows, S);
    sums = dy + kStage * R * rows;
    width = width_of(R, N);
    (void)warps;
  }
};

template <class T>
__device__ void load_dy(const Args<T>& a, const BackArgs<T>& g, const BackStaged& bs, int b, int h, int tb, int n,
                        int p0, int rows) {
  for (int i = threadIdx.x; i < n * a.R * rows; i += blockDim.x) {
    const int s = i / (a.R * rows), r = i / rows % a.R, p = p0 + i % rows;
    bs.dy[i] = p < a.P ? to_float(g.dy.at(int64_t(b) * a.T_len + tb + s, (r * a.H + h) * a.P + p)) : 0.0f;
  }
}

// The sums of v (a thread's pieces of one row) over the rows of the warp: every lane ends with its columns' sums.
__device__ __forceinline__ void sum_over_warp_rows(float4 (&v)[kPieces], int tpr) {
  for (int mask = 16; mask >= tpr; mask /= 2)
#pragma unroll
    for (int i = 0; i < kPieces; ++i) {
      v[i].x += __shfl_xor_sync(0xffffffffu, v[i].x, mask);
      v[i].y += __shfl_xor_sync(0xffffffffu, v[i].y, mask);
      v[i].z += __shfl_xor_sync(0xffffffffu, v[i].z, mask);
      v[i].w += __shfl_xor_sync(0xffffffffu, v[i].w, mask);
    }
}
__device__ __forceinline__ float sum_over_warp(float v) {
  for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
  return v;
}
// A row's sum over its tpr lanes.
__device__ __forceinline__ float sum_over_row(float v, int tpr) {
  for (int lane = tpr / 2; lane > 0; lane /= 2) v += __shfl_xor_sync(0xffffffffu, v, lane);
  return v;
}

// Writes rank r's column sums of the warp (after sum_over_warp_rows) into the warp's slot of buffer `buffer`.
__device__ __forceinline__ void keep_columns(const BackStaged& bs, const RowShare& me, const float4 (&v)[kPieces],
                                             int buffer, int warps, int r, int N, int tpr) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane >= tpr) return;  // the warp's first row holds them
  float* slot = bs.sums + (size_t(buffer) * warps + warp) * bs.width + r * N;
#pragma unroll
  for (int i = 0; i < kPieces; ++i)
    if (i < me.pieces) *reinterpret_cast<float4*>(slot + 4 * (me.sub + tpr * i)) = v[i];
}

// After the barrier that ends a token's keep_columns: the block's sums of buffer `buffer` (over its warps, in order)
// to out[0, width) (the columns, then at `scalars` the R·R or one scalars).
__device__ __forceinline__ void write_sums(const BackStaged& bs, int buffer, int warps, int width, float* out) {
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    float acc = 0.0f;
    for (int w = 0; w < warps; ++w) acc += bs.sums[(size_t(buffer) * warps + w) * bs.width + i];
    out[i] = acc;
  }
}

__device__ __forceinline__ RowShare row_share(const Layout& lay, int p0, int P, int N) {
  RowShare me;
  me.sub = threadIdx.x % lay.tpr;
  me.p = p0 + int(threadIdx.x) / lay.tpr;
  me.valid = int(threadIdx.x) / lay.tpr < lay.rows && me.p < P;
  me.pieces = max(0, (N / 4 - me.sub + lay.tpr - 1) / lay.tpr);
#pragma unroll
  for (int i = 0; i < kPieces; ++i) me.h[i] = make_float4(0, 0, 0, 0);
  return me;
}

// A walk block's shared memory and place: grid (row blocks, 1, B·H).
struct WalkBlock {
  Staged sm;
  BackStaged bs;
  int warps, rb, bh, b, h, p0;
  template <class T>
  __device__ WalkBlock(float* smem, const Args<T>& a, const Layout& lay)
      : sm(smem, a.R, a.N, lay.rows, a.S),
        bs(smem, a.R, a.N, lay.rows, a.S, int(blockDim.x) / 32),
        warps(int(blockDim.x) / 32),
        rb(blockIdx.x),
        bh(blockIdx.z),
        b(bh / a.H),
        h(bh % a.H),
        p0(rb * lay.rows) {}
};

// grid (row blocks, 1, B·H), blockDim lay.threads, dynamic shared memory BackStaged::floats. Phase 1.
template <class T>
__global__ void __launch_bounds__(kMaxThreads) forward_walk_kernel(Args<T> a, BackArgs<T> g, Layout lay) {
  extern __shared__ __align__(16) float smem[];
  const WalkBlock w(smem, a, lay);
  const Staged& sm = w.sm;
  const BackStaged& bs = w.bs;
  const int warps = w.warps, rb = w.rb, bh = w.bh, b = w.b, h = w.h, p0 = w.p0;
  const int RN = a.R * a.N, RR = a.R * a.R, lr = threadIdx.x / lay.tpr, lane = threadIdx.x % 32;
  RowShare me = row_share(lay, p0, a.P, a.N);
  float phi = 0.0f;  // thread j < S: φ_j
  int buffer = 0;
  for (int tb = 0; tb < a.T_len; tb += kStage) {
    const int n = min(kStage, a.T_len - tb);
    load_dy(a, g, bs, b, h, tb, n, p0, lay.rows);
    stage_tile<false>(a, sm, b, h, tb, n, p0, lay.rows, phi);
    if (rb == 0)
      for (int i = threadIdx.x; i < n * a.S; i += blockDim.x) g.phi[(int64_t(bh) * a.T_len + tb) * a.S + i] = sm.angles[i];
    for (int s = 0; s < n; ++s) {
      advance<false>(a, sm, me, s, lay.rows, lay.tpr, 0, h, 0.0f);
      const float* dys = bs.dy + s * a.R * lay.rows + lr;  // dy_r[p] at dys[r · rows]
      const float* xs = sm.x + s * a.R * lay.rows + lr;
      for (int r = 0; r < a.R; ++r) {
        const float d = me.valid ? dys[r * lay.rows] : 0.0f;
        float4 v[kPieces];
#pragma unroll
        for (int i = 0; i < kPieces; ++i)
          v[i] = make_float4(me.h[i].x * d, me.h[i].y * d, me.h[i].z * d, me.h[i].w * d);
        sum_over_warp_rows(v, lay.tpr);
        keep_columns(bs, me, v, buffer, warps, r, a.N, lay.tpr);
      }
      for (int i = 0; i < RR; ++i) {
        const bool counted = me.valid && me.sub == 0;
        const float xdy = sum_over_warp(counted ? xs[(i / a.R) * lay.rows] * dys[(i % a.R) * lay.rows] : 0.0f);
        if (lane == 0) bs.sums[(size_t(buffer) * warps + threadIdx.x / 32) * bs.width + RN + i] = xdy;
      }
      __syncthreads();  // the warps' sums of this token
      const int64_t at = (int64_t(bh) * g.row_blocks + rb) * a.T_len + tb + s;
      write_sums(bs, buffer, warps, RN, g.dq_part + at * RN);
      for (int i = threadIdx.x; i < RR; i += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < warps; ++w) acc += bs.sums[(size_t(buffer) * warps + w) * bs.width + RN + i];
        g.xdy_part[at * RR + i] = acc;
      }
      buffer ^= 1;  // the next token's sums go to the other buffer while these are read
    }
    __syncthreads();  // every read of the tile done
  }
}

// grid (row blocks, 1, B·H), as forward_walk_kernel, after it (φ). Phase 2: G from the last token back.
template <class T>
__global__ void __launch_bounds__(kMaxThreads) backward_walk_kernel(Args<T> a, BackArgs<T> g, Layout lay) {
  extern __shared__ __align__(16) float smem[];
  const WalkBlock w(smem, a, lay);
  const Staged& sm = w.sm;
  const BackStaged& bs = w.bs;
  const int warps = w.warps, rb = w.rb, bh = w.bh, b = w.b, h = w.h, p0 = w.p0;
  const int RN = a.R * a.N, RR = a.R * a.R, lr = threadIdx.x / lay.tpr, lane = threadIdx.x % 32;
  const float D = a.D ? a.D[h] : 0.0f;
  RowShare me = row_share(lay, p0, a.P, a.N);  // me.h holds G
  int buffer = 0;
  const int tiles = (a.T_len + kStage - 1) / kStage;
  for (int tile = tiles - 1; tile >= 0; --tile) {
    const int tb = tile * kStage, n = min(kStage, a.T_len - tb);
    load_dy(a, g, bs, b, h, tb, n, p0, lay.rows);
    for (int i = threadIdx.x; i < n * a.S; i += blockDim.x) sm.angles[i] = g.phi[(int64_t(bh) * a.T_len + tb) * a.S + i];
    load_tile<true>(a, sm, b, h, tb, n, p0, lay.rows);
    turn_tile<true>(a, sm, n);
    dot_tile(a, sm, n);
    if (rb == 0)
      for (int i = threadIdx.x; i < n * RR; i += blockDim.x) g.kq[(int64_t(bh) * a.T_len + tb) * RR + i] = sm.kq[i];
    for (int s = n - 1; s >= 0; --s) {
      const Coefs c = sm.coefs[s], next = sm.coefs[s + 1];  // next: token t + 1's (zeros past the last)
      const float* dys = bs.dy + s * a.R * lay.rows + lr;
      const float* xs = sm.x + s * a.R * lay.rows + lr;
      const int64_t row = int64_t(b) * a.T_len + tb + s;
      float q_acc = 0.0f;
      for (int r = 0; r < a.R; ++r) {
        // G_{t+1} k_t,r over the row, then dx_t,r = α'(β̂' + γ) G_{t+1} k_t,r + γ Σ_r' dy_t,r' (k_t,r·q_t,r') + D dy_t,r.
        const float* kr = sm.k + s * RN + r * a.N;
        float4 acc = make_float4(0, 0, 0, 0);
#pragma unroll
        for (int i = 0; i < kPieces; ++i) {
          if (i >= me.pieces) break;
          const float4 k = load4(kr + 4 * (me.sub + lay.tpr * i));
          acc.x = fmaf(me.h[i].x, k.x, acc.x);
          acc.y = fmaf(me.h[i].y, k.y, acc.y);
          acc.z = fmaf(me.h[i].z, k.z, acc.z);
          acc.w = fmaf(me.h[i].w, k.w, acc.w);
        }
        const float gk = sum_over_row((acc.x + acc.y) + (acc.z + acc.w), lay.tpr);
        if (me.valid) {
          q_acc += xs[r * lay.rows] * gk;
          if (me.sub == 0 && g.dx.data) {
            float dk_dy = 0.0f;
            for (int rq = 0; rq < a.R; ++rq) dk_dy += dys[rq * lay.rows] * sm.kq[(s * a.R + r) * a.R + rq];
            g.dx.at(row, (r * a.H + h) * a.P + me.p) =
                from_float<T>(next.alpha * (next.beta_hat + c.gamma) * gk + c.gamma * dk_dy + D * dys[r * lay.rows]);
          }
        }
        // W_t,r = G_{t+1}ᵀ x_t,r over the block's rows.
        const float xv = me.valid ? xs[r * lay.rows] : 0.0f;
        float4 v[kPieces];
#pragma unroll
        for (int i = 0; i < kPieces; ++i) v[i] = make_float4(me.h[i].x * xv, me.h[i].y * xv, me.h[i].z * xv, me.h[i].w * xv);
        sum_over_warp_rows(v, lay.tpr);
        keep_columns(bs, me, v, buffer, warps, r, a.N, lay.tpr);
      }
      const float q_sum = sum_over_warp(me.sub == 0 ? q_acc : 0.0f);
      if (lane == 0) bs.sums[(size_t(buffer) * warps + threadIdx.x / 32) * bs.width + RN] = q_sum;
      // G_t = α_{t+1} G_{t+1} + Σ_r dy_t,r q_t,rᵀ.
      for (int r = 0; r < a.R; ++r) {
        const float d = me.valid ? dys[r * lay.rows] : 0.0f;
        const float* qr = sm.q + s * RN + r * a.N;
        const float decay = r == 0 ? next.alpha : 1.0f;
#pragma unroll
        for (int i = 0; i < kPieces; ++i) {
          if (i >= me.pieces) break;
          const float4 q = load4(qr + 4 * (me.sub + lay.tpr * i));
          me.h[i].x = fmaf(decay, me.h[i].x, d * q.x);
          me.h[i].y = fmaf(decay, me.h[i].y, d * q.y);
          me.h[i].z = fmaf(decay, me.h[i].z, d * q.z);
          me.h[i].w = fmaf(decay, me.h[i].w, d * q.w);
        }
      }
      __syncthreads();  // the warps' sums of this token
      const int64_t at = (int64_t(bh) * g.row_blocks + rb) * a.T_len + tb + s;
      write_sums(bs, buffer, warps, RN, g.w_part + at * RN);
      if (threadIdx.x == 0) {
        float acc = 0.0f;
        for (int w = 0; w < warps; ++w) acc += bs.sums[(size_t(buffer) * warps + w) * bs.width + RN];
        g.q_part[at] = acc;
      }
      buffer ^= 1;
    }
    __syncthreads();  // every read of the tile done
  }
}

// grid (⌈T / kTileTokens⌉, B·H), 128 threads, dynamic shared memory kTileTokens · 4 floats: thread c < N/2 the
// columns of pair c (rotated when c < S). Phase 3.
template <class T>
__global__ void tokens_kernel(Args<T> a, BackArgs<T> g) {
  extern __shared__ __align__(16) float smem[];
  float(*e_sums)[4] = reinterpret_cast<float(*)[4]>(smem);  // [token, warp]
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H, grp = h / (a.H / a.G), c = threadIdx.x;
  const int RN = a.R * a.N, RR = a.R * a.R, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool mine = c < a.N / 2;
  const int lo = a.halves ? c : 2 * c, hi = a.halves ? c + a.N / 2 : 2 * c + 1;
  const int t0 = blockIdx.x * kTileTokens, t1 = min(a.T_len, t0 + kTileTokens);
  for (int t = t0; t < t1; ++t) {
    const int64_t row = int64_t(b) * a.T_len + t, bt = int64_t(bh) * a.T_len + t;
    float e = 0.0f;
    if (mine) {
      const Coefs now = coefs_at(a, b, h, t), next = coefs_at(a, b, h, t + 1);
      float cs = 1.0f, sn = 0.0f;
      if (c < a.S) sincosf(g.phi[bt * a.S + c], &sn, &cs);
      float k[kMaxRank][2], q[kMaxRank][2];
      for (int r = 0; r < a.R; ++r)
        for (int side = 0; side < 2; ++side) {
          const int n = side ? hi : lo, column = (r * a.G + grp) * a.N + n;
          k[r][side] = to_float(a.B.at(row, column)) + a.B_bias[h * RN + r * a.N + n];
          q[r][side] = to_float(a.C.at(row, column)) + a.C_bias[h * RN + r * a.N + n];
        }
      for (int r = 0; r < a.R; ++r) {  // turned as the walks turn them
        const float k0 = k[r][0], k1 = k[r][1], q0 = q[r][0], q1 = q[r][1];
        k[r][0] = k0 * cs - k1 * sn;
        k[r][1] = k0 * sn + k1 * cs;
        q[r][0] = q0 * cs - q1 * sn;
        q[r][1] = q0 * sn + q1 * cs;
      }
      float xdy[kMaxRank * kMaxRank];
      for (int i = 0; i < RR; ++i) {
        float acc = 0.0f;
        for (int rb = 0; rb < g.row_blocks; ++rb) acc += g.xdy_part[((int64_t(bh) * g.row_blocks + rb) * a.T_len + t) * RR + i];
        xdy[i] = acc;
      }
      float angle_grad = 0.0f;
      for (int r = 0; r < a.R; ++r) {
        float dq[2], dk[2];
        for (int side = 0; side < 2; ++side) {
          const int n = r * a.N + (side ? hi : lo);
          float hat = 0.0f, w = 0.0f;
          for (int rb = 0; rb < g.row_blocks; ++rb) {
            const int64_t at = ((int64_t(bh) * g.row_blocks + rb) * a.T_len + t) * RN + n;
            hat += g.dq_part[at];
            w += g.w_part[at];
          }
          // dq = h_tᵀ dy_t,r = Ĥ_tᵀ dy_t,r − β̂_{t+1} Σ_r' k_t,r' (x_t,r'·dy_t,r);
          // dk = γ G_tᵀ x_t,r + β_{t+1} G_{t+1}ᵀ x_t,r = α'(γ + β̂') W + γ Σ_r' q_t,r' (x_t,r·dy_t,r').
          float k_xdy = 0.0f, q_xdy = 0.0f;
          for (int r2 = 0; r2 < a.R; ++r2) {
            k_xdy += k[r2][side] * xdy[r2 * a.R + r];
            q_xdy += q[r2][side] * xdy[r * a.R + r2];
          }
          dq[side] = hat - next.beta_hat * k_xdy;
          dk[side] = next.alpha * (now.gamma + next.beta_hat) * w + now.gamma * q_xdy;
          e += q[r][side] * dq[side];
        }
        float dq_out[2] = {dq[0], dq[1]}, dk_out[2] = {dk[0], dk[1]};
        if (c < a.S) {
          angle_grad += q[r][0] * dq[1] - q[r][1] * dq[0] + k[r][0] * dk[1] - k[r][1] * dk[0];
          dq_out[0] = dq[0] * cs + dq[1] * sn;
          dq_out[1] = dq[1] * cs - dq[0] * sn;
          dk_out[0] = dk[0] * cs + dk[1] * sn;
          dk_out[1] = dk[1] * cs - dk[0] * sn;
        }
        for (int side = 0; side < 2; ++side) {
          const int64_t at = bt * RN + r * a.N + (side ? hi : lo);
          g.dq_head[at] = dq_out[side];
          g.dk_head[at] = dk_out[side];
        }
      }
      if (c < a.S) g.dphi[bt * a.S + c] = angle_grad;
    }
    e = sum_over_warp(e);
    if (lane == 0) e_sums[t - t0][warp] = e;
  }
  __syncthreads();
  if (int(threadIdx.x) < t1 - t0) {
    const int s = threadIdx.x;
    g.e[int64_t(bh) * a.T_len + t0 + s] = (e_sums[s][0] + e_sums[s][1]) + (e_sums[s][2] + e_sums[s][3]);
  }
}

// grid B·H, blockDim 32 · ⌈max(S, 32) / 32⌉ (at most 128), dynamic shared memory kScalarTile · S floats: rounds of
// kScalarTile tokens from the last. Phase 4.
template <class T>
__global__ void scalars_kernel(Args<T> a, BackArgs<T> g) {
  extern __shared__ __align__(16) float smem[];
  float* angle_terms = smem;  // [token, j]: Σ_{s≥t} g_s,j · π tanh(θ_t,j)
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H, j = threadIdx.x, lane = threadIdx.x % 32;
  const int RR = a.R * a.R;
  float angle_sum = 0.0f;  // thread j: Σ_{s≥t} of pair j's gradient
  double carry = 0.0;      // Σ over the later rounds' tokens of e_s − (β_s dβ_s + γ_s dγ_s)
  double ddt_bias = 0.0, dD = 0.0;  // warp 0's lanes
  const int rounds = (a.T_len + kScalarTile - 1) / kScalarTile;
  for (int round = rounds - 1; round >= 0; --round) {
    const int t0 = round * kScalarTile, n = min(kScalarTile, a.T_len - t0);
    if (j < a.S)
      for (int s = n - 1; s >= 0; --s) {
        const int64_t row = int64_t(b) * a.T_len + t0 + s, bt = int64_t(bh) * a.T_len + t0 + s;
        angle_sum += g.dphi[bt * a.S + j];
        const float th = tanhf(to_float(a.angles.at(row, j))), dt = dt_of(to_float(a.dt.at(row, h)), a.dt_bias[h]);
        g.dangles_head[bt * a.S + j] = angle_sum * kPi * (1.0f - th * th) * dt;
        angle_terms[s * a.S + j] = angle_sum * kPi * th;
      }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int s = lane, t = t0 + s;
      const bool real = s < n;
      double u = 0.0, e = 0.0;
      float ddt_raw = 0.0f, dA = 0.0f, dtrap = 0.0f, trace = 0.0f, gamma = 0.0f, dgamma = 0.0f;
      float beta = 0.0f, dbeta = 0.0f, dt = 0.0f, dt_grad = 0.0f, a_val = 0.0f, a_grad = 0.0f, alpha = 0.0f;
      float lambda = 0.0f, ddt_angle = 0.0f;
      if (real) {
        const int64_t row = int64_t(b) * a.T_len + t;
        for (int jj = 0; jj < a.S; ++jj) ddt_angle += angle_terms[s * a.S + jj];
        const float dt_in = to_float(a.dt.at(row, h)) + a.dt_bias[h], A_raw = to_float(a.A.at(row, h));
        dt = softplus_of(dt_in);
        dt_grad = sigmoid_of(dt_in);
        const float f = A_raw >= 0 ? 1.0f + A_raw : 1.0f / (1.0f - A_raw), f_grad = A_raw >= 0 ? 1.0f : f * f;
        const bool floored = -f > -a.A_floor;
        a_val = floored ? -a.A_floor : -f;
        a_grad = floored ? 0.0f : -f_grad;
        alpha = expf(a_val * dt);
        lambda = sigmoid_of(to_float(a.trap.at(row, h)));
        beta = (1.0f - lambda) * dt * alpha;
        gamma = lambda * dt;
        const float next_alpha = coefs_at(a, b, h, t + 1).alpha;
        float q_now = 0.0f, q_before = 0.0f, xdy_kq = 0.0f;
        for (int rb = 0; rb < g.row_blocks; ++rb) {
          const int64_t at = (int64_t(bh) * g.row_blocks + rb) * a.T_len + t;
          q_now += g.q_part[at];
          if (t > 0) q_before += g.q_part[at - 1];
        }
        for (int i = 0; i < RR; ++i) {
          float xdy = 0.0f;
          for (int rb = 0; rb < g.row_blocks; ++rb) xdy += g.xdy_part[((int64_t(bh) * g.row_blocks + rb) * a.T_len + t) * RR + i];
          xdy_kq += xdy * g.kq[(int64_t(bh) * a.T_len + t) * RR + i];
          if (i / a.R == i % a.R) trace += xdy;
        }
        dgamma = next_alpha * q_now + xdy_kq;  // Σ_r x_t,rᵀ G_t k_t,r
        dbeta = q_before;                      // Σ_r x_{t−1},rᵀ G_t k_{t−1},r
        e = g.e[int64_t(bh) * a.T_len + t];
        u = e - (double(beta) * dbeta + double(gamma) * dgamma);
      }
      // c_t = e_t + Σ_{s>t} u_s: the suffix sums of the round, then the later rounds'.
      double suffix = u;
      for (int offset = 1; offset < 32; offset *= 2) {
        const double other = __shfl_down_sync(0xffffffffu, suffix, offset);
        if (lane + offset < 32) suffix += other;
      }
      const double round_total = __shfl_sync(0xffffffffu, suffix, 0);
      if (real) {
        const double c_t = e + (suffix - u) + carry;
        const float decay_grad = float(c_t - double(gamma) * dgamma);  // α_t·dL/dα_t with β's share
        const float dlambda = -dbeta * dt * alpha + dgamma * dt;
        const float ddt = dbeta * (1.0f - lambda) * alpha + dgamma * lambda + ddt_angle + decay_grad * a_val;
        ddt_raw = ddt * dt_grad;
        dA = decay_grad * dt * a_grad;
        dtrap = dlambda * lambda * (1.0f - lambda);
        const int64_t row = int64_t(b) * a.T_len + t;
        if (g.ddt.data) g.ddt.at(row, h) = from_float<T>(ddt_raw);
        if (g.dA.data) g.dA.at(row, h) = from_float<T>(dA);
        if (g.dtrap.data) g.dtrap.at(row, h) = from_float<T>(dtrap);
        ddt_bias += ddt_raw;
        dD += trace;
      }
      carry += round_total;
    }
    __syncthreads();  // angle_terms read
  }
  if (threadIdx.x < 32) {
    for (int mask = 16; mask > 0; mask /= 2) {
      ddt_bias += __shfl_xor_sync(0xffffffffu, ddt_bias, mask);
      dD += __shfl_xor_sync(0xffffffffu, dD, mask);
    }
    if (lane == 0) {
      g.head_ddt_bias[bh] = float(ddt_bias);
      g.head_dD[bh] = float(dD);
    }
  }
}

// grid ⌈B·T·(2·R·G·N + S) / 256⌉, 256 threads: dB and dC (over the heads of a group) and the angles' gradient (over
// all heads) of row (b, t), each summed over the heads in order. Phase 5.
template <class T>
__global__ void head_sums_kernel(Args<T> a, BackArgs<T> g) {
  const int64_t GN = int64_t(a.G) * a.N, RGN = a.R * GN, width = 2 * RGN + a.S, RN = a.R * a.N;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(g.batch) * a.T_len * width) return;
  const int64_t m = i / width, col = i % width, b = m / a.T_len, t = m % a.T_len;
  const int heads = a.H / a.G;
  if (col < 2 * RGN) {
    const bool is_c = col >= RGN;
    const Rows<T>& out = is_c ? g.dC : g.dB;
    if (!out.data) return;
    const int64_t rgn = col % RGN, r = rgn / GN, grp = rgn / a.N % a.G, n = rgn % a.N;
    const float* from = is_c ? g.dq_head : g.dk_head;
    float acc = 0.0f;
    for (int h = int(grp) * heads; h < (grp + 1) * heads; ++h)
      acc += from[((b * a.H + h) * a.T_len + t) * RN + r * a.N + n];
    out.at(m, rgn) = from_float<T>(acc);
  } else if (g.dangles.data) {
    const int64_t j = col - 2 * RGN;
    float acc = 0.0f;
    for (int h = 0; h < a.H; ++h) acc += g.dangles_head[((b * a.H + h) * a.T_len + t) * a.S + j];
    g.dangles.at(m, j) = from_float<T>(acc);
  }
}

// grid ⌈H·(2·R·N + 2) / 128⌉, 128 threads: a parameter gradient's element each, added to in a fixed order: the B and C
// biases over (b, t) rows, D and dt_bias over the sequences. Phase 5.
template <class T>
__global__ void parameter_sums_kernel(Args<T> a, BackArgs<T> g) {
  const int RN = a.R * a.N, width = 2 * RN + 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(a.H) * width) return;
  const int h = int(i / width), item = int(i % width);
  if (item < 2 * RN) {
    float* out = item < RN ? g.dB_bias : g.dC_bias;
    if (!out) return;
    const float* from = item < RN ? g.dk_head : g.dq_head;
    const int rn = item % RN;
    float acc = 0.0f;
    for (int b = 0; b < g.batch; ++b) {
      const float* head = from + (int64_t(b) * a.H + h) * a.T_len * RN + rn;
      for (int t = 0; t < a.T_len; ++t) acc += head[int64_t(t) * RN];
    }
    out[h * RN + rn] += acc;
  } else {
    const bool is_dD = item == 2 * RN;
    float* out = is_dD ? g.dD : g.ddt_bias;
    if (!out) return;
    float acc = 0.0f;
    for (int b = 0; b < g.batch; ++b) acc += (is_dD ? g.head_dD : g.head_ddt_bias)[b * a.H + h];
    out[h] += acc;
  }
}

}  // namespace ssm::ops::cuda::mamba3_kernels
