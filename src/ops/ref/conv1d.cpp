#include "ops/ref/conv1d.h"

#include <cmath>

#include "core/error.h"

namespace ssm::ref {

Conv1dOutputs conv1d_causal(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                            const std::vector<double>& state0, bool silu, int64_t batch, int64_t T, int64_t C,
                            int64_t K) {
  SSM_CHECK(K >= 1 && int64_t(x.size()) == batch * T * C && int64_t(w.size()) == C * K &&
                (bias.empty() || int64_t(bias.size()) == C) &&
                (state0.empty() || int64_t(state0.size()) == batch * (K - 1) * C),
            "ref::conv1d_causal: sizes x {} w {} bias {} state0 {} do not match batch {} T {} C {} K {}", x.size(),
            w.size(), bias.size(), state0.size(), batch, T, C, K);
  const int64_t L = K - 1 + T;  // time steps of the padded input
  std::vector<double> xs(size_t(batch * L * C), 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t c = 0; c < C; ++c) {
        double v = 0.0;
        if (i >= K - 1)
          v = x[size_t((b * T + i - (K - 1)) * C + c)];
        else if (!state0.empty())
          v = state0[size_t((b * (K - 1) + i) * C + c)];
        xs[size_t((b * L + i) * C + c)] = v;
      }
    }
  }
  Conv1dOutputs out;
  out.y.assign(size_t(batch * T * C), 0.0);
  out.state.assign(size_t(batch * (K - 1) * C), 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < T; ++t) {
        double acc = bias.empty() ? 0.0 : bias[size_t(c)];
        for (int64_t j = 0; j < K; ++j) acc += w[size_t(c * K + j)] * xs[size_t((b * L + t + j) * C + c)];
        out.y[size_t((b * T + t) * C + c)] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
      }
      for (int64_t j = 0; j < K - 1; ++j) {
        out.state[size_t((b * (K - 1) + j) * C + c)] = xs[size_t((b * L + T + j) * C + c)];
      }
    }
  }
  return out;
}

}  // namespace ssm::ref
