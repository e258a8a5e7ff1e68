// ops::ssd and ops::ssd_step on the GPU against the CPU ops on the same inputs (activations rounded
// through the dtype the GPU sees), F32 and BF16: odd lengths, batch > 1, n_groups 1 and 2, head and
// state sizes that take the chunked kernels (P <= 64, N <= 128, 16-byte aligned rows) and ones that
// take the recurrent kernel, D, dt clamps, carried state, strided rows, NaN-poisoned outputs.
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct Case {
  int64_t batch = 2, T = 65, H = 4, P = 64, G = 1, N = 128;
  bool with_D = true;
  bool with_state = true;  // a random initial state in, the final state out and compared
  // Strided: x, B, C and dt as column slices of one wide tensor ([pad | x | B | C | dt | pad]) and y a
  // slice of a wider one (strided_gpu), `pad` columns in; pad 8 keeps rows 16-byte aligned, pad 3 does not.
  bool strided = false;
  int64_t pad = 8;
  double dt_bias = -3.0, dt_noise = 0.5;  // softplus(-3 ± noise) ≈ 0.05: moderate decays
  float dt_min = 0.0f, dt_max = std::numeric_limits<float>::infinity();
  // chunk_size given to both ops. The GPU's chunked kernels keep their own (64): at 64 the CPU rounds
  // the in-chunk cumsums as they do; against the GPU's recurrent kernel a short CPU chunk is closer.
  int64_t cpu_chunk = 64;
  uint64_t seed = 1;

  std::string str() const {
    return fmt::format("batch {} T {} H {} P {} G {} N {} D {} state {} strided {} (pad {}) dt [{}, {}] chunk {}",
                       batch, T, H, P, G, N, with_D, with_state, strided, pad, dt_min, dt_max, cpu_chunk);
  }
};

Tensor normal_cpu(const Shape& shape, Rng& rng, double scale = 1.0, double offset = 0.0) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(offset + scale * rng.normal());
  return t;
}

// Host inputs, activations already rounded through `dtype`; seq false gives the step layout [B, W].
struct HostInputs {
  Tensor x, dt, B, C, dt_bias, A, D, state0;
};

HostInputs make_inputs(const Case& k, DType dtype, bool seq = true) {
  Rng rng(k.seed);
  auto shape = [&](int64_t width) { return seq ? Shape{k.batch, k.T, width} : Shape{k.batch, width}; };
  HostInputs in;
  in.x = rounded(normal_cpu(shape(k.H * k.P), rng), dtype);
  in.dt = rounded(normal_cpu(shape(k.H), rng, k.dt_noise), dtype);
  in.B = rounded(normal_cpu(shape(k.G * k.N), rng, 0.5), dtype);
  in.C = rounded(normal_cpu(shape(k.G * k.N), rng, 0.5), dtype);
  in.dt_bias = normal_cpu({k.H}, rng, 0.3, k.dt_bias);
  in.A = Tensor::empty({k.H});
  for (int64_t h = 0; h < k.H; ++h) in.A.data<float>()[h] = -std::exp(rng.uniform(0.0f, std::log(16.0f)));
  if (k.with_D) in.D = normal_cpu({k.H}, rng);
  in.state0 = k.with_state ? normal_cpu({k.batch, k.H, k.P, k.N}, rng, 0.5) : Tensor::zeros({k.batch, k.H, k.P, k.N});
  return in;
}

ops::SsdInputs op_inputs(const Case& k, const Tensor& x, const Tensor& dt, const Tensor& B, const Tensor& C,
                         const HostInputs& h, Device device) {
  ops::SsdInputs in;
  in.x = x;
  in.dt = dt;
  in.B = B;
  in.C = C;
  in.dt_bias = device == Device::CPU ? h.dt_bias : to_gpu(h.dt_bias);
  in.A = device == Device::CPU ? h.A : to_gpu(h.A);
  if (h.D.defined()) in.D = device == Device::CPU ? h.D : to_gpu(h.D);
  in.n_groups = k.G;
  in.dt_min = k.dt_min;
  in.dt_max = k.dt_max;
  in.chunk_size = k.cpu_chunk;
  return in;
}

struct Outputs {
  Tensor y, state;  // on the CPU, F32
};

Outputs run_cpu(const Case& k, const HostInputs& h) {
  Outputs out;
  out.y = Tensor::empty(h.x.shape());
  out.state = h.state0.clone();
  ops::ssd(op_inputs(k, h.x, h.dt, h.B, h.C, h, Device::CPU), k.with_state ? &out.state : nullptr, out.y);
  return out;
}

// The GPU op on the same inputs; with k.strided, also checks that nothing beside y's slice was written.
Outputs run_gpu(const Case& k, const HostInputs& h, DType dtype) {
  const int64_t HP = k.H * k.P, GN = k.G * k.N;
  Tensor x, dt, B, C, y;
  StridedGpu y_strided;
  if (k.strided) {
    const int64_t width = (k.pad + HP + 2 * GN + k.H + 7) / 8 * 8 + 8;  // a row stride that keeps 16-byte rows
    Tensor wide = Tensor::empty({k.batch, k.T, width});
    wide.fill(std::numeric_limits<float>::quiet_NaN());
    wide.slice(2, k.pad, HP).copy_from(h.x);
    wide.slice(2, k.pad + HP, GN).copy_from(h.B);
    wide.slice(2, k.pad + HP + GN, GN).copy_from(h.C);
    wide.slice(2, k.pad + HP + 2 * GN, k.H).copy_from(h.dt);
    const Tensor gpu_wide = to_gpu(wide, dtype);
    x = gpu_wide.slice(2, k.pad, HP);
    B = gpu_wide.slice(2, k.pad + HP, GN);
    C = gpu_wide.slice(2, k.pad + HP + GN, GN);
    dt = gpu_wide.slice(2, k.pad + HP + 2 * GN, k.H);
    y_strided = strided_gpu(h.x.shape(), dtype, k.pad);
    y = y_strided.view;
  } else {
    x = to_gpu(h.x, dtype);
    dt = to_gpu(h.dt, dtype);
    B = to_gpu(h.B, dtype);
    C = to_gpu(h.C, dtype);
    y = nan_gpu(h.x.shape(), dtype);
  }
  Tensor state = to_gpu(h.state0);
  ops::ssd(op_inputs(k, x, dt, B, C, h, Device::CUDA), k.with_state ? &state : nullptr, y);
  if (k.strided) {
    EXPECT_TRUE(y_strided.padding_untouched()) << "ssd wrote outside y's column slice";
  }
  return {to_cpu(y), to_cpu(state)};
}

void check_forward(const Case& k, DType dtype) {
  SCOPED_TRACE(fmt::format("ssd {} {}", dtype_name(dtype), k.str()));
  const HostInputs h = make_inputs(k, dtype);
  const Outputs want = run_cpu(k, h);
  const Outputs got = run_gpu(k, h, dtype);
  EXPECT_LT(relative_error(got.y, want.y), tolerance(dtype)) << "y";
  if (k.with_state) {
    EXPECT_LT(relative_error(got.state, want.state), tolerance(dtype)) << "final state";
  }
}

class SsdGpu : public ::testing::TestWithParam<DType> {};

// The benchmark's head shape (P 64, N 128) and a small odd one (P 24, N 16, two groups) over lengths
// shorter than a chunk (a prompt's suffix after a cached prefix), around the chunk (64) and the
// segments, with and without a carried state.
TEST_P(SsdGpu, LengthsAndShapesMatchTheCpu) {
  require_gpu();
  for (const auto& [P, N, G] : {std::tuple{64, 128, 1}, std::tuple{24, 16, 2}}) {
    for (int64_t T : {1, 2, 16, 32, 33, 63, 65, 300, 2049}) {
      Case k;
      k.P = P;
      k.N = N;
      k.G = G;
      k.T = T;
      k.with_state = T != 300 && T != 16;
      k.seed = uint64_t(T * 7 + P);
      check_forward(k, GetParam());
    }
  }
}

// Short sequences (a cached prefix's suffix) in every kernel that takes them: odd P and N, two groups,
// batch 3, strided rows aligned (pad 8) or not (pad 3: the recurrent kernel), with and without state.
TEST_P(SsdGpu, ShortSequencesMatchTheCpu) {
  require_gpu();
  for (const auto& [P, N, G] : {std::tuple{5, 12, 2}, std::tuple{64, 128, 1}, std::tuple{40, 64, 2}}) {
    for (int64_t T : {3, 7, 31}) {
      Case k;
      k.batch = 3;
      k.P = P;
      k.N = N;
      k.G = G;
      k.T = T;
      k.with_state = T != 7;
      k.strided = T != 3;
      k.pad = T == 31 ? 3 : 8;
      k.cpu_chunk = 16;
      k.seed = uint64_t(T * 11 + P);
      check_forward(k, GetParam());
    }
  }
}

// A prefix-cache hit's suffix at mamba2-130m's head shape (P 64, N 128, one group) and beside it: so few
// (batch, head) pairs that pass 2 holds each head's rows in slices over several blocks (on an H200,
// BF16: 4 slices of 16 rows up to 66 (batch, head) pairs, 2 of 32 up to 132, whole heads above; F32 up
// to 33 and 66), and P 24 and 40 (the last slice of 16 rows half past P) and 32 (two slices of 16). Each
// against the CPU, and run twice: the same bits (no race between a head's slices).
TEST_P(SsdGpu, ServerSuffixesMatchTheCpuAndRepeat) {
  require_gpu();
  const DType dtype = GetParam();
  struct Heads {
    int64_t batch, H, P;
  };
  for (const auto& [batch, H, P] : {Heads{1, 24, 64}, Heads{1, 48, 64}, Heads{1, 80, 64}, Heads{1, 160, 64},
                                    Heads{2, 24, 64}, Heads{1, 24, 24}, Heads{1, 24, 40}, Heads{3, 8, 32}}) {
    for (int64_t T : {1, 16, 48, 64}) {
      if (H > 24 && T != 16) continue;  // the head counts pick the cut; one length is enough for them
      Case k;
      k.batch = batch;
      k.H = H;
      k.P = P;
      k.T = T;
      k.G = 1;
      k.seed = uint64_t(50 + T + H + P);
      check_forward(k, dtype);
      SCOPED_TRACE(fmt::format("ssd {} {}, run twice", dtype_name(dtype), k.str()));
      const HostInputs h = make_inputs(k, dtype);
      const Outputs first = run_gpu(k, h, dtype), second = run_gpu(k, h, dtype);
      EXPECT_TRUE(same_bits(first.y, second.y)) << "y differs between two runs";
      EXPECT_TRUE(same_bits(first.state, second.state)) << "the final state differs between two runs";
    }
  }
}

// One chunk without state (only C Bᵀ ⊙ L and the D term), then the state's two uses one at a time:
// read (C Sᵀ) and written (the chunk's update). Each names the product that fails.
TEST_P(SsdGpu, OneChunkProductByProduct) {
  require_gpu();
  Case k;
  k.T = 64;
  k.with_state = false;
  check_forward(k, GetParam());  // intra-chunk only
  k.with_state = true;
  k.seed = 2;
  check_forward(k, GetParam());  // + the initial state's contribution and the state update
  k.with_D = false;
  k.seed = 3;
  check_forward(k, GetParam());
}

TEST_P(SsdGpu, WithoutDAndWithDtClamp) {
  require_gpu();
  Case k;
  k.T = 300;
  k.with_D = false;
  k.dt_noise = 2.0;
  k.dt_min = 0.02f;
  k.dt_max = 0.1f;
  k.seed = 5;
  check_forward(k, GetParam());
  k.P = 24;
  k.N = 16;
  k.G = 2;
  k.H = 6;
  k.with_D = true;
  k.seed = 6;
  check_forward(k, GetParam());
}

TEST_P(SsdGpu, GroupsAndManyHeads) {
  require_gpu();
  for (int64_t G : {1, 2}) {
    Case k;
    k.G = G;
    k.H = 8;
    k.batch = 3;
    k.T = 129;
    k.N = 64;
    k.seed = uint64_t(10 + G);
    check_forward(k, GetParam());
  }
  // One partial chunk, several sequences and groups, with and without a state.
  for (bool with_state : {true, false}) {
    Case k;
    k.G = 2;
    k.H = 8;
    k.batch = 3;
    k.T = 23;
    k.N = 64;
    k.with_state = with_state;
    k.seed = with_state ? 14 : 15;
    check_forward(k, GetParam());
  }
  // More (batch, head) pairs than the GPU holds blocks at once: one segment per head.
  Case k;
  k.batch = 4;
  k.H = 80;
  k.P = 16;
  k.N = 32;
  k.T = 200;
  k.seed = 13;
  check_forward(k, GetParam());
}

// Column slices of the in_proj/conv outputs as the model passes them: 16-byte aligned rows (chunked
// kernels) and misaligned ones (recurrent kernel).
TEST_P(SsdGpu, StridedRows) {
  require_gpu();
  for (int64_t pad : {8, 3}) {
    for (int64_t T : {65, 300}) {
      Case k;
      k.strided = true;
      k.pad = pad;
      k.cpu_chunk = pad == 3 ? 16 : 64;
      k.T = T;
      k.seed = uint64_t(20 + pad + T);
      check_forward(k, GetParam());
    }
  }
}

// Shapes the chunked kernels do not take run the recurrent kernel: P or N not a multiple of 8,
// P over 64, N over 128.
TEST_P(SsdGpu, RecurrentShapesMatchTheCpu) {
  require_gpu();
  for (const auto& [P, N] : {std::pair{5, 12}, std::pair{96, 32}, std::pair{16, 192}}) {
    Case k;
    k.P = P;
    k.N = N;
    k.T = 70;
    k.G = 2;
    k.cpu_chunk = 16;
    k.seed = uint64_t(30 + P);
    check_forward(k, GetParam());
  }
}

// Prefill in two pieces (the state carried between them) equals prefill in one.
TEST_P(SsdGpu, TwoPiecesEqualOne) {
  require_gpu();
  const DType dtype = GetParam();
  using Split = std::pair<int64_t, int64_t>;
  for (const auto& [T1, T2] : {Split{100, 2000}, Split{64, 1}, Split{1, 129}}) {
    Case k;
    k.T = T1 + T2;
    k.seed = uint64_t(40 + T1);
    SCOPED_TRACE(fmt::format("{} then {} tokens, {}", T1, T2, k.str()));
    const HostInputs h = make_inputs(k, dtype);
    const Outputs whole = run_gpu(k, h, dtype);
    const Outputs want = run_cpu(k, h);

    auto piece = [&](const Tensor& t, int64_t t0, int64_t len) {
      return to_gpu(t.slice(1, t0, len).contiguous(), dtype);
    };
    Tensor state = to_gpu(h.state0);
    for (const auto& [t0, len] : {Split{0, T1}, Split{T1, T2}}) {
      SCOPED_TRACE(fmt::format("the piece of {} tokens from {}", len, t0));
      Tensor y = nan_gpu({k.batch, len, k.H * k.P}, dtype);
      ops::ssd(op_inputs(k, piece(h.x, t0, len), piece(h.dt, t0, len), piece(h.B, t0, len), piece(h.C, t0, len), h,
                         Device::CUDA),
               &state, y);
      const Tensor got = to_cpu(y);
      EXPECT_LT(relative_error(got, want.y.slice(1, t0, len)), tolerance(dtype)) << "y, in pieces vs the CPU";
      EXPECT_LT(relative_error(got, whole.y.slice(1, t0, len)), tolerance(dtype)) << "y, in pieces vs in one";
    }
    const Tensor got_state = to_cpu(state);
    EXPECT_LT(relative_error(got_state, want.state), tolerance(dtype)) << "state, in pieces vs the CPU";
    EXPECT_LT(relative_error(got_state, whole.state), tolerance(dtype)) << "state, in pieces vs in one";
  }
}

// The one-token step against the CPU step, several steps in a row.
TEST_P(SsdGpu, StepMatchesTheCpuStep) {
  require_gpu();
  const DType dtype = GetParam();
  // Step kernel: N a multiple of 4 up to 256 (two pieces a lane), P not a multiple of its 4 rows;
  // N 10: the recurrent kernel. Batch 40: more groups of rows than the one wave of warps holds, so
  // that each warp walks several (with the next one's state loaded ahead).
  for (const auto& [batch, H, P, N, G] :
       {std::tuple{3, 4, 64, 128, 1}, std::tuple{3, 4, 24, 16, 2}, std::tuple{3, 4, 5, 12, 2},
        std::tuple{3, 4, 7, 256, 1}, std::tuple{3, 4, 3, 10, 1}, std::tuple{40, 24, 64, 128, 1},
        std::tuple{40, 64, 7, 256, 2}}) {
    Case k;
    k.batch = batch;
    k.H = H;
    k.P = P;
    k.N = N;
    k.G = G;
    k.seed = uint64_t(50 + P);
    SCOPED_TRACE(fmt::format("ssd_step {} {}", dtype_name(dtype), k.str()));
    Tensor cpu_state = make_inputs(k, dtype).state0;
    Tensor gpu_state = to_gpu(cpu_state);
    for (int step = 0; step < 3; ++step) {
      k.seed += 100;
      const HostInputs h = make_inputs(k, dtype, false);
      Tensor want = Tensor::empty(h.x.shape());
      ops::ssd_step(op_inputs(k, h.x, h.dt, h.B, h.C, h, Device::CPU), cpu_state, want);
      Tensor got = nan_gpu(h.x.shape(), dtype);
      ops::ssd_step(op_inputs(k, to_gpu(h.x, dtype), to_gpu(h.dt, dtype), to_gpu(h.B, dtype), to_gpu(h.C, dtype), h,
                              Device::CUDA),
                    gpu_state, got);
      EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dtype)) << "y at step " << step;
      EXPECT_LT(relative_error(to_cpu(gpu_state), cpu_state), tolerance(dtype)) << "state at step " << step;
    }
  }
}

// The GPU forward over T tokens equals T GPU steps writing into a strided y (one token of [B, T, H*P]).
TEST_P(SsdGpu, StepsEqualTheForward) {
  require_gpu();
  const DType dtype = GetParam();
  Case k;
  k.T = 70;
  k.seed = 60;
  SCOPED_TRACE(k.str());
  const HostInputs h = make_inputs(k, dtype);
  const Outputs whole = run_gpu(k, h, dtype);
  Tensor state = to_gpu(h.state0);
  Tensor y = nan_gpu(h.x.shape(), dtype);
  for (int64_t t = 0; t < k.T; ++t) {
    auto token = [&](const Tensor& v) { return to_gpu(v.select(1, t).contiguous(), dtype); };
    Tensor y_t = y.select(1, t);
    ops::ssd_step(op_inputs(k, token(h.x), token(h.dt), token(h.B), token(h.C), h, Device::CUDA), state, y_t);
  }
  EXPECT_LT(relative_error(to_cpu(y), whole.y), tolerance(dtype)) << "y";
  EXPECT_LT(relative_error(to_cpu(state), whole.state), tolerance(dtype)) << "state";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SsdGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(SsdGpuErrors, BadArgumentsAreErrors) {
  require_gpu();
  Case k;
  k.T = 8;
  const HostInputs h = make_inputs(k, DType::BF16);
  const Tensor x = to_gpu(h.x, DType::BF16), dt = to_gpu(h.dt, DType::BF16), B = to_gpu(h.B, DType::BF16),
               C = to_gpu(h.C, DType::BF16);
  Tensor y = nan_gpu(h.x.shape(), DType::BF16);
  // Mixed activation dtypes.
  EXPECT_THROW(ops::ssd(op_inputs(k, x, dt, to_gpu(h.B), C, h, Device::CUDA), nullptr, y), Error);
  // A tensor left on the CPU.
  EXPECT_THROW(ops::ssd(op_inputs(k, x, dt, B, C, h, Device::CPU), nullptr, y), Error);
  // A state of the wrong shape.
  Tensor state = to_gpu(Tensor::zeros({k.batch, k.H, k.P, k.N + 1}));
  EXPECT_THROW(ops::ssd(op_inputs(k, x, dt, B, C, h, Device::CUDA), &state, y), Error);
  // F16 activations.
  const Tensor x16 = h.x.to(DType::F16).to_device(Device::CUDA);
  EXPECT_THROW(ops::ssd(op_inputs(k, x16, dt, B, C, h, Device::CUDA), nullptr, y), Error);
}

}  // namespace
}  // namespace ssm
