// The whole model's explicit backward (TrainingPass, float) against central differences in double of
// the model's loss built from the ops' double references, for Mamba-1 and Mamba-2 configs (tied and
// untied heads, biases, both gated-norm forms); the training forward's loss against the inference
// path; gradient accumulation; initialisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/random.h"
#include "model/language_model.h"
#include "nn/mamba1_mixer.h"
#include "nn/mamba2_mixer.h"
#include "ops/ref/conv1d.h"
#include "ops/ref/cross_entropy.h"
#include "ops/ref/gated_rmsnorm.h"
#include "ops/ref/linear.h"
#include "ops/ref/rmsnorm.h"
#include "ops/ref/selective_scan.h"
#include "ops/ref/ssd.h"
#include "train/init.h"
#include "train/model_backward.h"

namespace ssm {
namespace {

struct Problem {
  LanguageModel model;
  Tensor ids, targets;
  explicit Problem(const Json& config_json, uint64_t seed, int64_t batch = 2, int64_t T = 11)
      : model(ModelConfig::from_json(config_json, "test config")) {
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

using Vec = std::vector<double>;

// Columns [c0, c0 + width) of a row-major [rows, cols] matrix.
Vec cols(const Vec& m, int64_t rows, int64_t ncols, int64_t c0, int64_t width) {
  Vec out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) out[size_t(r * width + i)] = m[size_t(r * ncols + c0 + i)];
  return out;
}

// The model's loss in double precision, built from the ops' double references (ops/ref), with the
// parameters given by name.
double reference_loss(const ModelConfig& c, std::map<std::string, Vec>& P, const Tensor& ids, const Tensor& targets) {
  const int64_t Bt = ids.size(0), T = ids.size(1), M = Bt * T, D = c.d_model, V = c.vocab_size, Di = c.d_inner;
  const int64_t N = c.d_state, K = c.d_conv;
  auto get = [&](const std::string& name) -> const Vec& {
    static const Vec empty;
    auto it = P.find(name);
    return it == P.end() ? empty : it->second;
  };
  const Vec& emb = get("backbone.embeddings.weight");
  Vec h(static_cast<size_t>(M * D));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t d = 0; d < D; ++d) h[size_t(i * D + d)] = emb[size_t(ids.data<int32_t>()[i] * D + d)];
  for (int64_t layer = 0; layer < c.n_layers; ++layer) {
    const std::string pre = "backbone.layers." + std::to_string(layer);
    const std::string mx = pre + ".mixer.";
    const Vec normed = ref::rmsnorm(h, get(pre + ".norm.weight"), M, D, c.norm_eps);
    Vec out;
    if (c.mixer == MixerKind::Mamba1) {
      const int64_t R = c.dt_rank;
      const Vec xz = ref::linear(normed, get(mx + "in_proj.weight"), get(mx + "in_proj.bias"), M, 2 * Di, D);
      const Vec u = ref::conv1d_causal(cols(xz, M, 2 * Di, 0, Di), get(mx + "conv1d.weight"), get(mx + "conv1d.bias"),
                                       {}, true, Bt, T, Di, K)
                        .y;
      const Vec xdbl = ref::linear(u, get(mx + "x_proj.weight"), {}, M, R + 2 * N, Di);
      ref::SelectiveScanRefInputs in;
      in.u = u;
      in.delta = ref::linear(cols(xdbl, M, R + 2 * N, 0, R), get(mx + "dt_proj.weight"), {}, M, Di, R);
      in.delta_bias = get(mx + "dt_proj.bias");
      for (double a : get(mx + "A_log")) in.A.push_back(-std::exp(a));
      in.B = cols(xdbl, M, R + 2 * N, R, N);
      in.C = cols(xdbl, M, R + 2 * N, R + N, N);
      in.Dskip = get(mx + "D");
      in.z = cols(xz, M, 2 * Di, Di, Di);
      const Vec y = ref::selective_scan({Bt, T, Di, N}, in).y;
      out = ref::linear(y, get(mx + "out_proj.weight"), get(mx + "out_proj.bias"), M, D, Di);
    } else {
      const int64_t G = c.n_groups, H = c.n_heads, Cc = c.conv_channels(), W = c.in_proj_width();
      const Vec zx = ref::linear(normed, get(mx + "in_proj.weight"), get(mx + "in_proj.bias"), M, W, D);
      const Vec xbc = ref::conv1d_causal(cols(zx, M, W, Di, Cc), get(mx + "conv1d.weight"), get(mx + "conv1d.bias"), {},
                                         true, Bt, T, Cc, K)
                          .y;
      ref::SsdRefInputs in;
      in.x = cols(xbc, M, Cc, 0, Di);
      in.B = cols(xbc, M, Cc, Di, G * N);
      in.C = cols(xbc, M, Cc, Di + G * N, G * N);
      in.dt = cols(zx, M, W, Di + Cc, H);
      in.dt_bias = get(mx + "dt_bias");
      for (double a : get(mx + "A_log")) in.A.push_back(-std::exp(a));
      in.D = get(mx + "D");
      in.dt_min = c.dt_limit_min;
      in.dt_max = c.dt_limit_max;
      const Vec y = ref::ssd({Bt, T, H, c.head_dim, G, N}, in).y;
      const Vec gated = ref::gated_rmsnorm(y, cols(zx, M, W, 0, Di), get(mx + "norm.weight"), M, Di, Di / G,
                                           c.norm_before_gate, c.norm_eps);
      out = ref::linear(gated, get(mx + "out_proj.weight"), get(mx + "out_proj.bias"), M, D, Di);
    }
    for (size_t i = 0; i < h.size(); ++i) h[i] += out[i];
  }
  const Vec fin = ref::rmsnorm(h, get("backbone.norm_f.weight"), M, D, c.norm_eps);
  const Vec& head = c.tie_embeddings ? emb : get("lm_head.weight");
  std::vector<int32_t> tg(targets.data<int32_t>(), targets.data<int32_t>() + M);
  return ref::cross_entropy(fin, head, tg, M, D, V);
}

// Every parameter tensor's float gradient (TrainingPass) against central differences in double of
// the reference loss, on its largest-gradient elements and on random ones.
void check_gradients(const Json& config_json, int64_t scan_chunk) {
  Problem p(config_json, 7);
  TrainPassOptions opt;
  opt.scan_chunk = scan_chunk;
  opt.vocab_chunk = 7;  // several vocabulary chunks
  TrainingPass pass(p.model, opt);
  ModelGrads grads(p.model);
  const double loss = pass.forward_backward(p.ids, p.targets, grads, 1.0f);
  EXPECT_NEAR(loss, pass.loss(p.ids, p.targets), 2e-5 * loss) << "training forward vs inference forward";

  std::map<std::string, Vec> P;
  for (const ParamRef& ref : grads.params()) {
    const float* w = ref.tensor->data<float>();
    P[ref.name] = Vec(w, w + ref.tensor->numel());
  }
  const ModelConfig& config = p.model.config();
  EXPECT_NEAR(loss, reference_loss(config, P, p.ids, p.targets), 1e-5 * loss) << "float vs double forward";

  Rng rng(99);
  const double eps = 1e-6;
  for (const ParamRef& ref : grads.params()) {
    const Tensor& g = grads.of(*ref.tensor);
    const int64_t n = g.numel();
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return std::abs(g.data<float>()[a]) > std::abs(g.data<float>()[b]); });
    std::vector<int64_t> picks(order.begin(), order.begin() + std::min<int64_t>(n, 6));
    for (int k = 0; k < 6 && n > 6; ++k) picks.push_back(int64_t(rng.below(uint64_t(n))));
    Vec& w = P[ref.name];
    double max_err = 0, scale = std::abs(g.data<float>()[order[0]]);
    for (int64_t i : picks) {
      const double saved = w[size_t(i)];
      w[size_t(i)] = saved + eps;
      const double up = reference_loss(config, P, p.ids, p.targets);
      w[size_t(i)] = saved - eps;
      const double down = reference_loss(config, P, p.ids, p.targets);
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

TEST(TrainModelBackward, Mamba1MatchesFiniteDifferences) { check_gradients(kMamba1, 4); }
TEST(TrainModelBackward, Mamba1UntiedWithBiasesMatchesFiniteDifferences) { check_gradients(kMamba1Untied, 64); }
TEST(TrainModelBackward, Mamba2MatchesFiniteDifferences) { check_gradients(kMamba2, 64); }
TEST(TrainModelBackward, Mamba2GateFirstUntiedMatchesFiniteDifferences) { check_gradients(kMamba2Gate, 64); }

TEST(TrainModelBackward, GradScaleAndAccumulation) {
  Problem p(kMamba1, 3);
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

TEST(TrainInit, FollowsMambaSsm) {
  LanguageModel m(ModelConfig::from_json(kMamba1, "test"));
  init_parameters(m, 5);
  const auto& mixer = dynamic_cast<const Mamba1Mixer&>(*m.blocks()[0].mixer);
  // S4D-real A_log = log(1..N) per channel; D = 1; dt_proj.bias = softplus⁻¹(dt) with dt in [1e-3, 0.1].
  for (int64_t d = 0; d < mixer.d_inner; ++d)
    for (int64_t n = 0; n < mixer.d_state; ++n)
      EXPECT_FLOAT_EQ(mixer.A_log.data<float>()[d * mixer.d_state + n], std::log(float(n + 1)));
  for (int64_t d = 0; d < mixer.d_inner; ++d) {
    EXPECT_EQ(mixer.D.data<float>()[d], 1.0f);
    const double dt = std::log1p(std::exp(double(mixer.dt_proj.bias.data<float>()[d])));
    EXPECT_GE(dt, 1e-3 * 0.999);
    EXPECT_LE(dt, 0.1 * 1.001);
  }
  // out_proj rescaled by 1/sqrt(n_layers): bound 1/sqrt(d_inner)/sqrt(2).
  const double bound = 1.0 / std::sqrt(double(mixer.d_inner)) / std::sqrt(2.0);
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
  const auto& mixer2 = dynamic_cast<const Mamba2Mixer&>(*m3.blocks()[0].mixer);
  for (int64_t h = 0; h < mixer2.n_heads; ++h) {
    const float a = std::exp(mixer2.A_log.data<float>()[h]);
    EXPECT_GE(a, 1.0f);
    EXPECT_LE(a, 16.0f);
  }
}

}  // namespace
}  // namespace ssm
