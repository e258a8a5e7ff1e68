#include "serve/logprobs.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/cpu/vec_math.h"

namespace ssm::serve {

namespace {

// The sum of e^(logits[i] - max) in double, the exponentials 16 at a time (vec::fast_exp: relative error
// < 2e-7, far inside a float log-probability's). std::exp in double, a call per id, took ~250 us over a
// 50k vocabulary on a 2-core development machine: on the path of every token whose log-probability a
// request asks for, the first one included.
double sum_exp(const float* logits, int64_t vocab, float max) {
  const vec::f32x16 shift = vec::splat<vec::f32x16>(max);
  double total = 0;
  int64_t i = 0;
  for (; i + vec::kLanes <= vocab; i += vec::kLanes)
    total += vec::reduce_add(vec::fast_exp(vec::load(logits + i) - shift));
  for (; i < vocab; ++i) total += vec::fast_exp(logits[i] - max);
  return total;
}

}  // namespace

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int64_t top) {
  SSM_CHECK(vocab > 0 && token >= 0 && token < vocab && top >= 0, "token_logprob: token {} of vocab {}, top {}", token,
            vocab, top);
  const float max = vec::max_value(logits, vocab);
  const double log_total = double(max) + std::log(sum_exp(logits, vocab, max));
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
