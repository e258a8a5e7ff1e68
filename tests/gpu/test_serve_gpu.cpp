// `ssm serve` with the model on the GPU, against the same server on the CPU: in F32 the greedy
// completions (plain, chat, streamed) are the CPU's; requests joining and leaving the batch (greedy
// ones picked by the GPU's argmax, others sampled or with log-probabilities from logits brought to the
// host) give what each gives alone, in Mamba-2 and in a hybrid with attention; a prefix-cache hit
// gives a cold run's tokens and log-probabilities; a slot saved and restored resumes as a cold run; bad
// input gets the CPU's 4xx; BF16 serves. The tiny fixtures with byte tokens, as the CPU's server tests.
#include <cmath>
#include <thread>

#include "gpu/gpu_test_util.h"
#include "serve/server_fixture.h"
#include "tokenizer/tokenizer_test_util.h"

namespace ssm::serve {
namespace {

using gpu_test::require_gpu;

class ServeGpu : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    if (!cuda_available()) return;  // each test fails in require_gpu()
    cpu_model_ = std::make_unique<LanguageModel>(LanguageModel::load(fixture_dir("mamba2_tiny")));
    gpu_model_ = std::make_unique<LanguageModel>(
        LanguageModel::load(fixture_dir("mamba2_tiny"), {.weights = WeightDType::F32, .device = Device::CUDA}));
    tokenizer_ = make_byte_tokenizer();
  }
  static void TearDownTestSuite() {
    cpu_model_.reset();
    gpu_model_.reset();
    tokenizer_.reset();
  }
  static ServerOptions options() {
    ServerOptions o;
    o.limits.context = 512;
    o.max_body_bytes = 1 << 16;
    o.scheduler = {.slots = 4, .queue_limit = 8, .cache_bytes = 16 << 20, .cache_chunk = 16};
    return o;
  }
  static std::unique_ptr<RunningServer> start(const LanguageModel& model, ServerOptions o = options()) {
    return std::make_unique<RunningServer>(model, *tokenizer_, std::move(o));
  }
  static httplib::Result post(const RunningServer& server, const std::string& path, const std::string& body) {
    return server.client().Post(path.c_str(), body, "application/json");
  }
  static json post_ok(const RunningServer& server, const std::string& path, const json& body) {
    const auto res = post(server, path, body.dump());
    EXPECT_TRUE(res) << path;
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  }
  // A streamed request's server-sent events, each's data ("[DONE]" as a string).
  static std::vector<json> events(const RunningServer& server, const std::string& path, const json& body) {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    std::string buffer;
    std::vector<json> out;
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      buffer.append(data, size);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
        const std::string data_text = buffer.substr(6, end - 6);
        out.push_back(data_text == "[DONE]" ? json(data_text) : json::parse(data_text));
      }
      return true;
    };
    server.client().send(req);
    return out;
  }
  static int64_t metric(const RunningServer& server, const std::string& name) {
    const auto res = server.client().Get("/metrics");
    const std::string key = "\nssm_" + name + " ";
    const size_t at = res ? res->body.find(key) : std::string::npos;
    EXPECT_NE(at, std::string::npos) << name;
    return at == std::string::npos ? -1 : std::stoll(res->body.substr(at + key.size()));
  }

  static inline std::unique_ptr<LanguageModel> cpu_model_, gpu_model_;
  static inline std::unique_ptr<Tokenizer> tokenizer_;
};

json greedy_past_eos(const std::string& prompt, int max_tokens) {
  json request = greedy(prompt, max_tokens);
  request["ignore_eos"] = true;
  return request;
}

json with_logprobs(json request, int top) {
  request["logprobs"] = top;
  return request;
}

// The generated token ids, exactly, from a completion's log-probabilities ("tokens": a printable
// byte as itself, any other as "bytes:\xNN").
std::vector<std::string> tokens_of(const json& completion) { return completion["choices"][0]["logprobs"]["tokens"]; }

// |got - want| <= 1e-5 relative (F32) for every token's log-probability and every top one's.
void expect_same_logprobs(const json& got, const json& want, const std::string& what) {
  const json& g = got["choices"][0]["logprobs"];
  const json& w = want["choices"][0]["logprobs"];
  ASSERT_EQ(g["tokens"], w["tokens"]) << what;
  const auto close = [](double a, double b) { return std::abs(a - b) <= 1e-5 * std::max(1.0, std::abs(b)); };
  for (size_t i = 0; i < w["token_logprobs"].size(); ++i) {
    EXPECT_TRUE(close(g["token_logprobs"][i], w["token_logprobs"][i]))
        << what << " token " << i << ": " << g["token_logprobs"][i] << " vs " << w["token_logprobs"][i];
    for (const auto& [token, logprob] : w["top_logprobs"][i].items()) {
      ASSERT_TRUE(g["top_logprobs"][i].contains(token)) << what << " token " << i << " top " << token;
      EXPECT_TRUE(close(g["top_logprobs"][i][token], logprob)) << what << " token " << i << " top " << token;
    }
  }
}

TEST_F(ServeGpu, GreedyCompletionsChatAndStreamsAreTheCpus) {
  require_gpu();
  const auto cpu = start(*cpu_model_), gpu = start(*gpu_model_);
  for (const std::string& prompt : std::vector<std::string>{"Hello", "The quick brown fox", std::string(37, 'z')}) {
    SCOPED_TRACE(prompt);
    // Greedy without log-probabilities: the GPU's argmax picks the tokens.
    const json want = post_ok(*cpu, "/v1/completions", greedy_past_eos(prompt, 24));
    const json got = post_ok(*gpu, "/v1/completions", greedy_past_eos(prompt, 24));
    EXPECT_EQ(got["choices"][0]["text"], want["choices"][0]["text"]);
    EXPECT_EQ(got["usage"], want["usage"]);
    // With them, the logits come to the host: the ids themselves, and the log-probabilities close.
    const json want_ids = post_ok(*cpu, "/v1/completions", with_logprobs(greedy_past_eos(prompt, 24), 2));
    const json got_ids = post_ok(*gpu, "/v1/completions", with_logprobs(greedy_past_eos(prompt, 24), 2));
    EXPECT_EQ(tokens_of(got_ids), tokens_of(want_ids));
    EXPECT_EQ(got_ids["choices"][0]["text"], want["choices"][0]["text"]);
  }
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hi there"}}}},
                     {"max_tokens", 16},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const json want_chat = post_ok(*cpu, "/v1/chat/completions", chat);
  EXPECT_EQ(post_ok(*gpu, "/v1/chat/completions", chat)["choices"][0]["message"],
            want_chat["choices"][0]["message"]);
  // Streamed: the same deltas, then [DONE].
  const auto streamed_text = [&](const RunningServer& server) {
    const std::vector<json> got = events(server, "/v1/chat/completions", with_stream(chat));
    EXPECT_FALSE(got.empty());
    if (got.empty()) return std::string();
    EXPECT_EQ(got.back(), "[DONE]");
    std::string text;
    for (size_t i = 0; i + 1 < got.size(); ++i)
      if (got[i]["choices"][0]["delta"].contains("content")) text += got[i]["choices"][0]["delta"]["content"];
    return text;
  };
  const std::string cpu_stream = streamed_text(*cpu);
  EXPECT_EQ(streamed_text(*gpu), cpu_stream);
  EXPECT_EQ(cpu_stream, want_chat["choices"][0]["message"]["content"]);
  // Every decode step after the first at each batch size was replayed from its recording.
  EXPECT_GT(metric(*gpu, "decode_steps_replayed_total"), 0) << "no decode step replayed a recorded CUDA graph";
  EXPECT_EQ(metric(*cpu, "decode_steps_replayed_total"), 0);
}

// Five requests on four slots, of different lengths, so that sequences join, leave (the last rows
// moving into the holes) and wait for a slot: greedy ones picked on the GPU, one with log-probabilities
// and one sampled beside them, whose logits come to the host. Each greedy one says what it says alone,
// and what the CPU's server says.
void expect_batched_as_alone(const RunningServer& gpu, const RunningServer& cpu) {
  const std::vector<json> requests = {
      greedy_past_eos("one", 40),
      with_logprobs(greedy_past_eos("two two", 25), 3),
      [] {
        json sampled = greedy_past_eos("three three three", 30);
        sampled["temperature"] = 0.8;
        sampled["seed"] = 5;
        return sampled;
      }(),
      greedy_past_eos("four", 7),
      greedy_past_eos("five five", 33),
  };
  std::vector<json> alone;
  for (const json& r : requests) alone.push_back(ServeGpu::post_ok(gpu, "/v1/completions", r));
  const int64_t steps_before = ServeGpu::metric(gpu, "decode_steps_total");
  const int64_t rows_before = ServeGpu::metric(gpu, "decode_tokens_total");
  std::vector<json> together(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] { together[i] = ServeGpu::post_ok(gpu, "/v1/completions", requests[i]); });
  for (auto& c : clients) c.join();
  for (size_t i : {0, 3, 4}) {
    EXPECT_EQ(together[i]["choices"][0]["text"], alone[i]["choices"][0]["text"]) << "request " << i;
    EXPECT_EQ(ServeGpu::post_ok(cpu, "/v1/completions", requests[i])["choices"][0]["text"],
              alone[i]["choices"][0]["text"])
        << "request " << i << " on the CPU";
  }
  EXPECT_EQ(tokens_of(together[1]), tokens_of(alone[1]));
  EXPECT_EQ(together[2]["usage"]["completion_tokens"], 30);
  const int64_t steps = ServeGpu::metric(gpu, "decode_steps_total") - steps_before;
  const int64_t rows = ServeGpu::metric(gpu, "decode_tokens_total") - rows_before;
  EXPECT_EQ(rows, 39 + 24 + 29 + 6 + 32);
  EXPECT_LT(steps, rows) << "no step ran more than one sequence";
}

TEST_F(ServeGpu, RequestsJoiningAndLeavingTheBatchGiveWhatEachGivesAlone) {
  require_gpu();
  const auto gpu = start(*gpu_model_), cpu = start(*cpu_model_);
  expect_batched_as_alone(*gpu, *cpu);
}

// A hybrid's attention layers (KV caches, which rebuild the batch at each change, and whose step is
// not recorded) join, leave and are cached the same way on the GPU.
TEST_F(ServeGpu, HybridModelsToo) {
  require_gpu();
  const LanguageModel cpu_model = LanguageModel::load(fixture_dir("bamba_tiny"));
  const LanguageModel gpu_model =
      LanguageModel::load(fixture_dir("bamba_tiny"), {.weights = WeightDType::F32, .device = Device::CUDA});
  const auto gpu = start(gpu_model), cpu = start(cpu_model);
  expect_batched_as_alone(*gpu, *cpu);
}

// A hit resumes from a snapshot in GPU memory: the tokens and log-probabilities of a cold run (a
// server without a cache, chunked the same) within F32's 1e-5, whether the snapshot covers the whole
// prompt (its logits from the host) or its last chunk end.
TEST_F(ServeGpu, APrefixCacheHitGivesAColdRunsTokensAndLogprobs) {
  require_gpu();
  ServerOptions uncached = options();
  uncached.scheduler.cache_bytes = 0;
  const auto gpu = start(*gpu_model_), cold = start(*gpu_model_, uncached);
  const std::string prompt(40, 'a');
  const json first = post_ok(*gpu, "/v1/completions", with_logprobs(greedy_past_eos(prompt, 12), 5));
  EXPECT_EQ(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const json whole = post_ok(*gpu, "/v1/completions", with_logprobs(greedy_past_eos(prompt, 12), 5));
  EXPECT_EQ(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
  expect_same_logprobs(whole, post_ok(*cold, "/v1/completions", with_logprobs(greedy_past_eos(prompt, 12), 5)),
                       "whole-prompt hit");
  expect_same_logprobs(whole, first, "whole-prompt hit against the first run");
  const json longer = post_ok(*gpu, "/v1/completions", with_logprobs(greedy_past_eos(prompt + "bcd", 12), 5));
  EXPECT_EQ(longer["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
  expect_same_logprobs(longer, post_ok(*cold, "/v1/completions", with_logprobs(greedy_past_eos(prompt + "bcd", 12), 5)),
                       "chunk-end hit");
  EXPECT_GT(metric(*gpu, "prefix_cache_bytes"), 0);
  EXPECT_EQ(metric(*cold, "prefix_cache_bytes"), 0);
}

// Hits whose suffixes are of one length: from the third such chunk on (seen, recorded, replayed) the
// suffix is replayed from its recording, and every request still gives a cold run's tokens and
// log-probabilities.
TEST_F(ServeGpu, RepeatedHitsReplayTheirSuffixAndGiveAColdRunsLogprobs) {
  require_gpu();
  ServerOptions uncached = options();
  uncached.scheduler.cache_bytes = 0;
  const auto gpu = start(*gpu_model_), cold = start(*gpu_model_, uncached);
  const std::string prefix(40, 'a');
  for (const std::string suffix : {"bcd", "efg", "hij", "klm", "nop"}) {
    const json request = with_logprobs(greedy_past_eos(prefix + suffix, 6), 5);
    const json got = post_ok(*gpu, "/v1/completions", request);
    EXPECT_EQ(got["usage"]["prompt_tokens_details"]["cached_tokens"], suffix == "bcd" ? 0 : 32);
    expect_same_logprobs(got, post_ok(*cold, "/v1/completions", request), "suffix " + suffix);
  }
  EXPECT_GE(metric(*gpu, "prefill_batches_replayed_total"), 3) << "the hits' 11-token suffixes were not replayed";
}

TEST_F(ServeGpu, ASlotSavedAndRestoredResumesAsAColdRun) {
  require_gpu();
  const test::TempDir folder("gpu-slots");
  ServerOptions o = options();
  o.slot_save_path = folder.str();
  auto gpu = start(*gpu_model_, o);
  const std::string prompt(40, 'a');
  const json request = with_logprobs(greedy_past_eos(prompt, 8), 2);
  const json cold = post_ok(*gpu, "/v1/completions", request);
  const auto save = post(*gpu, "/slots/0?action=save", json{{"filename", "gpu.bin"}}.dump());
  ASSERT_TRUE(save);
  ASSERT_EQ(save->status, 200) << save->body;
  EXPECT_EQ(json::parse(save->body)["n_snapshots"], 3);  // after 16, 32 and 40 tokens

  gpu = start(*gpu_model_, o);  // an empty cache
  const auto restore = post(*gpu, "/slots/1?action=restore", json{{"filename", "gpu.bin"}}.dump());
  ASSERT_TRUE(restore);
  ASSERT_EQ(restore->status, 200) << restore->body;
  EXPECT_EQ(json::parse(restore->body)["n_snapshots"], 3);
  for (int i = 0; i < 2; ++i) {  // the snapshots stay
    const json warm = post_ok(*gpu, "/v1/completions", request);
    EXPECT_EQ(warm["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
    expect_same_logprobs(warm, cold, "restored slot");
  }
  // The restored slot saves again, as many snapshots.
  const auto again = post(*gpu, "/slots/1?action=save", json{{"filename", "again.bin"}}.dump());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_EQ(json::parse(again->body)["n_snapshots"], 3);
}

// The same status, param and code as the CPU's server for each bad request, and the GPU's still serves.
TEST_F(ServeGpu, BadInputGetsTheCpusErrors) {
  require_gpu();
  const auto cpu = start(*cpu_model_), gpu = start(*gpu_model_);
  const json base = greedy("Hi", 2);
  const auto with = [](json request, const std::string& field, json value) {
    request[field] = std::move(value);
    return request.dump();
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"/v1/completions", R"({"prompt": "Hi", "max_tokens": )"},
      {"/v1/completions", with(base, "max_tokens", "8")},
      {"/v1/completions", with(base, "temperature", 3)},
      {"/v1/completions", with(base, "temprature", 0)},
      {"/v1/completions", greedy("Hi", 600).dump()},
      {"/v1/completions", greedy(std::string(600, 'x'), 2).dump()},
      {"/v1/completions", greedy("", 2).dump()},
      {"/v1/completions", "{\"prompt\": \"caf\xC3\", \"max_tokens\": 2}"},
      {"/v1/completions", with(base, "prompt", {1, 512})},
      {"/v1/completions", with(base, "prompt", {-1})},
      {"/v1/completions", with(base, "logprobs", 21)},
      {"/v1/completions", with(base, "n", 9)},
      {"/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "Hi"}]})"},
      {"/slots/0?action=save", R"({"filename": "x"})"},
  };
  for (const auto& [path, body] : bad) {
    SCOPED_TRACE(path + " " + body);
    const auto want = post(*cpu, path, body), got = post(*gpu, path, body);
    ASSERT_TRUE(want && got);
    EXPECT_GE(want->status, 400);
    EXPECT_EQ(got->status, want->status) << got->body;
    const json want_error = json::parse(want->body)["error"], got_error = json::parse(got->body)["error"];
    EXPECT_EQ(got_error["param"], want_error["param"]);
    EXPECT_EQ(got_error["code"], want_error["code"]);
    EXPECT_EQ(got_error["type"], want_error["type"]);
  }
  EXPECT_EQ(post_ok(*gpu, "/v1/completions", greedy("still serving?", 2))["usage"]["completion_tokens"], 2);
}

// BF16 (the GPU's default for --dtype auto): it serves, and a repeated prompt, resumed from its
// snapshot, says what it said cold (the same chunks, the same kernels).
TEST_F(ServeGpu, Bf16ServesAndACacheHitRepeatsTheColdRun) {
  require_gpu();
  const LanguageModel bf16 = LanguageModel::load(fixture_dir("mamba2_tiny"), {.device = Device::CUDA});
  ASSERT_EQ(bf16.activation_dtype(), DType::BF16);
  const auto gpu = start(bf16);
  const json request = with_logprobs(greedy_past_eos(std::string(40, 'q'), 16), 1);
  const json cold = post_ok(*gpu, "/v1/completions", request);
  EXPECT_EQ(cold["usage"]["completion_tokens"], 16);
  const json warm = post_ok(*gpu, "/v1/completions", request);
  EXPECT_EQ(warm["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
  expect_same_logprobs(warm, cold, "bf16 hit");
  EXPECT_EQ(post_ok(*gpu, "/v1/completions", greedy_past_eos("plain", 9))["usage"]["completion_tokens"], 9);
}

}  // namespace
}  // namespace ssm::serve
