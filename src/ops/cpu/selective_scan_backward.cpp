// Mamba-1 selective scan: a forward that saves the chunk-boundary states, and the backward that
// recomputes the forward inside each chunk from them (mamba_ssm's csrc/selective_scan scheme).
//
// Per channel d and state n (dt_t = softplus(delta_t + bias_d), a_t = exp(dt_t A_dn)):
//   h_t = a_t h_{t-1} + dt_t B_tn u_t,   y_t = Σ_n C_tn h_t + D u_t,   out_t = y_t silu(z_t).
// Backward, walking t downwards with the adjoint g_t = ∂L/∂h_t (carried as ḡ = g_{t+1} a_{t+1}):
//   gy = dout silu(z),  dz = dout y silu'(z),  g = ḡ + gy C_t,
//   dC_tn += gy h_t,  dB_tn += g dt u,  du = gy D + Σ_n g dt B_tn,
//   ddt = Σ_n g (h_{t-1} a_t A + B_tn u),  dA_dn += g h_{t-1} a_t dt,  dD += gy u,
//   ddelta = ddt softplus'(delta + bias),  dbias += ddelta,  ḡ = g a_t.
// Vectorised over 16 channels (one f32x16 per state index n). An OpenMP task is one batch row and a
// group of channel blocks; it walks the chunks backwards and, inside each chunk, its blocks, keeping
// the chunk's dB/dC contributions per lane so that the sum over channels costs one horizontal add
// per (row, n) and group. Partial sums are added in a fixed order: results are bit-reproducible.
#include <omp.h>

#include <algorithm>

#include "ops/cpu/op_util.h"
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops_backward.h"

namespace ssm::ops {

namespace {

using detail::describe;
using detail::is_f32_rows;
using vec::f32x16;
constexpr int64_t W = vec::kLanes;

struct ScanDims {
  int64_t Bt, T, D, N;
};

ScanDims check_scan(const char* op, const SelectiveScanInputs& in, const Tensor& state0) {
  SSM_CHECK(is_f32_rows(in.u) && in.u.dim() == 3, "{}: u must be F32 rows [B,T,D], got {}", op, describe(in.u));
  ScanDims d{in.u.size(0), in.u.size(1), in.u.size(2), 0};
  SSM_CHECK(is_f32_rows(in.delta, in.u.shape()), "{}: delta must be F32 rows {}, got {}", op, shape_str(in.u.shape()),
            describe(in.delta));
  SSM_CHECK(
      in.A.defined() && in.A.dtype() == DType::F32 && in.A.dim() == 2 && in.A.size(0) == d.D && in.A.is_contiguous(),
      "{}: A must be contiguous F32 [{}, N], got {}", op, d.D, describe(in.A));
  d.N = in.A.size(1);
  const Shape bn{d.Bt, d.T, d.N};
  SSM_CHECK(is_f32_rows(in.B, bn) && is_f32_rows(in.C, bn), "{}: B and C must be F32 rows {}, got {} and {}", op,
            shape_str(bn), describe(in.B), describe(in.C));
  SSM_CHECK(!in.delta_bias.defined() || detail::is_f32_vec(in.delta_bias, d.D),
            "{}: delta_bias must be F32 [{}], got {}", op, d.D, describe(in.delta_bias));
  SSM_CHECK(!in.D.defined() || detail::is_f32_vec(in.D, d.D), "{}: D must be F32 [{}], got {}", op, d.D,
            describe(in.D));
  SSM_CHECK(!in.z.defined() || is_f32_rows(in.z, in.u.shape()), "{}: z must be F32 rows {}, got {}", op,
            shape_str(in.u.shape()), describe(in.z));
  if (state0.defined())
    SSM_CHECK(detail::is_f32_contig(state0, {d.Bt, d.D, d.N}), "{}: state0 must be contiguous F32 [{}, {}, {}], got {}",
              op, d.Bt, d.D, d.N, describe(state0));
  return d;
}

// Pointers and strides of the inputs, and per-block loads of 16 channels (or fewer at the tail).
struct ScanView {
  const float *u, *delta, *bias, *A, *B, *C, *Dp, *z;
  int64_t ldu, lddelta, ldB, ldC, ldz;
  bool softplus;
  ScanView(const SelectiveScanInputs& in)
      : u(in.u.data<float>()),
        delta(in.delta.data<float>()),
        bias(in.delta_bias.defined() ? in.delta_bias.data<float>() : nullptr),
        A(in.A.data<float>()),
        B(in.B.data<float>()),
        C(in.C.data<float>()),
        Dp(in.D.defined() ? in.D.data<float>() : nullptr),
        z(in.z.defined() ? in.z.data<float>() : nullptr),
        ldu(in.u.row_stride()),
        lddelta(in.delta.row_stride()),
        ldB(in.B.row_stride()),
        ldC(in.C.row_stride()),
        ldz(in.z.defined() ? in.z.row_stride() : 0),
        softplus(in.delta_softplus) {}
};

inline f32x16 load_n(const float* p, int64_t n) { return n == W ? vec::load(p) : vec::load_partial(p, n); }
inline void store_n(float* p, f32x16 v, int64_t n) {
  if (n == W)
    vec::store(p, v);
  else
    vec::store_partial(p, v, n);
}
inline f32x16 sigmoid(f32x16 x) { return 1.0f / (1.0f + vec::fast_exp(-x)); }

// Per-block constants: A transposed to [N] vectors of channels (in the caller's memory), the bias
// and D vectors.
struct BlockConsts {
  const f32x16* A = nullptr;
  f32x16 bias{}, D{};
};

// The constants of channels [d0, d0 + nd), A written to A_out [N].
BlockConsts block_consts(const ScanView& v, int64_t d0, int64_t nd, int64_t N, f32x16* A_out) {
  BlockConsts k;
  for (int64_t n = 0; n < N; ++n) A_out[n] = f32x16{};
  for (int64_t i = 0; i < nd; ++i) {
    for (int64_t n = 0; n < N; ++n) A_out[n][i] = v.A[(d0 + i) * N + n];
    if (v.bias) k.bias[i] = v.bias[d0 + i];
    if (v.Dp) k.D[i] = v.Dp[d0 + i];
  }
  k.A = A_out;
  return k;
}

// Per-thread memory for the constants of up to `blocks` blocks.
struct ConstsScratch {
  detail::Scratch consts, A;
  BlockConsts* get(int64_t blocks, int64_t N, f32x16** A_out) {
    *A_out = A.get<f32x16>(size_t(blocks * N));
    return consts.get<BlockConsts>(size_t(blocks));
  }
};

inline f32x16 delta_value(const ScanView& v, const BlockConsts& k, int64_t row, int64_t d0, int64_t nd) {
  const f32x16 raw = load_n(v.delta + row * v.lddelta + d0, nd) + k.bias;
  return v.softplus ? vec::softplus(raw) : raw;
}

// Runs the recurrence for rows [t0, t1) of batch b on h (N vectors), optionally writing y.
void scan_rows(const ScanView& v, const BlockConsts& k, int64_t b, int64_t T, int64_t t0, int64_t t1, int64_t d0,
               int64_t nd, int64_t N, f32x16* h, float* y, int64_t ldy, bool prefetch_next = false) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = b * T + t;
    if (prefetch_next) {  // the next block's columns of these rows (see the backward)
      __builtin_prefetch(v.delta + row * v.lddelta + d0 + W);
      __builtin_prefetch(v.u + row * v.ldu + d0 + W);
      if (v.z) __builtin_prefetch(v.z + row * v.ldz + d0 + W);
      if (y) __builtin_prefetch(y + row * ldy + d0 + W, 1);
    }
    const f32x16 dt = delta_value(v, k, row, d0, nd);
    const f32x16 u = load_n(v.u + row * v.ldu + d0, nd);
    const f32x16 dtu = dt * u;
    const float* Bt = v.B + row * v.ldB;
    const float* Ct = v.C + row * v.ldC;
    f32x16 acc0{}, acc1{};
    const f32x16* Av = k.A;
    auto step = [&](int64_t n, f32x16& acc) {
      h[n] = vec::fast_exp(dt * Av[n]) * h[n] + dtu * Bt[n];
      acc += h[n] * Ct[n];
    };
    int64_t n = 0;
    for (; n + 1 < N; n += 2) {
      step(n, acc0);
      step(n + 1, acc1);
    }
    if (n < N) step(n, acc0);
    if (y) {
      f32x16 out = (acc0 + acc1) + k.D * u;
      if (v.z) {
        const f32x16 z = load_n(v.z + row * v.ldz + d0, nd);
        out *= vec::silu(z);
      }
      store_n(y + row * ldy + d0, out, nd);
    }
  }
}

void load_state(const float* src, int64_t d0, int64_t nd, int64_t N, f32x16* h) {
  for (int64_t n = 0; n < N; ++n) h[n] = f32x16{};
  if (!src) return;
  for (int64_t i = 0; i < nd; ++i)
    for (int64_t n = 0; n < N; ++n) h[n][i] = src[(d0 + i) * N + n];
}
void save_state(float* dst, int64_t d0, int64_t nd, int64_t N, const f32x16* h) {
  for (int64_t i = 0; i < nd; ++i)
    for (int64_t n = 0; n < N; ++n) dst[(d0 + i) * N + n] = h[n][i];
}

}  // namespace

int64_t selective_scan_chunk_count(int64_t T, int64_t chunk_size) {
  SSM_CHECK(chunk_size >= 1, "selective scan: chunk_size must be positive, got {}", chunk_size);
  return std::max<int64_t>(1, (T + chunk_size - 1) / chunk_size);
}

void selective_scan_forward_saving_chunk_states(const SelectiveScanInputs& in, const Tensor& state0,
                                                int64_t chunk_size, Tensor& y, Tensor& chunk_states,
                                                Tensor* final_state) {
  SSM_GPU_DISPATCH(y, selective_scan_forward_saving_chunk_states, in, state0, chunk_size, y, chunk_states,
                   final_state);
  const char* op = "selective_scan_forward_saving_chunk_states";
  const ScanDims d = check_scan(op, in, state0);
  const int64_t n_chunks = selective_scan_chunk_count(d.T, chunk_size);
  SSM_CHECK(detail::is_f32_contig(chunk_states, {d.Bt, n_chunks, d.D, d.N}),
            "{}: chunk_states must be contiguous F32 [{}, {}, {}, {}], got {}", op, d.Bt, n_chunks, d.D, d.N,
            describe(chunk_states));
  SSM_CHECK(is_f32_rows(y, in.u.shape()), "{}: y must be F32 rows {}, got {}", op, shape_str(in.u.shape()),
            describe(y));
  if (final_state)
    SSM_CHECK(detail::is_f32_contig(*final_state, {d.Bt, d.D, d.N}),
              "{}: final_state must be contiguous F32 [{}, {}, {}], got {}", op, d.Bt, d.D, d.N,
              describe(*final_state));
  const ScanView v(in);
  const int64_t n_blocks = (d.D + W - 1) / W;
  float* yp = y.data<float>();
  const int64_t ldy = y.row_stride();
  float* sp = chunk_states.data<float>();
  const float* s0 = state0.defined() ? state0.data<float>() : nullptr;
  // Tasks: (batch row, group of channel blocks); rows are walked in short tiles and, inside a tile,
  // block by block, so that each row's data is read whole while it is in cache (walking one block
  // down all rows would read 64 bytes per row at a stride of several KB).
  const int64_t n_groups = std::clamp<int64_t>((2 * int64_t(omp_get_max_threads()) + d.Bt - 1) / d.Bt, 1, n_blocks);
  const int64_t per_group = (n_blocks + n_groups - 1) / n_groups;
  constexpr int64_t kTile = 16;
#pragma omp parallel
  {
    thread_local detail::Scratch h_scratch;
    thread_local ConstsScratch consts_scratch;
    f32x16* h = h_scratch.get<f32x16>(size_t(per_group * d.N));
    f32x16* consts_A = nullptr;
    BlockConsts* consts = consts_scratch.get(per_group, d.N, &consts_A);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < d.Bt * n_groups; ++task) {
      const int64_t b = task / n_groups, grp = task % n_groups;
      const int64_t blk0 = grp * per_group, blk1 = std::min(n_blocks, blk0 + per_group);
      if (blk0 >= blk1) continue;
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t d0 = blk * W, nd = std::min(W, d.D - d0);
        consts[blk - blk0] = block_consts(v, d0, nd, d.N, consts_A + (blk - blk0) * d.N);
        load_state(s0 ? s0 + b * d.D * d.N : nullptr, d0, nd, d.N, h + (blk - blk0) * d.N);
      }
      for (int64_t t0 = 0; t0 < d.T;) {
        const int64_t chunk_end = std::min(d.T, (t0 / chunk_size + 1) * chunk_size);
        const int64_t t1 = std::min(chunk_end, t0 + kTile);
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          const int64_t d0 = blk * W, nd = std::min(W, d.D - d0);
          f32x16* hb = h + (blk - blk0) * d.N;
          if (t0 % chunk_size == 0) save_state(sp + (b * n_chunks + t0 / chunk_size) * d.D * d.N, d0, nd, d.N, hb);
          scan_rows(v, consts[blk - blk0], b, d.T, t0, t1, d0, nd, d.N, hb, yp, ldy, blk + 1 < blk1);
        }
        t0 = t1;
      }
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t d0 = blk * W, nd = std::min(W, d.D - d0);
        f32x16* hb = h + (blk - blk0) * d.N;
        if (d.T == 0) save_state(sp + b * n_chunks * d.D * d.N, d0, nd, d.N, hb);
        if (final_state) save_state(final_state->data<float>() + b * d.D * d.N, d0, nd, d.N, hb);
      }
    }
  }
}

void selective_scan_backward(const SelectiveScanInputs& in, const Tensor& state0, const Tensor& chunk_states,
                             int64_t chunk_size, const Tensor& dy, SelectiveScanGrads& g) {
  SSM_GPU_DISPATCH(dy, selective_scan_backward, in, state0, chunk_states, chunk_size, dy, g);
  const char* op = "selective_scan_backward";
  const ScanDims d = check_scan(op, in, state0);
  const int64_t Bt = d.Bt, T = d.T, D = d.D, N = d.N;
  const int64_t n_chunks = selective_scan_chunk_count(T, chunk_size);
  if (chunk_states.defined())
    SSM_CHECK(detail::is_f32_contig(chunk_states, {Bt, n_chunks, D, N}),
              "{}: chunk_states must be contiguous F32 [{}, {}, {}, {}] (chunk_size {}), got {}", op, Bt, n_chunks, D,
              N, chunk_size, describe(chunk_states));
  const Shape btd = in.u.shape(), btn{Bt, T, N};
  SSM_CHECK(is_f32_rows(dy, btd), "{}: dy must be F32 rows {}, got {}", op, shape_str(btd), describe(dy));
  detail::check_optional_rows(op, g.du, "du", btd);
  detail::check_optional_rows(op, g.ddelta, "ddelta", btd);
  detail::check_optional_rows(op, g.dB, "dB", btn);
  detail::check_optional_rows(op, g.dC, "dC", btn);
  detail::check_optional_rows(op, g.dz, "dz", btd);
  SSM_CHECK(!g.dz.defined() || in.z.defined(), "{}: dz asked for without z", op);
  if (g.dA.defined())
    SSM_CHECK(detail::is_f32_contig(g.dA, {D, N}), "{}: dA must be contiguous F32 [{}, {}], got {}", op, D, N,
              describe(g.dA));
  if (g.dD.defined()) SSM_CHECK(detail::is_f32_vec(g.dD, D), "{}: dD must be F32 [{}], got {}", op, D, describe(g.dD));
  if (g.ddelta_bias.defined())
    SSM_CHECK(detail::is_f32_vec(g.ddelta_bias, D), "{}: ddelta_bias must be F32 [{}], got {}", op, D,
              describe(g.ddelta_bias));
  if (g.dstate0.defined())
    SSM_CHECK(detail::is_f32_contig(g.dstate0, {Bt, D, N}), "{}: dstate0 must be contiguous F32 [{}, {}, {}], got {}",
              op, Bt, D, N, describe(g.dstate0));
  if (Bt == 0 || D == 0) return;
  if (T == 0) {
    if (g.dstate0.defined()) detail::zero_rows(g.dstate0);
    return;
  }

  const ScanView v(in);
  const int64_t n_blocks = (D + W - 1) / W;
  const int64_t Q = std::min(chunk_size, T);
  const float* dyp = dy.data<float>();
  const int64_t lddy = dy.row_stride();
  float* dup = g.du.defined() ? g.du.data<float>() : nullptr;
  float* ddp = g.ddelta.defined() ? g.ddelta.data<float>() : nullptr;
  float* dzp = g.dz.defined() ? g.dz.data<float>() : nullptr;
  const int64_t lddu = dup ? g.du.row_stride() : 0, ldddelta = ddp ? g.ddelta.row_stride() : 0,
                lddz = dzp ? g.dz.row_stride() : 0;
  const float* csp = chunk_states.defined() ? chunk_states.data<float>() : nullptr;
  const float* s0 = state0.defined() ? state0.data<float>() : nullptr;
  const bool want_bc = g.dB.defined() || g.dC.defined();

  // Tasks: (batch row b, group of channel blocks). Each task owns its outputs: du/ddelta/dz rows
  // of its channels, and partial sums (per b for dA/dD/ddelta_bias, per group for dB/dC) that are
  // added in a fixed order afterwards, so results do not depend on which thread ran what.
  const int threads = omp_get_max_threads();
  const int64_t n_groups = std::clamp<int64_t>((2 * int64_t(threads) + Bt - 1) / Bt, 1, n_blocks);
  const int64_t blocks_per_group = (n_blocks + n_groups - 1) / n_groups;
  const size_t btn_size = size_t(Bt * T * N);
  // Per-call buffers from grow-only scratch (no allocation once a shape has run).
  thread_local detail::Scratch dB_scratch, dC_scratch, dA_scratch, dD_scratch;
  float* dB_part = dB_scratch.zeroed<float>(want_bc ? size_t(n_groups) * btn_size : 0);
  float* dC_part = dC_scratch.zeroed<float>(want_bc ? size_t(n_groups) * btn_size : 0);
  float* dA_part = dA_scratch.zeroed<float>(g.dA.defined() ? size_t(Bt * D * N) : 0);
  float* dD_part = dD_scratch.zeroed<float>(2 * size_t(Bt * D));
  float* dbias_part = dD_part + Bt * D;

#pragma omp parallel num_threads(threads)
  {
    // Chunk recomputation of one block: hs[l] the state before row l of the chunk (hs[L] after the
    // last), decays[l] = exp(dt A) of row l, plus dt, y before the gate and softplus' of row l.
    thread_local detail::Scratch chunk_scratch, bounds_scratch;
    thread_local ConstsScratch consts_scratch;
    const int64_t per_chunk = (Q + 1) * N + Q * N + 3 * Q + 2 * blocks_per_group * N + 2 * Q * N + 2 * blocks_per_group;
    f32x16* hs = chunk_scratch.zeroed<f32x16>(size_t(per_chunk));  // [(Q + 1) * N]
    f32x16* decays = hs + (Q + 1) * N;                             // [Q * N]
    f32x16* dts = decays + Q * N;                                  // [Q]
    f32x16* ys = dts + Q;                                          // [Q]
    f32x16* spg = ys + Q;                                          // [Q]
    // Per task: the carried adjoint of every block, boundary states (when not given), and the chunk's
    // dB/dC contributions kept per lane until the chunk's blocks are done.
    f32x16* adj = spg + Q;                        // [blocks_per_group * N]
    f32x16* dA_acc = adj + blocks_per_group * N;  // [blocks_per_group * N]
    f32x16* dBl = dA_acc + blocks_per_group * N;  // [Q * N]
    f32x16* dCl = dBl + Q * N;                    // [Q * N]
    f32x16* dD_acc = dCl + Q * N;                 // [blocks_per_group]
    f32x16* dbias_acc = dD_acc + blocks_per_group;
    f32x16* bounds = bounds_scratch.zeroed<f32x16>(csp ? 0 : size_t(blocks_per_group * n_chunks * N));
    f32x16* consts_A = nullptr;
    BlockConsts* consts = consts_scratch.get(blocks_per_group, N, &consts_A);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < Bt * n_groups; ++task) {
      const int64_t b = task / n_groups, grp = task % n_groups;
      const int64_t blk0 = grp * blocks_per_group, blk1 = std::min(n_blocks, blk0 + blocks_per_group);
      if (blk0 >= blk1) continue;
      for (int64_t blk = blk0; blk < blk1; ++blk)
        consts[blk - blk0] = block_consts(v, blk * W, std::min(W, D - blk * W), N, consts_A + (blk - blk0) * N);
      std::fill(adj, adj + blocks_per_group * N, f32x16{});
      std::fill(dA_acc, dA_acc + blocks_per_group * N, f32x16{});
      std::fill(dD_acc, dD_acc + blocks_per_group, f32x16{});
      std::fill(dbias_acc, dbias_acc + blocks_per_group, f32x16{});
      if (!csp) {  // boundary states by one forward pass
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          const int64_t d0 = blk * W, nd = std::min(W, D - d0);
          f32x16* bb = bounds + (blk - blk0) * n_chunks * N;
          load_state(s0 ? s0 + b * D * N : nullptr, d0, nd, N, hs);
          for (int64_t c = 0; c < n_chunks; ++c) {
            std::copy(hs, hs + N, bb + c * N);
            const int64_t t0 = c * chunk_size, t1 = std::min(T, t0 + chunk_size);
            scan_rows(v, consts[blk - blk0], b, T, t0, t1, d0, nd, N, hs, nullptr, 0);
          }
        }
      }
      float* dBp = want_bc ? dB_part + size_t(grp) * btn_size : nullptr;
      float* dCp = want_bc ? dC_part + size_t(grp) * btn_size : nullptr;
      for (int64_t c = n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * chunk_size, L = std::min(chunk_size, T - t0);
        if (want_bc) {
          std::fill(dBl, dBl + L * N, f32x16{});
          std::fill(dCl, dCl + L * N, f32x16{});
        }
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          const int64_t d0 = blk * W, nd = std::min(W, D - d0), j = blk - blk0;
          const BlockConsts& k = consts[j];
          f32x16* a_blk = adj + j * N;
          f32x16* dA_blk = dA_acc + j * N;
          if (csp)
            load_state(csp + (b * n_chunks + c) * D * N, d0, nd, N, hs);
          else
            std::copy(bounds + (j * n_chunks + c) * N, bounds + (j * n_chunks + c + 1) * N, hs);
          // Rows are KBs apart, so the hardware prefetchers do not see the next block's columns coming:
          // fetch them while this block is computed.
          const bool next = blk + 1 < blk1;
          // Recompute the chunk.
          for (int64_t l = 0; l < L; ++l) {
            const int64_t row = b * T + t0 + l;
            if (next) {
              __builtin_prefetch(v.delta + row * v.lddelta + d0 + W);
              __builtin_prefetch(v.u + row * v.ldu + d0 + W);
              __builtin_prefetch(dyp + row * lddy + d0 + W);
              if (v.z) __builtin_prefetch(v.z + row * v.ldz + d0 + W);
            }
            const f32x16 raw = load_n(v.delta + row * v.lddelta + d0, nd) + k.bias;
            f32x16 dt;
            if (v.softplus) {
              dt = vec::softplus(raw);
              spg[size_t(l)] = raw > 20.0f ? f32x16{} + 1.0f : sigmoid(raw);
            } else {
              dt = raw;
              spg[size_t(l)] = f32x16{} + 1.0f;
            }
            dts[size_t(l)] = dt;
            const f32x16 u = load_n(v.u + row * v.ldu + d0, nd);
            const f32x16 dtu = dt * u;
            const float* Bt_ = v.B + row * v.ldB;
            const float* Ct_ = v.C + row * v.ldC;
            const f32x16* hp = hs + l * N;
            f32x16* hn = hs + (l + 1) * N;
            f32x16* dec = decays + l * N;
            f32x16 acc0{}, acc1{};
            const f32x16* Av = k.A;
            auto step = [&](int64_t n, f32x16& acc) {
              const f32x16 a = vec::fast_exp(dt * Av[n]);
              dec[n] = a;
              hn[n] = a * hp[n] + dtu * Bt_[n];
              acc += hn[n] * Ct_[n];
            };
            int64_t n = 0;
            for (; n + 1 < N; n += 2) {
              step(n, acc0);
              step(n + 1, acc1);
            }
            if (n < N) step(n, acc0);
            ys[size_t(l)] = (acc0 + acc1) + k.D * u;
          }
          // Walk the chunk backwards.
          for (int64_t l = L - 1; l >= 0; --l) {
            const int64_t row = b * T + t0 + l;
            if (next) {
              if (dup) __builtin_prefetch(dup + row * lddu + d0 + W, 1);
              if (ddp) __builtin_prefetch(ddp + row * ldddelta + d0 + W, 1);
              if (dzp) __builtin_prefetch(dzp + row * lddz + d0 + W, 1);
            }
            const f32x16 gout = load_n(dyp + row * lddy + d0, nd);
            const f32x16 u = load_n(v.u + row * v.ldu + d0, nd);
            f32x16 gy = gout;
            if (v.z) {
              const f32x16 z = load_n(v.z + row * v.ldz + d0, nd);
              const f32x16 sg = sigmoid(z);
              gy = gout * z * sg;
              if (dzp) store_n(dzp + row * lddz + d0, gout * ys[size_t(l)] * sg * (1.0f + z * (1.0f - sg)), nd);
            }
            dD_acc[size_t(j)] += gy * u;
            const f32x16 dt = dts[size_t(l)];
            const f32x16 dtu = dt * u;
            const float* Bt_ = v.B + row * v.ldB;
            const float* Ct_ = v.C + row * v.ldC;
            const f32x16* hp = hs + l * N;
            const f32x16* hn = hs + (l + 1) * N;
            const f32x16* dec = decays + l * N;
            f32x16* dBr = dBl + l * N;
            f32x16* dCr = dCl + l * N;
            // du = gy D + dt Σ g B;  ddt = Σ g h_{t-1} a A + u Σ g B. Two partial sums of each
            // (even and odd n) shorten the dependency chains.
            f32x16 gb0{}, gb1{}, gha0{}, gha1{};
            const f32x16* Av = k.A;
            auto step = [&](int64_t n, f32x16& gb, f32x16& gha) {
              const f32x16 gn = a_blk[n] + gy * Ct_[n];
              if (want_bc) {
                dCr[n] += gy * hn[n];
                dBr[n] += gn * dtu;
              }
              gb += gn * Bt_[n];
              const f32x16 q = gn * (hp[n] * dec[n]);
              gha += q * Av[n];
              dA_blk[n] += q * dt;
              a_blk[n] = gn * dec[n];
            };
            int64_t n = 0;
            for (; n + 1 < N; n += 2) {
              step(n, gb0, gha0);
              step(n + 1, gb1, gha1);
            }
            if (n < N) step(n, gb0, gha0);
            const f32x16 sum_gb = gb0 + gb1;
            const f32x16 du = gy * k.D + dt * sum_gb;
            const f32x16 ddt = (gha0 + gha1) + u * sum_gb;
            const f32x16 ddelta = ddt * spg[size_t(l)];
            dbias_acc[size_t(j)] += ddelta;
            if (dup) store_n(dup + row * lddu + d0, du, nd);
            if (ddp) store_n(ddp + row * ldddelta + d0, ddelta, nd);
          }
        }
        if (want_bc)  // lanes (channels) summed once per chunk
          for (int64_t l = 0; l < L; ++l) {
            const size_t row = size_t((b * T + t0 + l) * N);
            for (int64_t n = 0; n < N; ++n) {
              dBp[row + size_t(n)] = vec::reduce_add(dBl[size_t(l * N + n)]);
              dCp[row + size_t(n)] = vec::reduce_add(dCl[size_t(l * N + n)]);
            }
          }
      }
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t d0 = blk * W, nd = std::min(W, D - d0), j = blk - blk0;
        if (g.dstate0.defined()) save_state(g.dstate0.data<float>() + b * D * N, d0, nd, N, adj + j * N);
        for (int64_t i = 0; i < nd; ++i) {
          if (g.dA.defined())
            for (int64_t n = 0; n < N; ++n) dA_part[size_t((b * D + d0 + i) * N + n)] = dA_acc[size_t(j * N + n)][i];
          dD_part[size_t(b * D + d0 + i)] = dD_acc[size_t(j)][i];
          dbias_part[size_t(b * D + d0 + i)] = dbias_acc[size_t(j)][i];
        }
      }
    }
  }

  // Fixed-order sums of the partials.
  for (int64_t b = 0; b < Bt; ++b) {
    if (g.dA.defined()) {
      float* dA = g.dA.data<float>();
      for (int64_t i = 0; i < D * N; ++i) dA[i] += dA_part[size_t(b * D * N + i)];
    }
    for (int64_t d = 0; d < D; ++d) {
      if (g.dD.defined()) g.dD.data<float>()[d] += dD_part[size_t(b * D + d)];
      if (g.ddelta_bias.defined()) g.ddelta_bias.data<float>()[d] += dbias_part[size_t(b * D + d)];
    }
  }
  if (want_bc) {
    auto reduce_into = [&](Tensor& out, const float* parts) {
      if (!out.defined()) return;
      float* op_ = out.data<float>();
      const int64_t ldo = out.row_stride();
#pragma omp parallel for schedule(static) if (Bt * T * N >= 16384)
      for (int64_t r = 0; r < Bt * T; ++r) {
        for (int64_t n = 0; n < N; ++n) {
          float s = 0.0f;
          for (int64_t gi = 0; gi < n_groups; ++gi) s += parts[size_t(gi) * btn_size + size_t(r * N + n)];
          op_[r * ldo + n] = s;
        }
      }
    };
    reduce_into(g.dB, dB_part);
    reduce_into(g.dC, dC_part);
  }
}

}  // namespace ssm::ops
