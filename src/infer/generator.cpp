#include "infer/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/resource_usage.h"

namespace ssm {

namespace {
// Times one phase and counts the page faults taken meanwhile.
class PhaseTimer {
 public:
  PhaseTimer() : start_(std::chrono::steady_clock::now()), faults_(minor_page_faults()) {}
  void finish(PhaseStats& stats) const {
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    stats.page_faults = minor_page_faults() - faults_;
  }

 private:
  std::chrono::steady_clock::time_point start_;
  int64_t faults_;
};
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
  for (auto& sequence : result.sequences) sequence.reserve(sequence.size() + size_t(options.max_new_tokens));
  for (const auto& prompt : prompts) {
    SSM_CHECK(!prompt.empty(), "empty prompt: give at least one token");
    for (int32_t id : prompt)
      SSM_CHECK(id >= 0 && id < vocab, "token id {} is outside the vocabulary [0, {})", id, vocab);
  }
  if (batch == 0 || options.max_new_tokens == 0) return result;

  // Prefill each prompt on its own (lengths differ; an SSM cannot skip padding), then decode together.
  const PhaseTimer prefill_timer;
  size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  ModelState& state = prepare_states(batch);
  state.reserve(int64_t(longest) + options.max_new_tokens);
  ws_.reset();
  host_.reset();
  // The next token's logits per sequence, where the sampler reads them (the host).
  Tensor logits = host_.take({batch, vocab});
  const Workspace::Mark base = ws_.mark(), host_base = host_.mark();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& prompt = prompts[size_t(b)];
    Tensor ids = host_.take({1, int64_t(prompt.size())}, DType::I32);  // host ids: the model copies them
    std::copy(prompt.begin(), prompt.end(), ids.data<int32_t>());
    // One sequence prefills into a state of its own, copied into the batch's afterwards.
    ModelState& single = batch == 1 ? state : prompt_state_;
    zero_.copy_sequence(0, single, 0);
    single.reserve(int64_t(prompt.size()));
    logits.slice(0, b, 1).copy_from(model_.forward(ids, &single, false, ws_));
    if (&single != &state) single.copy_sequence(0, state, b);
    ws_.release(base);
    host_.release(host_base);
    result.prefill.tokens += int64_t(prompt.size());
  }
  prefill_timer.finish(result.prefill);

  const PhaseTimer decode_timer;
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < batch; ++b) {
    SamplingOptions per_sequence = options.sampling;
    per_sequence.seed += uint64_t(b);
    samplers.emplace_back(per_sequence);
  }
  std::vector<bool> done(size_t(batch), false);
  Tensor step_ids = host_.zeros({batch}, DType::I32);
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
      if (produced > 0) ++result.decode.tokens;
      const bool is_eos = std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end();
      const bool keep_going = on_token ? on_token(size_t(b), token) : true;
      if (is_eos || !keep_going) done[size_t(b)] = true;
      else ++active;
    }
    if (active == 0 || produced + 1 == options.max_new_tokens) break;
    ws_.release(step_base);
    logits.copy_from(model_.step(step_ids, state, ws_));
  }
  decode_timer.finish(result.decode);
  // A call that grew a workspace plans its one block now, not at the start of the next call.
  ws_.reset();
  host_.reset();
  return result;
}

ModelState& Generator::prepare_states(int64_t batch) {
  if (zero_.batch == 0) zero_ = model_.new_state(1);
  if (batch > 1 && prompt_state_.batch == 0) prompt_state_ = model_.new_state(1);
  if (state_.batch != batch) state_ = model_.new_state(batch);
  return state_;
}

}  // namespace ssm
