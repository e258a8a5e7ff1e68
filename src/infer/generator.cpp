#include "infer/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"

namespace ssm {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

GenerationResult Generator::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                                     const TokenCallback& on_token) {
  options.sampling.validate();
  SSM_CHECK(options.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", options.max_new_tokens);
  const int64_t vocab = model_.config().vocab_size;
  const int64_t sample_vocab = options.sample_vocab > 0 ? std::min(options.sample_vocab, vocab) : vocab;
  const int64_t batch = int64_t(prompts.size());
  GenerationResult result;
  result.sequences = prompts;
  for (const auto& prompt : prompts) {
    SSM_CHECK(!prompt.empty(), "empty prompt: give at least one token");
    for (int32_t id : prompt)
      SSM_CHECK(id >= 0 && id < vocab, "token id {} is outside the vocabulary [0, {})", id, vocab);
  }
  if (batch == 0 || options.max_new_tokens == 0) return result;

  // Prefill each prompt on its own (lengths differ; an SSM cannot skip padding), then decode together.
  auto start = std::chrono::steady_clock::now();
  size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  ModelState state = model_.new_state(batch);
  state.reserve(int64_t(longest) + options.max_new_tokens);
  ws_.reset();
  // The next token's logits per sequence, where the sampler reads them (the host).
  Tensor logits = Tensor::empty({batch, vocab});
  const Workspace::Mark base = ws_.mark();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& prompt = prompts[size_t(b)];
    Tensor ids = Tensor::empty({1, int64_t(prompt.size())}, DType::I32);  // host ids: the model copies them
    std::copy(prompt.begin(), prompt.end(), ids.data<int32_t>());
    ModelState single = model_.new_state(1);
    single.reserve(int64_t(prompt.size()));
    logits.slice(0, b, 1).copy_from(model_.forward(ids, &single, false, ws_));
    single.copy_sequence(0, state, b);
    ws_.release(base);
    result.prefill_tokens += int64_t(prompt.size());
  }
  result.prefill_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < batch; ++b) {
    SamplingOptions per_sequence = options.sampling;
    per_sequence.seed += uint64_t(b);
    samplers.emplace_back(per_sequence);
  }
  std::vector<bool> done(size_t(batch), false);
  Tensor step_ids = Tensor::zeros({batch}, DType::I32);
  const Workspace::Mark step_base = ws_.mark();
  for (int64_t produced = 0; produced < options.max_new_tokens; ++produced) {
    int64_t active = 0;
    for (int64_t b = 0; b < batch; ++b) {
      if (done[size_t(b)]) continue;
      float* row = logits.data<float>() + b * vocab;
      auto& sequence = result.sequences[size_t(b)];
      const int32_t token = samplers[size_t(b)].sample(row, sample_vocab, sequence);
      sequence.push_back(token);
      step_ids.data<int32_t>()[b] = token;
      if (produced > 0) ++result.decode_tokens;
      const bool is_eos = std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end();
      const bool keep_going = on_token ? on_token(size_t(b), token) : true;
      if (is_eos || !keep_going) done[size_t(b)] = true;
      else ++active;
    }
    if (active == 0 || produced + 1 == options.max_new_tokens) break;
    ws_.release(step_base);
    logits.copy_from(model_.step(step_ids, state, ws_));
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace ssm
