#include "bench/inference.h"

#include <algorithm>

#include "core/error.h"
#include "core/random.h"

namespace ssm::bench {

namespace {
std::vector<int32_t> random_prompt(int64_t length, int64_t vocab, Rng& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(length));
  for (int32_t& id : ids) id = int32_t(rng.below(uint64_t(vocab)));
  return ids;
}
}  // namespace

InferenceMeasure measure_inference(const LanguageModel& model, const std::vector<int64_t>& prompt_lengths,
                                   int64_t decode_tokens, uint64_t seed, int64_t batch) {
  SSM_CHECK(!prompt_lengths.empty(), "the benchmark needs at least one prompt length");
  for (int64_t length : prompt_lengths) SSM_CHECK(length >= 1, "prompt lengths must be >= 1, got {}", length);
  SSM_CHECK(decode_tokens >= 1, "decode tokens must be >= 1, got {}", decode_tokens);
  SSM_CHECK(batch >= 1, "the batch must be >= 1, got {}", batch);
  GenerateOptions options;
  options.max_new_tokens = decode_tokens + 1;  // the first token comes from the prefill's logits
  options.sampling.temperature = 0;
  // options.eos_ids stays empty: every call decodes the same number of tokens.

  const int64_t vocab = model.config().vocab_size;
  Rng rng(seed);
  Generator generator(model);
  // Warm-up at every length, the longest first (it plans the workspace for all): what a shape
  // prepares on first use (a matmul primitive, say) is not timed. One decode step warms decoding.
  std::vector<int64_t> lengths = prompt_lengths;
  std::sort(lengths.rbegin(), lengths.rend());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  GenerateOptions warm_up = options;
  warm_up.max_new_tokens = 2;
  const auto prompts = [&](int64_t length) {
    std::vector<std::vector<int32_t>> batch_prompts;
    for (int64_t b = 0; b < batch; ++b) batch_prompts.push_back(random_prompt(length, vocab, rng));
    return batch_prompts;
  };
  for (int64_t length : lengths) generator.generate(prompts(length), warm_up);

  InferenceMeasure measure;
  for (int64_t length : prompt_lengths) {
    const GenerationResult result = generator.generate(prompts(length), options);
    measure.prefill.push_back(result.prefill);
    measure.decode.tokens += result.decode.tokens;
    measure.decode.seconds += result.decode.seconds;
    measure.decode.page_faults += result.decode.page_faults;
  }
  return measure;
}

double prefill_matmul_flops(const LanguageModel& model, int64_t length) {
  const ModelConfig& c = model.config();
  return 2.0 * (model.matmul_macs_per_token() * double(length) + double(c.vocab_size) * double(c.d_model));
}

double decode_bytes_per_token(const LanguageModel& model, int64_t batch) {
  return double(model.weight_bytes()) + 2.0 * double(batch) * double(model.state_bytes(0));
}

}  // namespace ssm::bench
