// ops::attention_backward and ops::rope_backward on the GPU against the CPU backward ops on the same
// inputs (rounded through the activation dtype), F32 and BF16:
//   attention: T and S odd and not multiples of the 64-row tiles, batch > 1, keys before the queries
//     (S > T, whose keys get gradients too), MHA / GQA / MQA, causal and sliding windows (keys of the
//     prefix no query sees get 0), head dims in one to four 64-channel slices (20, 32, 64, 80, 128,
//     192, 256), an explicit scale, every tensor as a column slice of wider rows (misaligned or not);
//     gradients poisoned with NaN (and the columns beside them must stay NaN); a second run gives the
//     same bits; the lse and o of the GPU forward feed the GPU backward; no queries; bad input.
//   rope: positions up to 1e5, partial rotary, several thetas and heads, strided rows, one token per
//     sequence; the backward undoes the forward.
#include <fmt/format.h>

#include <string>
#include <tuple>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

// ---- attention ----

struct BackwardCase {
  int64_t batch, T, S, heads, kv_heads, head_dim, window;
  float scale;     // 0: 1 / sqrt(head_dim)
  int64_t offset;  // column offset of every tensor in its wider rows (0: contiguous)
};

std::string describe(const BackwardCase& c, DType dt) {
  return fmt::format("{} B {} T {} S {} heads {}/{} d {} window {} scale {} column offset {}", dtype_name(dt), c.batch,
                     c.T, c.S, c.heads, c.kv_heads, c.head_dim, c.window, c.scale, c.offset);
}

void PrintTo(const BackwardCase& c, std::ostream* os) { *os << describe(c, DType::F32).substr(4); }

// One problem: inputs rounded through the activation dtype, the CPU forward's o (rounded too: what a
// forward in that dtype leaves) and lse, and the CPU backward's gradients from them.
struct Problem {
  Tensor q, k, v, o, lse, dout;
  Tensor dq, dk, dv;  // the CPU's
  ops::AttentionParams params;
};

Problem make_problem(const BackwardCase& c, DType dt, uint64_t seed) {
  Rng rng(seed);
  Problem p;
  const int64_t qw = c.heads * c.head_dim, kw = c.kv_heads * c.head_dim;
  p.params = {c.heads, c.kv_heads, c.scale, c.window};
  p.q = rounded(random_cpu({c.batch, c.T, qw}, rng, -2, 2), dt);
  p.k = rounded(random_cpu({c.batch, c.S, kw}, rng, -2, 2), dt);
  p.v = rounded(random_cpu({c.batch, c.S, kw}, rng), dt);
  p.dout = rounded(random_cpu({c.batch, c.T, qw}, rng), dt);
  Tensor o = Tensor::empty({c.batch, c.T, qw});
  p.lse = Tensor::empty({c.batch, c.heads, c.T});
  ops::attention(p.q, p.k, p.v, p.params, o, &p.lse);
  p.o = rounded(o, dt);
  p.dq = Tensor::empty(p.q.shape());
  p.dk = Tensor::empty(p.k.shape());
  p.dv = Tensor::empty(p.k.shape());
  ops::attention_backward(p.q, p.k, p.v, p.o, p.lse, p.dout, p.params, p.dq, p.dk, p.dv);
  return p;
}

// The GPU gradients of one run, each a NaN-poisoned (strided) tensor.
struct GpuGrads {
  StridedGpu dq, dk, dv;
};

GpuGrads run_gpu(const Problem& p, DType dt, int64_t offset) {
  const StridedGpu q = gpu_rows(p.q.shape(), dt, offset, &p.q), k = gpu_rows(p.k.shape(), dt, offset, &p.k);
  const StridedGpu v = gpu_rows(p.v.shape(), dt, offset, &p.v), o = gpu_rows(p.o.shape(), dt, offset, &p.o);
  const StridedGpu dout = gpu_rows(p.dout.shape(), dt, offset, &p.dout);
  GpuGrads g{gpu_rows(p.q.shape(), dt, offset), gpu_rows(p.k.shape(), dt, offset), gpu_rows(p.k.shape(), dt, offset)};
  ops::attention_backward(q.view, k.view, v.view, o.view, to_gpu(p.lse), dout.view, p.params, g.dq.view, g.dk.view,
                          g.dv.view);
  return g;
}

class AttentionBackwardGpu : public ::testing::TestWithParam<std::tuple<DType, BackwardCase>> {};

TEST_P(AttentionBackwardGpu, MatchesTheCpu) {
  require_gpu();
  const auto& [dt, c] = GetParam();
  const std::string what = describe(c, dt);
  const Problem p = make_problem(c, dt, uint64_t(21 + c.T * 7 + c.S + c.head_dim + c.window));
  const GpuGrads g = run_gpu(p, dt, c.offset);
  EXPECT_LT(relative_error(to_cpu(g.dq.view), p.dq), backward_tolerance(dt)) << "dq, " << what;
  EXPECT_LT(relative_error(to_cpu(g.dk.view), p.dk), backward_tolerance(dt)) << "dk, " << what;
  EXPECT_LT(relative_error(to_cpu(g.dv.view), p.dv), backward_tolerance(dt)) << "dv, " << what;
  EXPECT_TRUE(g.dq.padding_untouched() && g.dk.padding_untouched() && g.dv.padding_untouched())
      << "written beside the gradients, " << what;
  const GpuGrads again = run_gpu(p, dt, c.offset);
  EXPECT_TRUE(same_bits(g.dq.view, again.dq.view) && same_bits(g.dk.view, again.dk.view) &&
              same_bits(g.dv.view, again.dv.view))
      << "a second run gives other bits, " << what;
}

const std::vector<BackwardCase> kBackwardCases = {
    {2, 65, 65, 4, 4, 64, 0, 0.0f, 0},        // MHA, one tile and a row
    {2, 200, 263, 8, 2, 128, 0, 0.0f, 8},     // GQA, keys before the queries, aligned slices
    {1, 333, 333, 4, 1, 80, 0, 0.0f, 3},      // MQA, d 80, misaligned slices
    {3, 7, 30, 6, 3, 64, 5, 0.0f, 0},         // window 5: the prefix's first keys are seen by no query
    {2, 1, 40, 4, 2, 128, 0, 0.0f, 3},        // one query over a prefix
    {1, 200, 200, 2, 1, 128, 2, 0.0f, 0},     // window 2
    {2, 1000, 1300, 4, 2, 64, 64, 0.0f, 8},   // window 64, long, a prefix
    {1, 65, 130, 3, 1, 80, 100, 0.0f, 3},     // window across tiles, d 80
    {2, 7, 7, 2, 2, 20, 0, 0.0f, 0},          // d 20: not a multiple of 8
    {1, 200, 250, 2, 2, 256, 5, 0.0f, 0},     // d 256: four slices
    {1, 129, 129, 3, 1, 192, 0, 0.0f, 3},     // d 192: three slices
    {2, 1000, 1000, 16, 16, 128, 0, 0.0f, 0}, // many heads, long
    {3, 200, 1000, 8, 1, 64, 0, 0.0f, 3},     // MQA, S ≫ T
    {2, 97, 97, 4, 2, 32, 0, 0.3f, 0},        // an explicit scale
};

INSTANTIATE_TEST_SUITE_P(Cases, AttentionBackwardGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::ValuesIn(kBackwardCases)),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" +
                                  std::to_string(info.index % kBackwardCases.size());
                         });

// The training pass as the mixer runs it: the GPU forward's o and lse into the GPU backward, against
// the CPU forward and backward (the lse layouts agree; BF16 o and lse differ from the CPU's by the
// forward's own rounding).
TEST(AttentionBackwardGpu, TakesTheGpuForwardsLse) {
  require_gpu();
  const BackwardCase cases[] = {{2, 150, 150, 4, 2, 64, 0, 0.0f, 0}, {1, 100, 180, 2, 1, 128, 48, 0.0f, 0}};
  for (const DType dt : {DType::F32, DType::BF16}) {
    for (const BackwardCase& c : cases) {
      const std::string what = describe(c, dt);
      const Problem p = make_problem(c, dt, 7);
      const Tensor q = to_gpu(p.q, dt), k = to_gpu(p.k, dt), v = to_gpu(p.v, dt), dout = to_gpu(p.dout, dt);
      Tensor o = nan_gpu(p.q.shape(), dt), lse = nan_gpu(p.lse.shape());
      ops::attention(q, k, v, p.params, o, &lse);
      Tensor dq = nan_gpu(p.q.shape(), dt), dk = nan_gpu(p.k.shape(), dt), dv = nan_gpu(p.k.shape(), dt);
      ops::attention_backward(q, k, v, o, lse, dout, p.params, dq, dk, dv);
      EXPECT_LT(relative_error(to_cpu(dq), p.dq), backward_tolerance(dt)) << "dq, " << what;
      EXPECT_LT(relative_error(to_cpu(dk), p.dk), backward_tolerance(dt)) << "dk, " << what;
      EXPECT_LT(relative_error(to_cpu(dv), p.dv), backward_tolerance(dt)) << "dv, " << what;
    }
  }
}

// T = 0 with a prefix of keys: no query sees them, dk and dv are 0 (as on the CPU).
TEST(AttentionBackwardGpu, NoQueriesGiveZeroKeyGradients) {
  require_gpu();
  for (const DType dt : {DType::F32, DType::BF16}) {
    Rng rng(8);
    const Tensor q = nan_gpu({2, 0, 64}, dt), k = to_gpu(random_cpu({2, 70, 32}, rng), dt);
    Tensor dq = nan_gpu({2, 0, 64}, dt), dk = nan_gpu({2, 70, 32}, dt), dv = nan_gpu({2, 70, 32}, dt);
    ops::attention_backward(q, k, k, q, nan_gpu({2, 4, 0}), q, {4, 2}, dq, dk, dv);
    const Tensor zeros = Tensor::zeros({2, 70, 32});
    EXPECT_TRUE(same_bits(dk, zeros) && same_bits(dv, zeros)) << dtype_name(dt);
  }
}

TEST(AttentionBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  const char* op = "attention_backward";
  const Tensor q = nan_gpu({2, 5, 24}), k = nan_gpu({2, 7, 12}), lse = nan_gpu({2, 4, 5});
  Tensor dq = nan_gpu({2, 5, 24}), dk = nan_gpu({2, 7, 12}), dv = nan_gpu({2, 7, 12});
  const ops::AttentionParams params{4, 2};
  Tensor dq_bf16 = nan_gpu({2, 5, 24}, DType::BF16);
  test::expect_error([&] { ops::attention_backward(q, k, k, q, lse, q, params, dq_bf16, dk, dv); },
                     {op, "dq must be F32 on the GPU of q's shape [2, 5, 24]", "BF16"});
  Tensor dk_short = nan_gpu({2, 6, 12});
  test::expect_error([&] { ops::attention_backward(q, k, k, q, lse, q, params, dq, dk_short, dv); },
                     {op, "dk must be F32 on the GPU of k's shape [2, 7, 12]", "[2, 6, 12]"});
  test::expect_error([&] { ops::attention_backward(q, k, k, q, Tensor::empty({2, 4, 5}), q, params, dq, dk, dv); },
                     {op, "lse must be F32 contiguous [2, 4, 5] on the GPU"});
  test::expect_error([&] { ops::attention_backward(q, k, k, nan_gpu({2, 5, 24}, DType::BF16), lse, q, params, dq, dk,
                                                   dv); },
                     {op, "o must be F32 on the GPU"});
  test::expect_error([&] { ops::attention_backward(q, k, k, q, lse, q, {3, 2}, dq, dk, dv); },
                     {op, "n_heads 3", "n_kv_heads 2"});
  const Tensor wide_q = nan_gpu({1, 2, 600}), wide_kv = nan_gpu({1, 2, 300}), wide_lse = nan_gpu({1, 2, 2});
  Tensor wide_dq = nan_gpu({1, 2, 600}), wide_dk = nan_gpu({1, 2, 300}), wide_dv = nan_gpu({1, 2, 300});
  test::expect_error([&] { ops::attention_backward(wide_q, wide_kv, wide_kv, wide_q, wide_lse, wide_q, {2, 1}, wide_dq,
                                                   wide_dk, wide_dv); },
                     {op, "head_dim up to 256", "300"});
}

// ---- rope ----

const RopeCase kRopeCases[] = {
    {{2, 7, 4 * 16}, 16, 16, 10000.0f, 100000},     // full rotary, long positions
    {{3, 5, 6 * 64}, 64, 32, 10000.0f, 100000},     // partial rotary (factor 0.5)
    {{1, 33, 2 * 128}, 128, 128, 1e11f, 100000},    // Falcon-H1's large theta
    {{2, 9, 8 * 128}, 128, 64, 500000.0f, 4000},    // many heads, partial
    {{4, 3 * 80}, 80, 40, 500000.0f, 70000},        // one token per sequence
    {{2, 9, 1 * 6}, 6, 2, 10000.0f, 50},            // a single rotating pair
};

class RopeBackwardGpu : public ::testing::TestWithParam<DType> {};

TEST_P(RopeBackwardGpu, MatchesTheCpu) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(61);
  for (const RopeCase& c : kRopeCases) {
    for (int64_t offset : {0, 3, 8}) {
      SCOPED_TRACE(::testing::Message() << "rope_backward of " << shape_str(c.shape) << " " << dtype_name(dt)
                                        << ", head_dim " << c.head_dim << ", rotary_dim " << c.rotary_dim << ", theta "
                                        << c.theta << ", positions up to " << c.max_position << ", column offset "
                                        << offset);
      const Shape pos_shape(c.shape.begin(), c.shape.end() - 1);
      const Tensor positions = positions_tensor(pos_shape, rng, c.max_position);
      const Tensor dy = rounded(random_cpu(c.shape, rng, -2, 2), dt);
      Tensor want = dy.clone();
      ops::rope_backward(want, positions, {c.head_dim, c.rotary_dim, c.theta});

      StridedGpu got = gpu_rows(c.shape, dt, offset, &dy);
      ops::rope_backward(got.view, to_gpu(positions, DType::I32), {c.head_dim, c.rotary_dim, c.theta});
      EXPECT_LT(relative_error(to_cpu(got.view), want), backward_tolerance(dt));
      EXPECT_TRUE(got.padding_untouched());
    }
  }
}

// The backward is the inverse rotation: rope then rope_backward on the GPU gives x back.
TEST_P(RopeBackwardGpu, UndoesTheForward) {
  require_gpu();
  const DType dt = GetParam();
  Rng rng(62);
  for (const RopeCase& c : kRopeCases) {
    SCOPED_TRACE(::testing::Message() << "rope of " << shape_str(c.shape) << " " << dtype_name(dt));
    const Shape pos_shape(c.shape.begin(), c.shape.end() - 1);
    const Tensor positions = to_gpu(positions_tensor(pos_shape, rng, c.max_position), DType::I32);
    const Tensor x = rounded(random_cpu(c.shape, rng, -2, 2), dt);
    Tensor y = to_gpu(x, dt);
    ops::rope(y, positions, {c.head_dim, c.rotary_dim, c.theta});
    ops::rope_backward(y, positions, {c.head_dim, c.rotary_dim, c.theta});
    // BF16: the rotated values are rounded once in between.
    EXPECT_LT(relative_error(to_cpu(y), x), dt == DType::F32 ? 1e-5 : 2e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RopeBackwardGpu, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RopeBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(63);
  Tensor dx = to_gpu(random_cpu({2, 3, 32}, rng));
  test::expect_error([&] { ops::rope_backward(dx, positions_tensor({2, 3}, rng, 100), {16, 16, 10000.0f}); },
                     {"rope_backward", "GPU"});
  test::expect_error(
      [&] { ops::rope_backward(dx, to_gpu(positions_tensor({2, 3}, rng, 100), DType::I32), {16, 18, 10000.0f}); },
      {"rope_backward", "rotary_dim 18 must be even and in [2, head_dim 16]"});
}

}  // namespace
}  // namespace ssm
