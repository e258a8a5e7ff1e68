// ops::cross_entropy (the fused head + loss) on the GPU against the CPU op on the same inputs
// (rounded through the activation dtype): vocabularies not a multiple of the chunk, row counts not a
// multiple of the block, one chunk holding the whole vocabulary, ignored targets, targets on the
// host or the GPU, column-slice hidden rows and dhidden, each gradient alone, grad_scale, no counted
// row, bad targets, a logit soft cap, and two runs giving the same bits.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct CrossEntropyCase {
  int64_t M, D, V, vocab_chunk, row_block;
  bool strided = false;
  bool want_dhidden = true, want_dweight = true;
  float grad_scale = 1.0f;
};

std::string describe_case(const CrossEntropyCase& c, DType dt, bool gpu_targets) {
  return fmt::format("M {}, D {}, V {}, vocab chunk {}, row block {}, {}, targets on the {}{}{}{}, grad scale {}", c.M,
                     c.D, c.V, c.vocab_chunk, c.row_block, dtype_name(dt), gpu_targets ? "GPU" : "host",
                     c.strided ? ", strided" : "", c.want_dhidden ? ", dhidden" : "", c.want_dweight ? ", dweight" : "",
                     c.grad_scale);
}

// Targets in [0, V) with every fifth row ignored and a run of rows on one target.
Tensor random_targets(int64_t M, int64_t V, Rng& rng) {
  Tensor t = Tensor::empty({M}, DType::I32);
  for (int64_t i = 0; i < M; ++i) {
    int32_t v = int32_t(rng.below(uint64_t(V)));
    if (i % 5 == 2) v = -1;
    if (i >= M / 2 && i < M / 2 + 6) v = int32_t(V - 1);
    t.data<int32_t>()[i] = v;
  }
  return t;
}

struct CeInputs {
  Tensor hidden, weight, targets, dweight0;
};

CeInputs random_inputs(int64_t M, int64_t D, int64_t V, DType dt, Rng& rng) {
  CeInputs in;
  in.hidden = rounded(random_cpu({M, D}, rng), dt);
  in.weight = rounded(random_cpu({V, D}, rng, -0.5, 0.5), dt);
  in.targets = random_targets(M, V, rng);
  in.dweight0 = random_cpu({V, D}, rng);
  return in;
}

struct CeResult {
  double loss = 0;
  int64_t counted = -1;
  Tensor dhidden, dweight;  // on the host, F32
};

CeResult run_cpu(const CeInputs& in, const ops::CrossEntropyOptions& options, bool want_dh, bool want_dw) {
  CeResult r;
  r.dhidden = Tensor::empty(in.hidden.shape());
  r.dweight = in.dweight0.clone();
  r.loss = ops::cross_entropy(in.hidden, in.weight, in.targets, want_dh ? &r.dhidden : nullptr,
                              want_dw ? &r.dweight : nullptr, options, &r.counted);
  return r;
}

// The GPU op on the same inputs; dhidden starts as NaN (in a NaN-filled wider tensor when strided),
// dweight from dweight0. `padding_ok` reports whether dhidden's padding stayed NaN.
CeResult run_gpu(const CeInputs& in, DType dt, const ops::CrossEntropyOptions& options, bool want_dh, bool want_dw,
                 bool strided, bool gpu_targets, bool* padding_ok = nullptr) {
  const int64_t M = in.hidden.size(0), D = in.hidden.size(1);
  StridedGpu hidden_wide, dhidden_wide;
  Tensor hidden, dhidden;
  if (strided) {
    hidden_wide = strided_gpu({M, D}, dt, 3, &in.hidden);
    dhidden_wide = strided_gpu({M, D}, dt, 1);
    hidden = hidden_wide.view;
    dhidden = dhidden_wide.view;
  } else {
    hidden = to_gpu(in.hidden, dt);
    dhidden = nan_gpu({M, D}, dt);
  }
  Tensor dweight = to_gpu(in.dweight0);
  const Tensor targets = gpu_targets ? in.targets.to_device(Device::CUDA) : in.targets;
  CeResult r;
  r.loss = ops::cross_entropy(hidden, to_gpu(in.weight, dt), targets, want_dh ? &dhidden : nullptr,
                              want_dw ? &dweight : nullptr, options, &r.counted);
  r.dhidden = to_cpu(dhidden);
  r.dweight = to_cpu(dweight);
  if (padding_ok) *padding_ok = !strided || dhidden_wide.padding_untouched();
  return r;
}

class CrossEntropyGpu : public ::testing::TestWithParam<std::tuple<DType, bool, CrossEntropyCase>> {};

TEST_P(CrossEntropyGpu, MatchesTheCpu) {
  require_gpu();
  const auto [dt, gpu_targets, c] = GetParam();
  SCOPED_TRACE(describe_case(c, dt, gpu_targets));
  Rng rng(uint64_t(c.M * 7919 + c.V * 31 + c.D));
  const CeInputs in = random_inputs(c.M, c.D, c.V, dt, rng);
  const ops::CrossEntropyOptions options{c.vocab_chunk, c.row_block, c.grad_scale};
  const CeResult want = run_cpu(in, options, c.want_dhidden, c.want_dweight);
  bool padding_ok = false;
  const CeResult got = run_gpu(in, dt, options, c.want_dhidden, c.want_dweight, c.strided, gpu_targets, &padding_ok);

  // The logits are F32 sums of the same (rounded) values on both sides: the loss agrees to F32
  // rounding in either dtype; the gradients go through dlogits in the activation dtype.
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * (1.0 + std::fabs(want.loss)));
  EXPECT_EQ(got.counted, want.counted);
  if (c.want_dhidden) {
    EXPECT_LT(relative_error(got.dhidden, want.dhidden), backward_tolerance(dt)) << "dhidden";
    EXPECT_TRUE(padding_ok) << "dhidden written outside its columns";
  } else {
    EXPECT_TRUE(std::isnan(got.dhidden.data<float>()[0])) << "dhidden written though not asked for";
  }
  if (c.want_dweight) {
    EXPECT_LT(relative_error(got.dweight, want.dweight), backward_tolerance(dt)) << "dweight";
    EXPECT_LT(relative_error(difference(got.dweight, in.dweight0), difference(want.dweight, in.dweight0)),
              backward_tolerance(dt))
        << "dweight added";
  } else {
    EXPECT_EQ(relative_error(got.dweight, in.dweight0), 0.0) << "dweight changed though not asked for";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyGpu,
    ::testing::Combine(::testing::Values(DType::F32, DType::BF16), ::testing::Bool(),
                       ::testing::Values(CrossEntropyCase{1, 1, 2, 8192, 512},
                                         // vocabulary not a multiple of the chunk, rows not of the block
                                         CrossEntropyCase{7, 5, 11, 4, 3},
                                         CrossEntropyCase{37, 33, 50, 16, 8, true},
                                         // one chunk holds the vocabulary: its logits are not recomputed
                                         CrossEntropyCase{9, 16, 40, 40, 4},
                                         CrossEntropyCase{300, 64, 1000, 256, 128, false, true, true, 0.75f},
                                         CrossEntropyCase{520, 96, 5003, 1024, 512, true},
                                         CrossEntropyCase{64, 128, 50280, 8192, 512},
                                         // each gradient alone, and the loss alone
                                         CrossEntropyCase{41, 24, 300, 64, 16, false, true, false},
                                         CrossEntropyCase{41, 24, 300, 64, 16, true, false, true},
                                         CrossEntropyCase{41, 24, 300, 64, 16, false, false, false})),
    [](const auto& info) {
      const CrossEntropyCase& c = std::get<2>(info.param);
      return fmt::format("{}_{}_M{}_D{}_V{}_chunk{}_block{}{}{}{}", dtype_name(std::get<0>(info.param)),
                         std::get<1>(info.param) ? "gpu_targets" : "host_targets", c.M, c.D, c.V, c.vocab_chunk,
                         c.row_block, c.strided ? "_strided" : "", c.want_dhidden ? "_dh" : "",
                         c.want_dweight ? "_dw" : "");
    });

// Two runs on the same inputs give the same bits: loss, dhidden and dweight.
// A logit soft cap small enough to bend the logits (D 64: logits of a few units), over chunks and one chunk.
TEST(CrossEntropyGpu, SoftCapMatchesTheCpu) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t chunk : {int64_t(64), int64_t(300)}) {
      SCOPED_TRACE(fmt::format("{} chunk {}", dtype_name(dt), chunk));
      Rng rng(91);
      const CeInputs in = random_inputs(77, 64, 300, dt, rng);
      ops::CrossEntropyOptions options{chunk, 32, 1.0f};
      options.logit_soft_cap = 1.5f;
      const CeResult want = run_cpu(in, options, true, true), got = run_gpu(in, dt, options, true, true, false, false);
      EXPECT_NEAR(got.loss, want.loss, 1e-5 * (1.0 + std::fabs(want.loss)));
      EXPECT_LT(relative_error(got.dhidden, want.dhidden), backward_tolerance(dt)) << "dhidden";
      EXPECT_LT(relative_error(difference(got.dweight, in.dweight0), difference(want.dweight, in.dweight0)),
                backward_tolerance(dt))
          << "dweight added";
    }
}

TEST(CrossEntropyGpu, Deterministic) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool gpu_targets : {false, true}) {
      SCOPED_TRACE(fmt::format("{}, targets on the {}", dtype_name(dt), gpu_targets ? "GPU" : "host"));
      Rng rng(21);
      const CeInputs in = random_inputs(1000, 256, 3000, dt, rng);
      const ops::CrossEntropyOptions options{1024, 256, 1.0f};
      const CeResult a = run_gpu(in, dt, options, true, true, false, gpu_targets);
      const CeResult b = run_gpu(in, dt, options, true, true, false, gpu_targets);
      EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof a.loss), 0) << a.loss << " vs " << b.loss;
      EXPECT_EQ(std::memcmp(a.dhidden.raw(), b.dhidden.raw(), a.dhidden.nbytes()), 0) << "dhidden";
      EXPECT_EQ(std::memcmp(a.dweight.raw(), b.dweight.raw(), a.dweight.nbytes()), 0) << "dweight";
    }
  }
}

// No row counts: loss 0, count 0, dhidden zeros, dweight unchanged (targets on the host or the GPU).
TEST(CrossEntropyGpu, NoCountedRow) {
  require_gpu();
  for (bool gpu_targets : {false, true}) {
    SCOPED_TRACE(gpu_targets ? "targets on the GPU" : "targets on the host");
    Rng rng(22);
    CeInputs in = random_inputs(13, 8, 30, DType::F32, rng);
    std::fill(in.targets.data<int32_t>(), in.targets.data<int32_t>() + 13, -1);
    const CeResult got = run_gpu(in, DType::F32, {7, 4, 1.0f}, true, true, false, gpu_targets);
    EXPECT_EQ(got.loss, 0.0);
    EXPECT_EQ(got.counted, 0);
    EXPECT_EQ(relative_error(got.dhidden, Tensor::zeros({13, 8})), 0.0);
    EXPECT_EQ(relative_error(got.dweight, in.dweight0), 0.0);
  }
}

// A target outside the vocabulary: the CPU op's error. Host targets are checked before anything is
// written; GPU targets are reported after the op's one wait.
TEST(CrossEntropyGpu, TargetOutsideTheVocabulary) {
  require_gpu();
  Rng rng(23);
  CeInputs in = random_inputs(10, 8, 50, DType::F32, rng);
  in.targets.data<int32_t>()[3] = 50;
  in.targets.data<int32_t>()[7] = 60;
  const std::string message = "cross_entropy: target 50 at row 3 is outside the vocabulary [0, 50)";
  test::expect_error([&] { run_cpu(in, {}, true, true); }, {message});
  for (bool gpu_targets : {false, true}) {
    SCOPED_TRACE(gpu_targets ? "targets on the GPU" : "targets on the host");
    test::expect_error([&] { run_gpu(in, DType::F32, {16, 4, 1.0f}, true, true, false, gpu_targets); }, {message});
  }
  // The op is usable again afterwards.
  in.targets.data<int32_t>()[3] = 1;
  in.targets.data<int32_t>()[7] = 2;
  const CeResult want = run_cpu(in, {16, 4, 1.0f}, true, true);
  const CeResult got = run_gpu(in, DType::F32, {16, 4, 1.0f}, true, true, false, true);
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * (1.0 + std::fabs(want.loss)));
}

TEST(CrossEntropyGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(24);
  const CeInputs in = random_inputs(6, 8, 20, DType::F32, rng);
  const Tensor hidden = to_gpu(in.hidden), weight = to_gpu(in.weight);
  Tensor dhidden = nan_gpu({6, 8}), dweight = to_gpu(in.dweight0);
  test::expect_error(
      [&] { ops::cross_entropy(hidden, to_gpu(in.weight, DType::BF16), in.targets, &dhidden, &dweight); },
      {"cross_entropy", "weight must be contiguous F32 [V, 8]"});
  Tensor dhidden16 = nan_gpu({6, 8}, DType::BF16);
  test::expect_error([&] { ops::cross_entropy(hidden, weight, in.targets, &dhidden16, &dweight); },
                     {"cross_entropy", "dhidden must be F32 rows [6, 8]"});
  Tensor dweight16 = to_gpu(in.dweight0, DType::BF16);
  test::expect_error([&] { ops::cross_entropy(hidden, weight, in.targets, &dhidden, &dweight16); },
                     {"cross_entropy", "dweight must be contiguous F32 [20, 8]"});
  const Tensor short_targets = in.targets.slice(0, 0, 5);
  test::expect_error([&] { ops::cross_entropy(hidden, weight, short_targets, &dhidden, &dweight); },
                     {"cross_entropy", "targets must be contiguous I32 with 6 values"});
  Tensor cpu_dweight = in.dweight0.clone();
  test::expect_error([&] { ops::cross_entropy(hidden, weight, in.targets, &dhidden, &cpu_dweight); },
                     {"cross_entropy", "dweight", "on the GPU"});
  test::expect_error([&] { ops::cross_entropy(hidden, weight, in.targets, &dhidden, &dweight, {0, 4, 1.0f}); },
                     {"cross_entropy", "vocab_chunk and row_block must be positive"});
  // Host hidden rows with GPU targets: the CPU op refuses them instead of reading GPU memory.
  test::expect_error(
      [&] { ops::cross_entropy(in.hidden, in.weight, in.targets.to_device(Device::CUDA), nullptr, nullptr); },
      {"cross_entropy", "targets must be contiguous I32 with 6 values on the host"});
}

}  // namespace
}  // namespace ssm
