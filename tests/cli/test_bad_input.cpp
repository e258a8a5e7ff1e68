// Bad input ends in a non-zero exit and one clear message naming what was wrong: never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cli/run_cli.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "model/fixture_util.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_bad_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = (dir_ / "model").string();
    fs::copy(fixture_dir("mamba_tiny"), model_);
    ids_ = (dir_ / "ids.npy").string();
    Tensor ids = Tensor::empty({1, 5}, DType::I32);
    for (int i = 0; i < 5; ++i) ids.data<int32_t>()[i] = i + 3;
    write_npy(ids_, ids);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Uses a copy of another fixture as the model under test.
  void use_fixture(const std::string& name) {
    fs::remove_all(model_);
    fs::copy(fixture_dir(name), model_);
  }

  // Runs `ssm logits` on the (possibly damaged) model and ids; expects one error line naming `fragment`.
  void expect_error(const std::string& fragment, const std::string& ids_path = "") {
    const std::string out = (dir_ / "out.npy").string();
    const CliResult r = run_ssm("logits --model " + model_ + " --ids " + (ids_path.empty() ? ids_ : ids_path) +
                                " --out " + out);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(r.output.find(fragment), std::string::npos) << "message: " << r.output << "expected: " << fragment;
    EXPECT_FALSE(fs::exists(out)) << "no output may be written on failure";
  }

  void edit_config(const std::function<void(Json&)>& edit) {
    Json config = read_json_file(model_ + "/config.json");
    edit(config);
    write_text_file(model_ + "/config.json", config.dump());
  }

  // Rewrites model.safetensors after `edit` changes the tensor list.
  void edit_tensors(const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    std::vector<std::pair<std::string, Tensor>> tensors;
    {
      const SafetensorsFile file = SafetensorsFile::open(model_ + "/model.safetensors");
      for (const auto& name : file.names()) tensors.emplace_back(name, file.get(name).clone());
    }
    edit(tensors);
    write_safetensors(model_ + "/model.safetensors", tensors);
  }

  fs::path dir_;
  std::string model_, ids_;
};

TEST_F(BadInput, MissingFolder) {
  model_ = (dir_ / "nowhere").string();
  expect_error("nowhere");
}

TEST_F(BadInput, MissingModelType) {
  edit_config([](Json& c) { c.erase("model_type"); });
  expect_error("missing 'model_type'");
}

TEST_F(BadInput, UnknownModelType) {
  edit_config([](Json& c) { c["model_type"] = "llama"; });
  expect_error("unknown model_type 'llama'");
}

TEST_F(BadInput, UnknownConfigKey) {
  edit_config([](Json& c) { c["hidden_sise"] = 64; });
  expect_error("unknown config key 'hidden_sise'");
}

TEST_F(BadInput, TruncatedSafetensors) {
  const std::string path = model_ + "/model.safetensors";
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_error("model.safetensors");
}

TEST_F(BadInput, HeaderOffsetsOutOfRange) {
  const std::string path = model_ + "/model.safetensors";
  std::string bytes = read_text_file(path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | uint8_t(bytes[size_t(i)]);
  Json header = Json::parse(bytes.substr(8, header_size));
  const auto data = bytes.substr(8 + header_size);
  header["backbone.norm_f.weight"]["data_offsets"] = {data.size() - 64, data.size() + 192};
  std::string text = header.dump();
  std::string rebuilt(8, '\0');
  for (int i = 0; i < 8; ++i) rebuilt[size_t(i)] = char((text.size() >> (8 * i)) & 0xff);
  write_text_file(path, rebuilt + text + data);
  expect_error("backbone.norm_f.weight");
}

TEST_F(BadInput, WrongShape) {
  edit_tensors([](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "backbone.norm_f.weight") t = t.view({32, 2});
  });
  expect_error("has shape [32, 2]");
}

TEST_F(BadInput, WrongDtype) {
  edit_tensors([](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "backbone.norm_f.weight") t = t.to(DType::I32);
  });
  expect_error("dtype I32");
}

TEST_F(BadInput, MissingTensor) {
  edit_tensors([](auto& tensors) {
    std::erase_if(tensors, [](const auto& entry) { return entry.first == "backbone.layers.1.mixer.D"; });
  });
  expect_error("missing tensor 'backbone.layers.1.mixer.D'");
}

TEST_F(BadInput, UnknownLayerKindInThePattern) {
  use_fixture("nemotron_h_tiny");
  edit_config([](Json& c) { c["layers_block_type"][1] = "mamba3"; });
  expect_error("unknown layer kind 'mamba3'");
}

TEST_F(BadInput, InconsistentHeadCounts) {
  use_fixture("bamba_groups");
  edit_config([](Json& c) { c["num_key_value_heads"] = 3; });
  expect_error("attention heads (4) must be a multiple of the key/value heads (3)");
}

TEST_F(BadInput, MissingExpertTensor) {
  use_fixture("jamba_tiny");
  edit_tensors([](auto& tensors) {
    std::erase_if(tensors, [](const auto& entry) {
      return entry.first == "model.layers.1.feed_forward.experts.2.up_proj.weight";
    });
  });
  expect_error("missing tensor 'model.layers.1.feed_forward.experts.2.up_proj.weight'");
}

TEST_F(BadInput, IdOutsideVocabulary) {
  Tensor ids = Tensor::empty({1, 3}, DType::I64);
  ids.data<int64_t>()[0] = 1;
  ids.data<int64_t>()[1] = 512;
  ids.data<int64_t>()[2] = 2;
  const std::string path = (dir_ / "big.npy").string();
  write_npy(path, ids);
  expect_error("512", path);
}

TEST_F(BadInput, MalformedNpy) {
  const std::string path = (dir_ / "bad.npy").string();
  write_text_file(path, "this is not numpy");
  expect_error("bad.npy", path);
}

TEST_F(BadInput, TruncatedNpy) {
  const std::string path = (dir_ / "short.npy").string();
  std::string bytes = read_text_file(ids_);
  write_text_file(path, bytes.substr(0, bytes.size() - 6));
  expect_error("short.npy", path);
}

TEST_F(BadInput, UnknownFlagIsRefused) {
  const CliResult r = run_ssm("logits --model " + model_ + " --ids " + ids_ + " --out x.npy --idz x");
  EXPECT_GT(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--idz"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ssm
