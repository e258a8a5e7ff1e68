// Helpers for the op tests: seeded random tensors (optionally strided column slices of a wider
// tensor), tensor <-> std::vector<double> conversion, error measures and error-message checks.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"

namespace ssm::test {

using Vec = std::vector<double>;

// An F32 tensor of `shape` whose every element is NaN. With `strided` it is the column slice
// [3, 3 + W) of a [..., W + 7] tensor (padding NaN too), so that kernels must honour row_stride()
// and any read of the padding shows up as NaN.
inline Tensor nan_tensor(const Shape& shape, bool strided = false) {
  if (!strided || shape.empty()) {
    Tensor t = Tensor::empty(shape);
    t.fill(std::numeric_limits<float>::quiet_NaN());
    return t;
  }
  Shape wide = shape;
  wide.back() += 7;
  Tensor t = Tensor::empty(wide);
  t.fill(std::numeric_limits<float>::quiet_NaN());
  return t.slice(-1, 3, shape.back());
}

// Writes v (row-major order of t's shape) into an F32 rows tensor, honouring its row stride.
inline void fill_rows(Tensor& t, const Vec& v) {
  ASSERT_EQ(int64_t(v.size()), t.numel());
  if (t.numel() == 0) return;
  const int64_t width = t.size(-1), ld = t.row_stride();
  float* p = t.data<float>();
  for (int64_t r = 0; r < t.rows(); ++r) {
    for (int64_t i = 0; i < width; ++i) p[r * ld + i] = float(v[size_t(r * width + i)]);
  }
}

inline Vec uniform_vec(Rng& rng, int64_t n, double lo, double hi) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(rng.uniform(float(lo), float(hi)));
  return v;
}

// Uniform [lo, hi) values; see nan_tensor for `strided`.
inline Tensor random_tensor(const Shape& shape, Rng& rng, double lo = -1.0, double hi = 1.0, bool strided = false) {
  Tensor t = nan_tensor(shape, strided);
  fill_rows(t, uniform_vec(rng, shape_numel(shape), lo, hi));
  return t;
}

inline Tensor from_vec(const Vec& v, const Shape& shape, bool strided = false) {
  Tensor t = nan_tensor(shape, strided);
  fill_rows(t, v);
  return t;
}

// The values of any tensor (any layout, F32 or BF16) in row-major order; empty for an undefined one.
inline Vec to_vec(const Tensor& t) {
  if (!t.defined()) return {};
  const Tensor f = t.contiguous().to(DType::F32);
  const float* p = f.data<float>();
  return Vec(p, p + f.numel());
}

// max |got - want| / max |want| (1 when want is all zero); infinity if got has a NaN or a size mismatch.
inline double max_rel_err(const Vec& got, const Vec& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / (scale > 0.0 ? scale : 1.0);
}

// max |got - want| / max |magnitude|, for results prone to cancellation: `magnitude` is the same
// computation on absolute values, a bound on the size of the terms whose rounding errors add up.
inline double max_err_vs(const Vec& got, const Vec& want, const Vec& magnitude) {
  double scale = 0.0;
  for (double m : magnitude) scale = std::max(scale, std::abs(m));
  const double rel = max_rel_err(got, want);
  double want_max = 0.0;
  for (double w : want) want_max = std::max(want_max, std::abs(w));
  return rel * (want_max > 0.0 ? want_max : 1.0) / (scale > 0.0 ? scale : 1.0);
}

inline Vec abs_vec(Vec v) {
  for (double& e : v) e = std::abs(e);
  return v;
}

// Runs fn, expecting an ssm::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no ssm::Error thrown";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

}  // namespace ssm::test
