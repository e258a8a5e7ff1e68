// The whole model's explicit backward (TrainingPass, float) against central differences in double of
// the model's loss built from the mixers' double references (tests/model/model_reference.h), for
// Mamba-1 and Mamba-2 configs (tied and untied heads, biases, both gated-norm forms) and for the
// plan's own mechanics (multipliers, parallel mixers); the training forward's loss against the
// inference path; gradient accumulation; initialisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/random.h"
#include "model/language_model.h"
#include "model/model_reference.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "train/init.h"
#include "train/model_backward.h"

namespace ssm {
namespace {

struct Problem {
  LanguageModel model;
  Tensor ids, targets;
  Problem(const ModelConfig& config, uint64_t seed, int64_t batch = 2, int64_t T = 11) : model(config) {
    init_parameters(model, seed);
    Rng rng(seed + 100);
    // Move every parameter off its structured initial value (D = 1, norms = 1, zero biases...).
    for (ParamRef& p : model.params()) {
      float* d = p.tensor->data<float>();
      for (int64_t i = 0; i < p.tensor->numel(); ++i) d[i] += 0.05f * rng.normal();
    }
    const int64_t V = model.config().vocab_size;
    ids = Tensor::empty({batch, T}, DType::I32);
    targets = Tensor::empty({batch, T}, DType::I32);
    for (int64_t i = 0; i < ids.numel(); ++i) {
      ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(V)));
      targets.data<int32_t>()[i] = int32_t(rng.below(uint64_t(V)));
    }
    targets.data<int32_t>()[3] = -1;  // an ignored position
  }
};

using testing::Params;
using testing::Vec;

// Every parameter tensor's float gradient (TrainingPass) against central differences in double of
// the reference loss, on its largest-gradient elements and on random ones.
void check_gradients(const ModelConfig& config_in, int picks_per_kind = 6) {
  Problem p(config_in, 7);
  TrainPassOptions opt;
  opt.vocab_chunk = 7;  // several vocabulary chunks
  TrainingPass pass(p.model, opt);
  ModelGrads grads(p.model);
  const double loss = pass.forward_backward(p.ids, p.targets, grads, 1.0f);
  EXPECT_NEAR(loss, pass.loss(p.ids, p.targets), 2e-5 * loss) << "training forward vs inference forward";

  Params P;
  for (const ParamRef& ref : grads.params()) {
    const float* w = ref.tensor->data<float>();
    P[ref.name] = Vec(w, w + ref.tensor->numel());
  }
  const ModelConfig& config = p.model.config();
  EXPECT_NEAR(loss, testing::reference_loss(config, P, p.ids, p.targets), 1e-5 * loss) << "float vs double forward";

  Rng rng(99);
  const double eps = 1e-6;
  for (const ParamRef& ref : grads.params()) {
    const Tensor& g = grads.of(*ref.tensor);
    const int64_t n = g.numel();
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return std::abs(g.data<float>()[a]) > std::abs(g.data<float>()[b]); });
    std::vector<int64_t> picks(order.begin(), order.begin() + std::min<int64_t>(n, picks_per_kind));
    for (int k = 0; k < picks_per_kind && n > picks_per_kind; ++k) picks.push_back(int64_t(rng.below(uint64_t(n))));
    Vec& w = P[ref.name];
    double max_err = 0, scale = std::abs(g.data<float>()[order[0]]);
    for (int64_t i : picks) {
      const double saved = w[size_t(i)];
      w[size_t(i)] = saved + eps;
      const double up = testing::reference_loss(config, P, p.ids, p.targets);
      w[size_t(i)] = saved - eps;
      const double down = testing::reference_loss(config, P, p.ids, p.targets);
      w[size_t(i)] = saved;
      const double fd = (up - down) / (2 * eps);
      max_err = std::max(max_err, std::abs(fd - double(g.data<float>()[i])));
      scale = std::max(scale, std::abs(fd));
    }
    const double rel = max_err / std::max(scale, 1e-12);
    EXPECT_LT(rel, 1e-3) << ref.name << ": max |float grad - double FD| " << max_err << ", largest gradient " << scale;
    if (std::getenv("SSM_PRINT_GRAD_CHECK")) std::printf("%-45s scale %.3e rel %.2e\n", ref.name.c_str(), scale, rel);
  }
}

const Json kMamba1 = {{"model_type", "mamba"}, {"hidden_size", 16}, {"num_hidden_layers", 2}, {"vocab_size", 29},
                      {"state_size", 4},       {"expand", 2},       {"conv_kernel", 4}};
const Json kMamba1Untied = {{"model_type", "mamba"},  {"hidden_size", 12},
                            {"num_hidden_layers", 1}, {"vocab_size", 23},
                            {"state_size", 3},        {"expand", 3},
                            {"conv_kernel", 3},       {"use_bias", true},
                            {"time_step_rank", 2},    {"tie_word_embeddings", false}};
const Json kMamba2 = {{"model_type", "mamba2"}, {"hidden_size", 16}, {"num_hidden_layers", 2}, {"vocab_size", 29},
                      {"state_size", 6},        {"expand", 2},       {"head_dim", 8},          {"n_groups", 2},
                      {"conv_kernel", 4},       {"chunk_size", 4}};
const Json kMamba2Gate = {{"model_type", "mamba2"},
                          {"hidden_size", 12},
                          {"num_hidden_layers", 1},
                          {"vocab_size", 19},
                          {"state_size", 5},
                          {"expand", 2},
                          {"head_dim", 6},
                          {"n_groups", 1},
                          {"conv_kernel", 3},
                          {"chunk_size", 16},
                          {"norm_before_gate", true},
                          {"use_bias", true},
                          {"tie_word_embeddings", false}};

ModelConfig parse(const Json& json) { return ModelConfig::from_json(json, "test config"); }

TEST(TrainModelBackward, Mamba1MatchesFiniteDifferences) { check_gradients(parse(kMamba1)); }
TEST(TrainModelBackward, Mamba1UntiedWithBiasesMatchesFiniteDifferences) { check_gradients(parse(kMamba1Untied)); }
TEST(TrainModelBackward, Mamba2MatchesFiniteDifferences) { check_gradients(parse(kMamba2)); }
TEST(TrainModelBackward, Mamba2GateFirstUntiedMatchesFiniteDifferences) { check_gradients(parse(kMamba2Gate)); }

// mLSTM layers (gates soft-capped, chunks of 4 over 11 tokens) with an MLP, in the project's own plan.
TEST(TrainModelBackward, MlstmPlanMatchesFiniteDifferences) {
  const Json plan = {{"model_type", "ssm"},
                     {"vocab_size", 23},
                     {"hidden_size", 16},
                     {"tie_word_embeddings", false},
                     {"layers", {"mlstm+mlp", "mlstm"}},
                     {"mlstm", {{"num_heads", 2}, {"chunk_size", 4}, {"gate_soft_cap", 3.0}}},
                     {"mlp", {{"intermediate_size", 24}}}};
  check_gradients(parse(plan));
}

// xLSTM[a:b]: sLSTM layers (NX-AI's: conv into the i and f gates, or none; the recurrence through R)
// beside an mLSTM, with GELU feed-forwards.
TEST(TrainModelBackward, SlstmPlanMatchesFiniteDifferences) {
  for (int64_t conv : {3, 0}) {
    SCOPED_TRACE("conv " + std::to_string(conv));
    const Json plan = {{"model_type", "ssm"},
                       {"vocab_size", 19},
                       {"hidden_size", 12},
                       {"tie_word_embeddings", false},
                       {"layers", {"slstm+mlp", "mlstm", "slstm"}},
                       {"slstm", {{"num_heads", 2}, {"conv1d_kernel_size", conv}, {"recurrent_weight_init", "standard"}}},
                       {"mlstm", {{"num_heads", 2}, {"chunk_size", 4}, {"gate_soft_cap", 3.0}}},
                       {"mlp", {{"intermediate_size", 16}, {"hidden_act", "gelu"}}}};
    check_gradients(parse(plan));
  }
}

// Mamba-3 layers in the project's own plan: two B/C groups, partial rotation, and the A floor acting
// (A_floor 0.6 is above f(A) for A < −0.67); then the per-head output norm with full rotation, untied.
TEST(TrainModelBackward, Mamba3PlanMatchesFiniteDifferences) {
  Json plan = {{"model_type", "ssm"},
               {"vocab_size", 23},
               {"hidden_size", 16},
               {"layers", {"mamba3+mlp", "mamba3"}},
               {"mamba3", {{"d_state", 8}, {"headdim", 8}, {"ngroups", 2}, {"A_floor", 0.6}, {"chunk_size", 4}}},
               {"mlp", {{"intermediate_size", 24}}}};
  check_gradients(parse(plan));
  plan["tie_word_embeddings"] = false;
  plan["mamba3"] = {{"d_state", 6}, {"headdim", 4}, {"rope_fraction", 1.0}, {"is_outproj_norm", true}};
  check_gradients(parse(plan));
}

// MIMO Mamba-3: rank 2 with two B/C groups and the gate silu(z_r), chunks of 3; then rank 3 with the
// per-head output norm, full rotation, untied.
TEST(TrainModelBackward, Mamba3MimoPlanMatchesFiniteDifferences) {
  Json plan = {{"model_type", "ssm"},
               {"vocab_size", 23},
               {"hidden_size", 16},
               {"layers", {"mamba3+mlp", "mamba3"}},
               {"mamba3", {{"d_state", 8}, {"headdim", 8}, {"ngroups", 2}, {"is_mimo", true}, {"mimo_rank", 2},
                           {"chunk_size", 3}}},
               {"mlp", {{"intermediate_size", 24}}}};
  check_gradients(parse(plan));
  plan["tie_word_embeddings"] = false;
  plan["mamba3"] = {{"d_state", 6}, {"headdim", 4}, {"rope_fraction", 1.0}, {"is_outproj_norm", true},
                    {"is_mimo", true}, {"mimo_rank", 3}};
  check_gradients(parse(plan));
}

// The plan's own mechanics, as Falcon-H1 uses them: embedding and logit multipliers, two mixers side
// by side in one branch with input and output multipliers, per-part in_proj multipliers, Jamba's
// dt/B/C norms.
ModelConfig multipliers_and_parallel_mixers() {
  ModelConfig c = parse(kMamba2);
  const ModelConfig m1 = parse(kMamba1);
  c.embedding_scale = 1.7f;
  c.logit_scale = 0.6f;
  auto mamba1 = std::make_shared<Mamba1Settings>(dynamic_cast<const Mamba1Settings&>(*m1.branches[0].mixers[0].settings));
  mamba1->dt_bc_norms = true;
  c.branches[0].mixers.push_back({mamba1, "backbone.layers.0.side", 0.8f, 1.3f});
  c.branches[0].mixers[0].input_scale = 1.2f;
  c.branches[0].mixers[0].output_scale = 0.7f;
  auto scaled = std::make_shared<Mamba2Settings>(dynamic_cast<const Mamba2Settings&>(*c.branches[1].mixers[0].settings));
  scaled->in_proj_part_scales = {0.5f, 1.5f, 0.8f, 1.1f, 0.9f};
  c.branches[1].mixers[0].settings = scaled;
  return c;
}

TEST(TrainModelBackward, MultipliersAndParallelMixersMatchFiniteDifferences) {
  check_gradients(multipliers_and_parallel_mixers());
}

// Every kind of the registry in one plan of the project's own type: Mamba-1 and -2, attention with
// partial RoPE and GQA, sliding-window attention, gated and plain MLPs, a softmax MoE and a sigmoid MoE
// with group-limited routing, a selection bias, a shared expert and latent projections.
const Json kEveryKind = {
    {"model_type", "ssm"},
    {"vocab_size", 23},
    {"hidden_size", 16},
    {"tie_word_embeddings", false},
    {"layers", {"mamba2", "attention+mlp", "swa+moe", "mamba1+mlp"}},
    {"mamba2", {{"state_size", 4}, {"head_dim", 8}, {"n_groups", 2}, {"chunk_size", 4}}},
    {"mamba1", {{"state_size", 3}, {"expand", 1}}},
    {"attention", {{"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 6}, {"partial_rotary_factor", 0.67}}},
    {"swa", {{"num_attention_heads", 2}, {"head_dim", 8}, {"sliding_window", 3}, {"attention_bias", true}}},
    {"mlp", {{"intermediate_size", 20}, {"hidden_act", "gelu_pytorch_tanh"}}},
    {"moe",
     {{"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 6}, {"hidden_act", "relu2"},
      {"gated", false}, {"router", "sigmoid"}, {"n_group", 2}, {"topk_group", 1}, {"routed_scaling_factor", 1.5},
      {"shared_expert_intermediate_size", 5}}}};

TEST(TrainModelBackward, EveryMixerKindMatchesFiniteDifferences) { check_gradients(parse(kEveryKind)); }

// The hybrid checkpoints' own configs (their multipliers, norms and routers), as the fixtures hold them.
class HybridBackward : public ::testing::TestWithParam<std::string> {};

TEST_P(HybridBackward, MatchesFiniteDifferences) {
  const std::string path = std::string(SSM_TEST_DATA_DIR) + "/hf/" + GetParam() + "/config.json";
  Json config = read_json_file(path);
  config["vocab_size"] = 37;  // the head's size does not change what is checked
  check_gradients(ModelConfig::from_json(config, path), 2);
}

INSTANTIATE_TEST_SUITE_P(TrainModelBackward, HybridBackward,
                         ::testing::Values("bamba_groups", "jamba_tiny", "falcon_h1_tiny", "falcon_h1_nonorm",
                                           "nemotron_h_tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// RAT in a plan with sliding-window attention and MLPs; chunks of 4 over T = 11 (a partial last
// chunk). Then RAT alone with chunks of one token (the recurrence restarts at every token, every
// earlier token is a chunk end), a single q/k group and an untied head.
const Json kRatPlan = {{"model_type", "ssm"},
                       {"vocab_size", 23},
                       {"hidden_size", 16},
                       {"layers", {"rat+mlp", "swa+mlp", "rat"}},
                       {"rat", {{"num_heads", 4}, {"head_dim", 4}, {"qk_groups", 2}, {"chunk_size", 4}}},
                       {"swa", {{"num_attention_heads", 2}, {"head_dim", 8}, {"sliding_window", 5}}},
                       {"mlp", {{"intermediate_size", 24}}}};
const Json kRatChunkOfOne = {{"model_type", "ssm"},
                             {"vocab_size", 19},
                             {"hidden_size", 12},
                             {"tie_word_embeddings", false},
                             {"layers", {"rat", "rat"}},
                             {"rat", {{"num_heads", 3}, {"qk_groups", 1}, {"chunk_size", 1}, {"rope_theta", 500.0}}}};

TEST(TrainModelBackward, RatPlanMatchesFiniteDifferences) { check_gradients(parse(kRatPlan)); }
TEST(TrainModelBackward, RatChunkOfOneMatchesFiniteDifferences) { check_gradients(parse(kRatChunkOfOne)); }

TEST(TrainModelBackward, GradScaleAndAccumulation) {
  Problem p(parse(kMamba1), 3);
  TrainingPass pass(p.model);
  ModelGrads once(p.model), twice(p.model);
  pass.forward_backward(p.ids, p.targets, once, 1.0f);
  pass.forward_backward(p.ids, p.targets, twice, 0.5f);
  pass.forward_backward(p.ids, p.targets, twice, 0.5f);
  for (size_t k = 0; k < once.params().size(); ++k) {
    const Tensor& a = once.of(*once.params()[k].tensor);
    const Tensor& b = twice.of(*twice.params()[k].tensor);
    for (int64_t i = 0; i < a.numel(); ++i)
      EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-6 + 1e-5 * std::abs(a.data<float>()[i]));
  }
}

// --recompute keeps fewer activations and makes the cheap ones again in the backward with the same
// ops: the loss and every gradient are the same bits as when everything is kept (two steps each, the
// second on the planned workspace), in less workspace (the branches' normalised inputs are not kept;
// the second step's peak, on the planned workspace).
void check_recompute_is_exact(const ModelConfig& config) {
  Problem p(config, 5, 3, 37);
  TrainingPass kept(p.model), recomputed(p.model, {.recompute = true});
  for (int step = 0; step < 2; ++step) {
    ModelGrads a(p.model), b(p.model);
    const double loss_kept = kept.forward_backward(p.ids, p.targets, a, 0.75f);
    const double loss_recomputed = recomputed.forward_backward(p.ids, p.targets, b, 0.75f);
    EXPECT_EQ(std::memcmp(&loss_kept, &loss_recomputed, sizeof(double)), 0) << "step " << step;
    for (size_t k = 0; k < a.params().size(); ++k) {
      const Tensor& ga = a.of(*a.params()[k].tensor);
      const Tensor& gb = b.of(*b.params()[k].tensor);
      EXPECT_EQ(std::memcmp(ga.raw(), gb.raw(), ga.nbytes()), 0)
          << a.params()[k].name << " differs with --recompute (step " << step << ")";
    }
  }
  EXPECT_LT(recomputed.workspace().high_water(), kept.workspace().high_water()) << config.model_type;
}

TEST(TrainModelBackward, RecomputeGivesTheSameGradients) {
  check_recompute_is_exact(parse(kMamba2));
  Json gate_first = kMamba2Gate;
  gate_first["num_hidden_layers"] = 2;  // one layer would save nothing: its backward remakes what it dropped
  check_recompute_is_exact(parse(gate_first));
  check_recompute_is_exact(multipliers_and_parallel_mixers());
  check_recompute_is_exact(parse(kEveryKind));
  check_recompute_is_exact(parse(kMamba1));
  const std::string nonorm = std::string(SSM_TEST_DATA_DIR) + "/hf/falcon_h1_nonorm/config.json";
  Json falcon = read_json_file(nonorm);
  falcon["vocab_size"] = 37;
  check_recompute_is_exact(ModelConfig::from_json(falcon, nonorm));  // y · silu(z), no gated norm
}

TEST(TrainInit, FollowsMambaSsm) {
  LanguageModel m(ModelConfig::from_json(kMamba1, "test"));
  init_parameters(m, 5);
  const auto& mixer = dynamic_cast<const Mamba1Mixer&>(*m.branches()[0].mixers[0].mixer);
  // S4D-real A_log = log(1..N) per channel; D = 1; dt_proj.bias = softplus⁻¹(dt) with dt in [1e-3, 0.1].
  const int64_t d_inner = mixer.s.d_inner, d_state = mixer.s.d_state;
  for (int64_t d = 0; d < d_inner; ++d)
    for (int64_t n = 0; n < d_state; ++n)
      EXPECT_FLOAT_EQ(mixer.A_log.data<float>()[d * d_state + n], std::log(float(n + 1)));
  for (int64_t d = 0; d < d_inner; ++d) {
    EXPECT_EQ(mixer.D.data<float>()[d], 1.0f);
    const double dt = std::log1p(std::exp(double(mixer.dt_proj.bias.data<float>()[d])));
    EXPECT_GE(dt, 1e-3 * 0.999);
    EXPECT_LE(dt, 0.1 * 1.001);
  }
  // out_proj rescaled by 1/sqrt(n_layers): bound 1/sqrt(d_inner)/sqrt(2).
  const double bound = 1.0 / std::sqrt(double(d_inner)) / std::sqrt(2.0);
  float mx = 0;
  for (int64_t i = 0; i < mixer.out_proj.weight.numel(); ++i)
    mx = std::max(mx, std::abs(mixer.out_proj.weight.data<float>()[i]));
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.8 * bound);
  // Same seed, same parameters.
  LanguageModel m2(ModelConfig::from_json(kMamba1, "test"));
  init_parameters(m2, 5);
  const Tensor& e1 = m.embedding();
  const Tensor& e2 = m2.embedding();
  EXPECT_EQ(0, std::memcmp(e1.raw(), e2.raw(), e1.nbytes()));

  LanguageModel m3(ModelConfig::from_json(kMamba2, "test"));
  init_parameters(m3, 5);
  const auto& mixer2 = dynamic_cast<const Mamba2Mixer&>(*m3.branches()[0].mixers[0].mixer);
  for (int64_t h = 0; h < mixer2.s.n_heads; ++h) {
    const float a = std::exp(mixer2.A_log.data<float>()[h]);
    EXPECT_GE(a, 1.0f);
    EXPECT_LE(a, 16.0f);
  }
}

}  // namespace
}  // namespace ssm
