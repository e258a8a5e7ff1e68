// xLSTM's ops on the GPU against the CPU ops on the same inputs (q, k, v rounded through the activation dtype; gates,
// cell outputs and sLSTM's inputs F32 in both modes): ops::mlstm over odd lengths, batch > 1, partial last chunks,
// heads wider than one tile of the kernels (dk 80, dv 72), chunk sizes 1 to 128, sequences long enough to run as
// several segments, strided inputs; a prefill in two pieces through the state, then steps; ops::slstm and its step from
// a fresh state and from a given one; ops::group_layernorm and ops::soft_cap in place and not. Outputs start as NaN, so
// an element left unwritten fails.
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "gpu/mlstm_gpu_data.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

ops::MlstmState state_on_gpu(const ops::MlstmState& s) { return {to_gpu(s.C), to_gpu(s.n), to_gpu(s.m)}; }

// The state's three tensors against the CPU's, each relative to its own scale.
void expect_state_near(const ops::MlstmState& gpu, const ops::MlstmState& cpu, double tol, const std::string& what) {
  EXPECT_LT(relative_error(to_cpu(gpu.C), cpu.C), tol) << what << ": C";
  EXPECT_LT(relative_error(to_cpu(gpu.n), cpu.n), tol) << what << ": n";
  EXPECT_LT(relative_error(to_cpu(gpu.m), cpu.m), tol) << what << ": m";
}

const std::vector<MlstmCase> kCases = {
    {2, 37, 3, 16, 32, 16},     // the tiny fixture's head sizes; a partial last chunk
    {1, 150, 2, 80, 72, 64},    // two tiles of C both ways, three slabs of dk
    {3, 5, 4, 8, 8, 64},        // shorter than a chunk
    {2, 150, 1, 16, 16, 1},     // one-token chunks: three segments of 64
    {1, 70, 2, 24, 40, 128},    // the GPU's chunk is at most 64: rounding only
    {2, 45, 2, 16, 24, 16, 5},  // strided, unaligned
};

TEST(MlstmGpu, ForwardMatchesTheCpu) {
  require_gpu();
  uint64_t seed = 1;
  for (DType dt : {DType::F32, DType::BF16})
    for (const MlstmCase& c : kCases) {
      SCOPED_TRACE(describe(c, dt));
      const MlstmData d = make_data(c, dt, seed++);
      Tensor want = Tensor::empty({c.batch, c.T, c.H * c.dv});
      ops::mlstm(place(c, d, 0, c.T, false, Device::CPU, dt).in, nullptr, want);
      Placed gpu = place(c, d, 0, c.T, false, Device::CUDA, dt);
      StridedGpu h = gpu_rows(want.shape(), DType::F32, c.offset);
      ops::mlstm(gpu.in, nullptr, h.view);
      EXPECT_LT(relative_error(to_cpu(h.view), want), 1e-5);
      if (c.offset) {
        EXPECT_TRUE(h.padding_untouched());
      }
    }
}

// A prefill in two pieces through the state (the second starting mid-chunk), then three steps: h and the state after
// every call as on the CPU.
TEST(MlstmGpu, StatefulPiecesAndStepsMatchTheCpu) {
  require_gpu();
  uint64_t seed = 100;
  for (DType dt : {DType::F32, DType::BF16})
    for (const MlstmCase& c :
         {MlstmCase{2, 44, 3, 16, 32, 16}, MlstmCase{1, 83, 2, 80, 72, 64}, MlstmCase{2, 30, 2, 40, 24, 8, 3}}) {
      SCOPED_TRACE(describe(c, dt));
      const MlstmData d = make_data(c, dt, seed++);
      const double tol = 1e-5;  // the same rounded inputs and F32 arithmetic in both modes
      ops::MlstmState cpu_state = ops::MlstmState::zeros(c.batch, c.H, c.dk, c.dv);
      ops::MlstmState gpu_state = state_on_gpu(cpu_state);
      const int64_t steps = 3, first = (c.T - steps) / 3;
      int64_t t = 0;
      for (int64_t n : {first, c.T - steps - first}) {
        Tensor want = Tensor::empty({c.batch, n, c.H * c.dv});
        ops::mlstm(place(c, d, t, n, false, Device::CPU, dt).in, &cpu_state, want);
        Placed gpu = place(c, d, t, n, false, Device::CUDA, dt);
        StridedGpu h = gpu_rows(want.shape(), DType::F32, c.offset);
        ops::mlstm(gpu.in, &gpu_state, h.view);
        EXPECT_LT(relative_error(to_cpu(h.view), want), tol) << "prefill of " << n << " at " << t;
        expect_state_near(gpu_state, cpu_state, tol, fmt::format("after the prefill of {} at {}", n, t));
        t += n;
      }
      for (; t < c.T; ++t) {
        Tensor want = Tensor::empty({c.batch, c.H * c.dv});
        ops::mlstm_step(place(c, d, t, 1, true, Device::CPU, dt).in, cpu_state, want);
        Placed gpu = place(c, d, t, 1, true, Device::CUDA, dt);
        StridedGpu h = gpu_rows(want.shape(), DType::F32, c.offset);
        ops::mlstm_step(gpu.in, gpu_state, h.view);
        EXPECT_LT(relative_error(to_cpu(h.view), want), tol) << "step at " << t;
        expect_state_near(gpu_state, cpu_state, tol, fmt::format("after the step at {}", t));
      }
    }
}

TEST(MlstmGpu, BadInputIsOneClearError) {
  require_gpu();
  const MlstmCase c{1, 8, 2, 8, 8, 4};
  const MlstmData d = make_data(c, DType::F32, 7);
  Placed gpu = place(c, d, 0, c.T, false, Device::CUDA, DType::F32);
  Tensor h = nan_gpu({1, 8, 16});
  ops::MlstmState wrong = ops::MlstmState::zeros(1, 2, 8, 4, Device::CUDA);
  EXPECT_THROW(ops::mlstm(gpu.in, &wrong, h), Error);
  Tensor bf16_h = nan_gpu({1, 8, 16}, DType::BF16);
  EXPECT_THROW(ops::mlstm(gpu.in, nullptr, bf16_h), Error);
  Placed bf16_gates = place(c, d, 0, c.T, false, Device::CUDA, DType::F32);
  bf16_gates.in.i = to_gpu(to_cpu(gpu.in.i), DType::BF16);
  EXPECT_THROW(ops::mlstm(bf16_gates.in, nullptr, h), Error);
  ops::MlstmState on_cpu = ops::MlstmState::zeros(1, 2, 8, 8);
  EXPECT_THROW(ops::mlstm(gpu.in, &on_cpu, h), Error);
}

// sLSTM (F32 in both modes: its inputs are the sum of two products and R's, see cuda_ops.h): wx [B, T, 4·D] with R and
// the bias as the layer holds them; from zeros, then from the state the first call left, then two steps.
TEST(SlstmGpu, ForwardAndStepMatchTheCpu) {
  require_gpu();
  uint64_t seed = 50;
  struct Case {
    int64_t batch, T, H, dh, offset;
  };
  for (const Case& c : {Case{2, 19, 3, 8, 0}, Case{1, 40, 2, 96, 0}, Case{3, 7, 1, 300, 0}, Case{2, 11, 2, 16, 3}}) {
    SCOPED_TRACE(fmt::format("B {} T {} H {} dh {} offset {}", c.batch, c.T, c.H, c.dh, c.offset));
    Rng rng(seed++);
    const int64_t D = c.H * c.dh;
    const DType dt = DType::F32;
    const double tol = 1e-5;
    const Tensor wx = random_cpu({c.batch, c.T, 4 * D}, rng, -3, 3);
    const Tensor R =
        random_cpu({c.H, c.dh, 4 * c.dh}, rng, -1.0 / std::sqrt(double(c.dh)), 1.0 / std::sqrt(double(c.dh)));
    const Tensor bias = random_cpu({4 * D}, rng, -2, 2);
    const Tensor gR = to_gpu(R), gbias = to_gpu(bias);
    ops::SlstmState cpu_state = ops::SlstmState::zeros(c.batch, D);
    ops::SlstmState gpu_state = ops::SlstmState::zeros(c.batch, D, Device::CUDA);
    // The whole prefix without a state; then its two halves through the state; then two steps.
    const int64_t first = c.T - 2, half = first / 2;
    for (auto [t0, n, stateful] :
         {std::tuple{int64_t(0), first, false}, {int64_t(0), half, true}, {half, first - half, true}}) {
      const Tensor part = wx.slice(1, t0, n).contiguous();
      Tensor want = Tensor::empty({c.batch, n, D});
      ops::slstm({part, R, bias, c.H}, stateful ? &cpu_state : nullptr, want);
      StridedGpu gwx = gpu_rows(part.shape(), dt, c.offset, &part), y = gpu_rows(want.shape(), dt, c.offset);
      ops::slstm({gwx.view, gR, gbias, c.H}, stateful ? &gpu_state : nullptr, y.view);
      EXPECT_LT(relative_error(to_cpu(y.view), want), tol) << n << " tokens at " << t0 << (stateful ? " stateful" : "");
      if (c.offset) {
        EXPECT_TRUE(y.padding_untouched());
      }
    }
    for (int64_t t = first; t < c.T; ++t) {
      const Tensor token = wx.select(1, t).contiguous();
      Tensor want = Tensor::empty({c.batch, D});
      ops::slstm_step({token, R, bias, c.H}, cpu_state, want);
      Tensor y = nan_gpu({c.batch, D}, dt);
      ops::slstm_step({to_gpu(token, dt), gR, gbias, c.H}, gpu_state, y);
      EXPECT_LT(relative_error(to_cpu(y), want), tol) << "step at " << t;
    }
    for (auto [got, want] : {std::pair{&gpu_state.c, &cpu_state.c},
                             {&gpu_state.n, &cpu_state.n},
                             {&gpu_state.m, &cpu_state.m},
                             {&gpu_state.h, &cpu_state.h}})
      EXPECT_LT(relative_error(to_cpu(*got), *want), tol) << "the final state";
  }
}

TEST(GroupLayernormGpu, MatchesTheCpu) {
  require_gpu();
  Rng rng(3);
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t group : {24, 32, 96, 384})
      for (bool with_bias : {false, true})
        for (bool in_place : {false, true}) {
          SCOPED_TRACE(fmt::format("{} group {} bias {} in place {}", dtype_name(dt), group, with_bias, in_place));
          if (in_place && dt != DType::F32) continue;  // x is F32: only an F32 y can be x
          const Tensor x = random_cpu({3, 5, 768}, rng, -3, 2);
          const Tensor w = random_cpu({768}, rng, 0.5, 1.5), b = with_bias ? random_cpu({768}, rng) : Tensor();
          Tensor want = Tensor::empty(x.shape());
          ops::group_layernorm(x, w, b, group, 1e-6f, want);
          Tensor gx = to_gpu(x), y = in_place ? gx : nan_gpu(x.shape(), dt);
          ops::group_layernorm(gx, to_gpu(w), with_bias ? to_gpu(b) : Tensor(), group, 1e-6f, y);
          // BF16 y is the F32 result rounded once.
          EXPECT_LT(relative_error(to_cpu(y), want), dt == DType::F32 ? 1e-5 : 1e-2);
        }
  Tensor x = nan_gpu({2, 96}), y = nan_gpu({2, 96});
  EXPECT_THROW(ops::group_layernorm(x, to_gpu(Tensor::zeros({96})), Tensor(), 40, 1e-6f, y), Error);
  EXPECT_THROW(ops::group_layernorm(x, to_gpu(Tensor::zeros({95})), Tensor(), 32, 1e-6f, y), Error);
  Tensor bf16_x = nan_gpu({2, 96}, DType::BF16);
  EXPECT_THROW(ops::group_layernorm(bf16_x, to_gpu(Tensor::zeros({96})), Tensor(), 32, 1e-6f, y), Error);
}

TEST(SoftCapGpu, MatchesTheCpu) {
  require_gpu();
  Rng rng(5);
  for (DType dt : {DType::F32, DType::BF16})
    for (bool in_place : {false, true}) {
      const Tensor x = rounded(random_cpu({4, 7, 33}, rng, -60, 60), dt);
      Tensor want = Tensor::empty(x.shape());
      ops::soft_cap(x, 15.0f, want);
      Tensor gx = to_gpu(x, dt), y = in_place ? gx : nan_gpu(x.shape(), dt);
      ops::soft_cap(gx, 15.0f, y);
      EXPECT_LT(relative_error(to_cpu(y), want), dt == DType::F32 ? 1e-6 : 1e-2) << dtype_name(dt);
    }
  Tensor x = nan_gpu({2, 8}), y = nan_gpu({2, 8});
  EXPECT_THROW(ops::soft_cap(x, 0.0f, y), Error);
}

}  // namespace
}  // namespace ssm
