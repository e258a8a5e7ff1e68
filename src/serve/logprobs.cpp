#include "serve/logprobs.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ssm::serve {

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int64_t top) {
  SSM_CHECK(vocab > 0 && token >= 0 && token < vocab && top >= 0, "token_logprob: token {} of vocab {}, top {}", token,
            vocab, top);
  float max = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max = std::max(max, logits[i]);
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) total += std::exp(double(logits[i]) - double(max));
  const double log_total = double(max) + std::log(total);
  const auto logprob = [&](int64_t id) { return float(double(logits[id]) - log_total); };

  TokenLogprob out{token, logprob(token), {}};
  // The `top` largest by a bounded insertion: top is small (at most 20), the vocabulary large.
  const size_t k = size_t(std::min(top, vocab));
  const auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::vector<int32_t> best;
  best.reserve(k + 1);
  for (int32_t id = 0; id < int32_t(vocab) && k > 0; ++id) {
    if (best.size() == k && !before(id, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), id, before), id);
    if (best.size() > k) best.pop_back();
  }
  for (int32_t id : best) out.top.emplace_back(id, logprob(id));
  return out;
}

}  // namespace ssm::serve
