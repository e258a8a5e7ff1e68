#include "ops/ref/rat.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace ssm::ref {

namespace {

void check_size(const char* name, const std::vector<double>& v, int64_t expected) {
  SSM_CHECK(int64_t(v.size()) == expected, "ref::rat: {} has {} values, expected {}", name, v.size(), expected);
}

// R_p x (rotate-half form), angles p / theta^(2j/dh) rounded to float as torch computes them.
std::vector<double> rotate(const double* x, int64_t dh, int64_t p, double theta) {
  const int64_t half = dh / 2;
  std::vector<double> out(static_cast<size_t>(dh));
  for (int64_t j = 0; j < half; ++j) {
    const float inv_freq = 1.0f / std::pow(float(theta), float(2 * j) / float(dh));
    const double angle = double(float(p) * inv_freq);
    const double c = std::cos(angle), s = std::sin(angle);
    out[size_t(j)] = x[j] * c - x[j + half] * s;
    out[size_t(j + half)] = x[j + half] * c + x[j] * s;
  }
  return out;
}

}  // namespace

std::vector<double> rat(const RatDims& d, const RatRefInputs& in) {
  const int64_t Bt = d.batch, T = d.T, H = d.heads, G = d.groups, dh = d.head_dim, L = d.chunk;
  SSM_CHECK(Bt >= 0 && T >= 0 && H > 0 && G > 0 && H % G == 0 && dh > 0 && dh % 2 == 0 && L > 0,
            "ref::rat: bad dims batch {} T {} heads {} groups {} head_dim {} chunk {}", Bt, T, H, G, dh, L);
  const int64_t W = H * dh, QW = G * dh;
  check_size("q", in.q, Bt * T * QW);
  check_size("k", in.k, Bt * T * QW);
  check_size("v", in.v, Bt * T * W);
  check_size("g", in.g, Bt * T * W);
  check_size("gate_bias", in.gate_bias, W);
  const double scale = in.softmax_scale > 0.0 ? in.softmax_scale : 1.0 / std::sqrt(double(dh));

  std::vector<double> y(size_t(Bt * T * W), 0.0);
  for (int64_t b = 0; b < Bt; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t grp = h % G;
      auto q_at = [&](int64_t t) { return &in.q[size_t((b * T + t) * QW + grp * dh)]; };
      // The in-chunk states after every token, and the rotated keys.
      std::vector<std::vector<double>> ks(static_cast<size_t>(T), std::vector<double>(static_cast<size_t>(dh)));
      std::vector<std::vector<double>> vs = ks, keys = ks;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < dh; ++j) {
          const size_t at = size_t((b * T + t) * W + h * dh + j);
          const double a = 1.0 / (1.0 + std::exp(-(in.g[at] + in.gate_bias[size_t(h * dh + j)])));
          const bool restart = t % L == 0;
          const double kprev = restart ? 0.0 : ks[size_t(t - 1)][size_t(j)];
          const double vprev = restart ? 0.0 : vs[size_t(t - 1)][size_t(j)];
          ks[size_t(t)][size_t(j)] = a * kprev + (1.0 - a) * in.k[size_t((b * T + t) * QW + grp * dh + j)];
          vs[size_t(t)][size_t(j)] = a * vprev + (1.0 - a) * in.v[at];
        }
        keys[size_t(t)] = rotate(ks[size_t(t)].data(), dh, t / L, in.rope_theta);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t c = t / L;
        const std::vector<double> q = rotate(q_at(t), dh, c, in.rope_theta);
        std::vector<int64_t> visible;
        for (int64_t s = 0; s <= t; ++s)
          if (s == t || (s % L == L - 1 && s / L < c)) visible.push_back(s);
        std::vector<double> scores;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t s : visible) {
          double dot = 0.0;
          for (int64_t j = 0; j < dh; ++j) dot += q[size_t(j)] * keys[size_t(s)][size_t(j)];
          scores.push_back(scale * dot);
          m = std::max(m, scores.back());
        }
        double sum = 0.0;
        for (double& sc : scores) sum += (sc = std::exp(sc - m));
        double* out = &y[size_t((b * T + t) * W + h * dh)];
        for (size_t i = 0; i < visible.size(); ++i)
          for (int64_t j = 0; j < dh; ++j) out[j] += scores[i] / sum * vs[size_t(visible[i])][size_t(j)];
      }
    }
  }
  return y;
}

}  // namespace ssm::ref
