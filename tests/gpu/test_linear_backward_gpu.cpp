// ops::linear_backward on the GPU against the CPU op on the same inputs (rounded through the
// activation dtype): odd sizes, batch > 1, column-slice x / dy / dx, accumulate_dx, parameter
// gradients accumulated onto random values, outputs left out, two runs giving the same bits.
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <tuple>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct LinearBackwardCase {
  int64_t batch, T, N, K;
  bool bias, strided, accumulate_dx;
};

std::string describe_case(const LinearBackwardCase& c, DType dt) {
  return fmt::format("[{}, {}] rows, N {}, K {}, {}{}{}{}", c.batch, c.T, c.N, c.K, dtype_name(dt),
                     c.bias ? ", bias" : "", c.strided ? ", strided" : "", c.accumulate_dx ? ", accumulate dx" : "");
}

// The GPU tensors of one call, from host values: x and dy (column slices when strided), dx (NaN, or
// the host start values when accumulating), dw and dbias from their host start values.
struct GpuLinearBackward {
  StridedGpu x_wide, dy_wide, dx_wide;
  Tensor x, w, dy, dx, dw, dbias;
};

GpuLinearBackward gpu_inputs(const LinearBackwardCase& c, DType dt, const Tensor& x, const Tensor& w,
                             const Tensor& dy, const Tensor& dx0, const Tensor& dw0, const Tensor& db0) {
  GpuLinearBackward g;
  const Shape xs{c.batch, c.T, c.K}, ys{c.batch, c.T, c.N};
  if (c.strided) {
    g.x_wide = strided_gpu(xs, dt, 3, &x);
    g.dy_wide = strided_gpu(ys, dt, 8, &dy);
    g.dx_wide = strided_gpu(xs, dt, 1, c.accumulate_dx ? &dx0 : nullptr);
    g.x = g.x_wide.view;
    g.dy = g.dy_wide.view;
    g.dx = g.dx_wide.view;
  } else {
    g.x = to_gpu(x, dt);
    g.dy = to_gpu(dy, dt);
    g.dx = c.accumulate_dx ? to_gpu(dx0, dt) : nan_gpu(xs, dt);
  }
  g.w = to_gpu(w, dt);
  g.dw = to_gpu(dw0);
  g.dbias = to_gpu(db0);
  return g;
}

class LinearBackwardGpu : public ::testing::TestWithParam<std::tuple<DType, LinearBackwardCase>> {};

TEST_P(LinearBackwardGpu, MatchesTheCpu) {
  require_gpu();
  const auto [dt, c] = GetParam();
  SCOPED_TRACE(describe_case(c, dt));
  Rng rng(uint64_t(c.batch * 1000 + c.T * 31 + c.N * 7 + c.K));
  const Shape xs{c.batch, c.T, c.K}, ys{c.batch, c.T, c.N};
  const Tensor x = rounded(random_cpu(xs, rng), dt), w = rounded(random_cpu({c.N, c.K}, rng, -0.5, 0.5), dt);
  const Tensor dy = rounded(random_cpu(ys, rng), dt), dx0 = rounded(random_cpu(xs, rng), dt);
  const Tensor dw0 = random_cpu({c.N, c.K}, rng), db0 = random_cpu({c.N}, rng);

  Tensor want_dx = dx0.clone(), want_dw = dw0.clone(), want_db = db0.clone();
  ops::linear_backward(x, w, dy, &want_dx, &want_dw, c.bias ? &want_db : nullptr, c.accumulate_dx);

  GpuLinearBackward g = gpu_inputs(c, dt, x, w, dy, dx0, dw0, db0);
  ops::linear_backward(g.x, g.w, g.dy, &g.dx, &g.dw, c.bias ? &g.dbias : nullptr, c.accumulate_dx);
  EXPECT_LT(relative_error(to_cpu(g.dx), want_dx), backward_tolerance(dt)) << "dx";
  const Tensor got_dw = to_cpu(g.dw), got_db = to_cpu(g.dbias);
  EXPECT_LT(relative_error(got_dw, want_dw), backward_tolerance(dt)) << "dw";
  EXPECT_LT(relative_error(difference(got_dw, dw0), difference(want_dw, dw0)), backward_tolerance(dt)) << "dw added";
  EXPECT_LT(relative_error(got_db, want_db), backward_tolerance(dt)) << "dbias";
  if (c.bias) {
    EXPECT_LT(relative_error(difference(got_db, db0), difference(want_db, db0)), backward_tolerance(dt))
        << "dbias added";
  }
  if (c.strided) {
    EXPECT_TRUE(g.dx_wide.padding_untouched()) << "dx written outside its columns";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearBackwardGpu,
    ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                       ::testing::Values(LinearBackwardCase{1, 1, 1, 1, true, false, false},
                                         LinearBackwardCase{2, 7, 5, 3, true, true, false},
                                         LinearBackwardCase{3, 37, 65, 129, false, true, true},
                                         LinearBackwardCase{1, 300, 513, 33, true, false, true},
                                         // rows over several bias-gradient slabs, not a multiple of one
                                         LinearBackwardCase{2, 513, 96, 640, true, true, false},
                                         LinearBackwardCase{4, 256, 768, 1536, true, false, false},
                                         LinearBackwardCase{1, 2049, 1, 257, true, false, true})),
    [](const auto& info) {
      const LinearBackwardCase& c = std::get<1>(info.param);
      return std::string(dtype_name(std::get<0>(info.param))) + "_" + std::to_string(c.batch) + "x" +
             std::to_string(c.T) + "_N" + std::to_string(c.N) + "_K" + std::to_string(c.K) +
             (c.strided ? "_strided" : "") + (c.accumulate_dx ? "_accumulate" : "");
    });

// Each gradient alone: the others are not computed (nor needed: x may be undefined without dw), and
// with no dx the weights' dtype does not matter.
TEST(LinearBackwardGpu, OutputsLeftOut) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Rng rng(11);
    const int64_t M = 45, N = 19, K = 23;
    const Tensor x = rounded(random_cpu({M, K}, rng), dt), w = rounded(random_cpu({N, K}, rng), dt);
    const Tensor dy = rounded(random_cpu({M, N}, rng), dt);
    const Tensor dw0 = random_cpu({N, K}, rng), db0 = random_cpu({N}, rng);
    Tensor want_dx = Tensor::empty({M, K}), want_dw = dw0.clone(), want_db = db0.clone();
    ops::linear_backward(x, w, dy, &want_dx, &want_dw, &want_db);

    Tensor dx = nan_gpu({M, K}, dt);
    ops::linear_backward(Tensor(), to_gpu(w, dt), to_gpu(dy, dt), &dx, nullptr, nullptr);
    EXPECT_LT(relative_error(to_cpu(dx), want_dx), backward_tolerance(dt)) << "dx alone";

    Tensor dw = to_gpu(dw0);
    const Tensor other_dtype_w = to_gpu(w, dt == DType::F32 ? DType::BF16 : DType::F32);
    ops::linear_backward(to_gpu(x, dt), other_dtype_w, to_gpu(dy, dt), nullptr, &dw, nullptr);
    EXPECT_LT(relative_error(difference(to_cpu(dw), dw0), difference(want_dw, dw0)), backward_tolerance(dt))
        << "dw alone";

    Tensor db = to_gpu(db0);
    ops::linear_backward(Tensor(), to_gpu(w, dt), to_gpu(dy, dt), nullptr, nullptr, &db);
    EXPECT_LT(relative_error(difference(to_cpu(db), db0), difference(want_db, db0)), backward_tolerance(dt))
        << "dbias alone";
  }
}

// N = 0: dx is an empty sum, written as zeros (added: unchanged); M = 0: nothing to do.
TEST(LinearBackwardGpu, EmptySizes) {
  require_gpu();
  Rng rng(12);
  const int64_t M = 6, K = 9;
  const Tensor no_w = to_gpu(random_cpu({0, K}, rng)), no_dy = to_gpu(random_cpu({M, 0}, rng));
  Tensor dx = nan_gpu({M, K});
  Tensor dw = to_gpu(random_cpu({0, K}, rng)), db = to_gpu(random_cpu({0}, rng));
  ops::linear_backward(to_gpu(random_cpu({M, K}, rng)), no_w, no_dy, &dx, &dw, &db);
  EXPECT_EQ(relative_error(to_cpu(dx), Tensor::zeros({M, K})), 0.0);

  const Tensor dx0 = random_cpu({M, K}, rng);
  Tensor dx_acc = to_gpu(dx0);
  ops::linear_backward(Tensor(), no_w, no_dy, &dx_acc, nullptr, nullptr, /*accumulate_dx=*/true);
  EXPECT_EQ(relative_error(to_cpu(dx_acc), dx0), 0.0);

  const Tensor dw0 = random_cpu({5, K}, rng);
  Tensor dw_rows = to_gpu(dw0), dx_none = nan_gpu({0, K});
  const Tensor no_x = to_gpu(random_cpu({0, K}, rng)), no_rows_dy = to_gpu(random_cpu({0, 5}, rng));
  ops::linear_backward(no_x, to_gpu(random_cpu({5, K}, rng)), no_rows_dy, &dx_none, &dw_rows, nullptr);
  EXPECT_EQ(relative_error(to_cpu(dw_rows), dw0), 0.0);
}

// Two runs on the same inputs give the same bits (sizes where cuBLASLt may split the long sum of dw).
TEST(LinearBackwardGpu, Deterministic) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Rng rng(13);
    const int64_t M = 8191, N = 96, K = 200;
    const Tensor x = to_gpu(random_cpu({M, K}, rng), dt), w = to_gpu(random_cpu({N, K}, rng), dt);
    const Tensor dy = to_gpu(random_cpu({M, N}, rng), dt);
    const Tensor dw0 = random_cpu({N, K}, rng), db0 = random_cpu({N}, rng);
    Tensor results[2][3];
    for (auto& r : results) {
      Tensor dx = nan_gpu({M, K}, dt), dw = to_gpu(dw0), db = to_gpu(db0);
      ops::linear_backward(x, w, dy, &dx, &dw, &db);
      r[0] = to_cpu(dx);
      r[1] = to_cpu(dw);
      r[2] = to_cpu(db);
    }
    for (int i = 0; i < 3; ++i) {
      const Tensor &a = results[0][i], &b = results[1][i];
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << (i == 0 ? "dx" : i == 1 ? "dw" : "dbias");
    }
  }
}

TEST(LinearBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(14);
  const Tensor x = to_gpu(random_cpu({4, 6}, rng)), w = to_gpu(random_cpu({5, 6}, rng));
  const Tensor dy = to_gpu(random_cpu({4, 5}, rng));
  Tensor dx = nan_gpu({4, 6}), dw = to_gpu(Tensor::zeros({5, 6})), db = to_gpu(Tensor::zeros({5}));
  const Tensor w16 = to_gpu(random_cpu({5, 6}, rng), DType::BF16);
  test::expect_error([&] { ops::linear_backward(x, w16, dy, &dx, nullptr, nullptr); },
                     {"linear_backward", "weights BF16 with activations F32"});
  Tensor dx16 = nan_gpu({4, 6}, DType::BF16);
  test::expect_error([&] { ops::linear_backward(x, w, dy, &dx16, nullptr, nullptr); }, {"linear_backward", "dx"});
  Tensor dw16 = to_gpu(Tensor::zeros({5, 6}), DType::BF16);
  test::expect_error([&] { ops::linear_backward(x, w, dy, nullptr, &dw16, nullptr); },
                     {"linear_backward", "dw must be contiguous F32 [5, 6]"});
  Tensor db_wrong = to_gpu(Tensor::zeros({4}));
  test::expect_error([&] { ops::linear_backward(x, w, dy, nullptr, nullptr, &db_wrong); },
                     {"linear_backward", "dbias must be F32 [5]"});
  const Tensor x_wrong = to_gpu(random_cpu({3, 6}, rng));
  test::expect_error([&] { ops::linear_backward(x_wrong, w, dy, nullptr, &dw, nullptr); },
                     {"linear_backward", "x must be"});
  Tensor cpu_dw = Tensor::zeros({5, 6});
  test::expect_error([&] { ops::linear_backward(x, w, dy, nullptr, &cpu_dw, nullptr); },
                     {"linear_backward", "dw", "on the GPU"});
  // dy on the host with a GPU weight: the CPU op refuses it instead of reading GPU memory.
  Tensor cpu_dx = Tensor::empty({4, 6});
  test::expect_error([&] { ops::linear_backward(Tensor(), w, random_cpu({4, 5}, rng), &cpu_dx, nullptr, nullptr); },
                     {"linear_backward", "w must be contiguous F32/BF16/F16 [N,K] on the host"});
}

}  // namespace
}  // namespace ssm
