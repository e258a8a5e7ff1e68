// Runs ops::slstm_backward's kernel (src/ops/cuda/slstm_kernels.cuh: backward_kernel) on the CPU through
// cuda_on_cpu.h and checks dwx, the gradient of the gate pre-activations, against a central finite difference in double
// of L = Σ dy · y over the recurrence of ops.h, and the kept h_{t-1} (what dR is summed from, by cuBLASLt on the GPU)
// against the recurrence's: one and several heads, heads wider than the block's threads (the units' loops), both
// orders of a block's threads. dR and dbias themselves are products the GPU tests check.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/slstm_backward_host_check.cpp \
//     -o build/dev-cuda/slstm_backward_host_check
//   build/dev-cuda/slstm_backward_host_check        (prints one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::slstm_kernels {
float smem[4096];
}

#include "../../src/ops/cuda/slstm_kernels.cuh"

namespace kernels = ssm::ops::cuda::slstm_kernels;

struct Case {
  int batch, T, H, dh, threads;
};

// y [B, T, D] by the recurrence of ops.h in double (a fresh unit starts at m = ĩ); h_prev (optional): h_{t-1} per row.
std::vector<double> forward(const Case& k, const std::vector<double>& wx, const std::vector<float>& R,
                            const std::vector<float>& bias, std::vector<double>* h_prev = nullptr) {
  const int D = k.H * k.dh, G = 4 * k.dh;
  std::vector<double> y(size_t(k.batch) * k.T * D);
  for (int b = 0; b < k.batch; ++b)
    for (int hd = 0; hd < k.H; ++hd) {
      std::vector<double> c(k.dh, 0.0), n(k.dh, 0.0), m(k.dh, 0.0), h(k.dh, 0.0), raw(G);
      for (int t = 0; t < k.T; ++t) {
        const size_t row = size_t(b) * k.T + t;
        for (int q = 0; q < G; ++q) {
          double acc = wx[row * 4 * D + size_t(q / k.dh) * D + hd * k.dh + q % k.dh] + bias[hd * G + q];
          for (int j = 0; j < k.dh; ++j) acc += h[j] * R[(size_t(hd) * k.dh + j) * G + q];
          raw[q] = acc;
        }
        for (int u = 0; u < k.dh; ++u) {
          if (h_prev) (*h_prev)[row * D + hd * k.dh + u] = h[u];
          const double i = raw[u], f = raw[k.dh + u], z = raw[2 * k.dh + u], o = raw[3 * k.dh + u];
          const double log_f = std::min(f, 0.0) - std::log1p(std::exp(-std::fabs(f))) + m[u];
          const double m_new = n[u] == 0.0 ? i : std::max(i, log_f);
          const double ig = std::exp(i - m_new), fg = std::exp(log_f - m_new);
          c[u] = fg * c[u] + ig * std::tanh(z);
          n[u] = fg * n[u] + ig;
          m[u] = m_new;
          h[u] = c[u] / n[u] / (1.0 + std::exp(-o));
          y[row * D + hd * k.dh + u] = h[u];
        }
      }
    }
  return y;
}

bool run_case(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<float> fill{gen};
  const int D = k.H * k.dh, G = 4 * k.dh;
  const size_t rows = size_t(k.batch) * k.T;
  std::vector<float> wx, R, bias, dy;
  fill(wx, rows * 4 * D, 1.5f, 0.0f, false);
  fill(R, size_t(k.H) * k.dh * G, 1.0f / std::sqrt(float(k.dh)), 0.0f, false);
  fill(bias, size_t(k.H) * G, 1.0f, 0.0f, false);
  fill(dy, rows * D, 1.0f, 0.0f, false);
  std::vector<double> exact(wx.begin(), wx.end()), h_prev(rows * D);
  forward(k, exact, R, bias, &h_prev);
  const std::vector<double> want = central_differences(
      exact, [&] { return weighted_sum(dy, forward(k, exact, R, bias)); }, 1e-6);
  bool ok = true;
  std::string report;
  for (bool reverse : {false, true}) {
    fibers::reverse_order = reverse;
    std::vector<float> dwx(wx.size(), NAN), c(rows * D, NAN), n(rows * D, NAN), m(rows * D, NAN), hp(rows * D, NAN);
    const kernels::Kept kept{c.data(), n.data(), m.data(), hp.data()};
    if (size_t(11 * k.dh) > std::size(kernels::smem)) {
      std::printf("a case needs %d floats of shared memory, more than the check's %zu\n", 11 * k.dh,
                  std::size(kernels::smem));
      std::exit(1);
    }
    poison_shared(kernels::smem);
    fibers::launch(unsigned(k.batch * k.H), k.threads, [&] {
      kernels::backward_kernel({wx.data(), 4 * D}, R.data(), bias.data(), {dy.data(), D}, {dwx.data(), 4 * D}, kept,
                               k.T, k.H, k.dh);
    });
    report_error(report, ok, "dwx", rel_error(dwx, want), 1e-4);
    report_error(report, ok, "h_prev", rel_error(hp, h_prev), 1e-5);
  }
  fibers::reverse_order = false;
  std::printf("B %d T %2d H %d dh %2d threads %3d:%s\n", k.batch, k.T, k.H, k.dh, k.threads, report.c_str());
  return ok;
}

int main() {
  const Case cases[] = {
      {2, 13, 3, 8, 32},   // a warp a head (4·dh = 32)
      {1, 17, 2, 40, 96},  // fewer threads than gates: each thread forms several
      {2, 9, 1, 24, 32},   // fewer threads than units
  };
  bool ok = true;
  unsigned seed = 1;
  for (const Case& k : cases) ok &= run_case(k, seed++);
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
