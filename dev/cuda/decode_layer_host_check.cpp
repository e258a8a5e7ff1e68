// Runs the fused decode kernels of src/ops/cuda/skinny_kernels.cuh and scan_step_kernels.cuh on the CPU, for machines without a
// GPU (cuda_on_cpu.h: fibers for threads, emulated barriers and shuffles), against a double reference
// that rounds where the kernels round (the staged norm and the conv's input to BF16, the outputs to
// theirs). It checks indexing, masking, the staging and the epilogues (1, 3 and 8 rows, one and two
// groups, every gate order, the conv columns, accumulate, rows longer than one pass of the loads, warps
// that take several columns); not timing, not races, not the hardware.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/decode_layer_host_check.cpp \
//       -o build/dev-cuda/decode_layer_host_check
//   build/dev-cuda/decode_layer_host_check   (one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

// The kernels' dynamic shared memory: one block runs at a time.
namespace ssm::ops::cuda::skinny {
alignas(16) unsigned char smem[232448];
}

namespace ssm::ops::cuda::scan_step {
alignas(16) unsigned char smem[65536];
}

#define SSM_SKINNY_HOST_CHECK
#include "../../src/ops/cuda/scan_step_kernels.cuh"
#include "../../src/ops/cuda/skinny_kernels.cuh"

namespace {

namespace sk = ssm::ops::cuda::skinny;
using bf16 = __nv_bfloat16;

double silu(double v) { return v / (1.0 + std::exp(-v)); }
float bf(double v) { return round_to<bf16>(float(v)); }

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16(v[i]);
  return out;
}

// Runs skinny_kernel<Input, Output, kRows> for `rows` rows over w [N, K], on half the blocks the columns
// could have (so that warps take several columns, as on a GPU that holds fewer blocks than that).
template <class Input, class Output>
void run(const Input& in, const Output& out, const std::vector<bf16>& w, int N, int K, int rows) {
  poison_shared(sk::smem);
  auto go = [&]<int kRows>() {
    fibers::launch(unsigned(((N + sk::kWarps - 1) / sk::kWarps + 1) / 2), sk::kThreads,
                   [&] { sk::skinny_kernel<Input, Output, kRows>(in, out, w.data(), N, K, rows); });
  };
  if (rows == 1) go.template operator()<1>();
  else go.template operator()<sk::kMaxRows>();
}

// The staged norm of row m as the kernel rounds it: rmsnorm per group of x (· silu(z) before or after).
std::vector<double> norm_rows(const std::vector<float>& x, const std::vector<float>& z, const std::vector<float>& w,
                              int rows, int K, int group, int gate) {
  std::vector<double> out(size_t(rows) * K);
  for (int m = 0; m < rows; ++m)
    for (int c0 = 0; c0 < K; c0 += group) {
      std::vector<double> v(group), g(group, 1.0);
      double ss = 0;
      for (int i = 0; i < group; ++i) {
        const size_t at = size_t(m) * K + c0 + i;
        v[i] = x[at];
        if (gate == 1) g[i] = silu(z[at]);
        if (gate == 2) v[i] *= silu(z[at]);
        ss += v[i] * v[i];
      }
      const double inv = 1.0 / std::sqrt(ss / group + 1e-5);
      for (int i = 0; i < group; ++i) out[size_t(m) * K + c0 + i] = bf(v[i] * inv * w[c0 + i] * g[i]);
    }
  return out;
}

bool report(const char* what, double error, double tol) {
  const bool ok = error < tol;
  std::printf("%-90s %.2e %s\n", what, error, ok ? "ok" : "FAILED");
  return ok;
}

// in_proj with the pre-norm (or none) and the conv step over columns [offset, offset + C).
bool conv_case(int rows, int K, int N, int offset, int C, int taps, bool norm, bool scale, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<bf16> fill{gen};
  std::vector<float> x, w, nw, bias, column_scale, cw, cb, state;
  fill(x, size_t(rows) * K, 1.0f, 0.0f, true);
  fill(w, size_t(N) * K, 0.1f, 0.0f, true);
  fill(nw, K, 0.2f, 1.0f, false);
  fill(bias, N, 0.5f, 0.0f, false);
  fill(column_scale, N, 0.2f, 1.0f, false);
  fill(cw, size_t(C) * taps, 0.5f, 0.0f, false);
  fill(cb, C, 0.5f, 0.0f, false);
  fill(state, size_t(rows) * (taps - 1) * C, 1.0f, 0.0f, false);
  const std::vector<bf16> xb = to_bf16(x), wb = to_bf16(w);
  std::vector<bf16> y(size_t(rows) * N, __float2bfloat16(NAN));
  std::vector<float> got_state = state;

  const sk::StoreOutput<bf16> store{y.data(), N, bias.data(), scale ? column_scale.data() : nullptr, false};
  const sk::ConvStepOutput<bf16> out{store, offset, C, cw.data(), cb.data(), got_state.data(), C, taps};
  if (norm) run(sk::NormInput{xb.data(), K, nullptr, 0, nw.data(), K, false, 1e-5f}, out, wb, N, K, rows);
  else run(sk::PlainInput{xb.data(), K}, out, wb, N, K, rows);

  const std::vector<double> input =
      norm ? norm_rows(x, {}, nw, rows, K, K, 0) : std::vector<double>(x.begin(), x.end());
  std::vector<double> want(size_t(rows) * N), want_state(state.begin(), state.end());
  for (int m = 0; m < rows; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += input[size_t(m) * K + k] * w[size_t(n) * K + k];
      acc = (acc + bias[n]) * (scale ? column_scale[n] : 1.0f);
      if (n < offset || n >= offset + C) {
        want[size_t(m) * N + n] = acc;
        continue;
      }
      const int c = n - offset;
      const double v = bf(acc);
      double conv = cb[c];
      for (int j = 0; j < taps - 1; ++j) conv += cw[c * taps + j] * double(state[(size_t(m) * (taps - 1) + j) * C + c]);
      conv += cw[c * taps + taps - 1] * v;
      for (int j = 0; j + 1 < taps - 1; ++j)
        want_state[(size_t(m) * (taps - 1) + j) * C + c] = state[(size_t(m) * (taps - 1) + j + 1) * C + c];
      if (taps > 1) want_state[(size_t(m) * (taps - 1) + taps - 2) * C + c] = v;
      want[size_t(m) * N + n] = silu(conv);
    }
  std::vector<float> got(y.size());
  for (size_t i = 0; i < y.size(); ++i) got[i] = __bfloat162float(y[i]);
  char what[160];
  std::snprintf(what, sizeof what, "linear_conv_step rows %d K %d N %d conv [%d, +%d) taps %d norm %d scale %d: y",
                rows, K, N, offset, C, taps, norm, scale);
  bool ok = report(what, rel_error(got, want), 1e-2);
  std::snprintf(what, sizeof what, "linear_conv_step rows %d K %d N %d conv [%d, +%d) taps %d norm %d scale %d: state",
                rows, K, N, offset, C, taps, norm, scale);
  return report(what, rel_error(got_state, want_state), 1e-5) && ok;
}

// out_proj with the gated norm: y (=|+=) (norm(x, z) · wᵀ + bias), Y the output type.
template <class Y>
bool gated_case(int rows, int K, int N, int groups, int gate, bool accumulate, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<bf16> fill{gen};
  std::vector<float> x, z, w, nw, bias, y0;
  fill(x, size_t(rows) * K, 1.0f, 0.0f, true);
  fill(z, size_t(rows) * K, 1.5f, 0.0f, true);
  fill(w, size_t(N) * K, 0.1f, 0.0f, true);
  fill(nw, K, 0.2f, 1.0f, false);
  fill(bias, N, 0.5f, 0.0f, false);
  NormalFill<Y> fill_y{gen};
  fill_y(y0, size_t(rows) * N, 1.0f, 0.0f, true);
  const std::vector<bf16> xb = to_bf16(x), zb = to_bf16(z), wb = to_bf16(w);
  std::vector<Y> y(y0.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = accumulate ? Y(y0[i]) : Y(NAN);
  const int group = K / groups;
  const sk::NormInput in{xb.data(), K, gate ? zb.data() : nullptr, K, nw.data(), group, gate == 1, 1e-5f};
  run(in, sk::StoreOutput<Y>{y.data(), N, bias.data(), nullptr, accumulate}, wb, N, K, rows);

  const std::vector<double> normed = norm_rows(x, z, nw, rows, K, group, gate);
  std::vector<double> want(size_t(rows) * N);
  for (int m = 0; m < rows; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias[n] + (accumulate ? y0[size_t(m) * N + n] : 0.0);
      for (int k = 0; k < K; ++k) acc += normed[size_t(m) * K + k] * w[size_t(n) * K + k];
      want[size_t(m) * N + n] = acc;
    }
  std::vector<float> got(y.size());
  for (size_t i = 0; i < y.size(); ++i) got[i] = float(y[i]);
  char what[160];
  std::snprintf(what, sizeof what, "gated_rmsnorm_linear %s rows %d K %d N %d groups %d gate %d accumulate %d",
                sizeof(Y) == 2 ? "BF16" : "F32", rows, K, N, groups, gate, accumulate);
  return report(what, rel_error(got, want), sizeof(Y) == 2 ? 1e-2 : 1e-4);
}

// Mamba-1's dt_proj and scan step for `batch` sequences of D channels, N states, rank R (BF16 activations).
bool scan_case(int batch, int D, int N, int R, bool gate, unsigned seed) {
  namespace ss = ssm::ops::cuda::scan_step;
  std::mt19937 gen(seed);
  NormalFill<bf16> fill{gen};
  std::vector<float> dt_low, w, u, B, C, z, A, bias, Dskip, state;
  fill(dt_low, size_t(batch) * R, 1.0f, 0.0f, true);
  fill(w, size_t(D) * R, 0.3f, 0.0f, true);
  fill(u, size_t(batch) * D, 1.0f, 0.0f, true);
  fill(B, size_t(batch) * N, 1.0f, 0.0f, true);
  fill(C, size_t(batch) * N, 1.0f, 0.0f, true);
  fill(z, size_t(batch) * D, 1.5f, 0.0f, true);
  fill(A, size_t(D) * N, 0.5f, -1.5f, false);
  fill(bias, D, 0.5f, -3.0f, false);
  fill(Dskip, D, 0.2f, 1.0f, false);
  fill(state, size_t(batch) * D * N, 1.0f, 0.0f, false);
  const std::vector<bf16> dt_b = to_bf16(dt_low), w_b = to_bf16(w), u_b = to_bf16(u), B_b = to_bf16(B),
                          C_b = to_bf16(C), z_b = to_bf16(z);
  std::vector<bf16> y(size_t(batch) * D, __float2bfloat16(NAN));
  std::vector<float> got_state = state;
  const ss::Args<bf16> a{dt_b.data(), w_b.data(), u_b.data(), B_b.data(), C_b.data(), gate ? z_b.data() : nullptr,
                         R,           D,          N,          N,          D,          D,
                         A.data(),    bias.data(), Dskip.data(), got_state.data(), y.data(), D, R, N, true};
  poison_shared(ss::smem);
  for (int b = 0; b < batch; ++b) {
    blockIdx.y = unsigned(b);
    fibers::launch(unsigned((D + ss::kThreads - 1) / ss::kThreads), ss::kThreads,
                   [&] { ss::dt_proj_scan_step_kernel<bf16>(a); });
  }
  blockIdx.y = 0;

  std::vector<double> want(y.size()), want_state(state.begin(), state.end());
  for (int b = 0; b < batch; ++b)
    for (int d = 0; d < D; ++d) {
      double raw = 0;
      for (int r = 0; r < R; ++r) raw += double(dt_low[size_t(b) * R + r]) * w[size_t(d) * R + r];
      raw = bf(raw) + bias[d];
      const double dt = raw > 20 ? raw : std::log1p(std::exp(raw)), uv = u[size_t(b) * D + d];
      double out = 0;
      for (int n = 0; n < N; ++n) {
        double& h = want_state[(size_t(b) * D + d) * N + n];
        h = std::exp(dt * A[size_t(d) * N + n]) * h + dt * B[size_t(b) * N + n] * uv;
        out += h * C[size_t(b) * N + n];
      }
      out += Dskip[d] * uv;
      if (gate) out *= silu(z[size_t(b) * D + d]);
      want[size_t(b) * D + d] = out;
    }
  std::vector<float> got(y.size());
  for (size_t i = 0; i < y.size(); ++i) got[i] = __bfloat162float(y[i]);
  char what[160];
  std::snprintf(what, sizeof what, "dt_proj_selective_scan_step batch %d D %d N %d R %d gate %d: y", batch, D, N, R,
                gate);
  bool ok = report(what, rel_error(got, want), 1e-2);
  std::snprintf(what, sizeof what, "dt_proj_selective_scan_step batch %d D %d N %d R %d gate %d: state", batch, D, N,
                R, gate);
  return report(what, rel_error(got_state, want_state), 1e-5) && ok;
}

}  // namespace

int main() {
  bool ok = true;
  unsigned seed = 1;
  for (int rows : {1, 3, 8}) {
    ok &= conv_case(rows, 64, 40, 8, 24, 4, true, false, seed++);
    ok &= conv_case(rows, 64, 44, 0, 44, 3, true, true, seed++);
    ok &= conv_case(rows, 1040, 16, 4, 9, 4, false, false, seed++);
    ok &= conv_case(rows, 2056, 12, 5, 7, 2, true, true, seed++);
    for (int groups : {1, 2})
      for (int gate : {0, 1, 2}) {
        ok &= gated_case<bf16>(rows, 64, 24, groups, gate, rows != 3, seed++);
        ok &= gated_case<float>(rows, 1056, 9, groups, gate, rows == 3, seed++);
      }
  }
  ok &= scan_case(1, 300, 16, 48, true, seed++);
  ok &= scan_case(3, 128, 7, 5, false, seed++);
  ok &= scan_case(2, 257, 64, 96, true, seed++);
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
