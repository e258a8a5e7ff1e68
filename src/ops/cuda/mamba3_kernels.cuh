// The kernels of ops::mamba3 and ops::mamba3_step on the GPU (ops/cuda/mamba3.cu launches them; the equations are
// in ops.h). Mamba-3's recurrence walked token by token, its state in registers: a block per (sequence, head, rows of
// the state, chunk of tokens), each thread one row p of h and every TPR-th group of four of its N columns, so that a
// token costs each thread a few FMAs per state element and its output row one sum over TPR lanes.
//
// A long sequence is cut into chunks walked in parallel, in three steps: summary_kernel walks each chunk from a zero
// state and keeps where it ends and the product of its decays; carry_kernel turns those into every chunk's starting
// state in order; walk_kernel<kOutput = true> walks each chunk again from its start, writing y. The rotation angles φ
// that every token turns k and q by are prefix sums too: angle_sums_kernel sums each chunk's increments, and a
// chunk's walk starts from the angles before it (start_angle, the same arithmetic in both walks).
//
// Tokens are staged kStage at a time in shared memory: their k and q (B and C plus the biases, turned by φ), x of the
// block's rows and the scalars α, β, γ; slot 0 holds the token before the tile (the trapezoid's previous input).
#pragma once
#include <cstdint>

#include "element.cuh"
#include "rows.cuh"

namespace ssm::ops::cuda::mamba3_kernels {

constexpr int kStage = 8;          // tokens staged at once
constexpr int kSlots = kStage + 1;  // and the one before them
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

// How the threads and chunks are laid out (mamba3.cu's plan_of).
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
  float alpha, beta, gamma, dt;
};
__device__ __forceinline__ float dt_of(float dt_raw, float dt_bias) { return softplus_of(dt_raw + dt_bias); }
__device__ __forceinline__ Coefs coefs_of(float dt_raw, float dt_bias, float A_raw, float A_floor, float trap_raw) {
  Coefs c;
  c.dt = dt_of(dt_raw, dt_bias);
  const float f = A_raw >= 0 ? 1.0f + A_raw : 1.0f / (1.0f - A_raw);  // the heavy-tail activation
  const float a = fminf(-f, -A_floor);
  c.alpha = expf(a * c.dt);
  const float lambda = sigmoid_of(trap_raw);
  c.beta = (1.0f - lambda) * c.dt * c.alpha;
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

// The shared memory of a walk: kSlots tokens' k and q [R·N] (turned), x of the block's rows [R, rows], their scalars,
// and the cosines and sines of their angles [S].
struct Staged {
  float *k, *q, *x, *cosines, *sines;
  Coefs* coefs;
  __host__ __device__ static size_t floats(int R, int N, int rows, int S) {
    return size_t(kSlots) * (2 * R * N + R * rows + 2 * S + 4);
  }
  __device__ Staged(float* shared, int R, int N, int rows, int S) {
    k = shared;
    q = k + kSlots * R * N;
    x = q + kSlots * R * N;
    cosines = x + kSlots * R * rows;
    sines = cosines + kSlots * S;
    coefs = reinterpret_cast<Coefs*>(sines + kSlots * S);
  }
};

// Slot s ← token t's B and C plus the biases (not yet turned) and x of rows [p0, p0 + rows). Every thread of the
// block takes a share.
template <class T>
__device__ void load_slot(const Args<T>& a, const Staged& sm, int s, int b, int h, int t, int p0, int rows,
                          bool with_q) {
  const int64_t row = int64_t(b) * a.T_len + t;
  const int RN = a.R * a.N, g = h / (a.H / a.G);
  for (int i = threadIdx.x; i < RN; i += blockDim.x) {
    const int r = i / a.N, n = i % a.N, column = (r * a.G + g) * a.N + n;
    sm.k[s * RN + i] = to_float(a.B.at(row, column)) + a.B_bias[h * RN + i];
    if (with_q) sm.q[s * RN + i] = to_float(a.C.at(row, column)) + a.C_bias[h * RN + i];
  }
  for (int i = threadIdx.x; i < a.R * rows; i += blockDim.x) {
    const int r = i / rows, p = p0 + i % rows;
    sm.x[s * a.R * rows + i] = p < a.P ? to_float(a.x.at(row, (r * a.H + h) * a.P + p)) : 0.0f;
  }
}

// Turns slots [first, last) of k (and q) by their angles: pair j by cosines / sines [s, j].
template <class T>
__device__ void rotate_slots(const Args<T>& a, const Staged& sm, int first, int last, bool with_q) {
  const int RN = a.R * a.N, per_slot = a.R * a.S;
  for (int i = threadIdx.x; i < (last - first) * per_slot; i += blockDim.x) {
    const int s = first + i / per_slot, r = (i % per_slot) / a.S, j = i % a.S;
    const int lo = a.halves ? j : 2 * j, hi = a.halves ? j + a.N / 2 : 2 * j + 1;
    const float cs = sm.cosines[s * a.S + j], sn = sm.sines[s * a.S + j];
    for (int which = 0; which < (with_q ? 2 : 1); ++which) {
      float* v = (which ? sm.q : sm.k) + s * RN + r * a.N;
      const float v0 = v[lo], v1 = v[hi];
      v[lo] = v0 * cs - v1 * sn;
      v[hi] = v0 * sn + v1 * cs;
    }
  }
}

// A thread's share of its state row: columns 4 (sub + tpr · i) + e, i < kPieces.
struct RowShare {
  float4 h[kPieces];
  int p, sub, pieces;  // pieces: groups of four of the row this thread holds
  bool valid;          // a row of the state (not a padding thread)
};

__device__ __forceinline__ float4 load4(const float* at) { return *reinterpret_cast<const float4*>(at); }

// h ← α h + Σ_r (β x_prev,r[p] k_prev,r + γ x_r[p] k_r) for slot s; then (kOutput) y_r[p] = h · q_r + D x_r[p],
// summed over the row's tpr lanes and written by its first.
template <bool kOutput, class T>
__device__ __forceinline__ void advance(const Args<T>& a, const Staged& sm, RowShare& me, int s, int rows, int tpr,
                                        int64_t y_row, int h, float D) {
  const Coefs c = sm.coefs[s];
  const int RN = a.R * a.N, lr = threadIdx.x / tpr;
#pragma unroll
  for (int i = 0; i < kPieces; ++i) {
    if (i >= me.pieces) break;
    me.h[i].x *= c.alpha;
    me.h[i].y *= c.alpha;
    me.h[i].z *= c.alpha;
    me.h[i].w *= c.alpha;
  }
  for (int r = 0; r < a.R; ++r) {
    const float bx = me.valid ? c.beta * sm.x[((s - 1) * a.R + r) * rows + lr] : 0.0f;
    const float gx = me.valid ? c.gamma * sm.x[(s * a.R + r) * rows + lr] : 0.0f;
    const float *kp = sm.k + (s - 1) * RN + r * a.N, *kr = sm.k + s * RN + r * a.N;
#pragma unroll
    for (int i = 0; i < kPieces; ++i) {
      if (i >= me.pieces) break;
      const int n = 4 * (me.sub + tpr * i);
      const float4 u = load4(kp + n), v = load4(kr + n);
      me.h[i].x += bx * u.x + gx * v.x;
      me.h[i].y += bx * u.y + gx * v.y;
      me.h[i].z += bx * u.z + gx * v.z;
      me.h[i].w += bx * u.w + gx * v.w;
    }
  }
  if constexpr (kOutput) {
    for (int r = 0; r < a.R; ++r) {
      const float* qr = sm.q + s * RN + r * a.N;
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kPieces; ++i) {
        if (i >= me.pieces) break;
        const float4 q = load4(qr + 4 * (me.sub + tpr * i));
        acc += me.h[i].x * q.x + me.h[i].y * q.y + me.h[i].z * q.z + me.h[i].w * q.w;
      }
      for (int lane = tpr / 2; lane > 0; lane /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, lane);
      if (me.valid && me.sub == 0)
        a.y.at(y_row, (r * a.H + h) * a.P + me.p) = from_float<T>(acc + D * sm.x[(s * a.R + r) * rows + lr]);
    }
  }
}

// grid (row blocks, chunks, B·H), blockDim lay.threads, dynamic shared memory Staged::floats. kOutput false: the
// summary walk from a zero state (writes lay.summaries' chunk end and lay.decays); true: the output walk from the chunk's
// start (lay.summaries after carry_kernel when there are several chunks, else the state or zeros), writing y, and the
// last chunk the final state.
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
  const float* start = nullptr;  // the row's starting state, or zeros
  if (kOutput)
    start = lay.chunks > 1 ? lay.summaries + (int64_t(bh) * lay.chunks + c) * PN : (st.ssm0 ? st.ssm0 + bh * PN : nullptr);
#pragma unroll
  for (int i = 0; i < kPieces; ++i)
    me.h[i] = (start && me.valid && i < me.pieces) ? load4(start + int64_t(me.p) * a.N + 4 * (me.sub + lay.tpr * i))
                                                    : make_float4(0.0f, 0.0f, 0.0f, 0.0f);

  // Slot 0: the token before the chunk, turned by the angles there; before the sequence, the state's (or zeros).
  const int j = threadIdx.x;  // the angle this thread advances, when j < S
  float phi = j < a.S ? start_angle(st, lay, a.S, bh, c, j) : 0.0f;
  if (t0 == 0) {
    for (int i = threadIdx.x; i < RN; i += blockDim.x) sm.k[i] = st.k0 ? st.k0[int64_t(bh) * RN + i] : 0.0f;
    for (int i = threadIdx.x; i < a.R * lay.rows; i += blockDim.x) {
      const int r = i / lay.rows, p = p0 + i % lay.rows;
      sm.x[i] = st.x0 && p < a.P ? st.x0[(int64_t(bh) * a.R + r) * a.P + p] : 0.0f;
    }
  } else {
    load_slot(a, sm, 0, b, h, t0 - 1, p0, lay.rows, false);
    if (j < a.S) sincosf(phi, &sm.sines[j], &sm.cosines[j]);
    __syncthreads();
    rotate_slots(a, sm, 0, 1, false);
  }
  float decay = 1.0f;  // summary: the product of the chunk's α (thread 0)
  const float D = a.D ? a.D[h] : 0.0f;

  for (int tb = t0; tb < t_end; tb += kStage) {
    const int n = min(kStage, t_end - tb);
    for (int s = 1; s <= n; ++s) load_slot(a, sm, s, b, h, tb + s - 1, p0, lay.rows, kOutput);
    if (int(threadIdx.x) < n) {
      const int64_t row = int64_t(b) * a.T_len + tb + threadIdx.x;
      sm.coefs[threadIdx.x + 1] = coefs_of(to_float(a.dt.at(row, h)), a.dt_bias[h], to_float(a.A.at(row, h)),
                                           a.A_floor, to_float(a.trap.at(row, h)));
    }
    __syncthreads();  // the slots' scalars, and slot 0, complete
    if (j < a.S) {
      // The increments do not depend on φ: all of them first, then the chain of sums, then the turns.
      float phis[kStage];
#pragma unroll
      for (int s = 1; s <= kStage; ++s)
        if (s <= n)
          phis[s - 1] = kPi * tanhf(to_float(a.angles.at(int64_t(b) * a.T_len + tb + s - 1, j))) * sm.coefs[s].dt;
#pragma unroll
      for (int s = 1; s <= kStage; ++s)
        if (s <= n) phis[s - 1] = phi = wrap_angle(phi + phis[s - 1]);
#pragma unroll
      for (int s = 1; s <= kStage; ++s)
        if (s <= n) sincosf(phis[s - 1], &sm.sines[s * a.S + j], &sm.cosines[s * a.S + j]);
    }
    if (!kOutput && threadIdx.x == 0)
      for (int s = 1; s <= n; ++s) decay *= sm.coefs[s].alpha;
    __syncthreads();
    rotate_slots(a, sm, 1, n + 1, kOutput);
    __syncthreads();
    for (int s = 1; s <= n; ++s) advance<kOutput>(a, sm, me, s, lay.rows, lay.tpr, int64_t(b) * a.T_len + tb + s - 1, h, D);
    __syncthreads();  // every read of the tile done: slot n becomes slot 0
    for (int i = threadIdx.x; i < RN; i += blockDim.x) sm.k[i] = sm.k[n * RN + i];
    for (int i = threadIdx.x; i < a.R * lay.rows; i += blockDim.x) sm.x[i] = sm.x[n * a.R * lay.rows + i];
    __syncthreads();
  }

  float* end = nullptr;  // where the row's end state goes
  if (!kOutput) {
    end = lay.summaries + (int64_t(bh) * lay.chunks + c) * PN;
    if (row_block == 0 && threadIdx.x == 0) lay.decays[int64_t(bh) * lay.chunks + c] = decay;
  } else if (st.ssm && c == lay.chunks - 1) {  // the state: ssm, angle, k and x all given, or none
    end = st.ssm + bh * PN;
    if (row_block == 0) {
      if (j < a.S) st.angle[int64_t(bh) * a.S + j] = phi;
      for (int i = threadIdx.x; i < RN; i += blockDim.x) st.k[int64_t(bh) * RN + i] = sm.k[i];
    }
    for (int i = threadIdx.x; i < a.R * lay.rows; i += blockDim.x) {
      const int r = i / lay.rows, p = p0 + i % lay.rows;
      if (p < a.P) st.x[(int64_t(bh) * a.R + r) * a.P + p] = sm.x[i];
    }
  }
  if (end && me.valid)
#pragma unroll
    for (int i = 0; i < kPieces; ++i)
      if (i < me.pieces) *reinterpret_cast<float4*>(end + int64_t(me.p) * a.N + 4 * (me.sub + lay.tpr * i)) = me.h[i];
}

// grid (⌈P·N / 256⌉, B·H), 256 threads: each state element's chunk starts in order, written over the summaries:
// start_0 = the state (or 0), start_{c+1} = decay_c start_c + end_c.
__global__ void carry_kernel(Layout lay, const float* initial, int64_t PN) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (e >= PN) return;
  float h = initial ? initial[bh * PN + e] : 0.0f;
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

}  // namespace ssm::ops::cuda::mamba3_kernels
