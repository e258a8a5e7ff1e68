#include "ops/ref/linear.h"

#include "core/error.h"

namespace ssm::ref {

std::vector<double> linear(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                           int64_t M, int64_t N, int64_t K) {
  SSM_CHECK(int64_t(x.size()) == M * K && int64_t(w.size()) == N * K && (bias.empty() || int64_t(bias.size()) == N),
            "ref::linear: sizes x {} w {} bias {} do not match M {} N {} K {}", x.size(), w.size(), bias.size(), M, N,
            K);
  std::vector<double> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias.empty() ? 0.0 : bias[size_t(n)];
      for (int64_t k = 0; k < K; ++k) acc += x[size_t(m * K + k)] * w[size_t(n * K + k)];
      y[size_t(m * N + n)] = acc;
    }
  }
  return y;
}

}  // namespace ssm::ref
