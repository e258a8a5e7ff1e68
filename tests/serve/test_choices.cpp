// n choices: each a sequence of its own with its own seed (seed + index), together in one response or
// one stream, with usage counting the prompt once.
#include <gtest/gtest.h>

#include <map>

#include "server_fixture.h"

namespace ssm::serve {
namespace {

json sampled(const std::string& prompt, int n, int64_t seed) {
  return {{"prompt", prompt}, {"max_tokens", 12}, {"n", n}, {"seed", seed}, {"temperature", 1.5}, {"ignore_eos", true}};
}

TEST_F(ServerTest, EachChoiceIsTheRequestWithItsOwnSeed) {
  const json three = post_ok("/v1/completions", sampled("Choose", 3, 40));
  ASSERT_EQ(three["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(three["choices"][i]["index"], i);
    EXPECT_EQ(three["choices"][i]["finish_reason"], "length");
    // Choice i is what one choice with seed 40 + i gives.
    EXPECT_EQ(three["choices"][i]["text"],
              post_ok("/v1/completions", sampled("Choose", 1, 40 + i))["choices"][0]["text"]);
  }
  EXPECT_NE(three["choices"][0]["text"], three["choices"][1]["text"]);
  EXPECT_EQ(three["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(three["usage"]["completion_tokens"], 36);
  EXPECT_EQ(three["usage"]["total_tokens"], 42);
  // Greedy choices agree; the later ones start from the first's cached prompt.
  json greedy_three = greedy("Same each time", 8);
  greedy_three["n"] = 3;
  const json same = post_ok("/v1/completions", greedy_three);
  EXPECT_EQ(same["choices"][0]["text"], same["choices"][1]["text"]);
  EXPECT_EQ(same["choices"][0]["text"], same["choices"][2]["text"]);
  EXPECT_EQ(metrics()["prompt_tokens_total"], 4 * 6 + 14);  // each request's prompt once
}

TEST_F(ServerTest, ChoicesStreamTogether) {
  json request = sampled("Stream us", 2, 9);
  request["messages"] = {{{"role", "user"}, {"content", "Stream us"}}};
  request.erase("prompt");
  const json whole = post_ok("/v1/chat/completions", request);
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  std::map<int, std::string> content;
  std::map<int, int> roles, finishes;
  const std::vector<json> got = events("/v1/chat/completions", request);
  ASSERT_GE(got.size(), 3u);
  for (const json& e : got) {
    if (!e.is_object() || e["choices"].empty()) continue;
    ASSERT_EQ(e["choices"].size(), 1u);
    const json& choice = e["choices"][0];
    const int index = choice["index"];
    roles[index] += choice["delta"].contains("role");
    content[index] += choice["delta"].value("content", "");
    finishes[index] += !choice["finish_reason"].is_null();
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(roles[i], 1);
    EXPECT_EQ(finishes[i], 1);
    EXPECT_EQ(content[i], whole["choices"][i]["message"]["content"]);
  }
  EXPECT_EQ(got[got.size() - 2]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(got.back(), "[DONE]");
}

}  // namespace
}  // namespace ssm::serve
