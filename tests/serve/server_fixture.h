// A server on an ephemeral port in this process, over the tiny Mamba-2 fixture and byte tokens, and
// the requests the tests send it.
#pragma once
#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "serve/server.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

// Appended in steps: GCC 12 at -O3 warns (-Warray-bounds, wrongly) on the chain of operator+.
inline std::string fixture_dir(const std::string& name) {
  std::string dir = SSM_TEST_DATA_DIR;
  dir += "/hf/";
  dir += name;
  return dir;
}

class RunningServer {
 public:
  RunningServer(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options,
                std::shared_ptr<const ChatTemplate> chat_template = nullptr)
      : server_(model, tokenizer,
                [&] {
                  options.port = 0;
                  return options;
                }(),
                std::move(chat_template)),
        port_(server_.bind()),
        thread_([this] { server_.run(); }) {}
  ~RunningServer() {
    server_.stop();
    thread_.join();
  }
  // A client that sends `key` as its bearer token (none when empty).
  httplib::Client client(const std::string& key = "") const {
    httplib::Client client("127.0.0.1", port_);
    if (!key.empty()) client.set_bearer_token_auth(key);
    client.set_read_timeout(30, 0);
    return client;
  }
  int port() const { return port_; }

 private:
  Server server_;
  int port_;
  std::thread thread_;
};

using nlohmann::json;

inline const std::string kKey = "test-key";

inline json greedy(const std::string& prompt, int max_tokens) {
  return {{"model", "m"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
}
inline json with_stream(json request) {
  request["stream"] = true;
  return request;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = std::make_unique<LanguageModel>(LanguageModel::load(fixture_dir("mamba2_tiny")));
    tokenizer_ = make_byte_tokenizer();
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
  }
  static ServerOptions options() {
    ServerOptions o;
    o.api_key = kKey;
    o.limits.context = 512;
    o.max_body_bytes = 1 << 16;
    o.scheduler = {.slots = 4, .queue_limit = 8, .cache_bytes = 16 << 20, .cache_chunk = 16};
    return o;
  }
  void SetUp() override { server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, options()); }

  httplib::Result post(const std::string& path, const std::string& body) {
    return server_->client(kKey).Post(path.c_str(), body, "application/json");
  }
  json post_ok(const std::string& path, const json& body) {
    const auto res = post(path, body.dump());
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  }
  // A 4xx/5xx with OpenAI's error object naming `param` (empty: null), after which the server still serves.
  void expect_error(const httplib::Result& res, int status, const std::string& param, const std::string& code = {}) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    const json error = json::parse(res->body)["error"];
    EXPECT_TRUE(error["message"].is_string() && !error["message"].get<std::string>().empty()) << res->body;
    EXPECT_TRUE(error["type"].is_string()) << res->body;
    EXPECT_EQ(error["param"], param.empty() ? json() : json(param)) << res->body;
    EXPECT_EQ(error["code"], code.empty() ? json() : json(code)) << res->body;
    EXPECT_EQ(post_ok("/v1/completions", greedy("still serving?", 2))["usage"]["completion_tokens"], 2);
  }
  json metrics() {
    const auto res = server_->client(kKey).Get("/metrics");
    json values;
    std::istringstream lines(res->body);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("ssm_", 0) == 0)
        values[line.substr(4, line.find(' ') - 4)] = std::stod(line.substr(line.find(' ')));
    return values;
  }
  // The data of each server-sent event ("[DONE]" as a string); stops reading after `keep` events.
  std::vector<json> events(const std::string& path, const json& body, size_t keep = SIZE_MAX) {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.set_header("Authorization", "Bearer " + kKey);
    std::string buffer;
    std::vector<json> out;
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      buffer.append(data, size);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
        EXPECT_EQ(buffer.rfind("data: ", 0), 0u) << buffer;
        const std::string data_text = buffer.substr(6, end - 6);
        out.push_back(data_text == "[DONE]" ? json(data_text) : json::parse(data_text));
      }
      return out.size() < keep;
    };
    server_->client().send(req);
    return out;
  }

  static inline std::unique_ptr<LanguageModel> model_;
  static inline std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<RunningServer> server_;
};

}  // namespace ssm::serve
