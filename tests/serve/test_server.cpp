// The server as clients use it: an httplib client against a server started in this process.
// Completions, streamed chat, requests decoding together, the prefix cache seen through usage, a
// client that goes away mid-stream, and the endpoints around them.
#include <gtest/gtest.h>

#include "server_fixture.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve {
namespace {

using nlohmann::json;

TEST_F(ServerTest, CompletesAPromptAndReportsUsage) {
  const json first = post_ok("/v1/completions", greedy("Hello", 8));
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(first["choices"][0]["text"].is_string());
  EXPECT_EQ(first["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(first["usage"]["completion_tokens"], 8);
  EXPECT_EQ(first["usage"]["total_tokens"], 13);
  const json& timings = first["timings"];  // llama.cpp's, and the wait for the scheduler
  EXPECT_EQ(timings["cache_n"], 0);
  EXPECT_EQ(timings["prompt_n"], 5);
  EXPECT_EQ(timings["predicted_n"], 8);
  EXPECT_GE(timings["queued_ms"].get<double>(), 0.0);
  EXPECT_GT(timings["prompt_ms"].get<double>(), 0.0);
  EXPECT_GT(timings["predicted_ms"].get<double>(), 0.0);
  // The same prompt again starts from its cached state and, greedy, says the same.
  const json again = post_ok("/v1/completions", greedy("Hello", 8));
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
  EXPECT_EQ(again["timings"]["cache_n"], 5);
  EXPECT_EQ(again["timings"]["prompt_n"], 0);
  EXPECT_EQ(again["choices"][0]["text"], first["choices"][0]["text"]);
  // Token ids are a prompt too: "Hello" as bytes.
  json ids = greedy("", 8);
  ids["prompt"] = {72, 101, 108, 108, 111};
  EXPECT_EQ(post_ok("/v1/completions", ids)["choices"][0]["text"], first["choices"][0]["text"]);
}

TEST_F(ServerTest, APromptResumesFromTheDeepestChunkEnd) {
  const std::string prompt(40, 'a');
  EXPECT_EQ(post_ok("/v1/completions", greedy(prompt, 4))["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  // Snapshots now at 16, 32 (chunk ends) and 40 (the prompt).
  EXPECT_EQ(post_ok("/v1/completions", greedy(prompt + "cc", 4))["usage"]["prompt_tokens_details"]["cached_tokens"],
            32);
  EXPECT_EQ(post_ok("/v1/completions", greedy(prompt, 4))["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
  EXPECT_EQ(post_ok("/v1/completions", greedy("b" + prompt, 4))["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const json m = metrics();
  EXPECT_EQ(m["prefix_cache_hits_total"], 2);
  EXPECT_EQ(m["prefix_cache_hit_tokens_total"], 72);
  EXPECT_EQ(m["prefill_tokens_total"], 40 + 10 + 0 + 41);
  EXPECT_GT(m["prefix_cache_bytes"], 0);
}

TEST_F(ServerTest, StopsAtAStopString) {
  const std::string text = post_ok("/v1/completions", greedy("Stop", 24))["choices"][0]["text"];
  ASSERT_GE(text.size(), 4u);
  // A whole character from the middle of the text (a U+FFFD is three bytes).
  size_t at = text.size() / 2;
  while ((static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
  const std::string stop = text.substr(at, utf8_next(text.data() + at, text.size() - at).len);
  json request = greedy("Stop", 24);
  request["stop"] = {stop};
  const json stopped = post_ok("/v1/completions", request);
  EXPECT_EQ(stopped["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, StreamsAChatCompletion) {
  json request = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
                  {"max_tokens", 12},
                  {"temperature", 0}};
  const json whole = post_ok("/v1/chat/completions", request);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["usage"]["prompt_tokens"], std::string("System: Be brief.\n\nUser: Hi\n\nAssistant:").size());
  // A special token typed into a message is text (bytes here), not the token.
  const json special = post_ok("/v1/chat/completions",
                               {{"messages", {{{"role", "user"}, {"content", "<|endoftext|>"}}}}, {"max_tokens", 1}});
  EXPECT_EQ(special["usage"]["prompt_tokens"], std::string("User: <|endoftext|>\n\nAssistant:").size());
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  const std::vector<json> got = events("/v1/chat/completions", request);
  ASSERT_GE(got.size(), 4u);
  EXPECT_EQ(got.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (const json& e : got)
    if (e.is_object() && !e["choices"].empty()) {
      EXPECT_EQ(e["object"], "chat.completion.chunk");
      content += e["choices"][0]["delta"].value("content", "");
    }
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"]);
  const json& last = got[got.size() - 3];
  EXPECT_EQ(last["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
  const json& usage = got[got.size() - 2]["usage"];
  EXPECT_EQ(usage["completion_tokens"], whole["usage"]["completion_tokens"]);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], whole["usage"]["prompt_tokens"]);  // the same prompt
  EXPECT_EQ(got.back(), "[DONE]");
}

// With the model's chat template, the prompt is the template's (its special tokens one id each), and a
// conversation the template refuses is a 400.
TEST_F(ServerTest, ChatUsesTheModelsTemplate) {
  const auto tokenizer = make_byte_tokenizer({"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
  const std::string templates = std::string(SSM_TEST_DATA_DIR) + "/chat_templates/";
  for (const char* name : {"chatml", "mistral"}) {
    server_ = std::make_unique<RunningServer>(
        *model_, *tokenizer, options(),
        std::make_shared<const ChatTemplate>(*ChatTemplate::from_folder(templates + name, *tokenizer)));
    const json hi = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}};
    if (std::string(name) == "chatml") {
      // <|im_start|> "user\nHi" <|im_end|> "\n" <|im_start|> "assistant\n"
      EXPECT_EQ(post_ok("/v1/chat/completions", hi)["usage"]["prompt_tokens"], 3 + 7 + 1 + 10);
    } else {
      const json twice = {{"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "user"}, {"content", "Hi"}}}}};
      expect_error(post("/v1/chat/completions", twice.dump()), 400, "messages");
      EXPECT_EQ(post_ok("/v1/chat/completions", hi)["usage"]["prompt_tokens"],
                std::string("<s> [INST] Hi [/INST]").size());
    }
    server_.reset();  // before the tokenizer it uses goes
  }
}

class BatchingTest : public ServerTest {
 protected:
  // Four greedy requests sent together give what each gives alone, and some step ran several.
  void expect_batched_as_alone() {
    const std::vector<std::string> prompts = {"one", "two two", "three three three", "four"};
    const auto request = [](const std::string& prompt) {
      json r = greedy(prompt, 48);
      r["ignore_eos"] = true;  // each runs its 48 tokens
      return r;
    };
    std::vector<json> alone;
    for (const auto& p : prompts) alone.push_back(post_ok("/v1/completions", request(p))["choices"][0]["text"]);
    const json before = metrics();
    std::vector<json> together(prompts.size());
    std::vector<std::thread> clients;
    for (size_t i = 0; i < prompts.size(); ++i)
      clients.emplace_back(
          [&, i] { together[i] = post_ok("/v1/completions", request(prompts[i]))["choices"][0]["text"]; });
    for (auto& c : clients) c.join();
    EXPECT_EQ(together, alone);
    const json after = metrics();
    const double steps = after["decode_steps_total"].get<double>() - before["decode_steps_total"].get<double>();
    const double rows = after["decode_tokens_total"].get<double>() - before["decode_tokens_total"].get<double>();
    EXPECT_EQ(rows, 4 * 47);
    EXPECT_LT(steps, rows) << "no step ran more than one sequence";
  }
};

TEST_F(BatchingTest, ConcurrentRequestsDecodeTogether) { expect_batched_as_alone(); }

// Attention layers' KV caches (one length per row) join, leave and are cached the same way.
TEST_F(BatchingTest, HybridModelsToo) {
  for (const char* name : {"bamba_tiny", "jamba_tiny"}) {
    SCOPED_TRACE(name);
    const LanguageModel hybrid = LanguageModel::load(fixture_dir(name));
    server_ = std::make_unique<RunningServer>(hybrid, *tokenizer_, options());
    expect_batched_as_alone();
    server_.reset();  // before the model it serves goes
  }
}

// A request that would run for seconds unless cut short: past EOS, in a context that allows it.
json endless(const std::string& prompt) {
  json request = with_stream(greedy(prompt, 1 << 19));
  request["ignore_eos"] = true;
  return request;
}

TEST_F(ServerTest, AClientThatDisconnectsLeavesTheBatch) {
  ServerOptions o = options();
  o.limits.context = 1 << 20;
  server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, o);
  const json before = metrics();
  EXPECT_EQ(events("/v1/completions", endless("Going away"), 2).size(), 2u);
  json now = metrics();
  for (int i = 0; i < 500 && now["slots_in_use"] != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    now = metrics();
  }
  EXPECT_EQ(now["slots_in_use"], 0);
  EXPECT_LT(now["completion_tokens_total"].get<double>() - before["completion_tokens_total"].get<double>(), 1 << 19);
  EXPECT_EQ(post_ok("/v1/completions", greedy("Still here", 2))["usage"]["completion_tokens"], 2);
}

TEST_F(ServerTest, StoppingTheServerEndsAStreamWithAnError) {
  ServerOptions o = options();
  o.limits.context = 1 << 20;
  auto server = std::make_unique<RunningServer>(*model_, *tokenizer_, o);
  std::atomic<int> received = 0;
  std::string stream;
  std::thread client([&] {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = endless("Long story").dump();
    req.set_header("Authorization", "Bearer " + kKey);
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      stream.append(data, size);
      ++received;
      return true;
    };
    server->client().send(req);
  });
  while (received == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server.reset();  // returns once the stream has ended
  client.join();
  EXPECT_NE(stream.find("the server is shutting down"), std::string::npos)
      << stream.substr(stream.size() - std::min<size_t>(stream.size(), 600));
  EXPECT_TRUE(stream.ends_with("data: [DONE]\n\n"));
}

// A request past the --timeout deadline: a 504 when nothing was sent, an error event ending its stream.
TEST_F(ServerTest, TheDeadlineEndsARequest) {
  ServerOptions o = options();
  o.limits.context = 1 << 20;
  o.request_timeout_seconds = 1;
  server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, o);
  json whole = endless("Too long");
  whole.erase("stream");
  const auto start = std::chrono::steady_clock::now();
  const auto res = post("/v1/completions", whole.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 504) << res->body;
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "timeout");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  const std::vector<json> got = events("/v1/completions", endless("Too long"));
  ASSERT_GE(got.size(), 3u);
  EXPECT_EQ(got[got.size() - 2]["error"]["code"], "timeout");
  EXPECT_EQ(got.back(), "[DONE]");
  EXPECT_EQ(metrics()["timeouts_total"], 2);
  EXPECT_EQ(post_ok("/v1/completions", greedy("In time", 2))["usage"]["completion_tokens"], 2);
}

// The server listens before its model is loaded: /health says so with a 503, and so do the model's
// endpoints, until the model is ready.
TEST_F(ServerTest, HealthSaysLoadingUntilTheModelIsReady) {
  ServerOptions o = options();
  o.port = 0;
  Server loading(o);
  const int port = loading.bind();
  std::thread listener([&] { loading.run(); });
  httplib::Client client("127.0.0.1", port);
  client.set_bearer_token_auth(kKey);
  const auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body), json({{"status", "loading"}}));
  const auto early = client.Post("/v1/completions", greedy("Hi", 2).dump(), "application/json");
  ASSERT_TRUE(early);
  EXPECT_EQ(early->status, 503);
  EXPECT_EQ(json::parse(early->body)["error"]["code"], "model_loading");
  EXPECT_EQ(client.Get("/v1/models")->status, 200);
  loading.ready(*model_, *tokenizer_);
  EXPECT_EQ(client.Get("/health")->status, 200);
  const auto late = client.Post("/v1/completions", greedy("Hi", 2).dump(), "application/json");
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 200) << late->body;
  loading.stop();
  listener.join();
}

TEST_F(ServerTest, ListsTheModelAndAnswersHealthAndMetrics) {
  const auto models = server_->client(kKey).Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "model");
  const auto health = server_->client().Get("/health");  // no key needed
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  post_ok("/v1/completions", greedy("count me", 3));
  const json m = metrics();
  EXPECT_EQ(m["completion_tokens_total"], 3);
  EXPECT_EQ(m["prompt_tokens_total"], 8);
  EXPECT_EQ(m["slots"], 4);
  EXPECT_GE(m["requests_total"], 2);
}

TEST_F(ServerTest, TokenizesAndDetokenizes) {
  const json ids = post_ok("/tokenize", {{"content", "Hé!"}})["tokens"];
  EXPECT_EQ(ids, json({72, 195, 169, 33}));
  EXPECT_EQ(post_ok("/detokenize", {{"tokens", ids}})["content"], "Hé!");
  EXPECT_EQ(post_ok("/detokenize", {{"tokens", {72, 195}}})["content"], "H\xEF\xBF\xBD");  // a cut character: U+FFFD
}

}  // namespace
}  // namespace ssm::serve
