// ops::selective_scan_backward and ops::selective_scan_forward_saving_chunk_states on the GPU against the
// CPU ops on the same inputs (rounded through the activation dtype), F32 and BF16 activations: odd
// lengths, T not a multiple of the chunk and shorter than it, batch > 1, every optional input, chunk
// states saved by the GPU forward or left to the backward, chunks too long for the GPU kernel, strided
// inputs and gradients laid out as Mamba-1's projections leave them, a long sequence of many chunks,
// gradients asked for one at a time, and bit-identical repeated runs.
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "gpu/selective_scan_gpu_problem.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm {
namespace {

using namespace gpu_test;

// fp32 mode: parity with the CPU to 1e-4; BF16 activations and activation gradients: 3e-2.
double grad_tolerance(DType dt) { return dt == DType::F32 ? 1e-4 : 3e-2; }

// The gradients a run asks for.
enum Wanted {
  kDu = 1,
  kDdelta = 2,
  kDA = 4,
  kDB = 8,
  kDC = 16,
  kDD = 32,
  kDz = 64,  // only where the problem has z
  kDbias = 128,
  kDstate0 = 256,
  kAllGrads = 511,
};

// One backward problem: the scan's inputs on both devices, dy, and random starting values of the
// accumulated parameter gradients (the same for both devices).
struct BackwardProblem {
  ScanCase c;
  int flags;
  DType dt;
  ScanProblem p;
  Tensor dy_cpu, dy_gpu, dA0, dD0, dbias0;

  BackwardProblem(const ScanCase& shape, int options, DType dtype, Rng& rng)
      : c(shape), flags(options), dt(dtype), p(shape, {shape.B, shape.T}, options, dtype, rng) {
    dy_cpu = rounded(random_cpu({c.B, c.T, c.D}, rng), dt);
    dy_gpu = to_gpu(dy_cpu, dt);
    dA0 = random_cpu({c.D, c.N}, rng);
    dD0 = random_cpu({c.D}, rng);
    dbias0 = random_cpu({c.D}, rng);
  }
  Shape btd() const { return {c.B, c.T, c.D}; }
  Shape btn() const { return {c.B, c.T, c.N}; }
  Tensor state0_cpu() const { return flags & kState ? p.cpu_state : Tensor(); }
  Tensor state0_gpu() const { return flags & kState ? p.gpu_state : Tensor(); }
  bool asks(int wanted, int grad) const { return (wanted & grad) && (grad != kDz || (flags & kGate)); }

  // The CPU op's gradients (it recomputes its own chunk states).
  ops::SelectiveScanGrads cpu_grads(int wanted, int64_t chunk) const {
    ops::SelectiveScanGrads g;
    if (asks(wanted, kDu)) g.du = Tensor::empty(btd());
    if (asks(wanted, kDdelta)) g.ddelta = Tensor::empty(btd());
    if (asks(wanted, kDz)) g.dz = Tensor::empty(btd());
    if (asks(wanted, kDB)) g.dB = Tensor::empty(btn());
    if (asks(wanted, kDC)) g.dC = Tensor::empty(btn());
    if (asks(wanted, kDA)) g.dA = dA0.clone();
    if (asks(wanted, kDD)) g.dD = dD0.clone();
    if (asks(wanted, kDbias)) g.ddelta_bias = dbias0.clone();
    if (asks(wanted, kDstate0)) g.dstate0 = Tensor::empty({c.B, c.D, c.N});
    ops::selective_scan_backward(p.cpu, state0_cpu(), Tensor(), chunk, dy_cpu, g);
    return g;
  }
};

// The GPU's gradients: activation gradients NaN-filled first (strided: column slices at odd offsets of
// wider NaN tensors, whose padding must stay NaN), parameter gradients from the problem's starting values.
struct GpuGrads {
  StridedGpu du, ddelta, dz, dB, dC;
  Tensor dA, dD, dbias, dstate0;

  GpuGrads(const BackwardProblem& bp, int wanted, bool strided) {
    auto activation = [&](StridedGpu& out, int grad, const Shape& shape) {
      if (bp.asks(wanted, grad)) out = nan_output(shape, bp.dt, strided);
    };
    activation(du, kDu, bp.btd());
    activation(ddelta, kDdelta, bp.btd());
    activation(dz, kDz, bp.btd());
    activation(dB, kDB, bp.btn());
    activation(dC, kDC, bp.btn());
    if (bp.asks(wanted, kDA)) dA = to_gpu(bp.dA0);
    if (bp.asks(wanted, kDD)) dD = to_gpu(bp.dD0);
    if (bp.asks(wanted, kDbias)) dbias = to_gpu(bp.dbias0);
    if (bp.asks(wanted, kDstate0)) dstate0 = nan_gpu({bp.c.B, bp.c.D, bp.c.N});
  }
  ops::SelectiveScanGrads view() const {
    ops::SelectiveScanGrads g;
    g.du = du.view;
    g.ddelta = ddelta.view;
    g.dz = dz.view;
    g.dB = dB.view;
    g.dC = dC.view;
    g.dA = dA;
    g.dD = dD;
    g.ddelta_bias = dbias;
    g.dstate0 = dstate0;
    return g;
  }
  // name, GPU result, CPU result, padding (null for the contiguous F32 ones)
  struct Item {
    const char* name;
    Tensor got, want;
    const StridedGpu* padded;
  };
  std::vector<Item> items(const ops::SelectiveScanGrads& want) const {
    std::vector<Item> out;
    auto add = [&](const char* name, const Tensor& got, const Tensor& w, const StridedGpu* padded) {
      if (got.defined()) out.push_back({name, got, w, padded});
    };
    add("du", du.view, want.du, &du);
    add("ddelta", ddelta.view, want.ddelta, &ddelta);
    add("dz", dz.view, want.dz, &dz);
    add("dB", dB.view, want.dB, &dB);
    add("dC", dC.view, want.dC, &dC);
    add("dA", dA, want.dA, nullptr);
    add("dD", dD, want.dD, nullptr);
    add("ddelta_bias", dbias, want.ddelta_bias, nullptr);
    add("dstate0", dstate0, want.dstate0, nullptr);
    return out;
  }
};

// Runs the GPU backward; with `saved`, on the chunk states the GPU forward saved (else undefined).
void run_gpu(const BackwardProblem& bp, const GpuGrads& grads, int64_t chunk, bool saved) {
  Tensor states;
  if (saved) {
    states = nan_gpu({bp.c.B, ops::selective_scan_chunk_count(bp.c.T, chunk), bp.c.D, bp.c.N});
    Tensor y = nan_gpu(bp.btd(), bp.dt);
    ops::selective_scan_forward_saving_chunk_states(bp.p.gpu, bp.state0_gpu(), chunk, y, states);
  }
  ops::SelectiveScanGrads g = grads.view();
  ops::selective_scan_backward(bp.p.gpu, bp.state0_gpu(), states, chunk, bp.dy_gpu, g);
}

std::string describe_run(const BackwardProblem& bp, int64_t chunk, bool saved, int wanted) {
  return fmt::format("{} chunk {} states {} grads asked {:#x}", describe(bp.c, bp.flags, bp.dt), chunk,
                     saved ? "saved by the GPU forward" : "undefined", wanted);
}

void expect_backward_matches(const BackwardProblem& bp, int64_t chunk, bool saved, int wanted = kAllGrads) {
  const ops::SelectiveScanGrads want = bp.cpu_grads(wanted, chunk);
  const GpuGrads got(bp, wanted, bp.flags & kStrided);
  run_gpu(bp, got, chunk, saved);
  for (const GpuGrads::Item& item : got.items(want)) {
    EXPECT_LT(relative_error(to_cpu(item.got), item.want), grad_tolerance(bp.dt))
        << item.name << " of " << describe_run(bp, chunk, saved, wanted);
    if (item.padded) {
      EXPECT_TRUE(item.padded->padding_untouched())
          << item.name << "'s padding written, " << describe_run(bp, chunk, saved, wanted);
    }
  }
}

class SelectiveScanBackwardGpu : public ::testing::TestWithParam<DType> {};

// Every combination of bias, softplus, D, z, state0 and strided layouts, chunk states saved or not,
// at small odd shapes: T shorter than the chunk, T a multiple of it, T not a multiple.
TEST_P(SelectiveScanBackwardGpu, MatchesTheCpuWithEveryOption) {
  require_gpu();
  Rng rng(61);
  struct Case {
    ScanCase shape;
    int64_t chunk;
  };
  for (const Case& k : {Case{{1, 1, 64, 16}, 4}, Case{{2, 12, 37, 4}, 4}, Case{{2, 17, 130, 16}, 5},
                        Case{{3, 9, 200, 5}, 64}}) {
    for (int flags = 0; flags < kAllFlags; ++flags) {
      const BackwardProblem bp(k.shape, flags, GetParam(), rng);
      for (bool saved : {true, false}) expect_backward_matches(bp, k.chunk, saved);
    }
  }
}

// Wider layers (several channel blocks of the kernels, a partial last one), every compiled state
// width, chunk sizes from 1 token to more than the kernel keeps (64 tokens: longer ones are
// recomputed), with and without strided layouts.
TEST_P(SelectiveScanBackwardGpu, MatchesTheCpuAtOddLengthsAndWidths) {
  require_gpu();
  Rng rng(62);
  const int all = kBias | kSoftplus | kSkip | kGate | kState;
  struct Case {
    ScanCase shape;
    int64_t chunk;
  };
  for (const Case& k : {Case{{2, 300, 1537, 16}, 64}, Case{{1, 1000, 257, 16}, 64}, Case{{2, 131, 300, 16}, 1},
                        Case{{2, 131, 300, 16}, 7}, Case{{1, 200, 150, 16}, 100}, Case{{2, 77, 96, 32}, 32},
                        Case{{2, 77, 96, 32}, 33}, Case{{2, 130, 70, 64}, 16}, Case{{2, 130, 70, 64}, 20},
                        Case{{1, 2049, 129, 4}, 64}, Case{{2, 65, 40, 8}, 64}}) {
    for (int flags : {all, all | kStrided, kSoftplus | kGate | kStrided, kAligned | kStrided | all}) {
      const BackwardProblem bp(k.shape, flags, GetParam(), rng);
      for (bool saved : {true, false}) expect_backward_matches(bp, k.chunk, saved);
    }
  }
}

// Batch 1, a long sequence in 313 chunks of 64: small dt and slow decays carry every token's
// adjoint across many chunk boundaries (the carry between the GPU's chunks).
TEST_P(SelectiveScanBackwardGpu, LongSequenceInManyChunks) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(63);
  for (bool with_state : {false, true}) {
    const ScanCase c{1, 20011, 256, 16};
    const int flags = kSoftplus | kSkip | kGate | (with_state ? kState : 0);
    BackwardProblem bp(c, flags, dt, rng);
    const Tensor delta = rounded(random_cpu({c.B, c.T, c.D}, rng, -4.6, -3), dt);
    bp.p.cpu.delta = delta;
    bp.p.gpu.delta = to_gpu(delta, dt);
    bp.p.cpu.A = random_cpu({c.D, c.N}, rng, -1, -0.2);
    bp.p.gpu.A = to_gpu(bp.p.cpu.A);
    expect_backward_matches(bp, 64, true);
  }
}

// delta up to 60 against A down to -50 (decays far below the float range), z far out on both sides.
TEST_P(SelectiveScanBackwardGpu, ExtremeInputsStayFinite) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(64);
  const ScanCase c{2, 300, 150, 16};
  BackwardProblem bp(c, kBias | kSoftplus | kSkip | kGate | kState, dt, rng);
  const Tensor delta = rounded(random_cpu({c.B, c.T, c.D}, rng, -30, 60), dt);
  const Tensor z = rounded(random_cpu({c.B, c.T, c.D}, rng, -100, 100), dt);
  bp.p.cpu.delta = delta, bp.p.gpu.delta = to_gpu(delta, dt);
  bp.p.cpu.z = z, bp.p.gpu.z = to_gpu(z, dt);
  bp.p.cpu.A = random_cpu({c.D, c.N}, rng, -50, -0.01);
  bp.p.gpu.A = to_gpu(bp.p.cpu.A);
  expect_backward_matches(bp, 64, true);
}

// Each gradient asked for alone (the others undefined), and a few pairs.
TEST_P(SelectiveScanBackwardGpu, ComputesOnlyTheGradientsAskedFor) {
  require_gpu();
  Rng rng(65);
  const BackwardProblem bp({2, 150, 200, 16}, kBias | kSoftplus | kSkip | kGate | kState | kStrided, GetParam(), rng);
  for (int wanted : {int(kDu), int(kDdelta), int(kDA), int(kDB), int(kDC), int(kDD), int(kDz), int(kDbias),
                     int(kDstate0), kDB | kDu, kDC | kDA, kDz | kDdelta | kDstate0})
    expect_backward_matches(bp, 64, true, wanted);
}

// Two runs on the same inputs give the same bits in every gradient (no order-dependent sums).
TEST_P(SelectiveScanBackwardGpu, RepeatedRunsAreBitIdentical) {
  require_gpu();
  Rng rng(66);
  const BackwardProblem bp({2, 1000, 300, 16}, kBias | kSoftplus | kSkip | kGate | kState, GetParam(), rng);
  for (bool saved : {true, false}) {
    const GpuGrads first(bp, kAllGrads, false), second(bp, kAllGrads, false);
    run_gpu(bp, first, 64, saved);
    run_gpu(bp, second, 64, saved);
    const ops::SelectiveScanGrads none;
    const std::vector<GpuGrads::Item> a = first.items(none), b = second.items(none);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const Tensor x = to_cpu(a[i].got), y = to_cpu(b[i].got);
      EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0)
          << a[i].name << " differs between two runs, " << describe_run(bp, 64, saved, kAllGrads);
    }
  }
}

// The forward that saves chunk states: y, every chunk's starting state and the final state against
// the CPU's, for chunks of one token, odd chunks, T a multiple of the chunk, T shorter than it and
// T 0; inputs in the layouts that take both of the forward kernels' load paths.
TEST_P(SelectiveScanBackwardGpu, ForwardSavingChunkStatesMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(67);
  const int all = kBias | kSoftplus | kSkip | kGate;
  for (const ScanCase& c : {ScanCase{2, 0, 40, 16}, ScanCase{2, 1, 37, 4}, ScanCase{2, 17, 130, 16},
                            ScanCase{1, 300, 1544, 16}, ScanCase{2, 256, 200, 5}, ScanCase{1, 77, 96, 64}}) {
    for (int64_t chunk : {int64_t(1), int64_t(5), int64_t(64), c.T + 3}) {
      for (int flags : {all, all | kState, all | kState | kStrided, all | kStrided | kAligned, int(kSoftplus)}) {
        ScanProblem p(c, {c.B, c.T}, flags, dt, rng);
        const Tensor state0_cpu = flags & kState ? p.cpu_state : Tensor();
        const Tensor state0_gpu = flags & kState ? p.gpu_state : Tensor();
        const int64_t chunks = ops::selective_scan_chunk_count(c.T, chunk);
        Tensor y = Tensor::empty({c.B, c.T, c.D}), states = Tensor::empty({c.B, chunks, c.D, c.N});
        Tensor final_state = Tensor::empty({c.B, c.D, c.N});
        ops::selective_scan_forward_saving_chunk_states(p.cpu, state0_cpu, chunk, y, states, &final_state);
        StridedGpu y_gpu = nan_output({c.B, c.T, c.D}, dt, flags & kStrided);
        Tensor states_gpu = nan_gpu({c.B, chunks, c.D, c.N}), final_gpu = nan_gpu({c.B, c.D, c.N});
        ops::selective_scan_forward_saving_chunk_states(p.gpu, state0_gpu, chunk, y_gpu.view, states_gpu, &final_gpu);
        const std::string what = fmt::format("{} chunk {}", describe(c, flags, dt), chunk);
        EXPECT_LT(relative_error(to_cpu(y_gpu.view), y), tolerance(dt)) << "y of " << what;
        EXPECT_TRUE(y_gpu.padding_untouched()) << "y's padding written, " << what;
        EXPECT_LT(relative_error(to_cpu(states_gpu), states), state_tolerance(dt)) << "chunk states of " << what;
        EXPECT_LT(relative_error(to_cpu(final_gpu), final_state), state_tolerance(dt)) << "final state of " << what;
        // Without a final state asked for (the training forward).
        Tensor states_only = nan_gpu({c.B, chunks, c.D, c.N});
        ops::selective_scan_forward_saving_chunk_states(p.gpu, state0_gpu, chunk, y_gpu.view, states_only);
        EXPECT_LT(relative_error(to_cpu(states_only), states), state_tolerance(dt)) << "chunk states of " << what;
      }
    }
  }
}

// No tokens: dstate0 is zero and nothing else changes.
TEST_P(SelectiveScanBackwardGpu, EmptySequence) {
  require_gpu();
  Rng rng(68);
  const BackwardProblem bp({2, 0, 40, 16}, kBias | kSoftplus | kSkip | kGate | kState, GetParam(), rng);
  expect_backward_matches(bp, 64, true);
  expect_backward_matches(bp, 64, false);
}

TEST_P(SelectiveScanBackwardGpu, RejectsBadInput) {
  require_gpu();
  const DType dt = GetParam();
  const DType other = dt == DType::F32 ? DType::BF16 : DType::F32;
  Rng rng(69);
  const ScanCase c{2, 9, 8, 4};
  const BackwardProblem bp(c, kBias | kSoftplus | kSkip | kGate | kState, dt, rng);
  auto expect_rejected = [&](auto&& change, const char* what) {
    BackwardProblem p = bp;
    GpuGrads grads(p, kAllGrads, false);
    ops::SelectiveScanGrads g = grads.view();
    Tensor states;
    int64_t chunk = 4;
    change(p, g, states, chunk);
    EXPECT_THROW(ops::selective_scan_backward(p.p.gpu, p.state0_gpu(), states, chunk, p.dy_gpu, g), Error) << what;
  };
  using G = ops::SelectiveScanGrads;
  expect_rejected([&](BackwardProblem& p, G&, Tensor&, int64_t&) { p.dy_gpu = to_gpu(p.dy_cpu, other); },
                  "dy in another dtype");
  expect_rejected([&](BackwardProblem&, G& g, Tensor&, int64_t&) { g.du = nan_gpu({c.B, c.T, c.D}, other); },
                  "du in another dtype");
  expect_rejected([&](BackwardProblem&, G& g, Tensor&, int64_t&) { g.dB = nan_gpu({c.B, c.T, c.N + 1}, dt); },
                  "dB of the wrong width");
  expect_rejected(
      [&](BackwardProblem&, G& g, Tensor&, int64_t&) { g.dA = to_gpu(random_cpu({c.D, c.N}, rng), DType::BF16); },
      "dA in BF16");
  expect_rejected([&](BackwardProblem&, G& g, Tensor&, int64_t&) { g.dD = random_cpu({c.D}, rng); }, "dD on the CPU");
  expect_rejected([&](BackwardProblem& p, G&, Tensor&, int64_t&) { p.p.gpu.z = Tensor(); }, "dz asked for without z");
  expect_rejected([&](BackwardProblem&, G&, Tensor& states, int64_t&) { states = nan_gpu({c.B, 2, c.D, c.N}); },
                  "chunk_states of the wrong chunk count");
  expect_rejected([&](BackwardProblem&, G&, Tensor&, int64_t& chunk) { chunk = 0; }, "chunk_size 0");
  expect_rejected([&](BackwardProblem& p, G&, Tensor&, int64_t&) { p.p.gpu.B = to_gpu(p.p.cpu.B, other); },
                  "B in another dtype");
  {
    Tensor y = nan_gpu({c.B, c.T, c.D}, dt), states = nan_gpu({c.B, 2, c.D, c.N});
    EXPECT_THROW(ops::selective_scan_forward_saving_chunk_states(bp.p.gpu, bp.state0_gpu(), 4, y, states), Error)
        << "forward: chunk_states of the wrong chunk count";
    Tensor good_states = nan_gpu({c.B, 3, c.D, c.N}), y_other = nan_gpu({c.B, c.T, c.D}, other);
    EXPECT_THROW(ops::selective_scan_forward_saving_chunk_states(bp.p.gpu, bp.state0_gpu(), 4, y_other, good_states),
                 Error)
        << "forward: y in another dtype";
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SelectiveScanBackwardGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace ssm
