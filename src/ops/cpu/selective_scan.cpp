// ops::selective_scan and ops::selective_scan_step (Mamba-1 S6) on the CPU.
//
// Work is split into (batch, block of 16 channels) tasks spread over OpenMP threads; each task walks
// its T tokens in order. One 16-lane vector holds one quantity for the block's 16 channels, which
// are contiguous in u/delta/z/y, so every load is one cache line. The task keeps A transposed to
// [N][16] and the fp32 state as [N][16] (2 KiB at N = 16: L1), and fuses delta bias, softplus, the
// D skip and the silu(z) gate, so that per token and channel only y is written. The step is the
// same kernel with T = 1.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "ops/cpu/checks.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace ssm::ops {

namespace {

using namespace vec;
using detail::describe;

struct ScanArgs {
  // Row (b, t) of u, delta, B, C, z and y starts at (b*T + t) * ld_<name>.
  const float *u, *delta, *delta_bias, *A, *B, *C, *D, *z;
  int64_t ld_u, ld_delta, ld_B, ld_C, ld_z, ld_y;
  bool softplus;
  float* state;  // [batch, channels, N] contiguous; null: zeros, not written
  float* y;
  int64_t batch, T, channels, N;
};

// One task: channels [c0, c0 + n) of batch row b. kTail: n < 16 (masked loads and stores).
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

void scan_run(const ScanArgs& a) {
  const int64_t blocks = (a.channels + kLanes - 1) / kLanes;
#pragma omp parallel if (a.batch * a.T * a.channels * a.N >= (1 << 14))
  {
    std::vector<f32x16> scratch(size_t(2 * a.N));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < a.batch * blocks; ++task) {
      const int64_t b = task / blocks, c0 = task % blocks * kLanes;
      const int64_t n = std::min<int64_t>(kLanes, a.channels - c0);
      if (n == kLanes) {
        scan_block<false>(a, b, c0, n, scratch.data(), scratch.data() + a.N);
      } else {
        scan_block<true>(a, b, c0, n, scratch.data(), scratch.data() + a.N);
      }
    }
  }
}

// Checks the inputs, state and y of either form (dims 3: [B,T,*], dims 2: [B,*]) and fills ScanArgs.
ScanArgs check_args(const char* op, const SelectiveScanInputs& in, Tensor* state, const Tensor& y, int64_t dims) {
  const char* layout = dims == 3 ? "[B, T, D]" : "[B, D]";
  SSM_CHECK(detail::is_f32_rows(in.u, dims), "{}: u must be F32 rows {}, got {}", op, layout, describe(in.u));
  const Shape& shape = in.u.shape();
  const int64_t channels = shape.back();
  SSM_CHECK(detail::is_f32_rows(in.delta, dims) && in.delta.shape() == shape,
            "{}: delta must be F32 rows of u's shape {}, got {}", op, shape_str(shape), describe(in.delta));
  SSM_CHECK(in.A.defined() && in.A.dtype() == DType::F32 && in.A.dim() == 2 && in.A.size(0) == channels &&
                in.A.is_contiguous(),
            "{}: A must be contiguous F32 [{}, N] for u {}, got {}", op, channels, shape_str(shape), describe(in.A));
  const int64_t N = in.A.size(1);
  Shape bc_shape = shape;
  bc_shape.back() = N;
  SSM_CHECK(detail::is_f32_rows(in.B, dims) && in.B.shape() == bc_shape, "{}: B must be F32 rows {} for A {}, got {}",
            op, shape_str(bc_shape), describe(in.A), describe(in.B));
  SSM_CHECK(detail::is_f32_rows(in.C, dims) && in.C.shape() == bc_shape, "{}: C must be F32 rows {} for A {}, got {}",
            op, shape_str(bc_shape), describe(in.A), describe(in.C));
  SSM_CHECK(!in.delta_bias.defined() || detail::is_f32_vector(in.delta_bias, channels),
            "{}: delta_bias must be F32 [{}], got {}", op, channels, describe(in.delta_bias));
  SSM_CHECK(!in.D.defined() || detail::is_f32_vector(in.D, channels), "{}: D must be F32 [{}], got {}", op,
            channels, describe(in.D));
  SSM_CHECK(!in.z.defined() || (detail::is_f32_rows(in.z, dims) && in.z.shape() == shape),
            "{}: z must be F32 rows of u's shape {}, got {}", op, shape_str(shape), describe(in.z));
  SSM_CHECK(detail::is_f32_rows(y, dims) && y.shape() == shape, "{}: y must be F32 rows of u's shape {}, got {}", op,
            shape_str(shape), describe(y));
  const int64_t batch = shape[0];
  if (state) {
    const Shape expected{batch, channels, N};
    SSM_CHECK(state->defined() && state->dtype() == DType::F32 && state->shape() == expected &&
                  state->is_contiguous(),
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
  scan_run(check_args("selective_scan", in, state && state->defined() ? state : nullptr, y, 3));
}

void selective_scan_step(const SelectiveScanInputs& in, Tensor& state, Tensor& y) {
  SSM_CHECK(state.defined(), "selective_scan_step: state is required");
  scan_run(check_args("selective_scan_step", in, &state, y, 2));
}

}  // namespace ssm::ops
