#include "ops/ref/attention.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::ref {

std::vector<double> attention(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                              const AttentionDims& d, std::vector<double>* lse) {
  const int64_t hd = d.head_dim, qw = d.n_heads * hd, kw = d.n_kv_heads * hd;
  SSM_CHECK(d.n_kv_heads > 0 && d.n_heads % d.n_kv_heads == 0 && d.S >= d.T,
            "ref::attention: bad dims (n_heads {}, n_kv_heads {}, T {}, S {})", d.n_heads, d.n_kv_heads, d.T, d.S);
  SSM_CHECK(int64_t(q.size()) == d.batch * d.T * qw && int64_t(k.size()) == d.batch * d.S * kw && v.size() == k.size(),
            "ref::attention: sizes q {} k {} v {} do not match the dims", q.size(), k.size(), v.size());
  const int64_t group = d.n_heads / d.n_kv_heads;
  std::vector<double> o(q.size()), s(size_t(d.S));
  if (lse) lse->assign(size_t(d.batch * d.n_heads * d.T), 0.0);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.n_heads; ++h)
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t i = d.S - d.T + t;
        const int64_t first = d.window > 0 ? std::max<int64_t>(0, i - d.window + 1) : 0;
        const double* qi = &q[size_t((b * d.T + t) * qw + h * hd)];
        double mx = -INFINITY;
        for (int64_t j = first; j <= i; ++j) {
          const double* kj = &k[size_t((b * d.S + j) * kw + (h / group) * hd)];
          double dot = 0.0;
          for (int64_t c = 0; c < hd; ++c) dot += qi[c] * kj[c];
          s[size_t(j)] = d.scale * dot;
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = first; j <= i; ++j) sum += std::exp(s[size_t(j)] - mx);
        double* oi = &o[size_t((b * d.T + t) * qw + h * hd)];
        for (int64_t j = first; j <= i; ++j) {
          const double p = std::exp(s[size_t(j)] - mx) / sum;
          const double* vj = &v[size_t((b * d.S + j) * kw + (h / group) * hd)];
          for (int64_t c = 0; c < hd; ++c) oi[c] += p * vj[c];
        }
        if (lse) (*lse)[size_t((b * d.n_heads + h) * d.T + t)] = mx + std::log(sum);
      }
  return o;
}

}  // namespace ssm::ref
