// xLSTM's backward ops on the GPU against the CPU's on the same inputs and output gradients: ops::mlstm_backward over
// odd lengths, batch > 1, heads with partial warps of rows (dk 40, 8) and columns of C spanning tiles (dv 40, 64; n is
// one more column), both activation dtypes; ops::slstm_backward with heads of 8 to 300 units (more units than a block
// has threads), dR and dbias accumulated onto start values; ops::group_layernorm_backward with dy in either dtype.
// Gradients start as NaN (an element left unwritten fails) and a second run gives the same bits.
#include <string>
#include <utility>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "gpu/mlstm_gpu_data.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

ops::MlstmGrads mlstm_grads(const MlstmCase& c, Device device, DType dt) {
  const auto make = [&](int64_t width, DType dtype) {
    return device == Device::CPU ? Tensor::empty({c.batch, c.T, width}) : nan_gpu({c.batch, c.T, width}, dtype);
  };
  return {make(c.H * c.dk, dt), make(c.H * c.dk, dt), make(c.H * c.dv, dt), make(c.H, DType::F32),
          make(c.H, DType::F32)};
}

std::vector<std::pair<const char*, const Tensor*>> all(const ops::MlstmGrads& g) {
  return {{"dq", &g.dq}, {"dk", &g.dk}, {"dv", &g.dv}, {"di", &g.di}, {"df", &g.df}};
}

TEST(MlstmGpu, BackwardMatchesTheCpu) {
  require_gpu();
  uint64_t seed = 300;
  for (DType dt : {DType::F32, DType::BF16})
    for (const MlstmCase& c : {MlstmCase{2, 37, 2, 40, 40, 16}, MlstmCase{1, 70, 3, 16, 64, 64},
                               MlstmCase{3, 21, 1, 96, 24, 8}, MlstmCase{2, 33, 2, 8, 8, 4}}) {
      SCOPED_TRACE(describe(c, dt));
      const MlstmData d = make_data(c, dt, seed++);
      Rng rng(seed++);
      const Tensor dh = random_cpu({c.batch, c.T, c.H * c.dv}, rng);
      ops::MlstmGrads want = mlstm_grads(c, Device::CPU, dt);
      ops::mlstm_backward(place(c, d, 0, c.T, false, Device::CPU, dt).in, dh, want);
      Placed gpu = place(c, d, 0, c.T, false, Device::CUDA, dt);
      const Tensor gpu_dh = to_gpu(dh);
      ops::MlstmGrads got = mlstm_grads(c, Device::CUDA, dt), again = mlstm_grads(c, Device::CUDA, dt);
      ops::mlstm_backward(gpu.in, gpu_dh, got);
      ops::mlstm_backward(gpu.in, gpu_dh, again);
      const auto wanted = all(want), gotten = all(got), repeated = all(again);
      for (size_t i = 0; i < wanted.size(); ++i) {
        EXPECT_LT(relative_error(to_cpu(*gotten[i].second), *wanted[i].second), backward_tolerance(dt))
            << wanted[i].first;
        EXPECT_TRUE(same_bits(*gotten[i].second, *repeated[i].second)) << wanted[i].first << " differs between runs";
      }
    }
}

TEST(MlstmGpu, BackwardBadInputIsOneClearError) {
  require_gpu();
  const MlstmCase c{1, 8, 1, 520, 8, 4};
  const MlstmData d = make_data(c, DType::F32, 7);
  Placed gpu = place(c, d, 0, c.T, false, Device::CUDA, DType::F32);
  ops::MlstmGrads g = mlstm_grads(c, Device::CUDA, DType::F32);
  const Tensor dh = nan_gpu({1, 8, 8});
  test::expect_error([&] { ops::mlstm_backward(gpu.in, dh, g); }, {"mlstm_backward", "at most 512 query dims"});
  ops::MlstmGrads bf16 = mlstm_grads(c, Device::CUDA, DType::BF16);
  test::expect_error([&] { ops::mlstm_backward(gpu.in, dh, bf16); }, {"mlstm_backward: dq, dk"});
}

TEST(SlstmGpu, BackwardMatchesTheCpu) {
  require_gpu();
  uint64_t seed = 400;
  struct Case {
    int64_t batch, T, H, dh;
  };
  for (const Case& c : {Case{2, 19, 3, 8}, Case{1, 40, 2, 96}, Case{3, 7, 1, 300}}) {
    SCOPED_TRACE(fmt::format("B {} T {} H {} dh {}", c.batch, c.T, c.H, c.dh));
    Rng rng(seed++);
    const int64_t D = c.H * c.dh;
    const Tensor wx = random_cpu({c.batch, c.T, 4 * D}, rng, -3, 3);
    const Tensor R =
        random_cpu({c.H, c.dh, 4 * c.dh}, rng, -1.0 / std::sqrt(double(c.dh)), 1.0 / std::sqrt(double(c.dh)));
    const Tensor bias = random_cpu({4 * D}, rng, -2, 2), dy = random_cpu({c.batch, c.T, D}, rng);
    const Tensor dR0 = random_cpu(R.shape(), rng), dbias0 = random_cpu(bias.shape(), rng);
    ops::SlstmGrads want{Tensor::empty(wx.shape()), dR0.clone(), dbias0.clone()};
    ops::slstm_backward({wx, R, bias, c.H}, dy, want);
    const ops::SlstmInputs gpu{to_gpu(wx), to_gpu(R), to_gpu(bias), c.H};
    const Tensor gpu_dy = to_gpu(dy);
    std::vector<ops::SlstmGrads> runs;
    for (int run = 0; run < 2; ++run) {
      runs.push_back({nan_gpu(wx.shape()), to_gpu(dR0), to_gpu(dbias0)});
      ops::slstm_backward(gpu, gpu_dy, runs.back());
    }
    EXPECT_LT(relative_error(to_cpu(runs[0].dwx), want.dwx), 1e-4) << "dwx";
    EXPECT_LT(relative_error(difference(to_cpu(runs[0].dR), dR0), difference(want.dR, dR0)), 1e-4) << "dR";
    EXPECT_LT(relative_error(difference(to_cpu(runs[0].dbias), dbias0), difference(want.dbias, dbias0)), 1e-4)
        << "dbias";
    EXPECT_TRUE(same_bits(runs[0].dwx, runs[1].dwx) && same_bits(runs[0].dR, runs[1].dR) &&
                same_bits(runs[0].dbias, runs[1].dbias))
        << "a second run differs";
  }
}

TEST(GroupLayernormGpu, BackwardMatchesTheCpu) {
  require_gpu();
  Rng rng(6);
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t group : {24, 96, 384}) {
      SCOPED_TRACE(fmt::format("{} group {}", dtype_name(dt), group));
      const Tensor x = random_cpu({3, 5, 768}, rng, -3, 2), w = random_cpu({768}, rng, 0.5, 1.5);
      const Tensor dy = rounded(random_cpu(x.shape(), rng), dt), dw0 = random_cpu({768}, rng);
      const bool with_db = dt == DType::F32;  // the GPU sums db over F32 dy only
      Tensor want_dx = Tensor::empty(x.shape()), want_dw = dw0.clone(), want_db = Tensor::zeros({768});
      ops::group_layernorm_backward(x, w, group, 1e-6f, dy, want_dx, &want_dw, with_db ? &want_db : nullptr);
      const Tensor gx = to_gpu(x), gw = to_gpu(w), gdy = to_gpu(dy, dt);
      std::vector<std::vector<Tensor>> runs;  // dx, dw, db
      for (int run = 0; run < 2; ++run) {
        runs.push_back({nan_gpu(x.shape()), to_gpu(dw0), to_gpu(Tensor::zeros({768}))});
        ops::group_layernorm_backward(gx, gw, group, 1e-6f, gdy, runs.back()[0], &runs.back()[1],
                                      with_db ? &runs.back()[2] : nullptr);
      }
      EXPECT_LT(relative_error(to_cpu(runs[0][0]), want_dx), 1e-5) << "dx";
      EXPECT_LT(relative_error(difference(to_cpu(runs[0][1]), dw0), difference(want_dw, dw0)), 1e-5) << "dw";
      if (with_db) {
        EXPECT_LT(relative_error(to_cpu(runs[0][2]), want_db), 1e-5) << "db";
      }
      for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(same_bits(runs[0][i], runs[1][i])) << "a second run differs";
    }
}

}  // namespace
}  // namespace ssm
