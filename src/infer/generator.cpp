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

void copy_row(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index) {
  const size_t bytes = from.nbytes() / size_t(from.size(0));
  std::memcpy(static_cast<char*>(to.raw()) + size_t(to_index) * bytes,
              static_cast<const char*>(from.raw()) + size_t(from_index) * bytes, bytes);
}
}  // namespace

void copy_sequence_state(const ModelState& from, int64_t from_index, ModelState& to, int64_t to_index) {
  for (size_t i = 0; i < from.layers.size(); ++i) {
    copy_row(from.layers[i].conv, from_index, to.layers[i].conv, to_index);
    copy_row(from.layers[i].ssm, from_index, to.layers[i].ssm, to_index);
  }
}

GenerationResult Generator::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                                     const TokenCallback& on_token) const {
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
  ModelState state = model_.new_state(batch);
  std::vector<Tensor> next_logits;
  for (int64_t b = 0; b < batch; ++b) {
    const auto& prompt = prompts[size_t(b)];
    Tensor ids = Tensor::empty({1, int64_t(prompt.size())}, DType::I32);
    std::copy(prompt.begin(), prompt.end(), ids.data<int32_t>());
    ModelState single = model_.new_state(1);
    next_logits.push_back(model_.forward(ids, &single, false));
    copy_sequence_state(single, 0, state, b);
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
  Tensor logits;
  for (int64_t produced = 0; produced < options.max_new_tokens; ++produced) {
    int64_t active = 0;
    for (int64_t b = 0; b < batch; ++b) {
      if (done[size_t(b)]) continue;
      float* row = produced == 0 ? next_logits[size_t(b)].data<float>() : logits.data<float>() + b * vocab;
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
    logits = model_.step(step_ids, state);
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace ssm
