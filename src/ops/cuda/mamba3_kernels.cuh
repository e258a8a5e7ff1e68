// The kernels of ops::mamba3 and ops::mamba3_step on the GPU (ops/cuda/mamba3.cu launches them; the equations are
// in ops.h). Mamba-3's recurrence walked token by token, its state in registers: a block per (sequence, head, rows of
// the state, chunk of tokens), each thread one row p of h and every TPR-th group of four of its N columns, so that a
// token costs each thread a few FMAs per state element and its output row one sum over TPR lanes.
//
// The walk runs the recurrence in the form the CPU's chunked forward uses (ops/cpu/mamba3.cpp): with β̂_t = (1 − λ_t)
// dt_t and Ĥ_t = h_t + β̂_{t+1} Σ_r x_t,r k_t,rᵀ (β̂ = 0 past the call's last token),
//   Ĥ_t = α_t Ĥ_{t−1} + (γ_t + β̂_{t+1}) Σ_r x_t,r k_t,rᵀ,   y_t,r = Ĥ_t q_t,r + D x_t,r − β̂_{t+1} Σ_r' (k_t,r'·q_t,r) x_t,r',
// from Ĥ_{−1} = h + β̂_0 Σ_r x_prev,r k_prev,rᵀ to Ĥ_{T−1} = h_{T−1}: each token costs a thread one multiply and one FMA
// per state element (two with the output), and no token needs the one before it.
//
// A long sequence is cut into chunks walked in parallel, in three steps: walk_kernel<kOutput = false> walks each chunk
// from a zero state and keeps where it ends and the product of its decays; carry_kernel turns those into every
// chunk's starting state in order; walk_kernel<kOutput = true> walks each chunk again from its start, writing y. The
// rotation angles φ that every token turns k and q by are prefix sums too: angle_sums_kernel sums each chunk's
// increments, and a chunk's walk starts from the angles before it (start_angle, the same arithmetic in both walks).
//
// Tokens are staged kStage at a time in shared memory: their k and q (B and C plus the biases, turned by φ), x of the
// block's rows, their scalars (and the next token's β̂), and for the output the dots k_r'·q_r.
#pragma once
#include <cstdint>

#include "element.cuh"
#include "rows.cuh"

namespace ssm::ops::cuda::mamba3_kernels {

constexpr int kStage = 16;  // tokens staged at once
constexpr int kPieces = 8;         // groups of four state columns a thread holds at most (N <= 32 · TPR)
constexpr int kMaxThreads = 256;
constexpr float kPi = 3.14159265358979323846f;
constexpr float kTwoPi = 2.0f * kPi;

template <class T>
struct Args {
  Rows<const T> x, B, C, dt, A, trap, angles;  // rows b · T + t (a step: T = 1)
  const float *dt_bias, *B_bias, *C_bias, *D;  // D may be null
  Rows<T> y;
  int T_len, H, P, G, N, S, R;  // T_len: tokens a sequence
  bool halves;  // Mamba3Rotation::Halves: pair j is (j, j + N/2), else (2j, 2j + 1)
  float A_floor;
};

// The recurrent state (ops::Mamba3State): where the walk starts (nulls: zeros) and where the last chunk leaves it
// (nulls: nothing kept). The start is a copy when several blocks read what the last one writes (mamba3.cu).
struct State {
  const float *angle0, *ssm0, *k0, *x0;
  float *angle, *ssm, *k, *x;
};

// How the threads and chunks are laid out (mamba3.cu's threads_of and chunk).
struct Layout {
  int tpr;         // threads per state row, a power of two: N <= 32 · tpr
  int rows;        // state rows a block holds
  int threads;     // rows · tpr rounded up to warps
  int chunks;      // chunks of the sequence walked in parallel
  int chunk_len;   // tokens a chunk (the last may be shorter)
  float* summaries;  // [B·H, chunks, P, N]: each chunk's end from zero, then (carry_kernel) its start
  float* decays;     // [B·H, chunks]: the product of a chunk's α
  float* angle_sums; // [B·H, chunks, S]
};

// torch's softplus and sigmoid in F32 with the accurate expf and log1pf (no engine headers here, so that a host
// check can include this file).
__device__ __forceinline__ float softplus_of(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float sigmoid_of(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float wrap_angle(float a) { return a - kTwoPi * floorf(a / kTwoPi); }

struct Coefs {
  float alpha, beta_hat, gamma, dt;  // β̂ = (1 − λ) dt: token t's weight β_t = β̂_t α_t of the token before
};
__device__ __forceinline__ float dt_of(float dt_raw, float dt_bias) { return softplus_of(dt_raw + dt_bias); }
__device__ __forceinline__ Coefs coefs_of(float dt_raw, float dt_bias, float A_raw, float A_floor, float trap_raw) {
  Coefs c;
  c.dt = dt_of(dt_raw, dt_bias);
  const float f = A_raw >= 0 ? 1.0f + A_raw : 1.0f / (1.0f - A_raw);  // the heavy-tail activation
  const float a = fminf(-f, -A_floor);
  c.alpha = expf(a * c.dt);
  const float lambda = sigmoid_of(trap_raw);
  c.beta_hat = (1.0f - lambda) * c.dt;
  c.gamma = lambda * c.dt;
  return c;
}

// grid (chunks, B·H), threads >= S: thread j sums φ's increments π tanh(angle_j) dt over its chunk, in order.
template <class T>
__global__ void angle_sums_kernel(Args<T> a, Layout lay) {
  const int j = threadIdx.x, bh = blockIdx.y, b = bh / a.H, h = bh % a.H, c = blockIdx.x;
  if (j >= a.S) return;
  const int t0 = c * lay.chunk_len, t1 = min(a.T_len, t0 + lay.chunk_len);
  float sum = 0.0f;
#pragma unroll 8
  for (int t = t0; t < t1; ++t) {
    const int64_t row = int64_t(b) * a.T_len + t;
    sum += kPi * tanhf(to_float(a.angles.at(row, j))) * dt_of(to_float(a.dt.at(row, h)), a.dt_bias[h]);
  }
  lay.angle_sums[(int64_t(bh) * lay.chunks + c) * a.S + j] = sum;
}

// φ_j after the tokens before chunk c: the state's angle (or 0), then each earlier chunk's sum, wrapped.
__device__ __forceinline__ float start_angle(const State& st, const Layout& lay, int S, int bh, int c, int j) {
  float phi = st.angle0 ? st.angle0[int64_t(bh) * S + j] : 0.0f;
  for (int k = 0; k < c; ++k) phi = wrap_angle(phi + lay.angle_sums[(int64_t(bh) * lay.chunks + k) * S + j]);
  return phi;
}

// The shared memory of a walk: kStage tokens' k and q [R·N] (turned), x of the block's rows [R, rows], the angles
// (first their increments) and their cosines and sines [S], the dots k_r'·q_r [R, R], and the scalars of the tokens
// and of the one after them.
struct Staged {
  float *k, *q, *x, *angles, *cosines, *sines, *kq;
  Coefs* coefs;
  __host__ __device__ static size_t floats(int R, int N, int rows, int S) {
    return size_t(kStage) * (2 * R * N + R * rows + 3 * S + R * R) + size_t(kStage + 1) * 4;
  }
  __device__ Staged(float* shared, int R, int N, int rows, int S) {
    k = shared;
    q = k + kStage * R * N;
    x = q + kStage * R * N;
    angles = x + kStage * R * rows;
    cosines = angles + kStage * S;
    sines = cosines + kStage * S;
    kq = sines + kStage * S;
    coefs = reinterpret_cast<Coefs*>(kq + kStage * R * R);
  }
};

// Token t's scalars, or zeros past the call's tokens (only β̂ of the token after the last is read: 0 there).
template <class T>
__device__ __forceinline__ Coefs coefs_at(const Args<T>& a, int b, int h, int t) {
  if (t >= a.T_len) return Coefs{0.0f, 0.0f, 0.0f, 0.0f};
  const int64_t row = int64_t(b) * a.T_len + t;
  return coefs_of(to_float(a.dt.at(row, h)), a.dt_bias[h], to_float(a.A.at(row, h)), a.A_floor,
                  to_float(a.trap.at(row, h)));
}

// Ĥ_{−1} at (p, n): the state's h plus β̂_0 Σ_r x_prev,r[p] k_prev,r[n], or 0 without a state.
template <class T>
__device__ __forceinline__ float initial_element(const Args<T>& a, const State& st, float beta_hat0, int bh, int p,
                                                 int n) {
  if (!st.ssm0) return 0.0f;
  float v = st.ssm0[(int64_t(bh) * a.P + p) * a.N + n];
  for (int r = 0; r < a.R; ++r)
    v += beta_hat0 * st.x0[(int64_t(bh) * a.R + r) * a.P + p] * st.k0[(int64_t(bh) * a.R + r) * a.N + n];
  return v;
}

// Loads tokens [tb, tb + n) of sequence b, head h: B (and with kQ, C) plus the biases into k (q), x of rows [p0, p0 +
// rows), and the scalars of tokens tb .. tb + n. Ends with a barrier; the caller's barrier before it must have ended
// every read of the last tile.
template <bool kQ, class T>
__device__ void load_tile(const Args<T>& a, const Staged& sm, int b, int h, int tb, int n, int p0, int rows) {
  const int RN = a.R * a.N, g = h / (a.H / a.G);
  for (int i = threadIdx.x; i < n * RN; i += blockDim.x) {
    const int s = i / RN, rn = i % RN, r = rn / a.N, column = (r * a.G + g) * a.N + rn % a.N;
    const int64_t row = int64_t(b) * a.T_len + tb + s;
    sm.k[i] = to_float(a.B.at(row, column)) + a.B_bias[h * RN + rn];
    if (kQ) sm.q[i] = to_float(a.C.at(row, column)) + a.C_bias[h * RN + rn];
  }
  for (int i = threadIdx.x; i < n * a.R * rows; i += blockDim.x) {
    const int s = i / (a.R * rows), r = i / rows % a.R, p = p0 + i % rows;
    sm.x[i] = p < a.P ? to_float(a.x.at(int64_t(b) * a.T_len + tb + s, (r * a.H + h) * a.P + p)) : 0.0f;
  }
  if (int(threadIdx.x) <= n) sm.coefs[threadIdx.x] = coefs_at(a, b, h, tb + int(threadIdx.x));
  __syncthreads();
}

// Turns the staged k (and with kQ, q) of n tokens by the staged angles. The angles' barrier must come before; ends
// with a barrier.
template <bool kQ, class T>
__device__ void turn_tile(const Args<T>& a, const Staged& sm, int n) {
  const int RN = a.R * a.N;
  for (int i = threadIdx.x; i < n * a.S; i += blockDim.x) sincosf(sm.angles[i], &sm.sines[i], &sm.cosines[i]);
  __syncthreads();  // their cosines and sines
  for (int i = threadIdx.x; i < n * a.R * a.S; i += blockDim.x) {
    const int s = i / (a.R * a.S), r = i / a.S % a.R, jj = i % a.S;
    const int lo = a.halves ? jj : 2 * jj, hi = a.halves ? jj + a.N / 2 : 2 * jj + 1;
    const float cs = sm.cosines[s * a.S + jj], sn = sm.sines[s * a.S + jj];
    for (int which = 0; which < (kQ ? 2 : 1); ++which) {
      float* v = (which ? sm.q : sm.k) + s * RN + r * a.N;
      const float v0 = v[lo], v1 = v[hi];
      v[lo] = v0 * cs - v1 * sn;
      v[hi] = v0 * sn + v1 * cs;
    }
  }
  __syncthreads();  // k and q turned
}

// kq[s, r', r] = k_s,r'·q_s,r for the first `dotted` staged tokens: a warp per dot, its lanes over N. Ends with a
// barrier when there are any.
template <class T>
__device__ void dot_tile(const Args<T>& a, const Staged& sm, int dotted) {
  if (dotted <= 0) return;
  const int RN = a.R * a.N, warp = threadIdx.x / 32, lane = threadIdx.x % 32, dots = dotted * a.R * a.R;
  for (int d = warp; d < dots; d += blockDim.x / 32) {
    const int s = d / (a.R * a.R), rk = d / a.R % a.R, rq = d % a.R;
    const float *kv = sm.k + s * RN + rk * a.N, *qv = sm.q + s * RN + rq * a.N;
    float acc = 0.0f;
    for (int nn = lane; nn < a.N; nn += 32) acc += kv[nn] * qv[nn];
    for (int width = 16; width > 0; width /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, width);
    if (lane == 0) sm.kq[d] = acc;
  }
  __syncthreads();
}

// Stages tokens [tb, tb + n) for a walk (load_tile), the angles advanced from φ (thread j < S holds φ_j and advances
// it) and k and q turned by them, and for the output the dots k_r'·q_r, not for a call's last token (its next β̂ is 0:
// a step). Ends with a barrier.
template <bool kOutput, class T>
__device__ void stage_tile(const Args<T>& a, const Staged& sm, int b, int h, int tb, int n, int p0, int rows,
                           float& phi) {
  const int j = threadIdx.x;
  load_tile<kOutput>(a, sm, b, h, tb, n, p0, rows);
  for (int i = threadIdx.x; i < n * a.S; i += blockDim.x) {
    const int s = i / a.S;
    sm.angles[i] = kPi * tanhf(to_float(a.angles.at(int64_t(b) * a.T_len + tb + s, i % a.S))) * sm.coefs[s].dt;
  }
  __syncthreads();  // the increments
  if (j < a.S)
    for (int s = 0; s < n; ++s) sm.angles[s * a.S + j] = phi = wrap_angle(phi + sm.angles[s * a.S + j]);
  __syncthreads();  // the angles
  turn_tile<kOutput>(a, sm, n);
  if (kOutput) dot_tile(a, sm, tb + n < a.T_len ? n : n - 1);
}

// A thread's share of its state row: columns 4 (sub + tpr · i) + e, i < kPieces.
struct RowShare {
  float4 h[kPieces];
  int p, sub, pieces;  // pieces: groups of four of the row this thread holds
  bool valid;          // a row of the state (not a padding thread)
};

__device__ __forceinline__ float4 load4(const float* at) { return *reinterpret_cast<const float4*>(at); }

// Ĥ ← α Ĥ + Σ_r (γ + β̂') x_r[p] k_r for staged token s (β̂' the next token's); then (kOutput) y_r[p] = Ĥ·q_r + D x_r[p]
// − β̂' Σ_r' (k_r'·q_r) x_r'[p], summed over the row's tpr lanes and written by its first.
template <bool kOutput, class T>
__device__ __forceinline__ void advance(const Args<T>& a, const Staged& sm, RowShare& me, int s, int rows, int tpr,
                                        int64_t y_row, int h, float D) {
  const Coefs c = sm.coefs[s];
  const float next_beta_hat = sm.coefs[s + 1].beta_hat, weight = c.gamma + next_beta_hat;
  const int RN = a.R * a.N, lr = threadIdx.x / tpr;
  const float* xs = sm.x + s * a.R * rows + lr;  // x_r[p] at xs[r · rows]
  for (int r = 0; r < a.R; ++r) {
    const float w = me.valid ? weight * xs[r * rows] : 0.0f;
    const float* kr = sm.k + s * RN + r * a.N;
    const float decay = r == 0 ? c.alpha : 1.0f;
#pragma unroll
    for (int i = 0; i < kPieces; ++i) {
      if (i >= me.pieces) break;
      const float4 v = load4(kr + 4 * (me.sub + tpr * i));
      me.h[i].x = fmaf(decay, me.h[i].x, w * v.x);
      me.h[i].y = fmaf(decay, me.h[i].y, w * v.y);
      me.h[i].z = fmaf(decay, me.h[i].z, w * v.z);
      me.h[i].w = fmaf(decay, me.h[i].w, w * v.w);
    }
  }
  if constexpr (kOutput) {
    for (int r = 0; r < a.R; ++r) {
      const float* qr = sm.q + s * RN + r * a.N;
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);  // four chains, not one of 32
#pragma unroll
      for (int i = 0; i < kPieces; ++i) {
        if (i >= me.pieces) break;
        const float4 q = load4(qr + 4 * (me.sub + tpr * i));
        acc.x = fmaf(me.h[i].x, q.x, acc.x);
        acc.y = fmaf(me.h[i].y, q.y, acc.y);
        acc.z = fmaf(me.h[i].z, q.z, acc.z);
        acc.w = fmaf(me.h[i].w, q.w, acc.w);
      }
      float sum = (acc.x + acc.y) + (acc.z + acc.w);
      for (int lane = tpr / 2; lane > 0; lane /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, lane);
      if (me.valid && me.sub == 0) {
        float correction = 0.0f;  // kq is not formed where β̂' is 0
        if (next_beta_hat != 0.0f)
          for (int rk = 0; rk < a.R; ++rk) correction += sm.kq[(s * a.R + rk) * a.R + r] * xs[rk * rows];
        a.y.at(y_row, (r * a.H + h) * a.P + me.p) = from_float<T>(sum + D * xs[r * rows] - next_beta_hat * correction);
      }
    }
  }
}

// grid (row blocks, chunks, B·H), blockDim lay.threads, dynamic shared memory Staged::floats. kOutput false: the
// summary walk from a zero state (writes lay.summaries' chunk end and lay.decays); true: the output walk from the chunk's
// start (lay.summaries after carry_kernel when there are several chunks, else from the state or zeros), writing y, and
// the last chunk the final state.
template <class T, bool kOutput>
__global__ void __launch_bounds__(kMaxThreads) walk_kernel(Args<T> a, State st, Layout lay) {
  extern __shared__ __align__(16) float smem[];
  const Staged sm(smem, a.R, a.N, lay.rows, a.S);
  const int row_block = blockIdx.x, c = blockIdx.y, bh = blockIdx.z, b = bh / a.H, h = bh % a.H;
  const int p0 = row_block * lay.rows, RN = a.R * a.N;
  const int t0 = c * lay.chunk_len, t_end = min(a.T_len, t0 + lay.chunk_len);
  const int64_t PN = int64_t(a.P) * a.N;

  RowShare me;
  me.sub = threadIdx.x % lay.tpr;
  me.p = p0 + int(threadIdx.x) / lay.tpr;
  me.valid = int(threadIdx.x) / lay.tpr < lay.rows && me.p < a.P;
  me.pieces = max(0, (a.N / 4 - me.sub + lay.tpr - 1) / lay.tpr);
  if (kOutput && lay.chunks > 1) {
    const float* start = lay.summaries + (int64_t(bh) * lay.chunks + c) * PN + int64_t(me.p) * a.N;
#pragma unroll
    for (int i = 0; i < kPieces; ++i)
      me.h[i] = me.valid && i < me.pieces ? load4(start + 4 * (me.sub + lay.tpr * i)) : make_float4(0, 0, 0, 0);
  } else {
    // Ĥ_{−1} = h + β̂_0 Σ_r x_prev,r k_prev,rᵀ (initial_element's arithmetic), the row's pieces loaded at once: a
    // decode step's walk is this load and one token, and loads waiting one after another had cost it ~40 µs.
    const bool from_state = kOutput && st.ssm0 && me.valid;
    const float beta_hat0 = from_state ? coefs_at(a, b, h, 0).beta_hat : 0.0f;
    const float* row = from_state ? st.ssm0 + (int64_t(bh) * a.P + me.p) * a.N : nullptr;
#pragma unroll
    for (int i = 0; i < kPieces; ++i)
      me.h[i] = from_state && i < me.pieces ? load4(row + 4 * (me.sub + lay.tpr * i)) : make_float4(0, 0, 0, 0);
    for (int r = 0; from_state && r < a.R; ++r) {
      const float w = beta_hat0 * st.x0[(int64_t(bh) * a.R + r) * a.P + me.p];
      const float* kr = st.k0 + (int64_t(bh) * a.R + r) * a.N;
#pragma unroll
      for (int i = 0; i < kPieces; ++i) {
        if (i >= me.pieces) break;
        const float4 v = load4(kr + 4 * (me.sub + lay.tpr * i));
        me.h[i].x += w * v.x;
        me.h[i].y += w * v.y;
        me.h[i].z += w * v.z;
        me.h[i].w += w * v.w;
      }
    }
  }
  const int j = threadIdx.x;  // the angle this thread advances, when j < S
  float phi = j < a.S ? start_angle(st, lay, a.S, bh, c, j) : 0.0f;
  float decay = 1.0f;  // summary: the product of the chunk's α (thread 0)
  const float D = a.D ? a.D[h] : 0.0f;
  int last = 0;  // the last tile's tokens

  for (int tb = t0; tb < t_end; tb += kStage) {
    const int n = min(kStage, t_end - tb);
    last = n;
    stage_tile<kOutput>(a, sm, b, h, tb, n, p0, lay.rows, phi);
    if (!kOutput && threadIdx.x == 0)
      for (int s = 0; s < n; ++s) decay *= sm.coefs[s].alpha;
    for (int s = 0; s < n; ++s) advance<kOutput>(a, sm, me, s, lay.rows, lay.tpr, int64_t(b) * a.T_len + tb + s, h, D);
    __syncthreads();  // every read of the tile done
  }

  float* end = nullptr;  // where the row's end state goes
  if (!kOutput) {
    end = lay.summaries + (int64_t(bh) * lay.chunks + c) * PN;
    if (row_block == 0 && threadIdx.x == 0) lay.decays[int64_t(bh) * lay.chunks + c] = decay;
  } else if (st.ssm && c == lay.chunks - 1) {  // the state: ssm, angle, k and x all given, or none
    end = st.ssm + bh * PN;
    if (row_block == 0) {
      if (j < a.S) st.angle[int64_t(bh) * a.S + j] = phi;
      for (int i = threadIdx.x; i < RN; i += blockDim.x) st.k[int64_t(bh) * RN + i] = sm.k[(last - 1) * RN + i];
    }
    for (int i = threadIdx.x; i < a.R * lay.rows; i += blockDim.x) {
      const int r = i / lay.rows, p = p0 + i % lay.rows;
      if (p < a.P) st.x[(int64_t(bh) * a.R + r) * a.P + p] = sm.x[(last - 1) * a.R * lay.rows + i];
    }
  }
  if (end && me.valid)
#pragma unroll
    for (int i = 0; i < kPieces; ++i)
      if (i < me.pieces) *reinterpret_cast<float4*>(end + int64_t(me.p) * a.N + 4 * (me.sub + lay.tpr * i)) = me.h[i];
}

// grid (⌈P·N / 256⌉, B·H), 256 threads: each state element's chunk starts in order, written over the summaries:
// start_0 = Ĥ_{−1} (initial_element), start_{c+1} = decay_c start_c + end_c.
template <class T>
__global__ void carry_kernel(Args<T> a, State st, Layout lay) {
  const int64_t PN = int64_t(a.P) * a.N, e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (e >= PN) return;
  const float beta_hat0 = st.ssm0 ? coefs_at(a, int(bh / a.H), int(bh % a.H), 0).beta_hat : 0.0f;
  float h = initial_element(a, st, beta_hat0, int(bh), int(e / a.N), int(e % a.N));
  constexpr int kAhead = 8;
  for (int c0 = 0; c0 < lay.chunks; c0 += kAhead) {
    float ends[kAhead];
#pragma unroll
    for (int i = 0; i < kAhead; ++i)
      ends[i] = c0 + i < lay.chunks ? lay.summaries[(bh * lay.chunks + c0 + i) * PN + e] : 0.0f;
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      if (c0 + i >= lay.chunks) break;
      lay.summaries[(bh * lay.chunks + c0 + i) * PN + e] = h;
      h = lay.decays[bh * lay.chunks + c0 + i] * h + ends[i];
    }
  }
}

// MIMO's per-channel projections (ops::mamba3_mimo_expand / _contract), a thread per output element: wide [rows, R·H·P]
// and narrow [rows, H·P], w [H, R, P].
template <class T>
__global__ void mimo_expand_kernel(Rows<const T> narrow, const float* w, Rows<T> wide, int64_t rows, int H, int R,
                                   int P) {
  const int64_t HP = int64_t(H) * P, width = R * HP, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * width) return;
  const int64_t m = i / width, col = i % width, r = col / HP, hp = col % HP, hd = hp / P, p = hp % P;
  wide.at(m, col) = from_float<T>(to_float(narrow.at(m, hp)) * w[(hd * R + r) * P + p]);
}
template <class T>
__global__ void mimo_contract_kernel(Rows<const T> wide, const float* w, Rows<T> narrow, int64_t rows, int H, int R,
                                     int P) {
  const int64_t HP = int64_t(H) * P, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * HP) return;
  const int64_t m = i / HP, hp = i % HP, hd = hp / P, p = hp % P;
  float acc = 0.0f;
  for (int r = 0; r < R; ++r) acc += to_float(wide.at(m, r * HP + hp)) * w[(hd * R + r) * P + p];
  narrow.at(m, hp) = from_float<T>(acc);
}

// Their weight's gradient (ops::mamba3_mimo_weight_grad), a thread per dw[h, r, p] adding its rows in order.
template <class T>
__global__ void mimo_weight_grad_kernel(Rows<const T> wide, Rows<const T> narrow, float* dw, int64_t rows, int H, int R,
                                        int P) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, HP = int64_t(H) * P;
  if (i >= R * HP) return;
  const int64_t hd = i / (R * P), r = i / P % R, p = i % P, wide_col = r * HP + hd * P + p, narrow_col = hd * P + p;
  float acc = 0.0f;
  for (int64_t m = 0; m < rows; ++m) acc += to_float(wide.at(m, wide_col)) * to_float(narrow.at(m, narrow_col));
  dw[i] += acc;
}

}  // namespace ssm::ops::cuda::mamba3_kernels
