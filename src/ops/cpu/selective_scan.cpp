// ops::selective_scan and ops::selective_scan_step (Mamba-1 S6) on the CPU.
//
// Sequences: work is split into (batch, block of 16 channels) tasks spread over OpenMP threads;
// each task walks its T tokens in order. One 16-lane vector holds one quantity for the block's 16
// channels, which are contiguous in u/delta/z/y, so every load is one cache line. The task keeps A
// transposed to [N][16] and the fp32 state as [N][16] (1 KiB each at N = 16: L1), and fuses delta
// bias, softplus, the D skip and the silu(z) gate, so that per token and channel only y is written.
// One token with a state (the step, or a forward of T = 1): a decode kernel, see step_block.
#include <algorithm>

#include "core/error.h"
#include "ops/cpu/op_util.h"  // describe, is_f32_rows, is_f32_vec
#include "ops/cpu/scratch.h"
#include "ops/cpu/vec_math.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;

constexpr int64_t kPrefetchTokens = 8;
constexpr int64_t kStepBlock = 64;  // channels per task of the one-token kernel

struct ScanArgs {
  // Row (b, t) of u, delta, B, C, z and y starts at (b*T + t) * ld_<name>.
  const float *u, *delta, *delta_bias, *A, *B, *C, *D, *z;
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_y;
  bool softplus;
  float* state;  // [batch, channels, N] contiguous; null: zeros, not written
  float* y;
  int64_t batch, T, channels, N;
};

// One task: channels [c0, c0 + n) of batch row b. kTail: n < 16 (partial loads and stores).
template <bool kTail>
void scan_block(const ScanArgs& a, int64_t b, int64_t c0, int64_t n, f32x16* At, f32x16* h) {
  const int64_t N = a.N;
  for (int64_t s = 0; s < N; ++s) {
    At[s] = f32x16{};
    h[s] = f32x16{};
    for (int64_t l = 0; l < n; ++l) {
      At[s][l] = a.A[(c0 + l) * N + s];
      if (a.state) h[s][l] = a.state[(b * a.channels + c0 + l) * N + s];
    }
  }
  const f32x16 bias = a.delta_bias ? load_n<kTail>(a.delta_bias + c0, n) : f32x16{};
  const f32x16 skip = a.D ? load_n<kTail>(a.D + c0, n) : f32x16{};
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = b * a.T + t;
    if (t + kPrefetchTokens < a.T) {
      // Consecutive tokens are a whole row apart (6 KiB at D = 1536): a stride the hardware
      // prefetchers do not follow across pages, so every load would miss without this.
      const int64_t ahead = row + kPrefetchTokens;
      __builtin_prefetch(a.u + ahead * a.ld_u + c0);
      __builtin_prefetch(a.delta + ahead * a.ld_delta + c0);
      if (a.z) __builtin_prefetch(a.z + ahead * a.ld_z + c0);
      __builtin_prefetch(a.y + ahead * a.ld_y + c0, 1);
    }
    f32x16 dt = load_n<kTail>(a.delta + row * a.ld_delta + c0, n) + bias;
    if (a.softplus) dt = softplus(dt);
    const f32x16 u = load_n<kTail>(a.u + row * a.ld_u + c0, n);
    const f32x16 du = dt * u;
    const float* Bt = a.B + row * a.ld_B;
    const float* Ct = a.C + row * a.ld_C;
    f32x16 y = skip * u;
    for (int64_t s = 0; s < N; ++s) {
      h[s] = fast_exp(dt * At[s]) * h[s] + Bt[s] * du;
      y += Ct[s] * h[s];
    }
    if (a.z) y *= silu(load_n<kTail>(a.z + row * a.ld_z + c0, n));
    store_n<kTail>(a.y + row * a.ld_y + c0, y, n);
  }
  if (a.state) {
    for (int64_t s = 0; s < N; ++s) {
      for (int64_t l = 0; l < n; ++l) a.state[(b * a.channels + c0 + l) * N + s] = h[s][l];
    }
  }
}

// One token (T == 1, decode). Here the [D, N] layout of the state and A is used as it is: per
// channel its N states are contiguous, 16 to a vector. The token-walking kernel above would have
// to transpose the state in and out for a single token, which costs several times the arithmetic.
// dt and the gate are computed for kStepBlock channels at a time around it.
void step_block(const ScanArgs& a, int64_t b, int64_t c0, int64_t nc) {
  const int64_t N = a.N;
  const float* u = a.u + b * a.ld_u + c0;
  const float* delta = a.delta + b * a.ld_delta + c0;
  const float* Bt = a.B + b * a.ld_B;
  const float* Ct = a.C + b * a.ld_C;
  float dt[kStepBlock], y[kStepBlock];
  for_each_vector(nc, [&](auto tail, int64_t l, int64_t m) {
    constexpr bool kTail = decltype(tail)::value;
    f32x16 v = load_n<kTail>(delta + l, m);
    if (a.delta_bias) v += load_n<kTail>(a.delta_bias + c0 + l, m);
    store_n<kTail>(dt + l, a.softplus ? softplus(v) : v, m);
  });
  for (int64_t l = 0; l < nc; ++l) {
    const int64_t d = c0 + l;
    float* h = a.state + (b * a.channels + d) * N;
    const float* A = a.A + d * N;
    const float du = dt[l] * u[l];
    f32x16 acc{};
    for_each_vector(N, [&](auto tail, int64_t n, int64_t m) {
      constexpr bool kTail = decltype(tail)::value;
      const f32x16 hv =
          fast_exp(dt[l] * load_n<kTail>(A + n, m)) * load_n<kTail>(h + n, m) + du * load_n<kTail>(Bt + n, m);
      store_n<kTail>(h + n, hv, m);
      acc += load_n<kTail>(Ct + n, m) * hv;
    });
    y[l] = reduce_add(acc);
  }
  float* out = a.y + b * a.ld_y + c0;
  for_each_vector(nc, [&](auto tail, int64_t l, int64_t m) {
    constexpr bool kTail = decltype(tail)::value;
    f32x16 v = load_n<kTail>(y + l, m);
    if (a.D) v += load_n<kTail>(a.D + c0 + l, m) * load_n<kTail>(u + l, m);
    if (a.z) v *= silu(load_n<kTail>(a.z + b * a.ld_z + c0 + l, m));
    store_n<kTail>(out + l, v, m);
  });
}

void scan_run(const ScanArgs& a) {
  if (a.T == 1 && a.state) {
    const int64_t blocks = (a.channels + kStepBlock - 1) / kStepBlock;
#pragma omp parallel for schedule(static) if (a.batch * a.channels * a.N >= (1 << 14))
    for (int64_t task = 0; task < a.batch * blocks; ++task) {
      const int64_t b = task / blocks, c0 = task % blocks * kStepBlock;
      step_block(a, b, c0, std::min(kStepBlock, a.channels - c0));
    }
    return;
  }
  const int64_t blocks = (a.channels + kLanes - 1) / kLanes;
#pragma omp parallel if (a.batch * a.T * a.channels * a.N >= (1 << 14))
  {
    thread_local detail::Scratch scratch_buf;
    f32x16* scratch = scratch_buf.get<f32x16>(size_t(2 * a.N));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < a.batch * blocks; ++task) {
      const int64_t b = task / blocks, c0 = task % blocks * kLanes;
      const int64_t n = std::min<int64_t>(kLanes, a.channels - c0);
      if (n == kLanes) {
        scan_block<false>(a, b, c0, n, scratch, scratch + a.N);
      } else {
        scan_block<true>(a, b, c0, n, scratch, scratch + a.N);
      }
    }
  }
}

// Checks the inputs, state and y of either form (dims 3: [B,T,*], dims 2: [B,*]) and fills ScanArgs.
ScanArgs check_args(const char* op, const SelectiveScanInputs& in, Tensor* state, const Tensor& y, int64_t dims) {
  const char* layout = dims == 3 ? "[B, T, D]" : "[B, D]";
  SSM_CHECK(detail::is_f32_rows(in.u) && in.u.dim() == dims, "{}: u must be F32 rows {}, got {}", op, layout,
            describe(in.u));
  const Shape& shape = in.u.shape();
  const int64_t channels = shape.back();
  SSM_CHECK(detail::is_f32_rows(in.delta, shape), "{}: delta must be F32 rows of u's shape {}, got {}", op,
            shape_str(shape), describe(in.delta));
  SSM_CHECK(in.A.defined() && in.A.dtype() == DType::F32 && in.A.dim() == 2 && in.A.size(0) == channels &&
                in.A.is_contiguous(),
            "{}: A must be contiguous F32 [{}, N] for u {}, got {}", op, channels, shape_str(shape), describe(in.A));
  const int64_t N = in.A.size(1);
  Shape bc_shape = shape;
  bc_shape.back() = N;
  SSM_CHECK(detail::is_f32_rows(in.B, bc_shape), "{}: B must be F32 rows {} for A {}, got {}", op, shape_str(bc_shape),
            describe(in.A), describe(in.B));
  SSM_CHECK(detail::is_f32_rows(in.C, bc_shape), "{}: C must be F32 rows {} for A {}, got {}", op, shape_str(bc_shape),
            describe(in.A), describe(in.C));
  SSM_CHECK(!in.delta_bias.defined() || detail::is_f32_vec(in.delta_bias, channels),
            "{}: delta_bias must be F32 [{}], got {}", op, channels, describe(in.delta_bias));
  SSM_CHECK(!in.D.defined() || detail::is_f32_vec(in.D, channels), "{}: D must be F32 [{}], got {}", op, channels,
            describe(in.D));
  SSM_CHECK(!in.z.defined() || detail::is_f32_rows(in.z, shape), "{}: z must be F32 rows of u's shape {}, got {}", op,
            shape_str(shape), describe(in.z));
  SSM_CHECK(detail::is_f32_rows(y, shape), "{}: y must be F32 rows of u's shape {}, got {}", op, shape_str(shape),
            describe(y));
  const int64_t batch = shape[0];
  if (state) {
    const Shape expected{batch, channels, N};
    SSM_CHECK(state->defined() && state->dtype() == DType::F32 && state->shape() == expected && state->is_contiguous(),
              "{}: state must be contiguous F32 {} for u {} and A {}, got {}", op, shape_str(expected),
              shape_str(shape), describe(in.A), describe(*state));
  }
  ScanArgs a{};
  a.u = in.u.data<float>();
  a.delta = in.delta.data<float>();
  a.delta_bias = in.delta_bias.defined() ? in.delta_bias.data<float>() : nullptr;
  a.A = in.A.data<float>();
  a.B = in.B.data<float>();
  a.C = in.C.data<float>();
  a.D = in.D.defined() ? in.D.data<float>() : nullptr;
  a.z = in.z.defined() ? in.z.data<float>() : nullptr;
  a.ld_u = in.u.row_stride();
  a.ld_delta = in.delta.row_stride();
  a.ld_B = in.B.row_stride();
  a.ld_C = in.C.row_stride();
  a.ld_z = in.z.defined() ? in.z.row_stride() : 0;
  a.ld_y = y.row_stride();
  a.softplus = in.delta_softplus;
  a.state = state ? state->data<float>() : nullptr;
  a.y = y.data<float>();
  a.batch = batch;
  a.T = dims == 3 ? shape[1] : 1;
  a.channels = channels;
  a.N = N;
  return a;
}

}  // namespace

void selective_scan(const SelectiveScanInputs& in, Tensor* state, Tensor& y) {
  SSM_GPU_DISPATCH(y, selective_scan, in, state, y);
  scan_run(check_args("selective_scan", in, state && state->defined() ? state : nullptr, y, 3));
}

void selective_scan_step(const SelectiveScanInputs& in, Tensor& state, Tensor& y) {
  SSM_GPU_DISPATCH(y, selective_scan_step, in, state, y);
  SSM_CHECK(state.defined(), "selective_scan_step: state is required");
  scan_run(check_args("selective_scan_step", in, &state, y, 2));
}

}  // namespace ssm::ops
