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
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

Vec normal_vec(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(float(offset + scale * double(rng.normal())));
  return v;
}
using test::fill_rows;
using test::to_vec;
double rel_err(const Vec& got, const Vec& want) { return test::max_rel_err(got, want); }

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
  const Vec x = normal_vec(rng, rows * k.width, 1.5, 0.2);
  const Vec z = k.gate ? normal_vec(rng, rows * k.width, 2.0) : Vec{};
  const Vec w = normal_vec(rng, k.width, 0.5, 1.0);
  Tensor xt, zt, yt, wide;
  if (k.strided) {
    // [z | x | pad] columns of one wide tensor, as the in_proj output / y buffers are laid out.
    wide = test::nan_tensor({k.batch, k.T, 2 * k.width + 7});
    zt = wide.slice(2, 0, k.width);
    xt = wide.slice(2, k.width, k.width);
  } else {
    xt = Tensor::empty({k.batch, k.T, k.width});
    zt = Tensor::empty({k.batch, k.T, k.width});
  }
  yt = test::nan_tensor({k.batch, k.T, k.width}, k.strided);
  fill_rows(xt, x);
  if (k.gate) {
    fill_rows(zt, z);
  } else {
    zt = Tensor();
  }
  Tensor wt = Tensor::empty({k.width});
  fill_rows(wt, w);
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
  const Vec x = normal_vec(rng, rows * width), z = normal_vec(rng, rows * width), w = normal_vec(rng, width);
  for (bool nbg : {false, true}) {
    Tensor xt = Tensor::empty({rows, width}), zt = Tensor::empty({rows, width}), wt = Tensor::empty({width});
    fill_rows(xt, x);
    fill_rows(zt, z);
    fill_rows(wt, w);
    ops::gated_rmsnorm(xt, zt, wt, group, nbg, 1e-6f, xt);
    EXPECT_LT(rel_err(to_vec(xt), ref::gated_rmsnorm(x, z, w, rows, width, group, nbg, 1e-6)), kTol);
  }
}

TEST(OpsGatedRmsNorm, ShapeAndDtypeErrors) {
  Tensor x = Tensor::zeros({2, 3, 8}), z = Tensor::zeros({2, 3, 8}), w = Tensor::zeros({8}),
         y = Tensor::zeros({2, 3, 8});
  test::expect_error(
      [&] {
        ops::gated_rmsnorm(x, Tensor::zeros({2, 3, 9}), w, 8, false, 1e-5f, y);
      },
      {"gated_rmsnorm", "[2, 3, 9]"});
  test::expect_error([&] { ops::gated_rmsnorm(x, z, Tensor::zeros({7}), 8, false, 1e-5f, y); },
                     {"gated_rmsnorm", "[7]"});
  test::expect_error([&] { ops::gated_rmsnorm(x, z, w, 3, false, 1e-5f, y); }, {"gated_rmsnorm", "group_size 3"});
  Tensor bad_y = Tensor::zeros({2, 4, 8});
  test::expect_error([&] { ops::gated_rmsnorm(x, z, w, 8, false, 1e-5f, bad_y); }, {"gated_rmsnorm", "[2, 4, 8]"});
  test::expect_error([&] { ops::gated_rmsnorm(x.to(DType::BF16), z, w, 8, false, 1e-5f, y); },
                     {"gated_rmsnorm", "BF16"});
}

}  // namespace
}  // namespace ssm
