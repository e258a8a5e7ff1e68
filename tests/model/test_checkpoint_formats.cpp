// The same weights reached through other doors: the original state-spaces folder format, a
// save/load round trip, BF16 weights, and prefill continued across chunk boundaries.
#include <gtest/gtest.h>

#include <cmath>
#include <unistd.h>

#include <filesystem>

#include "core/file_util.h"
#include "core/json.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "model/fixture_util.h"
#include "model/language_model.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    diff = std::max(diff, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  return diff;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::fabs(a.data<float>()[i])));
  return m;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("ssm_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Rewrites an HF fixture as a state-spaces folder: d_model/n_layer/ssm_cfg config and
// backbone.embedding.* names; the logits must not change.
TEST(ModelFormats, StateSpacesFolderGivesTheSameLogits) {
  for (const std::string name : {"mamba_tiny", "mamba2_groups"}) {
    const std::string hf_dir = fixture_dir(name);
    const Json hf = read_json_file(hf_dir + "/config.json");
    Json ss = {{"d_model", hf["hidden_size"]},
               {"n_layer", hf["num_hidden_layers"]},
               {"vocab_size", hf["vocab_size"]},
               {"pad_vocab_size_multiple", 8},
               {"tie_embeddings", hf["tie_word_embeddings"]},
               {"rms_norm", true},
               {"residual_in_fp32", true}};
    if (hf["model_type"] == "mamba") {
      ss["ssm_cfg"] = {{"d_state", hf["state_size"]}, {"dt_rank", hf["time_step_rank"]}};
    } else {
      ss["ssm_cfg"] = {{"layer", "Mamba2"},     {"d_state", hf["state_size"]},   {"headdim", hf["head_dim"]},
                       {"ngroups", hf["n_groups"]}, {"chunk_size", hf["chunk_size"]}};
    }
    const fs::path dir = fresh_dir("ss_" + name);
    write_text_file((dir / "config.json").string(), ss.dump());
    const SafetensorsFile file = SafetensorsFile::open(hf_dir + "/model.safetensors");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& tensor_name : file.names()) {
      std::string renamed = tensor_name;
      if (renamed == "backbone.embeddings.weight") renamed = "backbone.embedding.weight";
      tensors.emplace_back(renamed, file.get(tensor_name));
    }
    write_safetensors((dir / "model.safetensors").string(), tensors);

    const Tensor ids = read_npy(hf_dir + "/input_ids.npy").to(DType::I32);
    const Tensor want = LanguageModel::load(hf_dir).forward(ids, nullptr, true);
    const LanguageModel converted = LanguageModel::load(dir.string());
    EXPECT_EQ(converted.config().embedding_name, "backbone.embedding.weight");
    EXPECT_EQ(max_abs_diff(converted.forward(ids, nullptr, true), want), 0.0) << name;
    fs::remove_all(dir);
  }
}

TEST(ModelFormats, SaveAndLoadRoundTrip) {
  for (const std::string name : {"mamba_tiny", "mamba2_tiny", "mamba2_groups", "jamba_tiny", "falcon_h1_tiny",
                                 "nemotron_h_tiny", "mamba3_tiny", "mamba3_groups", "mamba3_mimo_norm"}) {
    const std::string hf_dir = fixture_dir(name);
    const LanguageModel model = LanguageModel::load(hf_dir);
    const fs::path dir = fresh_dir("save_" + name);
    model.save(dir.string());
    const LanguageModel reloaded = LanguageModel::load(dir.string());
    const Tensor ids = read_npy(hf_dir + "/input_ids.npy").to(DType::I32);
    EXPECT_EQ(max_abs_diff(reloaded.forward(ids, nullptr, true), model.forward(ids, nullptr, true)), 0.0) << name;
    EXPECT_EQ(reloaded.config().eos_ids, model.config().eos_ids);
    fs::remove_all(dir);
  }
}

// The fixture architectures with 16-bit matrices: converted to BF16 at load, and saved as BF16 and
// F16 checkpoints loaded as stored (`--dtype auto`: the 16-bit weights are used as they are).
// Jamba and Nemotron-H are left out: their top-k expert routing is discontinuous, so rounding the
// router's inputs flips experts and moves whole positions' logits (measured 9% and 24-90% of the
// range, against under 2% for the models here).
TEST(ModelFormats, SixteenBitWeightsStayClose) {
  for (const std::string name : {"mamba_tiny", "mamba2_tiny", "mamba2_groups", "bamba_tiny", "bamba_groups",
                                 "falcon_h1_tiny", "falcon_h1_nonorm"}) {
    const std::string dir = fixture_dir(name);
    const Tensor ids = read_npy(dir + "/input_ids.npy").to(DType::I32);
    const Tensor want = read_npy(dir + "/logits.npy");
    const auto rel_err = [&](const LanguageModel& model) {
      return max_abs_diff(model.forward(ids, nullptr, true), want) / max_abs(want);
    };
    // bf16 keeps 8 significant bits: a few percent of the logit range, not more. F16 weights keep 11,
    // but many-token products round x to bf16 on CPUs with AMX, so they get the same bound.
    EXPECT_LT(rel_err(LanguageModel::load(dir, {.weights = WeightDType::BF16})), 0.05) << name << " bf16 at load";
    const LanguageModel model = LanguageModel::load(dir);
    for (DType dtype : {DType::BF16, DType::F16}) {
      const fs::path saved = fresh_dir(std::string("16bit_") + std::string(dtype_name(dtype)) + "_" + name);
      model.save(saved.string(), dtype);
      const LanguageModel reloaded = LanguageModel::load(saved.string());
      EXPECT_EQ(reloaded.weight_bytes(), model.weight_bytes(WeightDType::BF16)) << name << " kept 16-bit";
      EXPECT_LT(rel_err(reloaded), 0.05) << name << " " << dtype_name(dtype) << " checkpoint";
      fs::remove_all(saved);
    }
  }
}

// Prefill in two pieces, the first ending mid-chunk past a chunk boundary, equals one piece.
TEST(ModelFormats, PrefillInPiecesMatchesOnePiece) {
  for (const std::string name : {"mamba_tiny", "mamba2_tiny", "mamba2_groups", "bamba_groups", "jamba_tiny",
                                 "falcon_h1_tiny", "nemotron_h_tiny"}) {
    const std::string dir = fixture_dir(name);
    const LanguageModel model = LanguageModel::load(dir);
    const Tensor ids = read_npy(dir + "/input_ids.npy").to(DType::I32);
    const int64_t length = ids.size(1), split = 41;
    const Tensor full = model.forward(ids, nullptr, false);
    ModelState state = model.new_state(ids.size(0));
    model.forward(ids.slice(1, 0, split).contiguous(), &state, false);
    const Tensor pieces = model.forward(ids.slice(1, split, length - split).contiguous(), &state, false);
    EXPECT_LT(max_abs_diff(pieces, full) / max_abs(full), 1e-5) << name;
  }
}

}  // namespace
}  // namespace ssm
