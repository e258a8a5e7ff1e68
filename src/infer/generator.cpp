#include "infer/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/resource_usage.h"
#include "ops/ops.h"

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

  // Prompts of one length prefill together; otherwise each on its own (an SSM cannot skip padding).
  // Then every sequence decodes together.
  const PhaseTimer prefill_timer;
  const int64_t prefills_replayed_before = prefill_graphs_.replayed();
  size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  ModelState& state = prepare_states(batch);
  state.reserve(int64_t(longest) + options.max_new_tokens);
  ws_.reset();
  host_.reset();
  // Greedy decoding on the GPU picks the tokens there and brings back only their ids; otherwise the
  // sampler reads each next token's logits on the host.
  const bool pick_on_device = model_.device() != Device::CPU && options.sampling.temperature == 0.0f &&
                              options.sampling.repetition_penalty == 1.0f;
  Tensor logits = host_.take({batch, vocab});
  Tensor picked = host_.take({batch}, DType::I32);
  Tensor device_picked = pick_on_device ? ws_.take({batch}, DType::I32) : Tensor();
  Tensor device_ids = model_.device() != Device::CPU ? ws_.take({batch}, DType::I32) : Tensor();
  // The logits of sequence b (on the model's device) become its next token's choice.
  const auto receive = [&](const Tensor& rows, int64_t b) {
    if (!pick_on_device) {
      logits.slice(0, b, rows.size(0)).copy_from(rows);
      return;
    }
    Tensor chosen = device_picked.slice(0, b, rows.size(0));
    ops::argmax(rows.slice(1, 0, sample_vocab), chosen);
    picked.slice(0, b, rows.size(0)).copy_from(chosen);
  };
  const Workspace::Mark base = ws_.mark(), host_base = host_.mark();
  const bool one_length = std::all_of(prompts.begin(), prompts.end(),
                                      [&](const auto& prompt) { return prompt.size() == prompts[0].size(); });
  if (one_length && batch > 1) {
    const int64_t length = int64_t(prompts[0].size());
    Tensor ids = host_.take({batch, length}, DType::I32);
    for (int64_t b = 0; b < batch; ++b) {
      std::copy(prompts[size_t(b)].begin(), prompts[size_t(b)].end(), ids.data<int32_t>() + b * length);
      zero_.copy_sequence(0, state, b);
    }
    receive(prefill_graphs_.forward(ids, state, ws_), 0);
    ws_.release(base);
    host_.release(host_base);
    result.prefill.tokens = batch * length;
  }
  for (int64_t b = 0; b < batch && !(one_length && batch > 1); ++b) {
    const auto& prompt = prompts[size_t(b)];
    Tensor ids = host_.take({1, int64_t(prompt.size())}, DType::I32);  // host ids: the model copies them
    std::copy(prompt.begin(), prompt.end(), ids.data<int32_t>());
    // One sequence prefills into a state of its own, copied into the batch's afterwards.
    ModelState& single = batch == 1 ? state : prompt_state_;
    zero_.copy_sequence(0, single, 0);
    single.reserve(int64_t(prompt.size()));
    receive(prefill_graphs_.forward(ids, single, ws_), b);
    if (&single != &state) single.copy_sequence(0, state, b);
    ws_.release(base);
    host_.release(host_base);
    result.prefill.tokens += int64_t(prompt.size());
  }
  prefill_timer.finish(result.prefill);
  result.replayed_prefills = prefill_graphs_.replayed() - prefills_replayed_before;

  const PhaseTimer decode_timer;
  const int64_t replayed_before = graphs_.replayed();
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
      auto& sequence = result.sequences[size_t(b)];
      const int32_t token = pick_on_device ? picked.data<int32_t>()[b]
                                           : samplers[size_t(b)].sample(logits.data<float>() + b * vocab,
                                                                        sample_vocab, sequence);
      sequence.push_back(token);
      step_ids.data<int32_t>()[b] = token;
      if (produced > 0) ++result.decode.tokens;
      const bool is_eos = std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end();
      const bool keep_going = on_token ? on_token(size_t(b), token) : true;
      if (is_eos || !keep_going) done[size_t(b)] = true;
      else ++active;
    }
    if (active == 0 || produced + 1 == options.max_new_tokens) break;
    if (device_ids.defined()) {
      device_ids.copy_from(step_ids);
      receive(decode_step(device_ids, state), 0);
    } else {
      ws_.release(step_base);
      receive(model_.step(step_ids, state, ws_), 0);
    }
  }
  decode_timer.finish(result.decode);
  result.replayed_steps = graphs_.replayed() - replayed_before;
  // A call that grew a workspace plans its one block now, not at the start of the next call.
  ws_.reset();
  host_.reset();
  return result;
}

ModelState& Generator::prepare_states(int64_t batch) {
  if (zero_.batch == 0) zero_ = model_.new_state(1);
  if (batch > 1 && prompt_state_.batch == 0) prompt_state_ = model_.new_state(1);
  if (state_.batch != batch) {
    graphs_.clear();  // recorded on the old state's addresses
    state_ = model_.new_state(batch);
  }
  return state_;
}

Tensor Generator::decode_step(const Tensor& ids, ModelState& state) {
  const Workspace::Mark mark = ws_.mark();
  Tensor logits = graphs_.step(ids, state, ws_);
  ws_.release(mark);  // read before the next step takes the workspace again
  return logits;
}

}  // namespace ssm
