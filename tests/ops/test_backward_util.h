// Helpers of the backward tests: random inputs, float tensors holding exactly the values the
// double reference sees, central finite differences of a reference loss, and the comparison.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace ssm::testing {

// Names parameterised cases "case0", "case1", ... (gtest would print the parameter's raw bytes).
struct CaseIndexName {
  template <class Param>
  std::string operator()(const ::testing::TestParamInfo<Param>& info) const {
    return "case" + std::to_string(info.index);
  }
};

using Vec = std::vector<double>;

// Normal values rounded to float (so the float kernel and the double reference see the same inputs).
inline Vec randn(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(float(offset + scale * double(rng.normal())));
  return v;
}
inline Vec randu(Rng& rng, int64_t n, double lo, double hi) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(rng.uniform(float(lo), float(hi)));
  return v;
}

// Writes v (logical row-major order) into a rows tensor.
inline void fill(Tensor& t, const Vec& v) {
  ASSERT_EQ(int64_t(v.size()), t.numel());
  if (t.numel() == 0) return;
  const int64_t width = t.size(-1), ld = t.row_stride();
  float* p = t.data<float>();
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t i = 0; i < width; ++i) p[r * ld + i] = float(v[size_t(r * width + i)]);
}
inline Tensor make(const Shape& shape, const Vec& v) {
  Tensor t = Tensor::empty(shape);
  fill(t, v);
  return t;
}
// A rows tensor whose rows are `pad` floats wider than their width (a column slice of a wider buffer),
// filled with v: checks that kernels honour row strides.
inline Tensor make_strided(const Shape& shape, const Vec& v, int64_t pad = 3) {
  Shape wide = shape;
  wide.back() += pad;
  Tensor base = Tensor::zeros(wide);
  Tensor t = base.slice(int64_t(shape.size()) - 1, pad, shape.back());
  fill(t, v);
  return t;
}
inline Vec to_vec(const Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  if (t.numel() == 0) return v;
  const int64_t width = t.size(-1), ld = t.row_stride();
  const float* p = t.data<float>();
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t i = 0; i < width; ++i) v[size_t(r * width + i)] = double(p[r * ld + i]);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of loss() with respect to every element of x (x is perturbed in place and
// restored): (L(x + eps) - L(x - eps)) / 2eps.
inline Vec central_diff(Vec& x, const std::function<double()>& loss, double eps = 1e-5) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double plus = loss();
    x[i] = saved - eps;
    const double minus = loss();
    x[i] = saved;
    g[i] = (plus - minus) / (2.0 * eps);
  }
  return g;
}

// max |got - want| / max |want| (absolute when want is all zero).
inline double rel_err(const Vec& got, const Vec& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::abs(got[i] - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return den > 0 ? num / den : num;
}

#define EXPECT_GRAD_NEAR(got, want, tol, what)                                         \
  do {                                                                                 \
    const double err_ = ::ssm::testing::rel_err((got), (want));                        \
    EXPECT_LT(err_, (tol)) << "gradient of " << (what) << ": relative error " << err_; \
  } while (0)

}  // namespace ssm::testing
