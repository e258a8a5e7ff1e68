#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "ops/cpu/vec_math.h"

namespace ssm {

void SamplingOptions::validate() const {
  SSM_CHECK(std::isfinite(temperature) && temperature >= 0, "--temperature must be >= 0, got {}", temperature);
  SSM_CHECK(top_k >= 0, "--top-k must be >= 0, got {}", top_k);
  SSM_CHECK(top_p > 0 && top_p <= 1, "--top-p must be in (0, 1], got {}", top_p);
  SSM_CHECK(min_p >= 0 && min_p <= 1, "--min-p must be in [0, 1], got {}", min_p);
  SSM_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0,
            "--repetition-penalty must be > 0, got {}", repetition_penalty);
}

int32_t argmax(const float* logits, int64_t vocab) {
  // The first id holding the largest logit: the largest found 16 at a time (one compare-and-keep a
  // logit took ~56 us over a 50k vocabulary, for every greedy token), then its first id. A NaN at
  // id 0 makes the largest NaN, which no logit equals: id 0, as the scan that keeps it would say.
  const float top = vec::max_value(logits, vocab);
  for (int64_t i = 0; i < vocab; ++i)
    if (logits[i] == top) return int32_t(i);
  return 0;
}

int32_t Sampler::sample(float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  if (options_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& v = logits[id];
      v = v > 0 ? v / options_.repetition_penalty : v * options_.repetition_penalty;
    }
  }
  if (options_.temperature == 0.0f) return argmax(logits, vocab);

  // Candidates sorted by logit, cut by top-k, then softmax over what is left.
  candidates_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) candidates_[size_t(i)] = {logits[i] / options_.temperature, int32_t(i)};
  size_t keep = candidates_.size();
  if (options_.top_k > 0) keep = std::min(keep, size_t(options_.top_k));
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(keep), candidates_.end(), by_logit);
  candidates_.resize(keep);

  const float top = candidates_[0].first;
  double total = 0;
  for (auto& c : candidates_) total += (c.first = std::exp(c.first - top));
  // top-p: the smallest prefix whose mass reaches p. min-p: drop tokens below min_p × the top probability.
  double mass = 0;
  size_t cut = candidates_.size();
  for (size_t i = 0; i < candidates_.size(); ++i) {
    mass += candidates_[i].first / total;
    const bool below_min_p = candidates_[i].first < options_.min_p * candidates_[0].first;
    if (i > 0 && below_min_p) {
      cut = i;
      break;
    }
    if (mass >= options_.top_p) {
      cut = i + 1;
      break;
    }
  }
  candidates_.resize(cut);
  double kept = 0;
  for (const auto& c : candidates_) kept += c.first;
  double draw = double(rng_.uniform()) * kept;
  for (const auto& c : candidates_) {
    draw -= c.first;
    if (draw < 0) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace ssm
