// ops::ssd_backward on the GPU against the CPU op on the same inputs (activations rounded through the
// dtype the GPU sees), F32 (relative error < 1e-4) and BF16 (< 3e-2): lengths below, at and past the
// GPU's chunk (64), batch 2, n_groups 1 and 2, P and N under and over the kernels' 64-column tiles,
// with and without state0 / dfinal_state / D / dt_bias, dt clamps, inputs and gradients as column
// slices of wide rows (as the Mamba-2 layer passes them), gradients not asked for, bit-identical
// repeats; and training's pair: the forward keeping the chunk states (ssd_forward_saving_chunk_states),
// then the backward from them. Activation gradients start as NaN; parameter gradients start from random
// values, since they accumulate.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct Case {
  int64_t batch = 2, T = 100, H = 4, P = 24, G = 2, N = 16;
  bool with_D = true, with_bias = true, with_state0 = true, with_dfinal = true;
  bool all_grads = true;  // false: only dx and ddt asked for
  int64_t pad = -1;       // >= 0: inputs and gradients as column slices of wide rows, `pad` columns in
  double dt_noise = 0.5;  // dt_bias ≈ -3: softplus(-3 ± noise) ≈ 0.05
  float dt_min = 0.0f, dt_max = std::numeric_limits<float>::infinity();
  int64_t cpu_chunk = 64;    // the CPU op's chunk; the GPU's is 64
  bool kept_states = false;  // the GPU's backward from ssd_forward_saving_chunk_states' (no state0)
  uint64_t seed = 1;

  std::string str() const {
    return fmt::format(
        "batch {} T {} H {} P {} G {} N {} D {} dt_bias {} state0 {} dfinal {} all grads {} pad {} dt [{}, {}] "
        "cpu chunk {} kept states {}",
        batch, T, H, P, G, N, with_D, with_bias, with_state0, with_dfinal, all_grads, pad, dt_min, dt_max, cpu_chunk,
        kept_states);
  }
  Shape rows(int64_t width) const { return {batch, T, width}; }
  Shape states() const { return {batch, H, P, N}; }
};

Tensor normal_cpu(const Shape& shape, Rng& rng, double scale = 1.0, double offset = 0.0) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(offset + scale * rng.normal());
  return t;
}

// The inputs on the CPU in F32, activations (x, dt, B, C, dy) already rounded through the dtype.
struct Host {
  Tensor x, dt, B, C, dy, dt_bias, A, D, state0, dfinal;
  Tensor dA0, dD0, dbias0;  // the parameter gradients' starting values
};

Host make_host(const Case& k, DType dtype) {
  Rng rng(k.seed);
  Host h;
  h.x = rounded(normal_cpu(k.rows(k.H * k.P), rng), dtype);
  h.dt = rounded(normal_cpu(k.rows(k.H), rng, k.dt_noise), dtype);
  h.B = rounded(normal_cpu(k.rows(k.G * k.N), rng, 0.5), dtype);
  h.C = rounded(normal_cpu(k.rows(k.G * k.N), rng, 0.5), dtype);
  h.dy = rounded(normal_cpu(k.rows(k.H * k.P), rng), dtype);
  h.dt_bias = normal_cpu({k.H}, rng, 0.3, k.with_bias ? -3.0 : 0.0);
  if (!k.with_bias) h.dt_bias = Tensor();
  h.A = Tensor::empty({k.H});
  for (int64_t i = 0; i < k.H; ++i) h.A.data<float>()[i] = -std::exp(rng.uniform(0.0f, std::log(16.0f)));
  if (k.with_D) h.D = normal_cpu({k.H}, rng);
  if (k.with_state0) h.state0 = normal_cpu(k.states(), rng, 0.5);
  if (k.with_dfinal) h.dfinal = normal_cpu(k.states(), rng, 0.5);
  h.dA0 = normal_cpu({k.H}, rng);
  h.dD0 = normal_cpu({k.H}, rng);
  h.dbias0 = normal_cpu({k.H}, rng);
  return h;
}

Tensor on(Device device, const Tensor& host) {
  return !host.defined() || device == Device::CPU ? host : to_gpu(host);
}

ops::SsdInputs op_inputs(const Case& k, const Host& h, const Tensor& x, const Tensor& dt, const Tensor& B,
                         const Tensor& C, Device device) {
  ops::SsdInputs in;
  in.x = x;
  in.dt = dt;
  in.B = B;
  in.C = C;
  in.dt_bias = on(device, h.dt_bias);
  in.A = on(device, h.A);
  in.D = on(device, h.D);
  in.n_groups = k.G;
  in.dt_min = k.dt_min;
  in.dt_max = k.dt_max;
  in.chunk_size = k.cpu_chunk;
  return in;
}

// Every gradient, on the CPU in F32 (undefined when not asked for).
struct Grads {
  Tensor dx, ddt, dB, dC, dA, dD, dbias, dstate0;
};

Grads run_cpu(const Case& k, const Host& h) {
  ops::SsdGrads g;
  g.dx = Tensor::empty(k.rows(k.H * k.P));
  g.ddt = Tensor::empty(k.rows(k.H));
  if (k.all_grads) {
    g.dB = Tensor::empty(k.rows(k.G * k.N));
    g.dC = Tensor::empty(k.rows(k.G * k.N));
    g.dA = h.dA0.clone();
    g.dD = h.dD0.clone();
    g.ddt_bias = h.dbias0.clone();
    g.dstate0 = Tensor::empty(k.states());
  }
  ops::ssd_backward(op_inputs(k, h, h.x, h.dt, h.B, h.C, Device::CPU), h.state0, h.dy, g, h.dfinal);
  return {g.dx, g.ddt, g.dB, g.dC, g.dA, g.dD, g.ddt_bias, g.dstate0};
}

// A GPU tensor [batch, T, width] whose column slices a test hands out: filled from `host` columns
// (NaN elsewhere), or all NaN; outside_untouched() says whether every column outside the slices is NaN.
struct WideRows {
  Tensor wide;
  std::vector<std::pair<int64_t, int64_t>> slices;  // (offset, width)

  Tensor take(int64_t offset, int64_t width) {
    slices.emplace_back(offset, width);
    return wide.slice(2, offset, width);
  }
  bool outside_untouched() const {
    const Tensor host = to_cpu(wide);
    const int64_t width = host.size(-1);
    for (int64_t c = 0; c < width; ++c) {
      bool inside = false;
      for (const auto& [offset, w] : slices) inside |= c >= offset && c < offset + w;
      if (inside) continue;
      for (int64_t r = 0; r < host.rows(); ++r)
        if (!std::isnan(host.data<float>()[r * width + c])) return false;
    }
    return true;
  }
};

// Inputs [pad | x | B | C | dt | dy | 5] in one wide GPU tensor.
struct GpuInputs {
  Tensor x, dt, B, C, dy;
};
GpuInputs gpu_inputs(const Case& k, const Host& h, DType dtype) {
  if (k.pad < 0) return {to_gpu(h.x, dtype), to_gpu(h.dt, dtype), to_gpu(h.B, dtype), to_gpu(h.C, dtype),
                         to_gpu(h.dy, dtype)};
  const int64_t HP = k.H * k.P, GN = k.G * k.N;
  Tensor wide = Tensor::empty(k.rows(k.pad + 2 * HP + 2 * GN + k.H + 5));
  wide.fill(std::numeric_limits<float>::quiet_NaN());
  int64_t at = k.pad;
  std::vector<std::pair<int64_t, int64_t>> places;
  for (const Tensor* t : {&h.x, &h.B, &h.C, &h.dt, &h.dy}) {
    wide.slice(2, at, t->size(2)).copy_from(*t);
    places.emplace_back(at, t->size(2));
    at += t->size(2);
  }
  const Tensor gpu = to_gpu(wide, dtype);
  auto slice = [&](size_t i) { return gpu.slice(2, places[i].first, places[i].second); };
  return {slice(0), slice(3), slice(1), slice(2), slice(4)};
}

// The GPU op's gradients; with k.pad >= 0, dx, dB and dC are column slices of one wide tensor and
// ddt of another (as dxbc and dzxbcdt in the Mamba-2 layer), and nothing beside them may be written.
Grads run_gpu(const Case& k, const Host& h, DType dtype) {
  const int64_t HP = k.H * k.P, GN = k.G * k.N;
  const GpuInputs in = gpu_inputs(k, h, dtype);
  ops::SsdGrads g;
  WideRows xbc, dt_rows;
  if (k.pad >= 0) {
    xbc.wide = nan_gpu(k.rows(k.pad + HP + 2 * GN + 7), dtype);
    dt_rows.wide = nan_gpu(k.rows(k.pad + 1 + k.H + 3), dtype);
    g.dx = xbc.take(k.pad, HP);
    if (k.all_grads) {
      g.dB = xbc.take(k.pad + HP, GN);
      g.dC = xbc.take(k.pad + HP + GN, GN);
    }
    g.ddt = dt_rows.take(k.pad + 1, k.H);
  } else {
    g.dx = nan_gpu(k.rows(HP), dtype);
    g.ddt = nan_gpu(k.rows(k.H), dtype);
    if (k.all_grads) {
      g.dB = nan_gpu(k.rows(GN), dtype);
      g.dC = nan_gpu(k.rows(GN), dtype);
    }
  }
  if (k.all_grads) {
    g.dA = to_gpu(h.dA0);
    g.dD = to_gpu(h.dD0);
    g.ddt_bias = to_gpu(h.dbias0);
    g.dstate0 = nan_gpu(k.states());
  }
  const ops::SsdInputs args = op_inputs(k, h, in.x, in.dt, in.B, in.C, Device::CUDA);
  Tensor chunk_states;
  if (k.kept_states) {
    Tensor y = nan_gpu(k.rows(HP), dtype);
    chunk_states = ops::ssd_forward_saving_chunk_states(args, y);
    EXPECT_TRUE(chunk_states.defined()) << "no chunk states kept";
  }
  ops::ssd_backward(args, on(Device::CUDA, h.state0), in.dy, g, on(Device::CUDA, h.dfinal), chunk_states);
  if (k.pad >= 0) {
    EXPECT_TRUE(xbc.outside_untouched()) << "ssd_backward wrote beside dx, dB, dC";
    EXPECT_TRUE(dt_rows.outside_untouched()) << "ssd_backward wrote beside ddt";
  }
  auto back = [](const Tensor& t) { return t.defined() ? to_cpu(t) : Tensor(); };
  return {back(g.dx), back(g.ddt), back(g.dB), back(g.dC), back(g.dA), back(g.dD), back(g.ddt_bias), back(g.dstate0)};
}

double tolerance_backward(DType dtype) { return dtype == DType::F32 ? 1e-4 : 3e-2; }

void check_backward(const Case& k, DType dtype) {
  SCOPED_TRACE(fmt::format("ssd_backward {} {}", dtype_name(dtype), k.str()));
  const Host h = make_host(k, dtype);
  const Grads want = run_cpu(k, h);
  const Grads got = run_gpu(k, h, dtype);
  const double tol = tolerance_backward(dtype);
  EXPECT_LT(relative_error(got.dx, want.dx), tol) << "dx";
  EXPECT_LT(relative_error(got.ddt, want.ddt), tol) << "ddt";
  if (!k.all_grads) return;
  EXPECT_LT(relative_error(got.dB, want.dB), tol) << "dB";
  EXPECT_LT(relative_error(got.dC, want.dC), tol) << "dC";
  EXPECT_LT(relative_error(got.dA, want.dA), tol) << "dA";
  EXPECT_LT(relative_error(got.dD, want.dD), tol) << "dD";
  EXPECT_LT(relative_error(got.dbias, want.dbias), tol) << "ddt_bias";
  EXPECT_LT(relative_error(got.dstate0, want.dstate0), tol) << "dstate0";
}

class SsdBackwardGpu : public ::testing::TestWithParam<DType> {};

// The benchmark's head shape (P 64, N 128) and a small one with two groups, over lengths below, at and
// past the chunk; state0 and dfinal_state each left out at one length.
TEST_P(SsdBackwardGpu, LengthsAndShapesMatchTheCpu) {
  require_gpu();
  for (const auto& [P, N, G] : {std::tuple{64, 128, 1}, std::tuple{24, 16, 2}}) {
    for (int64_t T : {1, 37, 64, 65, 200}) {
      check_backward({.T = T, .P = P, .G = G, .N = N, .with_state0 = T != 65, .with_dfinal = T != 37,
                      .seed = uint64_t(T * 7 + P)},
                     GetParam());
    }
  }
}

// Rows [0, length) of each sequence of [batch, T, width] rows, as a tensor of their own.
Tensor prefix(const Tensor& rows, int64_t length) {
  const int64_t batch = rows.size(0), T = rows.size(1), width = rows.size(2);
  Tensor out = Tensor::empty({batch, length, width});
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(out.data<float>() + b * length * width, rows.data<float>() + b * T * width,
                size_t(length * width) * sizeof(float));
  return out;
}

// Training's forward keeps the state entering every chunk of 64 tokens: y is ops::ssd's bit for bit,
// chunk c's state is the CPU forward's final state over the first 64 c tokens (zeros for chunk 0), and
// the backward from those states matches the CPU's backward.
TEST_P(SsdBackwardGpu, ForwardKeepsTheChunkStates) {
  require_gpu();
  const DType dtype = GetParam();
  for (const auto& [P, N, G, T] :
       {std::tuple{64, 128, 1, 200}, std::tuple{24, 16, 2, 130}, std::tuple{24, 16, 2, 37}}) {
    const Case k{.T = T, .P = P, .G = G, .N = N, .with_state0 = false, .seed = uint64_t(60 + T)};
    SCOPED_TRACE(k.str());
    const Host h = make_host(k, dtype);
    const GpuInputs in = gpu_inputs(k, h, dtype);
    const ops::SsdInputs args = op_inputs(k, h, in.x, in.dt, in.B, in.C, Device::CUDA);
    Tensor y = nan_gpu(k.rows(k.H * k.P), dtype), y_plain = nan_gpu(k.rows(k.H * k.P), dtype);
    const Tensor kept = ops::ssd_forward_saving_chunk_states(args, y);
    ops::ssd(args, nullptr, y_plain);
    EXPECT_TRUE(same_bits(y, y_plain)) << "y differs from ops::ssd's";
    const int64_t chunks = (T + 63) / 64, PN = k.P * k.N;
    ASSERT_TRUE(kept.defined());
    ASSERT_EQ(kept.shape(), (Shape{k.batch, k.H, chunks, k.P, k.N}));
    const Tensor states = to_cpu(kept);
    for (int64_t c = 0; c < chunks; ++c) {
      Tensor want = Tensor::zeros(k.states());
      if (c > 0) {
        Tensor y_cpu = Tensor::empty({k.batch, 64 * c, k.H * k.P});
        ops::ssd(op_inputs(k, h, prefix(h.x, 64 * c), prefix(h.dt, 64 * c), prefix(h.B, 64 * c), prefix(h.C, 64 * c),
                           Device::CPU),
                 &want, y_cpu);
      }
      Tensor got = Tensor::empty(k.states());
      for (int64_t bh = 0; bh < k.batch * k.H; ++bh)
        std::memcpy(got.data<float>() + bh * PN, states.data<float>() + (bh * chunks + c) * PN,
                    size_t(PN) * sizeof(float));
      if (c == 0) EXPECT_EQ(relative_error(got, want), 0.0) << "chunk 0's state is not zero";
      else EXPECT_LT(relative_error(got, want), tolerance_backward(dtype)) << "the state entering chunk " << c;
    }
    Case from_kept = k;
    from_kept.kept_states = true;
    check_backward(from_kept, dtype);
  }
}

// Many chunks: the state walks over 33 chunks in 9 segments (the last of one chunk), one sequence and
// four heads of one group; then only the walk of the state gradients, from the forward's states.
TEST_P(SsdBackwardGpu, ManyChunksMatchTheCpu) {
  require_gpu();
  check_backward({.batch = 1, .T = 2049, .P = 64, .G = 1, .N = 128, .seed = 3}, GetParam());
  check_backward(
      {.batch = 1, .T = 2049, .P = 64, .G = 1, .N = 128, .with_state0 = false, .kept_states = true, .seed = 4},
      GetParam());
}

// Without D, dt_bias, state0 and dfinal_state (one at a time, then all), and the CPU at another chunk.
TEST_P(SsdBackwardGpu, OptionalInputsLeftOut) {
  require_gpu();
  for (int variant = 0; variant < 5; ++variant) {
    check_backward({.T = 130,
                    .with_D = variant != 0 && variant != 4,
                    .with_bias = variant != 1 && variant != 4,
                    .with_state0 = variant != 2 && variant != 4,
                    .with_dfinal = variant != 3 && variant != 4,
                    .cpu_chunk = variant == 4 ? 32 : 64,
                    .seed = uint64_t(100 + variant)},
                   GetParam());
  }
}

// dt clamped below and above: the clamped tokens' raw dt get no gradient.
TEST_P(SsdBackwardGpu, DtClamp) {
  require_gpu();
  check_backward({.T = 150, .dt_noise = 2.0, .dt_min = 0.02f, .dt_max = 0.1f, .seed = 7}, GetParam());
}

// Inputs and gradients as column slices: 16-byte aligned rows (pad 8) and misaligned ones (pad 3).
TEST_P(SsdBackwardGpu, StridedRows) {
  require_gpu();
  for (int64_t pad : {8, 3}) {
    for (int64_t T : {65, 130}) {
      check_backward({.T = T, .pad = pad, .seed = uint64_t(20 + pad + T)}, GetParam());
    }
  }
}

// P and N over one 64-column tile (partial second tiles), odd small ones, and a large state (N 256).
TEST_P(SsdBackwardGpu, HeadAndStateSizes) {
  require_gpu();
  for (const auto& [P, N, G, H] : {std::tuple{80, 72, 1, 2}, std::tuple{5, 12, 2, 4}, std::tuple{64, 256, 1, 2},
                                   std::tuple{128, 64, 2, 4}}) {
    check_backward({.T = 90, .H = H, .P = P, .G = G, .N = N, .seed = uint64_t(30 + P + N)}, GetParam());
  }
}

// Only dx and ddt asked for (no dB, dC, parameter gradients or dstate0), plain and strided.
TEST_P(SsdBackwardGpu, GradientsNotAskedFor) {
  require_gpu();
  for (int64_t pad : {-1, 4}) {
    check_backward({.all_grads = false, .pad = pad, .seed = uint64_t(40 + pad)}, GetParam());
  }
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Two runs on the same inputs give the same bits in every gradient (fixed-order sums, no atomics).
TEST_P(SsdBackwardGpu, Deterministic) {
  require_gpu();
  const DType dtype = GetParam();
  const Case k{.T = 1000, .H = 8, .P = 32, .G = 2, .N = 64, .seed = 50};
  SCOPED_TRACE(k.str());
  const Host h = make_host(k, dtype);
  const Grads first = run_gpu(k, h, dtype), second = run_gpu(k, h, dtype);
  for (const auto& [a, b, name] : {std::tuple{&first.dx, &second.dx, "dx"}, {&first.ddt, &second.ddt, "ddt"},
                                   {&first.dB, &second.dB, "dB"}, {&first.dC, &second.dC, "dC"},
                                   {&first.dA, &second.dA, "dA"}, {&first.dD, &second.dD, "dD"},
                                   {&first.dbias, &second.dbias, "ddt_bias"},
                                   {&first.dstate0, &second.dstate0, "dstate0"}})
    EXPECT_TRUE(same_bits(*a, *b)) << name << " differs between two runs";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SsdBackwardGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// No tokens: dstate0 is dfinal_state, or zero without one; nothing else changes.
TEST(SsdBackwardGpuEdges, EmptySequence) {
  require_gpu();
  for (bool with_dfinal : {true, false}) {
    Case k;
    k.T = 0;
    k.with_dfinal = with_dfinal;
    SCOPED_TRACE(k.str());
    const Host h = make_host(k, DType::F32);
    const Grads got = run_gpu(k, h, DType::F32);
    const Tensor want = with_dfinal ? h.dfinal : Tensor::zeros(k.states());
    EXPECT_EQ(relative_error(got.dstate0, want), 0.0) << "dstate0";
    EXPECT_TRUE(same_bits(got.dA, h.dA0)) << "dA changed";
  }
}

TEST(SsdBackwardGpuEdges, BadArgumentsAreErrors) {
  require_gpu();
  Case k;
  k.T = 8;
  const Host h = make_host(k, DType::BF16);
  const GpuInputs in = gpu_inputs(k, h, DType::BF16);
  const ops::SsdInputs args = op_inputs(k, h, in.x, in.dt, in.B, in.C, Device::CUDA);
  auto grads = [&] {
    ops::SsdGrads g;
    g.dx = nan_gpu(k.rows(k.H * k.P), DType::BF16);
    g.dA = to_gpu(h.dA0);
    return g;
  };
  ops::SsdGrads g = grads();
  // dy of another dtype than x.
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), to_gpu(h.dy), g), Error);
  // A gradient of the wrong dtype, then of the wrong shape.
  g.dx = nan_gpu(k.rows(k.H * k.P));
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g), Error);
  g.dx = nan_gpu(k.rows(k.H * k.P + 1), DType::BF16);
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g), Error);
  // A parameter gradient left on the CPU.
  g = grads();
  g.dA = h.dA0.clone();
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g), Error);
  // dfinal_state and dstate0 of the wrong shape.
  g = grads();
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g, to_gpu(Tensor::zeros({k.batch, k.H, k.P, k.N + 1}))),
               Error);
  g.dstate0 = to_gpu(Tensor::zeros({k.batch, k.H + 1, k.P, k.N}));
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g), Error);
  // Kept chunk states beside state0, then of the wrong shape, then of the wrong dtype.
  g = grads();
  Tensor y = nan_gpu(k.rows(k.H * k.P), DType::BF16);
  const Tensor kept = ops::ssd_forward_saving_chunk_states(args, y);
  EXPECT_THROW(ops::ssd_backward(args, to_gpu(h.state0), in.dy, g, Tensor(), kept), Error);
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g, Tensor(), kept.view({k.batch, k.H, 1, k.P * k.N})), Error);
  EXPECT_THROW(ops::ssd_backward(args, Tensor(), in.dy, g, Tensor(), nan_gpu(kept.shape())), Error);
}

}  // namespace
}  // namespace ssm
