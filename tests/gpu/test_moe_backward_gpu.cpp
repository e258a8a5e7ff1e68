// The MoE training ops on the GPU against the CPU ops: moe_scatter_add_backward (F32 and BF16 rows,
// with and without weights, over all dispatch rows and over one expert's, drows aliasing rows,
// strided rows, dy and drows, either gradient alone) and moe_route_backward (softmax and sigmoid
// routers, norm_topk_prob on and off, a routed scaling factor, group-limited routing with a selection
// bias, 1 to 256 experts, written and accumulated dlogits, strided logits, dweights and dlogits); two
// runs giving the same bits; and one training step of small MoE models on the GPU against the CPU's.
// Gradients start as NaN where the op writes them all, else from values the op must leave alone.
#include <string>

#include "gpu/gpu_test_util.h"
#include "gpu/gpu_training_step.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

constexpr DType kDtypes[] = {DType::F32, DType::BF16};

Tensor on_gpu(const Tensor& host) { return host.to_device(Device::CUDA); }  // any dtype, as it is

// A routing of M tokens over E experts (softmax top-k of random logits) and its plan, on the host.
struct Routed {
  Tensor indices;
  ops::MoePlan plan;
  Routed(int64_t M, int64_t k, int64_t E, Rng& rng) {
    ops::MoeRouterOptions options;
    options.top_k = k;
    indices = Tensor::empty({M, k}, DType::I32);
    Tensor weights = Tensor::empty({M, k});
    ops::moe_route(random_cpu({M, E}, rng, -3.0, 3.0), Tensor(), options, indices, weights);
    plan = ops::MoePlan::allocate(M, k, E);
    ops::moe_plan(indices, plan);
  }
  ops::MoePlan gpu_plan() const {
    return {on_gpu(plan.expert_offsets), on_gpu(plan.row_token), on_gpu(plan.row_slot), on_gpu(plan.slot_row)};
  }
  int64_t offset(int64_t e) const { return plan.expert_offsets.data<int32_t>()[e]; }
};

struct ScatterCase {
  int64_t M, k, E, D;
};

TEST(MoeBackwardGpu, ScatterAddBackwardMatchesTheCpu) {
  require_gpu();
  Rng rng(81);
  const ScatterCase cases[] = {{1, 1, 1, 1}, {7, 2, 4, 33}, {33, 3, 8, 1000}, {100, 8, 64, 17}, {20, 2, 3, 4097}};
  int variant = 0;
  for (DType dt : kDtypes) {
    for (const ScatterCase& c : cases) {
      const Routed routed(c.M, c.k, c.E, rng);
      const ops::MoePlan plan = routed.gpu_plan();
      // Every dispatch row at once, then the rows of one expert (a middle one).
      const int64_t e = c.E / 2;
      for (auto [first, n] : {std::pair{int64_t(0), c.M * c.k},
                              std::pair{routed.offset(e), routed.offset(e + 1) - routed.offset(e)}}) {
        ++variant;
        const bool all_rows = first == 0 && n == c.M * c.k;
        const bool with_weights = variant % 4 != 0, want_drows = variant % 5 != 1;
        const bool want_dweights = with_weights && variant % 5 != 2, alias = want_drows && variant % 3 == 0;
        const int64_t offset = variant % 2 == 0 ? 0 : 3;
        SCOPED_TRACE(::testing::Message()
                     << "moe_scatter_add_backward " << dtype_name(dt) << " M " << c.M << " k " << c.k << " E " << c.E
                     << " D " << c.D << ", rows [" << first << ", " << first + n << "), weights " << with_weights
                     << ", drows " << want_drows << " (aliasing rows " << alias << "), dweights " << want_dweights
                     << ", column offset " << offset);
        const Shape rows_shape{n, c.D}, dy_shape{c.M, c.D}, w_shape{c.M, c.k};
        const Tensor rows = rounded(random_cpu(rows_shape, rng), dt), dy = rounded(random_cpu(dy_shape, rng), dt);
        const Tensor weights = with_weights ? random_cpu(w_shape, rng) : Tensor();
        // dweights: NaN where the call writes every entry, else start values it must keep elsewhere.
        const Tensor dweights0 = all_rows ? Tensor() : random_cpu(w_shape, rng);
        Tensor cpu_drows = alias ? rows.clone() : Tensor::empty(rows_shape);
        Tensor cpu_dweights = all_rows ? Tensor::empty(w_shape) : dweights0.clone();
        ops::moe_scatter_add_backward(alias ? cpu_drows : rows, weights, routed.plan, first, dy,
                                      want_drows ? &cpu_drows : nullptr, want_dweights ? &cpu_dweights : nullptr);

        const StridedGpu gdy = gpu_rows(dy_shape, dt, offset, &dy);
        const Tensor gweights = with_weights ? to_gpu(weights) : Tensor();
        auto run = [&](StridedGpu& grows, StridedGpu& gdrows, Tensor& gdweights) {
          grows = gpu_rows(rows_shape, dt, offset, &rows);
          if (want_drows) gdrows = alias ? grows : gpu_rows(rows_shape, dt, offset);
          gdweights = all_rows ? nan_gpu(w_shape) : to_gpu(dweights0);
          ops::moe_scatter_add_backward(grows.view, gweights, plan, first, gdy.view,
                                        want_drows ? &gdrows.view : nullptr, want_dweights ? &gdweights : nullptr);
        };
        StridedGpu grows, gdrows, grows2, gdrows2;
        Tensor gdweights, gdweights2;
        run(grows, gdrows, gdweights);
        if (want_drows) {
          EXPECT_LT(relative_error(to_cpu(gdrows.view), cpu_drows), backward_tolerance(dt)) << "drows";
          EXPECT_TRUE(gdrows.padding_untouched()) << "drows written outside its columns";
        }
        if (want_dweights) {
          EXPECT_LT(relative_error(to_cpu(gdweights), cpu_dweights), backward_tolerance(dt)) << "dweights";
        }
        run(grows2, gdrows2, gdweights2);
        if (want_drows) {
          EXPECT_TRUE(same_bits(gdrows.view, gdrows2.view)) << "a second run gives other bits (drows)";
        }
        if (want_dweights) {
          EXPECT_TRUE(same_bits(gdweights, gdweights2)) << "a second run gives other bits (dweights)";
        }
      }
    }
  }
}

struct RouteCase {
  int64_t M, E, k;
  ops::MoeScoring scoring;
  bool norm;
  float scale;
  int64_t n_group = 1, topk_group = 1;
  bool correction_bias = false;
};

TEST(MoeBackwardGpu, RouteBackwardMatchesTheCpu) {
  using ops::MoeScoring;
  require_gpu();
  Rng rng(82);
  const RouteCase cases[] = {
      {1, 1, 1, MoeScoring::Softmax, false, 1.0f},
      {7, 8, 2, MoeScoring::Softmax, false, 1.0f},          // Jamba's router
      {33, 8, 2, MoeScoring::Softmax, true, 1.0f},
      {300, 64, 6, MoeScoring::Softmax, true, 2.5f},
      {5, 33, 3, MoeScoring::Softmax, false, 0.5f},         // experts not a multiple of the warp
      {33, 5, 2, MoeScoring::Sigmoid, false, 1.0f},
      {100, 16, 4, MoeScoring::Sigmoid, true, 1.5f, 4, 2, true},
      {64, 256, 8, MoeScoring::Sigmoid, true, 2.5f, 8, 4, true},  // DeepSeek-V3's router
      {9, 128, 8, MoeScoring::Softmax, true, 1.0f},
  };
  int variant = 0;
  for (const RouteCase& c : cases) {
    for (bool accumulate : {false, true}) {
      ++variant;
      const int64_t offset = variant % 2 == 0 ? 0 : 3;
      SCOPED_TRACE(::testing::Message()
                   << "moe_route_backward M " << c.M << " E " << c.E << " k " << c.k << " "
                   << (c.scoring == MoeScoring::Softmax ? "softmax" : "sigmoid") << " norm_topk_prob " << c.norm
                   << " scale " << c.scale << " groups " << c.topk_group << " of " << c.n_group << ", accumulate "
                   << accumulate << ", column offset " << offset);
      ops::MoeRouterOptions options;
      options.scoring = c.scoring;
      options.top_k = c.k;
      options.norm_topk_prob = c.norm;
      options.routed_scaling_factor = c.scale;
      options.n_group = c.n_group;
      options.topk_group = c.topk_group;
      const Shape logits_shape{c.M, c.E}, w_shape{c.M, c.k};
      const Tensor logits = random_cpu(logits_shape, rng, -3.0, 3.0);
      const Tensor bias = c.correction_bias ? random_cpu({c.E}, rng, -0.2, 0.2) : Tensor();
      Tensor indices = Tensor::empty(w_shape, DType::I32), weights = Tensor::empty(w_shape);
      ops::moe_route(logits, bias, options, indices, weights);
      const Tensor dweights = random_cpu(w_shape, rng), dlogits0 = random_cpu(logits_shape, rng);
      Tensor want = accumulate ? dlogits0.clone() : Tensor::empty(logits_shape);
      ops::moe_route_backward(logits, indices, options, dweights, want, accumulate);

      const StridedGpu glogits = gpu_rows(logits_shape, DType::F32, offset, &logits);
      const StridedGpu gdweights = gpu_rows(w_shape, DType::F32, offset, &dweights);
      const Tensor gindices = on_gpu(indices);
      auto run = [&](StridedGpu& gdlogits) {
        gdlogits = gpu_rows(logits_shape, DType::F32, offset, accumulate ? &dlogits0 : nullptr);
        ops::moe_route_backward(glogits.view, gindices, options, gdweights.view, gdlogits.view, accumulate);
      };
      StridedGpu got, again;
      run(got);
      EXPECT_LT(relative_error(to_cpu(got.view), want), backward_tolerance(DType::F32)) << "dlogits";
      if (accumulate) {
        EXPECT_LT(relative_error(difference(to_cpu(got.view), dlogits0), difference(want, dlogits0)),
                  backward_tolerance(DType::F32))
            << "dlogits, what the op added";
      }
      EXPECT_TRUE(got.padding_untouched()) << "dlogits written outside its columns";
      run(again);
      EXPECT_TRUE(same_bits(got.view, again.view)) << "a second run gives other bits";
    }
  }
}

TEST(MoeBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(83);
  const Routed routed(6, 2, 4, rng);
  const ops::MoePlan plan = routed.gpu_plan();
  const Tensor rows = to_gpu(random_cpu({12, 5}, rng)), dy = to_gpu(random_cpu({6, 5}, rng));
  const Tensor weights = to_gpu(random_cpu({6, 2}, rng));
  Tensor drows = nan_gpu({12, 5}), dweights = nan_gpu({6, 2});
  const char* scatter = "moe_scatter_add_backward";
  Tensor drows_bf16 = nan_gpu({12, 5}, DType::BF16);
  test::expect_error([&] { ops::moe_scatter_add_backward(rows, weights, plan, 0, dy, &drows_bf16, &dweights); },
                     {scatter, "drows must be F32 rows [12, 5] on the GPU"});
  test::expect_error([&] { ops::moe_scatter_add_backward(rows, Tensor(), plan, 0, dy, &drows, &dweights); },
                     {scatter, "dweights asked for without weights"});
  test::expect_error([&] { ops::moe_scatter_add_backward(rows, weights, plan, 1, dy, &drows, &dweights); },
                     {scatter, "dispatch rows [1, 13) are outside the plan's 12 rows"});
  test::expect_error([&] { ops::moe_scatter_add_backward(rows, weights, routed.plan, 0, dy, &drows, &dweights); },
                     {scatter, "every tensor must be on the GPU"});

  const char* route = "moe_route_backward";
  ops::MoeRouterOptions options;
  const Tensor logits = to_gpu(random_cpu({6, 4}, rng));
  Tensor dlogits = nan_gpu({6, 4});
  test::expect_error([&] { ops::moe_route_backward(logits, routed.indices, options, weights, dlogits, false); },
                     {route, "indices must be contiguous I32 [6, 2] on the GPU"});
  Tensor dlogits_bf16 = nan_gpu({6, 4}, DType::BF16);
  const Tensor gindices = on_gpu(routed.indices);
  test::expect_error([&] { ops::moe_route_backward(logits, gindices, options, weights, dlogits_bf16, false); },
                     {route, "dlogits must be F32 rows [6, 4] on the GPU"});
  ops::MoeRouterOptions too_many = options;
  too_many.top_k = 5;
  test::expect_error([&] { ops::moe_route_backward(logits, gindices, too_many, weights, dlogits, false); },
                     {route, "top_k 5 must be in [1, 4]"});
}

// The MoE training face on the GPU (routing on the host, the plan's offsets kept there): one step of
// models with a softmax router and with a sigmoid router (group-limited, normalised, scaled, with a
// selection bias and a shared expert) against the CPU.
const Json kSoftmaxMoe = {{"model_type", "ssm"},
                          {"vocab_size", 31},
                          {"hidden_size", 16},
                          {"layers", {"moe", "mlp", "moe"}},
                          {"mlp", {{"intermediate_size", 24}}},
                          {"moe", {{"num_experts", 6}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 12}}}};
const Json kSigmoidMoe = {
    {"model_type", "ssm"},
    {"vocab_size", 31},
    {"hidden_size", 16},
    {"tie_word_embeddings", false},
    {"layers", {"moe", "moe"}},
    {"moe",
     {{"num_experts", 8}, {"num_experts_per_tok", 3}, {"moe_intermediate_size", 10}, {"hidden_act", "relu2"},
      {"gated", false}, {"router", "sigmoid"}, {"n_group", 4}, {"topk_group", 2}, {"routed_scaling_factor", 1.5},
      {"shared_expert_intermediate_size", 7}}}};

TEST(MoeBackwardGpu, TrainingStepMatchesTheCpu) {
  require_gpu();
  for (const Json* config : {&kSoftmaxMoe, &kSigmoidMoe}) {
    SCOPED_TRACE(config->dump());
    expect_training_step_matches_cpu(*config, 2, 37, 1e-3);
  }
}

}  // namespace
}  // namespace ssm
