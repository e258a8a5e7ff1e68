#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "core/error.h"

#include "infer/sampler.h"
#include "infer/stop_strings.h"

namespace ssm {
namespace {

std::vector<float> logits_of(std::initializer_list<float> values) { return values; }

TEST(InferSampler, TemperatureZeroIsArgmaxFirstMaximum) {
  SamplingOptions options;
  options.temperature = 0;
  Sampler sampler(options);
  auto logits = logits_of({0.1f, 2.0f, -1.0f, 2.0f});
  EXPECT_EQ(sampler.sample(logits.data(), 4, {}), 1);
}

// argmax finds the largest 16 logits at a time: the same id as a plain scan that keeps the first
// maximum, at every length around the 16-lane blocks, with ties (+0 and -0 among them) and NaNs.
TEST(InferSampler, ArgmaxIsThePlainScansFirstMaximum) {
  const auto plain = [](const std::vector<float>& logits) {
    int64_t best = 0;
    for (size_t i = 1; i < logits.size(); ++i)
      if (logits[i] > logits[size_t(best)]) best = int64_t(i);
    return int32_t(best);
  };
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-3, 3);  // few values: many ties
  for (size_t vocab = 1; vocab <= 70; ++vocab)
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> logits(vocab);
      for (float& x : logits) x = float(small(rng));
      if (trial % 4 == 1) logits[size_t(rng()) % vocab] = std::nanf("");
      if (trial % 4 == 2) logits[0] = std::nanf("");
      if (trial % 4 == 3)
        for (float& x : logits) x = x > 0 ? -0.0f : x == 0 ? 0.0f : x;  // the largest is a tie of +0 and -0
      EXPECT_EQ(argmax(logits.data(), int64_t(vocab)), plain(logits)) << "vocab " << vocab << " trial " << trial;
    }
}

TEST(InferSampler, SameSeedSameDraws) {
  SamplingOptions options;
  options.temperature = 1.0f;
  options.top_k = 0;
  options.top_p = 1.0f;
  options.min_p = 0.0f;
  options.seed = 42;
  Sampler a(options), b(options);
  options.seed = 43;
  Sampler c(options);
  std::vector<int32_t> draws_a, draws_b, draws_c;
  for (int i = 0; i < 200; ++i) {
    auto l1 = logits_of({0.0f, 0.1f, 0.2f, 0.3f, 0.4f});
    auto l2 = l1, l3 = l1;
    draws_a.push_back(a.sample(l1.data(), 5, {}));
    draws_b.push_back(b.sample(l2.data(), 5, {}));
    draws_c.push_back(c.sample(l3.data(), 5, {}));
  }
  EXPECT_EQ(draws_a, draws_b);
  EXPECT_NE(draws_a, draws_c);
}

TEST(InferSampler, DrawsFollowTheSoftmax) {
  SamplingOptions options;
  options.temperature = 1.0f;
  options.top_k = 0;
  options.top_p = 1.0f;
  options.min_p = 0.0f;
  Sampler sampler(options);
  std::map<int32_t, int> counts;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    auto l = logits_of({0.0f, std::log(3.0f)});  // probabilities 1/4 and 3/4
    ++counts[sampler.sample(l.data(), 2, {})];
  }
  EXPECT_NEAR(double(counts[1]) / draws, 0.75, 0.02);
}

TEST(InferSampler, TopKOneAndTinyTopPAreGreedy) {
  for (int variant = 0; variant < 2; ++variant) {
    SamplingOptions options;
    options.temperature = 1.5f;
    options.top_k = variant == 0 ? 1 : 0;
    options.top_p = variant == 0 ? 1.0f : 1e-6f;
    options.min_p = 0;
    Sampler sampler(options);
    for (int i = 0; i < 50; ++i) {
      auto l = logits_of({0.5f, 0.4f, 0.7f, 0.69f});
      ASSERT_EQ(sampler.sample(l.data(), 4, {}), 2);
    }
  }
}

TEST(InferSampler, MinPDropsUnlikelyTokens) {
  SamplingOptions options;
  options.temperature = 1.0f;
  options.top_k = 0;
  options.top_p = 1.0f;
  options.min_p = 0.5f;  // keeps tokens with at least half the top probability
  Sampler sampler(options);
  for (int i = 0; i < 300; ++i) {
    auto l = logits_of({0.0f, -0.5f, -5.0f, -6.0f});
    ASSERT_LT(sampler.sample(l.data(), 4, {}), 2);
  }
}

TEST(InferSampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplingOptions options;
  options.temperature = 0;
  options.repetition_penalty = 2.0f;
  Sampler sampler(options);
  auto l = logits_of({1.0f, 0.8f, -1.0f});
  EXPECT_EQ(sampler.sample(l.data(), 3, {0}), 1);  // 1.0 / 2 < 0.8
}

TEST(InferSampler, BadOptionsAreRefused) {
  SamplingOptions options;
  options.top_p = 0;
  EXPECT_THROW(options.validate(), Error);
  options = {};
  options.temperature = -1;
  EXPECT_THROW(options.validate(), Error);
}

TEST(InferStopStrings, HoldsBackPartialMatchesAndCutsAtTheStop) {
  StopStringFilter filter({"END", "\n\n"});
  std::string printed;
  printed += filter.push("Hello E");
  EXPECT_EQ(printed, "Hello ");  // "E" might start "END"
  printed += filter.push("ND of");
  EXPECT_TRUE(filter.stopped());
  EXPECT_EQ(printed, "Hello ");
  EXPECT_EQ(filter.finish(), "");
}

TEST(InferStopStrings, ReleasesHeldTextWhenNoStopFollows) {
  StopStringFilter filter({"END"});
  std::string printed = filter.push("a, E");
  printed += filter.push("N");
  printed += filter.push("x");
  printed += filter.finish();
  EXPECT_EQ(printed, "a, ENx");
  EXPECT_FALSE(filter.stopped());
}

}  // namespace
}  // namespace ssm
