// ops::selective_scan and ops::selective_scan_step on the GPU against the CPU ops on the same inputs
// (rounded through the activation dtype), F32 and BF16 activations: odd lengths, batch > 1, widths that
// are not multiples of the GPU's block, every optional input, strided slices laid out as Mamba-1's
// projections leave them, sequences long enough to be cut into many chunks, the state carried across
// calls, and the step.
#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "gpu/selective_scan_gpu_problem.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

// Runs the forward on both devices and compares y (and the final state).
void expect_forward_matches(const ScanCase& c, int flags, DType dt, Rng& rng) {
  ScanProblem p(c, {c.B, c.T}, flags, dt, rng);
  const bool with_state = flags & kState;
  Tensor want = Tensor::empty({c.B, c.T, c.D});
  ops::selective_scan(p.cpu, with_state ? &p.cpu_state : nullptr, want);
  StridedGpu got = nan_output({c.B, c.T, c.D}, dt, flags & kStrided);
  ops::selective_scan(p.gpu, with_state ? &p.gpu_state : nullptr, got.view);
  EXPECT_LT(relative_error(to_cpu(got.view), want), tolerance(dt)) << "y of " << describe(c, flags, dt);
  EXPECT_TRUE(got.padding_untouched()) << "y's padding written, " << describe(c, flags, dt);
  if (with_state) {
    EXPECT_LT(relative_error(to_cpu(p.gpu_state), p.cpu_state), state_tolerance(dt))
        << "state of " << describe(c, flags, dt);
  }
}

class SelectiveScanGpu : public ::testing::TestWithParam<DType> {};

TEST_P(SelectiveScanGpu, MatchesTheCpuWithEveryOption) {
  require_gpu();
  Rng rng(41);
  for (const ScanCase& c : {ScanCase{1, 1, 64, 16}, ScanCase{2, 2, 37, 4}, ScanCase{2, 17, 130, 16},
                            ScanCase{3, 9, 200, 5}}) {
    for (int flags = 0; flags < kAllFlags; ++flags) expect_forward_matches(c, flags, GetParam(), rng);
  }
}

TEST_P(SelectiveScanGpu, MatchesTheCpuAtOddLengthsAndWidths) {
  require_gpu();
  Rng rng(42);
  const int all = kBias | kSoftplus | kSkip | kGate | kState;
  for (const ScanCase& c : {ScanCase{2, 1, 1537, 16}, ScanCase{2, 2, 1537, 4}, ScanCase{2, 17, 1537, 16},
                            ScanCase{1, 300, 1537, 16}, ScanCase{2, 300, 129, 4}, ScanCase{2, 2049, 1537, 16},
                            ScanCase{1, 2049, 257, 4}, ScanCase{1, 77, 96, 32}, ScanCase{2, 130, 70, 64}}) {
    for (int flags : {all, all | kStrided, int(kSoftplus), kSoftplus | kStrided, kGate | kStrided})
      expect_forward_matches(c, flags, GetParam(), rng);
  }
}

// Whether rows of t can be copied 16 bytes at a time: the staged kernels' condition for u, delta, z.
bool rows_16_byte_aligned(const Tensor& t) {
  const int64_t row_bytes = t.row_stride() * int64_t(dtype_size(t.dtype()));
  return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0 && row_bytes % 16 == 0;
}

// The two ways the scan kernels read u, delta and z: staged through shared memory by 16-byte copies
// when all their rows are 16-byte aligned (contiguous at widths of a multiple of 16 bytes, or slices at
// aligned offsets), each thread its own values otherwise (odd widths, slices at odd offsets, or only
// delta misaligned). Several chunks (T 300 and 2049), partial last blocks of channels (1544, 200).
TEST_P(SelectiveScanGpu, AlignedAndUnalignedRowsTakeBothPaths) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(49);
  const int all = kBias | kSoftplus | kSkip | kGate | kState;
  for (const ScanCase& c : {ScanCase{2, 300, 1544, 16}, ScanCase{1, 2049, 256, 16}, ScanCase{3, 9, 200, 5},
                            ScanCase{2, 300, 1537, 16}}) {
    for (int layout : {0, int(kStrided), kStrided | kAligned, kStrided | kAligned | kOddDelta}) {
      for (int options : {all, int(kSoftplus)}) {
        const int flags = options | layout;
        const ScanProblem probe(c, {c.B, c.T}, flags, dt, rng);
        const bool staged = rows_16_byte_aligned(probe.gpu.u) && rows_16_byte_aligned(probe.gpu.delta) &&
                            (!probe.gpu.z.defined() || rows_16_byte_aligned(probe.gpu.z));
        // The layouts this test names must give the path it names.
        if (flags & kAligned) {
          EXPECT_EQ(staged, !(flags & kOddDelta)) << describe(c, flags, dt);
        } else if (flags & kStrided) {
          EXPECT_FALSE(staged) << describe(c, flags, dt);
        }
        expect_forward_matches(c, flags, dt, rng);
      }
    }
  }
}

// Batch 1, a narrow layer and a long sequence: the GPU cuts it into hundreds of chunks. Small dt
// (0.01 to 0.05) and slow decays (A dt down to -0.002) carry each token across many chunk boundaries.
TEST_P(SelectiveScanGpu, LongSequenceInManyChunks) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(43);
  for (bool with_state : {false, true}) {
    const ScanCase c{1, 20011, 256, 16};
    const int flags = kSoftplus | kSkip | kGate | (with_state ? kState : 0);
    ScanProblem p(c, {c.B, c.T}, flags, dt, rng);
    const Tensor delta = rounded(random_cpu({c.B, c.T, c.D}, rng, -4.6, -3), dt);
    p.cpu.delta = delta;
    p.gpu.delta = to_gpu(delta, dt);
    p.cpu.A = random_cpu({c.D, c.N}, rng, -1, -0.2);
    p.gpu.A = to_gpu(p.cpu.A);
    Tensor want = Tensor::empty({c.B, c.T, c.D});
    ops::selective_scan(p.cpu, with_state ? &p.cpu_state : nullptr, want);
    Tensor got = nan_gpu({c.B, c.T, c.D}, dt);
    ops::selective_scan(p.gpu, with_state ? &p.gpu_state : nullptr, got);
    EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt)) << "y of " << describe(c, flags, dt);
    if (with_state) {
      EXPECT_LT(relative_error(to_cpu(p.gpu_state), p.cpu_state), state_tolerance(dt))
          << "state of " << describe(c, flags, dt);
    }
  }
}

// delta up to 60 against A down to -50 (decays far below the float range must give 0, not NaN),
// z far out on both sides of silu.
TEST_P(SelectiveScanGpu, ExtremeInputsStayFinite) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(44);
  const ScanCase c{2, 300, 150, 16};
  const int flags = kBias | kSoftplus | kSkip | kGate | kState;
  ScanProblem p(c, {c.B, c.T}, flags, dt, rng);
  const Tensor delta = rounded(random_cpu({c.B, c.T, c.D}, rng, -30, 60), dt);
  const Tensor z = rounded(random_cpu({c.B, c.T, c.D}, rng, -100, 100), dt);
  p.cpu.delta = delta, p.gpu.delta = to_gpu(delta, dt);
  p.cpu.z = z, p.gpu.z = to_gpu(z, dt);
  p.cpu.A = random_cpu({c.D, c.N}, rng, -50, -0.01);
  p.gpu.A = to_gpu(p.cpu.A);
  Tensor want = Tensor::empty({c.B, c.T, c.D});
  ops::selective_scan(p.cpu, &p.cpu_state, want);
  Tensor got = nan_gpu({c.B, c.T, c.D}, dt);
  ops::selective_scan(p.gpu, &p.gpu_state, got);
  EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt));
  EXPECT_LT(relative_error(to_cpu(p.gpu_state), p.cpu_state), state_tolerance(dt));
}

// Prefill in two calls with the state carried == one call, for split points that put the pieces on
// either path (one chunk, many chunks).
TEST_P(SelectiveScanGpu, TwoPiecesMatchOne) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(45);
  const ScanCase c{2, 2049, 300, 16};
  for (int64_t first : {int64_t(1), int64_t(40), int64_t(1000)}) {
    ScanProblem p(c, {c.B, c.T}, kBias | kSoftplus | kSkip | kGate | kState, dt, rng);
    const Tensor state0 = p.cpu_state.clone();
    Tensor want = Tensor::empty({c.B, c.T, c.D});
    ops::selective_scan(p.cpu, &p.cpu_state, want);
    Tensor whole_state = to_gpu(state0);
    Tensor whole = nan_gpu({c.B, c.T, c.D}, dt);
    ops::selective_scan(p.gpu, &whole_state, whole);

    Tensor pieces_state = to_gpu(state0);
    Tensor pieces = Tensor::empty({c.B, c.T, c.D});  // the two outputs side by side, on the CPU
    for (int piece = 0; piece < 2; ++piece) {
      const int64_t start = piece == 0 ? 0 : first, length = piece == 0 ? first : c.T - first;
      ops::SelectiveScanInputs in = p.gpu;
      in.u = to_gpu(p.cpu.u.slice(1, start, length).contiguous(), dt);
      in.delta = to_gpu(p.cpu.delta.slice(1, start, length).contiguous(), dt);
      in.B = to_gpu(p.cpu.B.slice(1, start, length).contiguous(), dt);
      in.C = to_gpu(p.cpu.C.slice(1, start, length).contiguous(), dt);
      in.z = to_gpu(p.cpu.z.slice(1, start, length).contiguous(), dt);
      Tensor y = nan_gpu({c.B, length, c.D}, dt);
      ops::selective_scan(in, &pieces_state, y);
      Tensor part = pieces.slice(1, start, length);
      part.copy_from(to_cpu(y));
    }
    const std::string what = fmt::format("{} first piece {} of {}", dtype_name(dt), first, c.T);
    EXPECT_LT(relative_error(pieces, want), tolerance(dt)) << what;
    EXPECT_LT(relative_error(pieces, to_cpu(whole)), tolerance(dt)) << what;
    EXPECT_LT(relative_error(to_cpu(pieces_state), p.cpu_state), state_tolerance(dt)) << what;
    EXPECT_LT(relative_error(to_cpu(pieces_state), to_cpu(whole_state)), state_tolerance(dt)) << what;
  }
}

TEST_P(SelectiveScanGpu, StepMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(46);
  for (const ScanCase& c : {ScanCase{1, 1, 64, 16}, ScanCase{3, 1, 1537, 16}, ScanCase{5, 1, 130, 4}}) {
    for (int flags : {kBias | kSoftplus | kSkip | kGate, kSoftplus | kStrided, kBias | kSkip | kGate | kStrided}) {
      ScanProblem p(c, {c.B}, flags | kState, dt, rng);
      Tensor want = Tensor::empty({c.B, c.D});
      ops::selective_scan_step(p.cpu, p.cpu_state, want);
      StridedGpu got = nan_output({c.B, c.D}, dt, flags & kStrided);
      ops::selective_scan_step(p.gpu, p.gpu_state, got.view);
      EXPECT_LT(relative_error(to_cpu(got.view), want), tolerance(dt)) << "y of step, " << describe(c, flags, dt);
      EXPECT_TRUE(got.padding_untouched()) << "y's padding written by the step, " << describe(c, flags, dt);
      EXPECT_LT(relative_error(to_cpu(p.gpu_state), p.cpu_state), state_tolerance(dt))
          << "state of step, " << describe(c, flags, dt);
    }
  }
}

// The step token by token == the forward over the same tokens, both on the GPU.
TEST_P(SelectiveScanGpu, StepsMatchTheForward) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(47);
  const ScanCase c{2, 5, 300, 16};
  ScanProblem p(c, {c.B, c.T}, kBias | kSoftplus | kSkip | kGate | kState | kStrided, dt, rng);
  Tensor step_state = to_gpu(p.cpu_state);
  Tensor whole = nan_gpu({c.B, c.T, c.D}, dt);
  ops::selective_scan(p.gpu, &p.gpu_state, whole);
  Tensor stepped = nan_gpu({c.B, c.T, c.D}, dt);
  for (int64_t t = 0; t < c.T; ++t) {
    ops::SelectiveScanInputs in = p.gpu;
    for (Tensor* x : {&in.u, &in.delta, &in.B, &in.C, &in.z}) *x = x->select(1, t);
    Tensor y = stepped.select(1, t);
    ops::selective_scan_step(in, step_state, y);
  }
  EXPECT_LT(relative_error(to_cpu(stepped), to_cpu(whole)), tolerance(dt));
  EXPECT_LT(relative_error(to_cpu(step_state), to_cpu(p.gpu_state)), state_tolerance(dt));
}

TEST_P(SelectiveScanGpu, RejectsBadInput) {
  require_gpu();
  const DType dt = GetParam();
  const DType other = dt == DType::F32 ? DType::BF16 : DType::F32;
  Rng rng(48);
  const ScanCase c{2, 5, 8, 4};
  auto expect_rejected = [&](auto&& change, const char* what) {
    ScanProblem p(c, {c.B, c.T}, kBias | kSoftplus | kSkip | kGate | kState, dt, rng);
    Tensor y = nan_gpu({c.B, c.T, c.D}, dt);
    change(p, y);
    EXPECT_THROW(ops::selective_scan(p.gpu, &p.gpu_state, y), Error) << what;
  };
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu.delta = to_gpu(p.cpu.delta, other); }, "delta in another dtype");
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu.z = to_gpu(p.cpu.z, other); }, "z in another dtype");
  expect_rejected([&](ScanProblem& p, Tensor& y) { y = nan_gpu({c.B, c.T, c.D}, other); }, "y in another dtype");
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu.A = to_gpu(p.cpu.A, DType::BF16); }, "A in BF16");
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu_state = to_gpu(p.cpu_state, DType::BF16); }, "state in BF16");
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu.B = to_gpu(random_cpu({c.B, c.T, c.N + 1}, rng), dt); },
                  "B of the wrong width");
  expect_rejected([&](ScanProblem& p, Tensor&) { p.gpu.D = p.cpu.D; }, "D on the CPU");
  {
    const ScanCase wide{1, 3, 8, 65};
    ScanProblem p(wide, {wide.B, wide.T}, kSoftplus, dt, rng);
    Tensor y = nan_gpu({wide.B, wide.T, wide.D}, dt);
    EXPECT_THROW(ops::selective_scan(p.gpu, nullptr, y), Error) << "N over 64";
  }
  {
    ScanProblem p(c, {c.B}, kSoftplus, dt, rng);
    Tensor none, y = nan_gpu({c.B, c.D}, dt);
    EXPECT_THROW(ops::selective_scan_step(p.gpu, none, y), Error) << "step without a state";
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SelectiveScanGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
