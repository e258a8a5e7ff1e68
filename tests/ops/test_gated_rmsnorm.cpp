// ops::gated_rmsnorm against the double-precision oracle in ops/ref/gated_rmsnorm.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "ops/ref/gated_rmsnorm.h"

namespace ssm {
namespace {

using Vec = std::vector<double>;

Vec random_vec(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(float(offset + scale * double(rng.normal())));
  return v;
}
void fill(Tensor& t, const Vec& v) {
  ASSERT_EQ(int64_t(v.size()), t.numel());
  const int64_t width = t.size(-1), ld = t.row_stride();
  float* p = t.data<float>();
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t i = 0; i < width; ++i) p[r * ld + i] = float(v[size_t(r * width + i)]);
}
Vec to_vec(const Tensor& t) {
  Vec v(size_t(t.numel()));
  const int64_t width = t.size(-1), ld = t.row_stride();
  const float* p = t.data<float>();
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t i = 0; i < width; ++i) v[size_t(r * width + i)] = double(p[r * ld + i]);
  return v;
}
double rel_err(const Vec& got, const Vec& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::abs(got[i] - ref[i]));
    den = std::max(den, std::abs(ref[i]));
  }
  return den > 0 ? num / den : num;
}

constexpr double kTol = 1e-5;

struct Case {
  int64_t batch = 2, T = 5, width = 64, group = 64;
  bool norm_before_gate = false, strided = false, gate = true;
  float eps = 1e-5f;
  uint64_t seed = 1;
};

void check_case(const Case& k) {
  SCOPED_TRACE(::testing::Message() << "width " << k.width << " group " << k.group << " norm_before_gate "
                                    << k.norm_before_gate << " strided " << k.strided << " gate " << k.gate);
  Rng rng(k.seed);
  const int64_t rows = k.batch * k.T;
  const Vec x = random_vec(rng, rows * k.width, 1.5, 0.2);
  const Vec z = k.gate ? random_vec(rng, rows * k.width, 2.0) : Vec{};
  const Vec w = random_vec(rng, k.width, 0.5, 1.0);
  Tensor xt, zt, yt, wide;
  if (k.strided) {
    // [z | x | pad] columns of one wide tensor, as the in_proj output / y buffers are laid out.
    wide = Tensor::zeros({k.batch, k.T, 2 * k.width + 7});
    zt = wide.slice(2, 0, k.width);
    xt = wide.slice(2, k.width, k.width);
    Tensor ywide = Tensor::zeros({k.batch, k.T, k.width + 3});
    yt = ywide.slice(2, 2, k.width);
  } else {
    xt = Tensor::empty({k.batch, k.T, k.width});
    zt = Tensor::empty({k.batch, k.T, k.width});
    yt = Tensor::empty({k.batch, k.T, k.width});
  }
  fill(xt, x);
  if (k.gate) {
    fill(zt, z);
  } else {
    zt = Tensor();
  }
  Tensor wt = Tensor::empty({k.width});
  fill(wt, w);
  ops::gated_rmsnorm(xt, zt, wt, k.group, k.norm_before_gate, k.eps, yt);
  const Vec want = ref::gated_rmsnorm(x, z, w, rows, k.width, k.group, k.norm_before_gate, double(k.eps));
  EXPECT_LT(rel_err(to_vec(yt), want), kTol);
}

TEST(OpsGatedRmsNorm, MatchesReference) {
  uint64_t seed = 1;
  for (int64_t width : {64, 1536, 40}) {
    for (int64_t groups : {1, 2}) {
      for (bool nbg : {false, true}) {
        for (bool strided : {false, true}) {
          Case k;
          k.width = width;
          k.group = width / groups;
          k.norm_before_gate = nbg;
          k.strided = strided;
          k.seed = seed++;
          check_case(k);
        }
      }
    }
  }
}

TEST(OpsGatedRmsNorm, ManyRowsAndSmallGroups) {
  Case k;
  k.batch = 3;
  k.T = 200;  // enough rows for the threaded path
  k.width = 96;
  k.group = 12;
  k.strided = true;
  check_case(k);
  k.norm_before_gate = true;
  check_case(k);
}

TEST(OpsGatedRmsNorm, WithoutGate) {
  for (bool nbg : {false, true}) {
    Case k;
    k.gate = false;
    k.norm_before_gate = nbg;
    k.group = 32;
    check_case(k);
  }
}

TEST(OpsGatedRmsNorm, InPlace) {
  Rng rng(9);
  const int64_t rows = 6, width = 48, group = 24;
  const Vec x = random_vec(rng, rows * width), z = random_vec(rng, rows * width), w = random_vec(rng, width);
  for (bool nbg : {false, true}) {
    Tensor xt = Tensor::empty({rows, width}), zt = Tensor::empty({rows, width}), wt = Tensor::empty({width});
    fill(xt, x);
    fill(zt, z);
    fill(wt, w);
    ops::gated_rmsnorm(xt, zt, wt, group, nbg, 1e-6f, xt);
    EXPECT_LT(rel_err(to_vec(xt), ref::gated_rmsnorm(x, z, w, rows, width, group, nbg, 1e-6)), kTol);
  }
}

template <class F>
void expect_error(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no ssm::Error thrown (expected " << fragment << ")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gated_rmsnorm"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

TEST(OpsGatedRmsNorm, ShapeAndDtypeErrors) {
  Tensor x = Tensor::zeros({2, 3, 8}), z = Tensor::zeros({2, 3, 8}), w = Tensor::zeros({8}),
         y = Tensor::zeros({2, 3, 8});
  expect_error([&] { ops::gated_rmsnorm(x, Tensor::zeros({2, 3, 9}), w, 8, false, 1e-5f, y); }, "[2, 3, 9]");
  expect_error([&] { ops::gated_rmsnorm(x, z, Tensor::zeros({7}), 8, false, 1e-5f, y); }, "[7]");
  expect_error([&] { ops::gated_rmsnorm(x, z, w, 3, false, 1e-5f, y); }, "group_size 3");
  Tensor bad_y = Tensor::zeros({2, 4, 8});
  expect_error([&] { ops::gated_rmsnorm(x, z, w, 8, false, 1e-5f, bad_y); }, "[2, 4, 8]");
  expect_error([&] { ops::gated_rmsnorm(x.to(DType::BF16), z, w, 8, false, 1e-5f, y); }, "BF16");
}

}  // namespace
}  // namespace ssm
