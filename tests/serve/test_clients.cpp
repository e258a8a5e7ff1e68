// Real clients against a server in this process: the official OpenAI SDK for JavaScript (npm `openai`,
// pinned in scripts/setup-node-deps.sh; tests/serve/node/openai_client.mjs says what it checks) and
// curl. They need node with the package in .cache/npm (scripts/setup-node-deps.sh) and curl
// (scripts/install-deps.sh); without them these tests fail (they never skip) and say what to run.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "server_fixture.h"
#include "tokenizer/tokenizer_test_util.h"

namespace ssm::serve {
namespace {

// Runs a shell command; its exit status, and its output (stdout and stderr) in `output`.
int run(const std::string& command, std::string& output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) output.append(buffer, n);
  return pclose(pipe);
}

class ClientTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerOptions o = options();
    o.limits.context = 1 << 20;  // room for a stream that only a client's abort ends
    server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, o);
  }
  std::string base_url() const { return fmt::format("http://127.0.0.1:{}", server_->port()); }
};

TEST_F(ClientTest, TheOpenAiSdk) {
  const char* env = std::getenv("SSM_NPM_CACHE_DIR");
  const std::string modules = env ? env : std::string(SSM_SOURCE_DIR) + "/.cache/npm";
  const std::string how =
      ": this test needs node and the npm package openai; run scripts/setup-node-deps.sh (and "
      "scripts/install-deps.sh for node/npm) before ctest";
  std::string version;
  ASSERT_EQ(run("node --version", version), 0) << "node is not installed" << how;
  ASSERT_TRUE(std::filesystem::exists(modules + "/node_modules/openai/package.json"))
      << "missing " << modules << "/node_modules/openai" << how;
  std::string log;
  const int status = run(fmt::format("node '{}/tests/serve/node/openai_client.mjs' --base-url '{}/v1' --api-key '{}' "
                                     "--model model --modules '{}'",
                                     SSM_SOURCE_DIR, base_url(), kKey, modules),
                         log);
  EXPECT_EQ(status, 0) << log;
  for (const char* check : {"completion", "streamedChat", "cancelledStream", "errors"})
    EXPECT_NE(log.find(std::string("ok ") + check), std::string::npos) << log;
}

TEST_F(ClientTest, Curl) {
  std::string version;
  ASSERT_EQ(run("curl --version", version), 0) << "curl is not installed: run scripts/install-deps.sh";
  const test::TempDir dir("curl");
  const auto curl = [&](const json& body, const std::string& path) {
    test::write_file(dir.file("body.json"), body.dump());
    std::string out;
    EXPECT_EQ(run(fmt::format("curl -sS -N --fail-with-body -H 'Authorization: Bearer {}' -H 'Content-Type: "
                              "application/json' --data-binary @'{}' '{}{}'",
                              kKey, dir.file("body.json"), base_url(), path),
                  out),
              0)
        << out;
    return out;
  };
  const json whole = json::parse(curl(greedy("Hello", 6), "/v1/completions"));
  EXPECT_EQ(whole["usage"]["completion_tokens"], 6);
  // Streamed: server-sent events whose texts add up to the whole completion's, then [DONE].
  const std::string events = curl(with_stream(greedy("Hello", 6)), "/v1/completions");
  std::string text;
  size_t at = 0;
  for (size_t end; (end = events.find("\n\n", at)) != std::string::npos; at = end + 2) {
    const std::string event = events.substr(at, end - at);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    if (event == "data: [DONE]") break;
    text += json::parse(event.substr(6))["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, whole["choices"][0]["text"]);
  EXPECT_TRUE(events.ends_with("data: [DONE]\n\n")) << events;
  // An error is OpenAI's error object with its status (curl exits 22 on it).
  std::string out;
  test::write_file(dir.file("bad.json"), R"({"prompt": "Hi", "max_tokens": "many"})");
  EXPECT_NE(run(fmt::format("curl -sS --fail-with-body -H 'Authorization: Bearer {}' --data-binary @'{}' "
                            "'{}/v1/completions'",
                            kKey, dir.file("bad.json"), base_url()),
                out),
            0);
  EXPECT_NE(out.find(R"("param":"max_tokens")"), std::string::npos) << out;
}

}  // namespace
}  // namespace ssm::serve
