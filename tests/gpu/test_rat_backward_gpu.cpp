// ops::rat_backward on the GPU against the CPU backward: F32 and BF16 activations, batch 2, odd T and
// T not a multiple of the chunk, chunks of one token and chunks longer than T, q/k groups shared by
// several heads, head sizes under one 32-channel slice, over several and the largest taken (512),
// several 32-query and 32-end tiles, a custom rope_theta and softmax_scale, inputs and gradients as
// column slices of wider rows (as the mixer passes its projection's columns), gradients not asked
// for, and two runs giving the same bits. Gradients start as NaN; dgate_bias starts from random values
// (it accumulates) and is compared in full and by what the op added. Then one training step of a
// small RAT model on the GPU against the CPU's.
#include <string>

#include "gpu/gpu_test_util.h"
#include "gpu/gpu_training_step.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

constexpr DType kDtypes[] = {DType::F32, DType::BF16};

struct RatCase {
  int64_t batch, T, heads, groups, head_dim, chunk;
  float theta = 10000.0f, scale = 0.0f;
};

// Which gradients a run asks for.
struct Wanted {
  bool dq = true, dk = true, dv = true, dg = true, dbias = true;
};

std::string describe_case(const RatCase& c, DType dt, const Wanted& w, int64_t offset) {
  return fmt::format(
      "rat_backward {} batch {} T {} n_heads {} n_groups {} head_dim {} chunk {} theta {} scale {}; grads dq {} dk {} "
      "dv {} dg {} dgate_bias {}; column offset {}",
      dtype_name(dt), c.batch, c.T, c.heads, c.groups, c.head_dim, c.chunk, c.theta, c.scale, w.dq, w.dk, w.dv, w.dg,
      w.dbias, offset);
}

// Inputs on the host (rounded through the activation dtype) and the CPU backward's gradients.
struct RatProblem {
  RatCase c;
  ops::RatInputs in;  // host
  Tensor dy, dbias0;
  ops::RatGrads want;

  RatProblem(const RatCase& cs, DType dt, const Wanted& w, Rng& rng) : c(cs) {
    const int64_t W = c.heads * c.head_dim, QW = c.groups * c.head_dim;
    const Shape qk{c.batch, c.T, QW}, vg{c.batch, c.T, W};
    in.q = rounded(random_cpu(qk, rng), dt);
    in.k = rounded(random_cpu(qk, rng), dt);
    in.v = rounded(random_cpu(vg, rng), dt);
    in.g = rounded(random_cpu(vg, rng, -2.0, 2.0), dt);
    in.gate_bias = random_cpu({W}, rng, 0.5, 1.5);
    in.n_heads = c.heads;
    in.n_groups = c.groups;
    in.chunk_size = c.chunk;
    in.rope_theta = c.theta;
    in.softmax_scale = c.scale;
    dy = rounded(random_cpu(vg, rng), dt);
    dbias0 = random_cpu({W}, rng);
    if (w.dq) want.dq = Tensor::empty(qk);
    if (w.dk) want.dk = Tensor::empty(qk);
    if (w.dv) want.dv = Tensor::empty(vg);
    if (w.dg) want.dg = Tensor::empty(vg);
    if (w.dbias) want.dgate_bias = dbias0.clone();
    ops::rat_backward(in, dy, want);
  }
};

// The GPU's inputs and gradients: column slices of NaN-padded wider rows for offset > 0.
struct RatGpuRun {
  StridedGpu q, k, v, g, dy, dq, dk, dv, dg;
  Tensor dgate_bias;

  RatGpuRun(const RatProblem& p, DType dt, const Wanted& w, int64_t offset) {
    const ops::RatInputs& in = p.in;
    q = gpu_rows(in.q.shape(), dt, offset, &in.q);
    k = gpu_rows(in.k.shape(), dt, offset + 1, &in.k);
    v = gpu_rows(in.v.shape(), dt, offset, &in.v);
    g = gpu_rows(in.g.shape(), dt, offset, &in.g);
    dy = gpu_rows(p.dy.shape(), dt, offset, &p.dy);
    if (w.dq) dq = gpu_rows(in.q.shape(), dt, offset);
    if (w.dk) dk = gpu_rows(in.k.shape(), dt, offset);
    if (w.dv) dv = gpu_rows(in.v.shape(), dt, offset + 1);
    if (w.dg) dg = gpu_rows(in.g.shape(), dt, offset);
    if (w.dbias) dgate_bias = to_gpu(p.dbias0);
    ops::RatInputs gin = in;
    gin.q = q.view;
    gin.k = k.view;
    gin.v = v.view;
    gin.g = g.view;
    gin.gate_bias = to_gpu(in.gate_bias);
    ops::RatGrads grads{dq.view, dk.view, dv.view, dg.view, dgate_bias};
    ops::rat_backward(gin, dy.view, grads);
  }
};

void expect_matches(const RatProblem& p, const RatGpuRun& run, DType dt) {
  const double tol = backward_tolerance(dt);
  const struct {
    const char* name;
    const Tensor& want;
    const StridedGpu& got;
  } grads[] = {{"dq", p.want.dq, run.dq}, {"dk", p.want.dk, run.dk}, {"dv", p.want.dv, run.dv},
               {"dg", p.want.dg, run.dg}};
  for (const auto& [name, want, got] : grads) {
    if (!want.defined()) continue;
    EXPECT_LT(relative_error(to_cpu(got.view), want), tol) << name;
    EXPECT_TRUE(got.padding_untouched()) << name << " written outside its columns";
  }
  if (p.want.dgate_bias.defined()) {
    const Tensor got = to_cpu(run.dgate_bias);
    EXPECT_LT(relative_error(got, p.want.dgate_bias), tol) << "dgate_bias";
    EXPECT_LT(relative_error(difference(got, p.dbias0), difference(p.want.dgate_bias, p.dbias0)), tol)
        << "dgate_bias, what the op added";
  }
}

void expect_same_bits(const RatGpuRun& a, const RatGpuRun& b) {
  for (auto [x, y] : {std::pair{&a.dq, &b.dq}, std::pair{&a.dk, &b.dk}, std::pair{&a.dv, &b.dv},
                      std::pair{&a.dg, &b.dg}}) {
    if (x->view.defined()) {
      EXPECT_TRUE(same_bits(x->view, y->view)) << "a second run gives other bits";
    }
  }
  if (a.dgate_bias.defined()) {
    EXPECT_TRUE(same_bits(a.dgate_bias, b.dgate_bias)) << "a second run gives other bits (dgate_bias)";
  }
}

void check_case(const RatCase& c, DType dt, const Wanted& w, int64_t offset, Rng& rng) {
  SCOPED_TRACE(describe_case(c, dt, w, offset));
  const RatProblem p(c, dt, w, rng);
  const RatGpuRun first(p, dt, w, offset);
  expect_matches(p, first, dt);
  const RatGpuRun second(p, dt, w, offset);
  expect_same_bits(first, second);
}

TEST(RatBackwardGpu, MatchesTheCpu) {
  require_gpu();
  Rng rng(71);
  const RatCase cases[] = {
      {1, 1, 1, 1, 2, 1},      // one token, no chunk end
      {2, 37, 4, 2, 8, 4},     // groups of two heads, a partial last chunk
      {2, 50, 2, 1, 6, 7},     // odd head size / 2, partial chunk
      {1, 150, 2, 2, 40, 2},   // 75 ends: three end tiles, five query tiles; two channel slices
      {2, 64, 3, 1, 64, 16},   // T a multiple of the chunk: the last end is seen by no query
      {2, 33, 2, 1, 4, 40},    // chunk longer than T: the gated recurrence alone
      {1, 70, 4, 4, 34, 1},    // chunks of one token: every earlier token is a chunk end
      {2, 45, 2, 1, 130, 5},   // five channel slices, the last partial; 65 channel pairs
      {1, 20, 2, 1, 512, 3},   // the largest head size taken
      {2, 29, 4, 2, 8, 3, 500.0f, 0.7f},  // rope_theta and softmax_scale given
  };
  int variant = 0;
  for (DType dt : kDtypes) {
    for (const RatCase& c : cases) {
      const int64_t offset = variant++ % 2 == 0 ? 0 : 8;
      check_case(c, dt, Wanted{}, offset, rng);
    }
  }
}

TEST(RatBackwardGpu, GradientsNotAskedForAreLeftAlone) {
  require_gpu();
  Rng rng(72);
  const RatCase c{2, 40, 4, 2, 8, 3};
  Wanted only_dq;
  only_dq.dk = only_dq.dv = only_dq.dg = only_dq.dbias = false;
  Wanted no_dq_dg;
  no_dq_dg.dq = no_dq_dg.dg = false;
  Wanted only_bias;
  only_bias.dq = only_bias.dk = only_bias.dv = only_bias.dg = false;
  Wanted only_dk;
  only_dk.dq = only_dk.dv = only_dk.dg = only_dk.dbias = false;
  for (DType dt : kDtypes)
    for (const Wanted& w : {only_dq, no_dq_dg, only_bias, only_dk}) check_case(c, dt, w, 3, rng);
}

// A mixer-sized call: batch 2, 1000 tokens (not a multiple of the chunk), 8 heads in 2 groups of 64.
TEST(RatBackwardGpu, LongSequenceMatchesTheCpu) {
  require_gpu();
  Rng rng(73);
  for (DType dt : kDtypes) check_case({2, 1000, 8, 2, 64, 16}, dt, Wanted{}, 8, rng);
}

TEST(RatBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(74);
  const char* op = "rat_backward";
  const Shape qk{2, 9, 8}, vg{2, 9, 16};
  ops::RatInputs in;
  in.q = to_gpu(random_cpu(qk, rng));
  in.k = to_gpu(random_cpu(qk, rng));
  in.v = to_gpu(random_cpu(vg, rng));
  in.g = to_gpu(random_cpu(vg, rng));
  in.gate_bias = to_gpu(random_cpu({16}, rng));
  in.n_heads = 2;
  in.n_groups = 1;
  in.chunk_size = 4;
  const Tensor dy = to_gpu(random_cpu(vg, rng));
  ops::RatGrads grads{nan_gpu(qk), nan_gpu(qk), nan_gpu(vg), nan_gpu(vg), to_gpu(random_cpu({16}, rng))};

  ops::RatGrads wrong_dtype = grads;
  wrong_dtype.dv = nan_gpu(vg, DType::BF16);
  test::expect_error([&] { ops::rat_backward(in, dy, wrong_dtype); }, {op, "dv must be F32 on the GPU rows"});
  ops::RatGrads bias_on_host = grads;
  bias_on_host.dgate_bias = random_cpu({16}, rng);
  test::expect_error([&] { ops::rat_backward(in, dy, bias_on_host); }, {op, "dgate_bias must be F32 [16] on the GPU"});
  test::expect_error([&] { ops::rat_backward(in, to_gpu(random_cpu(vg, rng), DType::BF16), grads); },
                     {op, "dy must be F32 on the GPU rows"});
  ops::RatInputs q_on_host = in;
  q_on_host.q = random_cpu(qk, rng);
  test::expect_error([&] { ops::rat_backward(q_on_host, dy, grads); }, {op, "q must be F32 on the GPU rows"});

  ops::RatInputs wide = in;  // one head of 1026 channels
  wide.n_heads = 1;
  wide.q = to_gpu(random_cpu({1, 3, 1026}, rng));
  wide.k = to_gpu(random_cpu({1, 3, 1026}, rng));
  wide.v = to_gpu(random_cpu({1, 3, 1026}, rng));
  wide.g = to_gpu(random_cpu({1, 3, 1026}, rng));
  wide.gate_bias = to_gpu(random_cpu({1026}, rng));
  ops::RatGrads wide_grads;
  wide_grads.dv = nan_gpu({1, 3, 1026});
  test::expect_error([&] { ops::rat_backward(wide, to_gpu(random_cpu({1, 3, 1026}, rng)), wide_grads); },
                     {op, "the GPU takes head sizes up to 512, got 1026"});
}

// RAT's training face on the GPU: one step of a plan of RAT layers (q/k groups, chunks of 4 over 37
// tokens: a partial last chunk) with an MLP, against the CPU.
const Json kRatModel = {{"model_type", "ssm"},
                        {"vocab_size", 31},
                        {"hidden_size", 16},
                        {"layers", {"rat+mlp", "rat"}},
                        {"rat", {{"num_heads", 4}, {"head_dim", 4}, {"qk_groups", 2}, {"chunk_size", 4}}},
                        {"mlp", {{"intermediate_size", 24}}}};

TEST(RatBackwardGpu, TrainingStepMatchesTheCpu) {
  require_gpu();
  expect_training_step_matches_cpu(kRatModel, 2, 37, 1e-3);
}

}  // namespace
}  // namespace ssm
