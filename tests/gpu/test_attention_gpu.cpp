// ops::attention and ops::attention_decode on the GPU against the CPU ops on the same inputs (rounded
// through the activation dtype): head dims 64, 128, 80 and small or large odd ones, MHA/GQA/MQA,
// sliding windows, keys before the queries (S > T), batch > 1, q/k/v/o as column slices of wider
// tensors (16-byte aligned slices take the tensor cores in BF16, unaligned ones the exact kernel),
// lse, decode over uneven lengths and ring-buffer caches; outputs poisoned with NaN; bad input is
// one clear error.
#include <fmt/ranges.h>

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

enum class Layout { Contiguous, Aligned, Unaligned };
const char* layout_name(Layout l) {
  return l == Layout::Contiguous ? "contiguous" : l == Layout::Aligned ? "aligned slices" : "unaligned slices";
}

Tensor nan_cpu(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  t.fill(std::numeric_limits<float>::quiet_NaN());
  return t;
}

// `host` ([B, R, W] or [B, W]) on the GPU as `dt`: contiguous, or the column slice of a NaN-filled
// wider tensor (with 5 more rows per batch for [B, R, W], so batch and row strides both differ from
// the shape's). Aligned slices keep every row 16-byte aligned (offset and pitch multiples of 8
// elements, for W a multiple of 8); unaligned ones start 3 elements in.
Tensor place(const Tensor& host, DType dt, Layout layout) {
  if (layout == Layout::Contiguous) return to_gpu(host, dt);
  const int64_t last = host.dim() - 1;
  const int64_t offset = layout == Layout::Aligned ? 8 : 3, pad = layout == Layout::Aligned ? 24 : 19;
  Shape wide = host.shape();
  wide[size_t(last)] += pad;
  if (host.dim() == 3) wide[1] += 5;
  Tensor t = nan_gpu(wide, dt);
  if (host.dim() == 3) t = t.slice(1, 0, host.size(1));
  t = t.slice(last, offset, host.size(last));
  t.copy_from(host.to(dt));
  return t;
}

// ---- forward ----

struct ForwardCase {
  int64_t batch, T, S, heads, kv_heads, head_dim, window;
  Layout layout;
};

std::string describe(const ForwardCase& c, DType dt) {
  return fmt::format("{} B {} T {} S {} heads {}/{} d {} window {} {}", dtype_name(dt), c.batch, c.T, c.S, c.heads,
                     c.kv_heads, c.head_dim, c.window, layout_name(c.layout));
}

void PrintTo(const ForwardCase& c, std::ostream* os) { *os << describe(c, DType::F32).substr(4); }

class AttentionGpu : public ::testing::TestWithParam<std::tuple<DType, ForwardCase>> {};

TEST_P(AttentionGpu, MatchesTheCpu) {
  require_gpu();
  const auto& [dt, c] = GetParam();
  const std::string what = describe(c, dt);
  Rng rng(uint64_t(11 + c.T * 7 + c.S + c.head_dim + c.window));
  const int64_t qw = c.heads * c.head_dim, kw = c.kv_heads * c.head_dim;
  const Tensor q = rounded(random_cpu({c.batch, c.T, qw}, rng, -2, 2), dt);
  const Tensor k = rounded(random_cpu({c.batch, c.S, kw}, rng, -2, 2), dt);
  const Tensor v = rounded(random_cpu({c.batch, c.S, kw}, rng), dt);
  const ops::AttentionParams params{c.heads, c.kv_heads, 0.0f, c.window};
  Tensor want = Tensor::empty({c.batch, c.T, qw}), want_lse = Tensor::empty({c.batch, c.heads, c.T});
  ops::attention(q, k, v, params, want, &want_lse);

  Tensor o = place(nan_cpu({c.batch, c.T, qw}), dt, c.layout);
  Tensor lse = nan_gpu({c.batch, c.heads, c.T});
  ops::attention(place(q, dt, c.layout), place(k, dt, c.layout), place(v, dt, c.layout), params, o, &lse);
  EXPECT_LT(relative_error(to_cpu(o), want), tolerance(dt)) << what;
  EXPECT_LT(relative_error(to_cpu(lse), want_lse), tolerance(dt)) << "lse, " << what;

  // Without lse, into a contiguous output: the same numbers.
  Tensor o2 = nan_gpu({c.batch, c.T, qw}, dt);
  ops::attention(place(q, dt, c.layout), place(k, dt, c.layout), place(v, dt, c.layout), params, o2);
  EXPECT_LT(relative_error(to_cpu(o2), want), tolerance(dt)) << "no lse, " << what;
}

const std::vector<ForwardCase> kForwardCases = {
    {2, 65, 65, 4, 4, 64, 0, Layout::Contiguous},     // MHA, one tile and a row
    {2, 200, 263, 8, 2, 128, 0, Layout::Aligned},     // GQA, keys before the queries
    {1, 1000, 1000, 4, 1, 80, 0, Layout::Contiguous}, // MQA, head dim 80
    {3, 7, 30, 6, 3, 64, 5, Layout::Unaligned},       // window 5, unaligned rows
    {2, 1, 40, 4, 2, 128, 0, Layout::Contiguous},     // one query over a prefix
    {1, 200, 200, 2, 1, 128, 1, Layout::Aligned},     // window 1: each query sees itself
    {2, 1000, 1300, 4, 2, 64, 64, Layout::Aligned},   // window 64, long
    {1, 65, 130, 3, 1, 80, 64, Layout::Unaligned},    // d 80, window, unaligned
    {2, 7, 7, 2, 2, 20, 0, Layout::Contiguous},       // d 20: not a multiple of 8
    {1, 200, 250, 2, 2, 256, 5, Layout::Contiguous},  // d 256: above the tensor-core tiles
    {2, 1000, 1000, 16, 16, 128, 0, Layout::Contiguous},
    {3, 200, 1000, 8, 1, 64, 0, Layout::Unaligned},   // MQA, S ≫ T
};

INSTANTIATE_TEST_SUITE_P(Cases, AttentionGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16), ::testing::ValuesIn(kForwardCases)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(info.index % kForwardCases.size());
                         });

// ---- decode ----

struct DecodeCase {
  int64_t capacity, heads, kv_heads, head_dim, window;
  std::vector<int32_t> lengths;  // one per sequence
  Layout layout;
};

std::string describe(const DecodeCase& c, DType dt) {
  return fmt::format("{} C {} heads {}/{} d {} window {} lengths {} {}", dtype_name(dt), c.capacity, c.heads,
                     c.kv_heads, c.head_dim, c.window, fmt::join(c.lengths, ","), layout_name(c.layout));
}

Tensor lengths_tensor(const std::vector<int32_t>& lengths) {
  Tensor t = Tensor::empty({int64_t(lengths.size())}, DType::I32);
  std::copy(lengths.begin(), lengths.end(), t.data<int32_t>());
  return t;
}

void PrintTo(const DecodeCase& c, std::ostream* os) { *os << describe(c, DType::F32).substr(4); }

class AttentionDecodeGpu : public ::testing::TestWithParam<std::tuple<DType, DecodeCase>> {};

TEST_P(AttentionDecodeGpu, MatchesTheCpu) {
  require_gpu();
  const auto& [dt, c] = GetParam();
  const std::string what = describe(c, dt);
  Rng rng(uint64_t(5 + c.capacity + c.head_dim + c.window));
  const int64_t batch = int64_t(c.lengths.size()), qw = c.heads * c.head_dim, kw = c.kv_heads * c.head_dim;
  const Tensor q = rounded(random_cpu({batch, qw}, rng, -2, 2), dt);
  const Tensor k_cache = rounded(random_cpu({batch, c.capacity, kw}, rng, -2, 2), dt);
  const Tensor v_cache = rounded(random_cpu({batch, c.capacity, kw}, rng), dt);
  const Tensor lengths = lengths_tensor(c.lengths);
  const ops::AttentionParams params{c.heads, c.kv_heads, 0.0f, c.window};
  Tensor want = Tensor::empty({batch, qw});
  ops::attention_decode(q, k_cache, v_cache, lengths, params, want);

  Tensor o = place(nan_cpu({batch, qw}), dt, c.layout);
  ops::attention_decode(place(q, dt, c.layout), place(k_cache, dt, c.layout), place(v_cache, dt, c.layout),
                        lengths.to_device(Device::CUDA), params, o);
  EXPECT_LT(relative_error(to_cpu(o), want), tolerance(dt)) << what;
}

const std::vector<DecodeCase> kDecodeCases = {
    {700, 8, 2, 64, 0, {700, 257, 1}, Layout::Contiguous},         // uneven lengths
    {16384, 16, 16, 128, 0, {16384, 5000}, Layout::Aligned},       // long context, split across blocks
    {300, 4, 1, 80, 64, {300, 64, 1, 150}, Layout::Unaligned},     // window over a linear cache, MQA
    {64, 6, 2, 128, 64, {64, 20, 64}, Layout::Contiguous},         // ring buffer of the window's rows
    {8, 4, 4, 64, 8, {8, 3}, Layout::Aligned},                     // small ring buffer
    {50, 4, 4, 20, 5, {50, 7, 2}, Layout::Contiguous},             // d 20: element loads
    {2000, 32, 4, 128, 0, {1999, 2000, 33, 1}, Layout::Contiguous},  // GQA group of 8
    {100, 2, 2, 256, 0, {100, 51}, Layout::Unaligned},             // d 256
};

INSTANTIATE_TEST_SUITE_P(Cases, AttentionDecodeGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16), ::testing::ValuesIn(kDecodeCases)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(info.index % kDecodeCases.size());
                         });

// Decoding T tokens one at a time on the GPU gives the GPU forward's rows (the same contract as the
// CPU's, checked here without the CPU in between).
TEST(AttentionDecodeGpuSteps, MatchTheForward) {
  require_gpu();
  for (const DType dt : {DType::F32, DType::BF16}) {
    Rng rng(3);
    const int64_t batch = 2, T = 70, heads = 4, kv_heads = 2, hd = 64, window = 16;
    const Tensor q = to_gpu(random_cpu({batch, T, heads * hd}, rng, -2, 2), dt);
    const Tensor k = to_gpu(random_cpu({batch, T, kv_heads * hd}, rng, -2, 2), dt);
    const Tensor v = to_gpu(random_cpu({batch, T, kv_heads * hd}, rng), dt);
    const ops::AttentionParams params{heads, kv_heads, 0.0f, window};
    Tensor forward = nan_gpu({batch, T, heads * hd}, dt);
    ops::attention(q, k, v, params, forward);
    const Tensor want = to_cpu(forward);
    // A ring buffer of `window` rows.
    Tensor k_cache = nan_gpu({batch, window, kv_heads * hd}, dt), v_cache = nan_gpu({batch, window, kv_heads * hd}, dt);
    Tensor lengths = Tensor::empty({batch}, DType::I32);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t b = 0; b < batch; ++b) {
        k_cache.select(0, b).slice(0, t % window, 1).copy_from(k.select(0, b).slice(0, t, 1));
        v_cache.select(0, b).slice(0, t % window, 1).copy_from(v.select(0, b).slice(0, t, 1));
        lengths.data<int32_t>()[b] = int32_t(std::min(t + 1, window));
      }
      Tensor o = nan_gpu({batch, heads * hd}, dt);
      ops::attention_decode(q.select(1, t), k_cache, v_cache, lengths.to_device(Device::CUDA), params, o);
      // BF16: the two kernels round P differently (the forward to bf16 for the tensor cores).
      EXPECT_LT(relative_error(to_cpu(o), want.select(1, t).contiguous()), tolerance(dt))
          << dtype_name(dt) << " token " << t;
    }
  }
}

// The GPU cannot raise an error over lengths it does not read back: a length outside [1, C] makes
// that sequence's output NaN, and the others are unaffected.
TEST(AttentionDecodeGpuLengths, OutsideTheCacheGiveNaN) {
  require_gpu();
  Rng rng(4);
  const int64_t capacity = 8, hd = 16;
  const Tensor q = random_cpu({3, 2 * hd}, rng), cache = random_cpu({3, capacity, hd}, rng);
  const ops::AttentionParams params{2, 1};
  Tensor o = nan_gpu({3, 2 * hd});
  ops::attention_decode(to_gpu(q), to_gpu(cache), to_gpu(cache), lengths_tensor({5, 0, 9}).to_device(Device::CUDA),
                        params, o);
  const Tensor got = to_cpu(o);
  Tensor want = Tensor::empty({1, 2 * hd});
  ops::attention_decode(q.slice(0, 0, 1), cache.slice(0, 0, 1), cache.slice(0, 0, 1), lengths_tensor({5}), params,
                        want);
  EXPECT_LT(relative_error(got.slice(0, 0, 1).contiguous(), want), 1e-5);
  for (int64_t i = 2 * hd; i < 3 * 2 * hd; ++i) EXPECT_TRUE(std::isnan(got.data<float>()[i])) << "element " << i;
}

TEST(AttentionGpuBadInput, OneClearError) {
  require_gpu();
  const Tensor q = nan_gpu({2, 5, 24}), k = nan_gpu({2, 7, 12}), v = nan_gpu({2, 7, 12});
  Tensor o = nan_gpu({2, 5, 24});
  test::expect_error([&] { ops::attention(q, nan_gpu({2, 7, 12}, DType::BF16), v, {4, 2}, o); },
                     {"attention", "k must be F32 on the GPU", "BF16"});
  test::expect_error([&] { ops::attention(Tensor::zeros({2, 5, 24}), k, v, {4, 2}, o); },
                     {"attention", "q must be F32 or BF16 on the GPU"});
  Tensor o_cpu = Tensor::empty({2, 5, 24});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2}, o_cpu); }, {"attention", "q must be F32", "on the GPU"});
  const Tensor q16 = Tensor::zeros({2, 5, 24}, DType::F16, Device::CUDA);
  test::expect_error([&] { ops::attention(q16, k, v, {4, 2}, o); },
                     {"attention", "F32 or BF16 on the GPU", "F16"});
  Tensor lse_bad = nan_gpu({2, 5, 4});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2}, o, &lse_bad); }, {"attention", "lse", "[2, 4, 5]"});
  Tensor lse_cpu = Tensor::empty({2, 4, 5});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2}, o, &lse_cpu); }, {"attention", "lse", "on the GPU"});
  test::expect_error([&] { ops::attention(q, k, v, {3, 2}, o); }, {"attention", "n_heads 3", "n_kv_heads 2"});
  const Tensor wide_q = nan_gpu({1, 2, 600}), wide_kv = nan_gpu({1, 2, 300});
  Tensor wide_o = nan_gpu({1, 2, 600});
  test::expect_error([&] { ops::attention(wide_q, wide_kv, wide_kv, {2, 1}, wide_o); },
                     {"attention", "head_dim up to 256", "300"});

  const Tensor q1 = nan_gpu({2, 24}), cache = nan_gpu({2, 8, 12});
  Tensor o1 = nan_gpu({2, 24});
  const Tensor lengths = lengths_tensor({8, 8});
  test::expect_error([&] { ops::attention_decode(q1, cache, cache, lengths, {4, 2}, o1); },
                     {"attention_decode", "lengths must be I32 [2] on the GPU"});
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, nan_gpu({2, 9, 12}), lengths.to_device(Device::CUDA), {4, 2}, o1);
      },
      {"attention_decode", "v_cache must be", "[2, 9, 12]"});
}

}  // namespace
}  // namespace ssm
