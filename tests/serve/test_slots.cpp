// Slots saved to files and restored, into another server: the restored snapshots stay in its prefix
// cache, and a prompt they begin resumes from them with a cold run's output; and the requests that
// must be refused (names that could leave the folder, unknown slots and actions, files that are not
// this model's slot files), each an error after which the server still serves.
#include <gtest/gtest.h>

#include <filesystem>

#include "serve/slot_file.h"
#include "server_fixture.h"
#include "tokenizer/tokenizer_test_util.h"

namespace ssm::serve {
namespace {

class SlotsTest : public ServerTest {
 protected:
  void SetUp() override { server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, slot_options()); }
  ServerOptions slot_options() const {
    ServerOptions o = options();
    o.slot_save_path = folder_.str();
    return o;
  }
  httplib::Result slot(int id, const std::string& action, const json& body) {
    return post(fmt::format("/slots/{}?action={}", id, action), body.dump());
  }
  json slot_ok(int id, const std::string& action, const std::string& filename) {
    const auto res = slot(id, action, {{"filename", filename}});
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  }
  json cached_tokens(const json& response) { return response["usage"]["prompt_tokens_details"]["cached_tokens"]; }

  test::TempDir folder_{"slots"};
};

TEST_F(SlotsTest, ASavedSlotRestoresIntoAnotherServer) {
  const std::string prompt(40, 'a');
  const json cold = post_ok("/v1/completions", greedy(prompt, 6));
  const json cold_longer = post_ok("/v1/completions", greedy(prompt + "cc", 6));
  // Both prompts ran in slot 0 (the lowest free one); the last was prompt + "cc": snapshots at 16, 32, 42.
  post_ok("/v1/completions", greedy(prompt, 1));  // slot 0's last prompt is `prompt` again
  const json saved = slot_ok(0, "save", "slot0.bin");
  EXPECT_EQ(saved["id_slot"], 0);
  EXPECT_EQ(saved["n_saved"], 40);
  EXPECT_EQ(saved["n_snapshots"], 3);  // after 16, 32 and 40 tokens
  EXPECT_GT(saved["n_written"], 0);
  EXPECT_TRUE(saved["timings"]["save_ms"].is_number());
  // Written through a temporary file and a rename: the folder holds the file alone.
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder_.str()))
    files.push_back(entry.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"slot0.bin"});

  server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, slot_options());  // an empty cache
  EXPECT_EQ(cached_tokens(post_ok("/v1/completions", greedy("unrelated", 1))), 0);
  const json restored = slot_ok(1, "restore", "slot0.bin");
  EXPECT_EQ(restored["n_restored"], 40);
  EXPECT_EQ(restored["n_snapshots"], 3);
  EXPECT_EQ(restored["n_read"], saved["n_written"]);
  // The whole prompt resumes from its snapshot, a longer one from the last chunk end, each saying what a
  // cold run says; the snapshots stay (a second request finds them too).
  for (int i = 0; i < 2; ++i) {
    const json warm = post_ok("/v1/completions", greedy(prompt, 6));
    EXPECT_EQ(cached_tokens(warm), 40);
    EXPECT_EQ(warm["choices"][0]["text"], cold["choices"][0]["text"]);
  }
  const json warm_longer = post_ok("/v1/completions", greedy(prompt + "cc", 6));
  EXPECT_EQ(cached_tokens(warm_longer), 32);
  EXPECT_EQ(warm_longer["choices"][0]["text"], cold_longer["choices"][0]["text"]);
  // And the restored slot can be saved again.
  EXPECT_EQ(slot_ok(1, "save", "again.bin")["n_saved"], 40);  // the restored prompt is slot 1's last
}

TEST_F(SlotsTest, RefusesWhatItMust) {
  post_ok("/v1/completions", greedy("something", 2));
  for (const char* name : {"../escape.bin", "/etc/passwd", "a/b.bin", ".hidden", "..", "", "x\\y", "new\nline"})
    expect_error(slot(0, "save", {{"filename", name}}), 400, "filename");
  expect_error(slot(0, "save", json::object()), 400, "filename");
  expect_error(slot(0, "save", {{"filename", 5}}), 400, "filename");
  expect_error(slot(0, "erase", {{"filename", "x.bin"}}), 400, "action");
  expect_error(slot(4, "save", {{"filename", "x.bin"}}), 400, "id_slot");
  expect_error(slot(2, "save", {{"filename", "x.bin"}}), 400, "");  // slot 2 ran nothing yet
  expect_error(slot(0, "restore", {{"filename", "missing.bin"}}), 404, "filename");
  test::write_file(folder_.file("junk.bin"), "not a safetensors file");
  expect_error(slot(0, "restore", {{"filename", "junk.bin"}}), 400, "");
  // Another model's slot file.
  const LanguageModel bamba = LanguageModel::load(fixture_dir("bamba_tiny"));
  SlotSnapshots other{{1, 2, 3}, {}};
  other.snapshots.emplace_back(3, Snapshot{bamba.new_state(1), std::vector<float>(size_t(bamba.config().vocab_size))});
  write_slot_file(folder_.file("bamba.bin"), "bamba", other);
  expect_error(slot(0, "restore", {{"filename", "bamba.bin"}}), 400, "");
  EXPECT_FALSE(std::filesystem::exists(folder_.str() + "/../escape.bin"));
  // Without --slot-save-path the endpoint is off.
  server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, options());
  post_ok("/v1/completions", greedy("something", 2));
  expect_error(slot(0, "save", {{"filename", "x.bin"}}), 501, "", "not_supported");
}

}  // namespace
}  // namespace ssm::serve
