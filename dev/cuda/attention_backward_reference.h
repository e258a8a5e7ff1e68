// Causal softmax attention and its backward in double, straight from the definitions: the reference
// of dev/cuda/attention_backward.cu and attention_backward_host_check.cpp. Query t of sequence b sits
// at position S - T + t and sees the keys j <= its position (and with a window W > 0, position - j < W);
// query head h reads kv head h / (heads / kv_heads). With s_j = scale q·k_j, P = softmax(s):
//   o = Σ_j P_j v_j,  lse = log Σ_j exp(s_j),  D = dout·o,  dS_j = P_j (dout·v_j − D),
//   dq = scale Σ_j dS_j k_j,  dk_j += scale dS_j q,  dv_j += P_j dout.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace attention_reference {

// Row-major F32 inputs: q, dout [B,T,heads*d]; k, v [B,S,kv_heads*d].
struct Problem {
  int batch, T, S, heads, kv_heads, head_dim;
  int64_t window;  // 0: none
  double scale;
  std::vector<float> q, k, v, dout;
};

struct Result {
  std::vector<double> o, lse;      // [B,T,heads*d], [B,heads,T]
  std::vector<double> dq, dk, dv;  // like q, k, v
};

inline Result forward_backward(const Problem& p) {
  const int d = p.head_dim, group = p.heads / p.kv_heads, qw = p.heads * d, kw = p.kv_heads * d;
  const int64_t offset = p.S - p.T;
  Result r;
  r.o.assign(size_t(p.batch) * p.T * qw, 0.0);
  r.lse.assign(size_t(p.batch) * p.heads * p.T, 0.0);
  r.dq.assign(r.o.size(), 0.0);
  r.dk.assign(size_t(p.batch) * p.S * kw, 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  std::vector<double> s(size_t(p.S)), prob(size_t(p.S));
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h) {
      const size_t kv_col = size_t(h / group) * d, q_col = size_t(h) * d;
      auto k_row = [&](int64_t j) { return &p.k[(size_t(b) * p.S + j) * kw + kv_col]; };
      auto v_row = [&](int64_t j) { return &p.v[(size_t(b) * p.S + j) * kw + kv_col]; };
      for (int t = 0; t < p.T; ++t) {
        const size_t row = (size_t(b) * p.T + t) * qw + q_col;
        const float* q = &p.q[row];
        const float* dout = &p.dout[row];
        const int64_t pos = offset + t, first = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
        double mx = -INFINITY;
        for (int64_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += double(q[c]) * double(k_row(j)[c]);
          s[size_t(j)] = p.scale * dot;
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = first; j <= pos; ++j) sum += std::exp(s[size_t(j)] - mx);
        const double lse = mx + std::log(sum);
        r.lse[(size_t(b) * p.heads + h) * p.T + t] = lse;
        double* o = &r.o[row];
        for (int64_t j = first; j <= pos; ++j) {
          prob[size_t(j)] = std::exp(s[size_t(j)] - lse);
          for (int c = 0; c < d; ++c) o[c] += prob[size_t(j)] * double(v_row(j)[c]);
        }
        double D = 0;
        for (int c = 0; c < d; ++c) D += double(dout[c]) * o[c];
        for (int64_t j = first; j <= pos; ++j) {
          double dp = 0;
          for (int c = 0; c < d; ++c) dp += double(dout[c]) * double(v_row(j)[c]);
          const double ds = prob[size_t(j)] * (dp - D);
          double* dk = &r.dk[(size_t(b) * p.S + j) * kw + kv_col];
          double* dv = &r.dv[(size_t(b) * p.S + j) * kw + kv_col];
          for (int c = 0; c < d; ++c) {
            r.dq[row + c] += p.scale * ds * double(k_row(j)[c]);
            dk[c] += p.scale * ds * double(q[c]);
            dv[c] += prob[size_t(j)] * double(dout[c]);
          }
        }
      }
    }
  return r;
}

}  // namespace attention_reference
