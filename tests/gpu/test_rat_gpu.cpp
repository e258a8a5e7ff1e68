// ops::rat and ops::rat_step on the GPU against the CPU ops on the same inputs (rounded through the
// activation dtype): chunk sizes 1, 4, 16, one and two q/k groups, partial last chunks, head sizes
// that do and do not take the tensor cores, strided inputs; a GPU cache prefilled in two pieces (the
// second continuing mid-chunk) and then stepped, its running pair, chunk lists and both token counts
// checked after every call; a batch whose sequences are at different positions, with NaN wherever a
// kernel must not read; bad input is one clear error.
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct RatCase {
  int64_t batch, T, H, G, dh, L;
  bool strided;
  int64_t width() const { return H * dh; }
};

Tensor nan_cpu(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  t.fill(std::numeric_limits<float>::quiet_NaN());
  return t;
}

std::string describe(const RatCase& c, DType dt) {
  return fmt::format("{} B {} T {} H {} G {} dh {} L {}{}", dtype_name(dt), c.batch, c.T, c.H, c.G, c.dh, c.L,
                     c.strided ? " strided" : "");
}

// Host inputs of every token, rounded through the activation dtype; the gate bias as the authors
// initialise it (log U(1, 15)).
struct RatData {
  Tensor q, k, v, g, gate_bias;
};

RatData make_data(const RatCase& c, DType dt, uint64_t seed) {
  Rng rng(seed);
  const int64_t W = c.width(), QW = c.G * c.dh;
  RatData d;
  d.q = rounded(random_cpu({c.batch, c.T, QW}, rng, -2, 2), dt);
  d.k = rounded(random_cpu({c.batch, c.T, QW}, rng, -2, 2), dt);
  d.v = rounded(random_cpu({c.batch, c.T, W}, rng), dt);
  d.g = rounded(random_cpu({c.batch, c.T, W}, rng, -2, 2), dt);
  d.gate_bias = random_cpu({W}, rng, 1, 15);
  for (int64_t i = 0; i < W; ++i) d.gate_bias.data<float>()[i] = std::log(d.gate_bias.data<float>()[i]);
  return d;
}

// The tokens [t0, t0 + n) of `d` as op inputs ([B, width] of token t0 for the step): on the CPU as
// contiguous F32, or on the GPU as `dt`, strided ones as column slices of one NaN-filled tensor laid
// out as RAT's in_proj output [pad | v | g | q | k | pad].
ops::RatInputs inputs_of(const RatCase& c, const RatData& d, int64_t t0, int64_t n, bool step, Device device,
                         DType dt) {
  auto rows = [&](const Tensor& t) {
    Tensor r = t.slice(1, t0, n);
    return (step ? r.select(1, 0) : r).contiguous();
  };
  ops::RatInputs in;
  in.n_heads = c.H;
  in.n_groups = c.G;
  in.chunk_size = c.L;
  Tensor* parts[] = {&in.v, &in.g, &in.q, &in.k};
  const Tensor* sources[] = {&d.v, &d.g, &d.q, &d.k};
  if (device == Device::CPU) {
    for (int i = 0; i < 4; ++i) *parts[i] = rows(*sources[i]);
    in.gate_bias = d.gate_bias;
    return in;
  }
  in.gate_bias = to_gpu(d.gate_bias);
  if (!c.strided) {
    for (int i = 0; i < 4; ++i) *parts[i] = to_gpu(rows(*sources[i]), dt);
    return in;
  }
  const int64_t W = c.width(), QW = c.G * c.dh, pad = 3;
  Shape wide = step ? Shape{c.batch} : Shape{c.batch, n};
  const int64_t axis = int64_t(wide.size());
  wide.push_back(pad + 2 * W + 2 * QW + 5);
  const Tensor all = nan_gpu(wide, dt);
  int64_t offset = pad;
  for (int i = 0; i < 4; ++i) {
    const Tensor host = rows(*sources[i]);
    *parts[i] = all.slice(axis, offset, host.size(-1));
    parts[i]->copy_from(host.to(dt));
    offset += host.size(-1);
  }
  return in;
}

// A GPU copy of a CPU cache: the same state, both token counts.
ops::RatCache gpu_copy(const ops::RatCache& c) {
  ops::RatCache g;
  g.chunk_keys = c.chunk_keys.to_device(Device::CUDA);
  g.chunk_values = c.chunk_values.to_device(Device::CUDA);
  g.key = c.key.to_device(Device::CUDA);
  g.value = c.value.to_device(Device::CUDA);
  g.tokens = c.tokens.clone();
  g.device_tokens = c.tokens.to_device(Device::CUDA);
  return g;
}

// The GPU cache holds the CPU cache's state: counts equal (host and GPU), and the running pair and
// the finished chunks' ends within `tol` (F32 arithmetic on the same inputs in both).
void expect_same_cache(const ops::RatCache& got, const ops::RatCache& want, int64_t L, const std::string& what) {
  const Tensor device_tokens = got.device_tokens.to_device(Device::CPU);
  const int64_t batch = want.tokens.size(0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t tokens = want.tokens.data<int64_t>()[b];
    EXPECT_EQ(got.tokens.data<int64_t>()[b], tokens) << "host tokens of sequence " << b << ", " << what;
    EXPECT_EQ(device_tokens.data<int64_t>()[b], tokens) << "GPU tokens of sequence " << b << ", " << what;
    const int64_t finished = tokens / L;
    if (finished == 0) continue;
    for (auto [g, w, name] : {std::tuple{&got.chunk_keys, &want.chunk_keys, "chunk_keys"},
                              {&got.chunk_values, &want.chunk_values, "chunk_values"}}) {
      const Tensor rows_want = w->select(0, b).slice(0, 0, finished).contiguous();
      EXPECT_LT(relative_error(to_cpu(g->select(0, b).slice(0, 0, finished)), rows_want), 1e-5)
          << name << " of sequence " << b << ", " << what;
    }
  }
  EXPECT_LT(relative_error(to_cpu(got.key), want.key), 1e-5) << "key, " << what;
  EXPECT_LT(relative_error(to_cpu(got.value), want.value), 1e-5) << "value, " << what;
}

// y of the forward on the CPU and on the GPU (poisoned, strided when the case is), from the caches given.
void expect_forward_matches(const RatCase& c, const RatData& d, int64_t t0, int64_t n, DType dt,
                            ops::RatCache* cpu_cache, ops::RatCache* gpu_cache, const std::string& what) {
  const int64_t W = c.width();
  Tensor want = Tensor::empty({c.batch, n, W});
  ops::rat(inputs_of(c, d, t0, n, false, Device::CPU, dt), cpu_cache, want);
  Tensor got = nan_gpu({c.batch, n, W + (c.strided ? 5 : 0)}, dt).slice(2, 0, W);
  ops::rat(inputs_of(c, d, t0, n, false, Device::CUDA, dt), gpu_cache, got);
  EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt)) << "y, " << what;
}

void expect_step_matches(const RatCase& c, const RatData& d, int64_t t, DType dt, ops::RatCache& cpu_cache,
                         ops::RatCache& gpu_cache, const std::string& what) {
  const int64_t W = c.width();
  Tensor want = Tensor::empty({c.batch, W});
  ops::rat_step(inputs_of(c, d, t, 1, true, Device::CPU, dt), cpu_cache, want);
  Tensor got = nan_gpu({c.batch, W}, dt);
  ops::rat_step(inputs_of(c, d, t, 1, true, Device::CUDA, dt), gpu_cache, got);
  EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt)) << "step y, token " << t << ", " << what;
}

class RatGpu : public ::testing::TestWithParam<DType> {};

TEST_P(RatGpu, ForwardMatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  const RatCase cases[] = {
      {2, 23, 4, 2, 64, 4, true},     // partial last chunk, two groups, strided
      {1, 200, 2, 1, 128, 16, false}, // head size 128, 12 finished chunks and a partial one
      {2, 64, 4, 2, 16, 16, true},    // head size 16 (padded to the tensor cores' 64)
      {3, 50, 2, 2, 6, 4, false},     // head size 6: the exact kernel in BF16 too
      {2, 1, 4, 2, 64, 4, false},     // one token
      {2, 200, 4, 2, 64, 1, true},    // L = 1: every token a chunk
      {1, 17, 2, 1, 80, 16, false},   // head size 80, one full chunk and one token
      {2, 1000, 4, 2, 64, 16, false}, // 62 chunk ends per sequence
      {1, 40, 2, 2, 64, 64, false},   // L > T: the gated RNN alone
  };
  uint64_t seed = 1;
  for (const RatCase& c : cases) {
    const std::string what = describe(c, dt);
    const RatData d = make_data(c, dt, seed++);
    expect_forward_matches(c, d, 0, c.T, dt, nullptr, nullptr, what);
  }
}

// A cache prefilled in two pieces (the second continuing the chunk the first left open), grown in
// between, then stepped across chunk ends.
TEST_P(RatGpu, PrefillInTwoPiecesThenStepsMatchTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  for (const int64_t L : {4, 16}) {
    const RatCase c{2, 13 + 30 + 21, 4, 2, 64, L, true};
    const std::string what = describe(c, dt);
    const RatData d = make_data(c, dt, uint64_t(50 + L));
    ops::RatCache cpu = ops::RatCache::zeros(c.batch, c.width(), 1);
    ops::RatCache gpu = ops::RatCache::zeros(c.batch, c.width(), 1, Device::CUDA);
    int64_t t = 0;
    for (const int64_t piece : {13, 30}) {
      cpu.reserve((t + piece) / L);
      gpu.reserve((t + piece) / L);
      expect_forward_matches(c, d, t, piece, dt, &cpu, &gpu, what + fmt::format(", piece at {}", t));
      t += piece;
      expect_same_cache(gpu, cpu, L, what + fmt::format(", after {} tokens", t));
    }
    for (; t < c.T; ++t) {
      cpu.reserve((t + 1) / L);
      gpu.reserve((t + 1) / L);
      expect_step_matches(c, d, t, dt, cpu, gpu, what);
    }
    expect_same_cache(gpu, cpu, L, what + ", after the steps");
  }
}

// Sequences at different positions of one batch (mid-chunk, at a chunk start, at 0), from a cache
// whose unused chunk rows, and whose running pairs where no chunk is open, are NaN: a kernel that
// reads them shows it.
TEST_P(RatGpu, SequencesAtDifferentPositions) {
  require_gpu();
  const DType dt = GetParam();
  const RatCase c{4, 9 + 6, 2, 2, 64, 4, false};
  const std::string what = describe(c, dt);
  const std::vector<int64_t> start{13, 5, 32, 0};
  const int64_t W = c.width(), capacity = 12;
  Rng rng(9);
  ops::RatCache cpu = ops::RatCache::zeros(c.batch, W, capacity);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t s = start[size_t(b)], finished = s / c.L;
    cpu.tokens.data<int64_t>()[b] = s;
    for (Tensor* list : {&cpu.chunk_keys, &cpu.chunk_values}) {
      Tensor rows = list->select(0, b);
      rows.fill(nan);
      if (finished > 0) rows.slice(0, 0, finished).copy_from(random_cpu({finished, W}, rng));
    }
    for (Tensor* running : {&cpu.key, &cpu.value})
      running->select(0, b).copy_from(s % c.L != 0 ? random_cpu({W}, rng) : nan_cpu({W}));
  }
  ops::RatCache gpu = gpu_copy(cpu);
  const RatData d = make_data(c, dt, 77);
  expect_forward_matches(c, d, 0, 9, dt, &cpu, &gpu, what + ", prefill of 9");
  expect_same_cache(gpu, cpu, c.L, what + ", after the prefill");
  for (int64_t t = 9; t < c.T; ++t) expect_step_matches(c, d, t, dt, cpu, gpu, what);
  expect_same_cache(gpu, cpu, c.L, what + ", after the steps");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RatGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RatGpuBadInput, OneClearError) {
  require_gpu();
  const RatCase c{2, 10, 4, 2, 8, 4, false};
  const RatData d = make_data(c, DType::F32, 3);
  const int64_t W = c.width();
  const ops::RatInputs in = inputs_of(c, d, 0, c.T, false, Device::CUDA, DType::F32);
  Tensor y = nan_gpu({c.batch, c.T, W});
  {
    ops::RatCache host_cache = ops::RatCache::zeros(c.batch, W, 4);
    test::expect_error([&] { ops::rat(in, &host_cache, y); }, {"rat:", "device_tokens"});
    host_cache.device_tokens = host_cache.tokens.to_device(Device::CUDA);
    test::expect_error([&] { ops::rat(in, &host_cache, y); }, {"rat:", "cache.key and cache.value", "on the GPU"});
  }
  {
    ops::RatCache small = ops::RatCache::zeros(c.batch, W, 1, Device::CUDA);
    test::expect_error([&] { ops::rat(in, &small, y); }, {"rat:", "room for 1 chunks, 2 are needed"});
  }
  {
    Tensor y16 = nan_gpu({c.batch, c.T, W}, DType::BF16);
    test::expect_error([&] { ops::rat(in, nullptr, y16); }, {"rat:", "y must be F32 on the GPU rows"});
  }
  {
    ops::RatInputs mixed = in;
    mixed.q = to_gpu(d.q, DType::BF16);
    test::expect_error([&] { ops::rat(mixed, nullptr, y); }, {"rat:", "q must be F32 on the GPU rows", "BF16"});
  }
  {
    ops::RatInputs host_bias = in;
    host_bias.gate_bias = d.gate_bias;
    test::expect_error([&] { ops::rat(host_bias, nullptr, y); }, {"rat:", "gate_bias must be F32 [32] on the GPU"});
  }
  {
    const RatCase wide{1, 2, 1, 1, 1030, 4, false};
    const RatData dw = make_data(wide, DType::F32, 4);
    Tensor yw = nan_gpu({1, 2, 1030});
    test::expect_error([&] { ops::rat(inputs_of(wide, dw, 0, 2, false, Device::CUDA, DType::F32), nullptr, yw); },
                       {"rat:", "head sizes up to 512", "1030"});
  }
  {
    ops::RatCache cache = ops::RatCache::zeros(c.batch, W, 4, Device::CUDA);
    Tensor ys = nan_gpu({c.batch, W});
    test::expect_error([&] { ops::rat_step(in, cache, ys); }, {"rat_step:", "v must be F32 on the GPU rows [B,H*dh]"});
  }
}

}  // namespace
}  // namespace ssm
