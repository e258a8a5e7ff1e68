// The project's own model type: any layer plan from a config, and one clear error for each way a
// plan can be wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/json.h"
#include "core/random.h"
#include "infer/generator.h"
#include "model/config.h"
#include "model/language_model.h"
#include "train/init.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

Json plan(const Json& layers) {
  return {{"model_type", "ssm"},
          {"vocab_size", 50},
          {"hidden_size", 32},
          {"layers", layers},
          {"mamba2", {{"state_size", 8}, {"head_dim", 16}}},
          {"mamba3", {{"d_state", 8}, {"headdim", 16}, {"ngroups", 2}}},
          {"attention", {{"num_attention_heads", 4}}},
          {"swa", {{"num_attention_heads", 4}, {"sliding_window", 8}}},
          {"mlp", {{"intermediate_size", 64}}}};
}

std::string error_of(const Json& config) {
  try {
    ModelConfig::from_json(config, "plan.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LayerPlan, ReadsAnyPattern) {
  const ModelConfig c = ModelConfig::from_json(plan({"mamba2", "attention+mlp", "swa+mlp", "mlp"}), "plan.json");
  EXPECT_EQ(c.n_layers, 4);
  EXPECT_EQ(c.branches.size(), 6u);
  EXPECT_EQ(c.layer_pattern(), "mamba2 | attention mlp | swa mlp | mlp");
  EXPECT_EQ(c.branches[1].norm, "model.layers.1.norm.weight");
  EXPECT_EQ(c.branches[2].mixers[0].prefix, "model.layers.1.channel_mixer");
  EXPECT_TRUE(c.tie_embeddings());
  // Layers of one kind share one settings object; the model builds and counts its parameters.
  EXPECT_EQ(c.branches[2].mixers[0].settings, c.branches[4].mixers[0].settings);
  EXPECT_GT(LanguageModel(c).parameter_count(), 50 * 32);
}

TEST(LayerPlan, OneClearErrorPerMistake) {
  EXPECT_NE(error_of(plan({"mamba2", "mamba4"})).find("unknown layer kind 'mamba4'"), std::string::npos);
  EXPECT_NE(error_of(plan({"mlp+mamba2"})).find("a sequence mixer followed by a channel mixer"), std::string::npos);
  EXPECT_NE(error_of(plan({"mamba2+attention"})).find("a sequence mixer followed by a channel mixer"),
            std::string::npos);
  EXPECT_NE(error_of(plan(Json::array())).find("'layers' must be a non-empty list"), std::string::npos);
  Json bad_section = plan({"attention"});
  bad_section["attention"]["num_heads"] = 4;
  EXPECT_NE(error_of(bad_section).find("unknown config key 'num_heads'"), std::string::npos);
  Json heads = plan({"attention"});
  heads["attention"]["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(heads).find("must be a multiple of the key/value heads"), std::string::npos);
  Json no_window = plan({"swa"});
  no_window["swa"].erase("sliding_window");
  EXPECT_NE(error_of(no_window).find("needs sliding_window > 0"), std::string::npos);
  Json mamba = plan({"mamba2"});
  mamba["mamba2"]["n_groups"] = 3;
  EXPECT_NE(error_of(mamba).find("multiple of n_groups"), std::string::npos);
  Json mamba3 = plan({"mamba3"});
  mamba3["mamba3"]["ngroups"] = 3;
  EXPECT_NE(error_of(mamba3).find("multiple of ngroups"), std::string::npos);
  mamba3["mamba3"]["ngroups"] = 1;
  mamba3["mamba3"]["is_mimo"] = true;
  mamba3["mamba3"]["mimo_rank"] = 0;
  EXPECT_NE(error_of(mamba3).find("mimo_rank"), std::string::npos);
  mamba3["mamba3"]["mimo_rank"] = 2;
  mamba3["mamba3"]["d_state"] = 7;  // MIMO turns the pairs (j, j + N/2)
  EXPECT_NE(error_of(mamba3).find("must be even"), std::string::npos);
  mamba3["mamba3"]["d_state"] = 8;
  Json typo = mamba3;
  typo["mamba3"]["mimo_ranks"] = 2;
  EXPECT_NE(error_of(typo).find("mimo_ranks"), std::string::npos);
  mamba3["mamba3"]["is_mimo"] = false;
  mamba3["mamba3"]["rope_fraction"] = 0.25;
  EXPECT_NE(error_of(mamba3).find("rope_fraction must be 0.5 or 1"), std::string::npos);
}

// Found while writing the config fuzz target: a layer count of 10^12 built a plan per layer until memory
// ran out, and sizes near 2^63 overflowed in products (pad_vocab_size_multiple rounding, expand × d_model).
TEST(LayerPlan, SizesAndLayerCountsAreBounded) {
  for (const char* name : {"mamba_tiny", "mamba2_tiny", "bamba_tiny", "jamba_tiny", "falcon_h1_tiny", "xlstm_tiny"}) {
    const Json config = read_json_file(fixture_dir(name) + "/config.json");
    const char* layers_key = config.contains("num_blocks") ? "num_blocks" : "num_hidden_layers";
    Json many_layers = config;
    many_layers[layers_key] = int64_t(1e12);
    if (config.contains("num_hidden_layers")) many_layers["num_hidden_layers"] = int64_t(1e12);
    EXPECT_NE(error_of(many_layers).find("beyond any real model"), std::string::npos) << name;
    Json wide = config;
    wide["hidden_size"] = int64_t(1) << 62;
    if (config.contains("embedding_dim")) wide["embedding_dim"] = int64_t(1) << 62;
    EXPECT_NE(error_of(wide).find("beyond any real model"), std::string::npos) << name;
  }
  const Json state_spaces = {{"d_model", 64}, {"n_layer", 2}, {"vocab_size", INT64_MAX}};
  EXPECT_NE(error_of(state_spaces).find("beyond any real model"), std::string::npos);
}

double relative_error(const Tensor& got, const Tensor& want) {
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
    ref = std::max(ref, double(std::fabs(want.data<float>()[i])));
  }
  return diff / ref;
}

// A model of every cached kind (a sliding window shorter than the prompt, so its ring buffer wraps):
// prefill in pieces and token-by-token steps give the parallel forward's logits.
// Mamba-3 SISO, then MIMO of rank 3 with the output norm.
TEST(LayerPlan, CachesContinueExactlyWhereTheForwardIs) {
  for (bool mimo : {false, true}) {
    SCOPED_TRACE(mimo ? "MIMO" : "SISO");
    Json config = plan({"mamba2+mlp", "attention+mlp", "swa+mlp", "swa", "mamba3"});
    config["swa"]["sliding_window"] = 5;
    config["attention"]["partial_rotary_factor"] = 0.5;
    if (mimo) {
      config["mamba3"]["is_mimo"] = true;
      config["mamba3"]["mimo_rank"] = 3;
      config["mamba3"]["is_outproj_norm"] = true;
      config["mamba3"]["chunk_size"] = 4;
    }
    LanguageModel model(ModelConfig::from_json(config, "plan.json"));
    init_parameters(model, 11);
    const int64_t batch = 2, length = 23;
    Tensor ids = Tensor::empty({batch, length}, DType::I32);
    Rng rng(5);
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.below(50));
    const Tensor full = model.forward(ids, nullptr, true);

    ModelState state = model.new_state(batch);
    int64_t done = 0;
    for (int64_t piece : {3, 1, 7}) {
      const Tensor logits = model.forward(ids.slice(1, done, piece).contiguous(), &state, false);
      done += piece;
      EXPECT_LT(relative_error(logits, full.select(1, done - 1).contiguous()), 1e-5) << "after " << done;
    }
    for (; done < length; ++done) {
      const Tensor logits = model.step(ids.select(1, done).contiguous(), state);
      EXPECT_LT(relative_error(logits, full.select(1, done).contiguous()), 1e-5) << "position " << done;
    }
  }
}

// mamba_ssm's MIMO at rank 1 is SISO but for its rotation pairs (j, j + N/2) instead of (2j, 2j + 1) and
// the x/z/y projections: with those at one and the state channels of B and C reordered (in_proj's
// rows, the biases, the B/C norm weights), a rank-1 MIMO model gives the SISO model's logits.
TEST(LayerPlan, Mamba3MimoOfRankOneIsSisoWithReorderedChannels) {
  Json config = plan({"mamba3", "mamba3"});
  config["mamba3"] = {{"d_state", 8}, {"headdim", 8}, {"ngroups", 2}, {"chunk_size", 4}};
  LanguageModel siso(ModelConfig::from_json(config, "plan.json"));
  config["mamba3"]["is_mimo"] = true;
  config["mamba3"]["mimo_rank"] = 1;
  LanguageModel mimo(ModelConfig::from_json(config, "plan.json"));
  init_parameters(siso, 4);
  init_parameters(mimo, 4);
  const int64_t N = 8, G = 2, Di = 64;
  // MIMO channel c holds SISO channel 2c (c < N/2) or 2(c − N/2) + 1.
  const auto siso_channel = [&](int64_t c) { return c < N / 2 ? 2 * c : 2 * (c - N / 2) + 1; };
  Rng rng(9);
  for (ParamRef& from : siso.params()) {
    Tensor& t = *from.tensor;
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += 0.2f * float(rng.normal());  // off 1 and 0
  }
  ParamList siso_params = siso.params();
  for (ParamRef& to : mimo.params()) {
    Tensor& t = *to.tensor;
    if (to.name.find("mimo_") != std::string::npos) {
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = 1.0f;
      continue;
    }
    const auto from =
        std::find_if(siso_params.begin(), siso_params.end(), [&](const ParamRef& p) { return p.name == to.name; });
    ASSERT_NE(from, siso_params.end()) << to.name;
    const Tensor& f = *from->tensor;
    ASSERT_EQ(f.numel(), t.numel()) << to.name;
    const float* src = f.data<float>();
    float* dst = t.data<float>();
    const bool per_channel = to.name.find("B_") != std::string::npos || to.name.find("C_") != std::string::npos;
    const bool in_proj = to.name.find("in_proj") != std::string::npos;
    std::copy(src, src + t.numel(), dst);
    if (per_channel) {
      for (int64_t i = 0; i < t.numel(); ++i) dst[i] = src[i - i % N + siso_channel(i % N)];
    } else if (in_proj) {  // rows [2 Di, 2 Di + 2 G N): B then C, G groups of N each
      const int64_t D = t.size(1);
      for (int64_t row = 2 * Di; row < 2 * Di + 2 * G * N; ++row) {
        const int64_t source_row = row - (row - 2 * Di) % N + siso_channel((row - 2 * Di) % N);
        std::copy(src + source_row * D, src + (source_row + 1) * D, dst + row * D);
      }
    }
  }
  Tensor ids = Tensor::empty({2, 19}, DType::I32);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.below(50));
  EXPECT_LT(relative_error(mimo.forward(ids, nullptr, true), siso.forward(ids, nullptr, true)), 1e-5);
}

// Prompts of different lengths decoded together (each sequence's cache at its own position) give
// what each prompt gives alone.
TEST(LayerPlan, BatchedDecodeEqualsEachSequenceAlone) {
  Json config = plan({"mamba2", "attention+mlp", "swa+mlp", "mamba3"});
  config["swa"]["sliding_window"] = 4;
  LanguageModel model(ModelConfig::from_json(config, "plan.json"));
  init_parameters(model, 3);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5, 6, 7, 8, 9}, {10, 11}, {12, 13, 14, 15, 16}};
  GenerateOptions options;
  options.max_new_tokens = 9;
  options.sampling.temperature = 0;
  const auto together = Generator(model).generate(prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(together.sequences[i], Generator(model).generate({prompts[i]}, options).sequences[0]) << i;
}

}  // namespace
}  // namespace ssm
