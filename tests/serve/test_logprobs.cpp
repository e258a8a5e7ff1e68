// Log-probabilities: token_logprob against a double-precision log-softmax, and both endpoints' shapes
// against the model's own logits after the prompt (a cold prefill outside the server).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "infer/cached_prefill.h"
#include "serve/logprobs.h"
#include "server_fixture.h"

namespace ssm::serve {
namespace {

std::vector<double> log_softmax(const float* logits, int64_t vocab) {
  double max = logits[0], total = 0;
  for (int64_t i = 0; i < vocab; ++i) max = std::max(max, double(logits[i]));
  for (int64_t i = 0; i < vocab; ++i) total += std::exp(double(logits[i]) - max);
  std::vector<double> out(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) out[size_t(i)] = double(logits[i]) - max - std::log(total);
  return out;
}

// The ids in order of decreasing probability (ties: lower id first).
std::vector<int32_t> ranked(const std::vector<double>& logprobs) {
  std::vector<int32_t> ids(logprobs.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logprobs[size_t(a)] > logprobs[size_t(b)]; });
  return ids;
}

TEST(TokenLogprob, MatchesADoubleLogSoftmax) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0, 4);
  for (int64_t vocab : {1, 7, 1001}) {
    std::vector<float> logits(static_cast<size_t>(vocab));
    for (float& x : logits) x = normal(rng);
    if (vocab > 10) logits[9] = logits[3] = 50;  // a tie at the top: the lower id comes first
    const std::vector<double> expected = log_softmax(logits.data(), vocab);
    const std::vector<int32_t> order = ranked(expected);
    for (int64_t top : {0, 1, 5, 20}) {
      const int32_t token = int32_t(vocab / 2);
      const TokenLogprob got = token_logprob(logits.data(), vocab, token, top);
      EXPECT_EQ(got.token, token);
      EXPECT_NEAR(got.logprob, expected[size_t(token)], 1e-5);
      ASSERT_EQ(int64_t(got.top.size()), std::min(top, vocab));
      for (size_t k = 0; k < got.top.size(); ++k) {
        EXPECT_EQ(got.top[k].first, order[k]) << "vocab " << vocab << " rank " << k;
        EXPECT_NEAR(got.top[k].second, expected[size_t(order[k])], 1e-5);
      }
    }
  }
  const float one = 0;
  EXPECT_THROW(token_logprob(&one, 1, 1, 0), ssm::Error);
}

class LogprobsTest : public ServerTest {
 protected:
  // The log-softmax of the model's logits after `prompt` (bytes), over the ids bytes can print.
  std::vector<double> reference(const std::string& prompt) {
    CachedPrefill prefill(*model_, nullptr, 16);
    std::vector<int32_t> ids;
    for (const unsigned char byte : prompt) ids.push_back(byte);  // (a char above 127 is negative)
    const CachedPrefill::Result result = prefill.run(ids);
    return log_softmax(result.logits.data(), tokenizer_->vocab_size());
  }
};

TEST_F(LogprobsTest, CompletionsLegacyShape) {
  json request = greedy("Odds", 6);
  request["logprobs"] = 3;
  request["ignore_eos"] = true;
  const json response = post_ok("/v1/completions", request);
  const json& lp = response["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 6u);
  ASSERT_EQ(lp["token_logprobs"].size(), 6u);
  ASSERT_EQ(lp["top_logprobs"].size(), 6u);
  ASSERT_EQ(lp["text_offset"].size(), 6u);
  // The first token against the model's own distribution after the prompt.
  const std::vector<double> expected = reference("Odds");
  const std::vector<int32_t> order = ranked(expected);
  EXPECT_NEAR(lp["token_logprobs"][0].get<double>(), expected[size_t(order[0])], 1e-4);  // greedy: the top one
  EXPECT_EQ(lp["tokens"][0],
            order[0] < 128 ? std::string(1, char(order[0])) : fmt::format("bytes:\\x{:02x}", order[0]));
  EXPECT_EQ(lp["top_logprobs"][0].size(), 3u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(lp["text_offset"][i], i);  // byte offsets, and a byte tokenizer's tokens are one byte each
    // Greedy: each token is the most likely one, so its log-probability is the largest of the top ones.
    double best = -1e30;
    for (const auto& [token, logprob] : lp["top_logprobs"][i].items()) best = std::max(best, logprob.get<double>());
    EXPECT_DOUBLE_EQ(lp["token_logprobs"][i].get<double>(), best);
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0);
  }
  // Without logprobs: null.
  EXPECT_TRUE(post_ok("/v1/completions", greedy("Odds", 2))["choices"][0]["logprobs"].is_null());
}

// They are the model's, whatever the sampling: at temperature 2 with a repetition penalty, the first
// token's log-probability is still that of the raw logits.
TEST_F(LogprobsTest, AreTheModelsBeforeSampling) {
  json request = greedy("Odds", 1);
  request["logprobs"] = 0;
  request["temperature"] = 2;
  request["repetition_penalty"] = 1.5;
  request["seed"] = 11;
  const json lp = post_ok("/v1/completions", request)["choices"][0]["logprobs"];
  const std::string token = lp["tokens"][0];
  ASSERT_EQ(token.size(), 1u);
  EXPECT_NEAR(lp["token_logprobs"][0].get<double>(), reference("Odds")[static_cast<unsigned char>(token[0])], 1e-4);
  EXPECT_TRUE(lp["top_logprobs"][0].empty());
}

// And so are those of the tokens after it, each chosen in a decode step (on the threads, with a
// repetition penalty that changes the logits in place before the argmax).
TEST_F(LogprobsTest, AreTheModelsBeforeSamplingAtEveryStep) {
  json request = greedy("Odds", 4);
  request["logprobs"] = 0;
  request["repetition_penalty"] = 1.5;
  const json lp = post_ok("/v1/completions", request)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 4u);
  std::string text = "Odds";
  for (size_t t = 0; t < 4; ++t) {
    // A byte's token: itself, or "bytes:\xNN" where it is not UTF-8 alone.
    const std::string token = lp["tokens"][t];
    const bool escaped = token.size() == 10 && token.starts_with("bytes:\\x");
    ASSERT_TRUE(token.size() == 1 || escaped) << "token " << t << ": " << token;
    const unsigned char byte = escaped ? static_cast<unsigned char>(std::stoi(token.substr(8), nullptr, 16))
                                       : static_cast<unsigned char>(token[0]);
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), reference(text)[byte], 1e-4) << "token " << t;
    text += static_cast<char>(byte);
  }
}

TEST_F(LogprobsTest, ChatShapeWholeAndStreamed) {
  json request = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                  {"max_tokens", 5},
                  {"temperature", 0},
                  {"ignore_eos", true},
                  {"logprobs", true},
                  {"top_logprobs", 2}};
  const json whole = post_ok("/v1/chat/completions", request);
  const json& content = whole["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 5u);
  const std::vector<double> expected = reference("User: Hi\n\nAssistant:");
  EXPECT_NEAR(content[0]["logprob"].get<double>(), expected[size_t(ranked(expected)[0])], 1e-4);
  for (const json& entry : content) {
    // A byte's token: itself when it is ASCII, else (not UTF-8 alone) "bytes:\xNN"; the byte in "bytes".
    ASSERT_EQ(entry["bytes"].size(), 1u);
    const int byte = entry["bytes"][0];
    EXPECT_EQ(entry["token"], byte < 128 ? std::string(1, char(byte)) : fmt::format("bytes:\\x{:02x}", byte));
    ASSERT_EQ(entry["top_logprobs"].size(), 2u);
    EXPECT_EQ(entry["top_logprobs"][0]["token"], entry["token"]);  // greedy
    EXPECT_GE(entry["top_logprobs"][0]["logprob"].get<double>(), entry["top_logprobs"][1]["logprob"].get<double>());
  }
  // Streamed, the chunks' entries add up to the same list.
  request["stream"] = true;
  json streamed = json::array();
  for (const json& event : events("/v1/chat/completions", request))
    if (event.is_object() && !event["choices"][0]["logprobs"].is_null())
      for (const json& entry : event["choices"][0]["logprobs"]["content"]) streamed.push_back(entry);
  EXPECT_EQ(streamed, content);
}

}  // namespace
}  // namespace ssm::serve
