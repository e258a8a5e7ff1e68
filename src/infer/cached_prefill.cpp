#include "infer/cached_prefill.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace ssm {

CachedPrefill::CachedPrefill(const LanguageModel& model, PrefixCache* cache, int64_t chunk)
    : model_(model),
      cache_(cache),
      chunk_(chunk),
      same_position_(!model.new_state(1).resizable()),
      ws_(model.device()) {
  SSM_CHECK(chunk > 0, "prefill chunk must be > 0, got {}", chunk);
}

CachedPrefill::Result CachedPrefill::run(std::span<const int32_t> prompt) {
  Result progress = start(prompt);
  while (!advance(prompt, progress)) {
  }
  return progress;
}

CachedPrefill::Result CachedPrefill::start(std::span<const int32_t> prompt) {
  SSM_CHECK(!prompt.empty(), "empty prompt: give at least one token");
  Result result;
  result.state = model_.new_state(1);
  const PrefixCache::Hit hit = cache_ ? cache_->find(prompt, chunk_) : PrefixCache::Hit{};
  if (hit.snapshot) {
    hit.snapshot->state.copy_sequence(0, result.state, 0);
    result.logits = hit.snapshot->logits;
    result.cached_tokens = result.done = hit.length;
  }
  return result;
}

int64_t CachedPrefill::cached_tokens(std::span<const int32_t> prompt) {
  return cache_ ? cache_->find(prompt, chunk_).length : 0;
}

int64_t CachedPrefill::next_chunk(std::span<const int32_t> prompt, const Result& progress) const {
  const int64_t size = int64_t(prompt.size()), pos = progress.done;
  return std::min((pos / chunk_ + 1) * chunk_, size) - pos;
}

bool CachedPrefill::advance(std::span<const int32_t> prompt, Result& progress) {
  const Prefilling one{prompt, &progress};
  advance(std::span(&one, 1));
  return progress.done == int64_t(prompt.size());
}

int64_t CachedPrefill::advance(std::span<const Prefilling> prompts) {
  // Groups of prompts whose chunks run together, keyed by the chunk's length (and start).
  std::vector<std::pair<int64_t, int64_t>> keys;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t length = next_chunk(prompts[i].prompt, *prompts[i].progress);
    if (length == 0) continue;
    const std::pair key{length, same_position_ ? prompts[i].progress->done : 0};
    const auto found = std::find(keys.begin(), keys.end(), key);
    if (found == keys.end()) {
      keys.push_back(key);
      groups.push_back({i});
    } else {
      groups[size_t(found - keys.begin())].push_back(i);
    }
  }
  for (const auto& group : groups) run_together(prompts, group);
  return int64_t(groups.size());
}

void CachedPrefill::run_together(std::span<const Prefilling> prompts, const std::vector<size_t>& group) {
  const int64_t rows = int64_t(group.size());
  const int64_t length = next_chunk(prompts[group[0]].prompt, *prompts[group[0]].progress);
  const WorkspaceScope scope(ws_), host_scope(host_);
  Tensor ids = host_.take({rows, length}, DType::I32);  // the model copies them to its device
  for (int64_t r = 0; r < rows; ++r) {
    const Prefilling& p = prompts[group[size_t(r)]];
    const auto from = p.prompt.begin() + p.progress->done;
    std::copy(from, from + length, ids.data<int32_t>() + r * length);
  }
  // One prompt runs on its own state; several on rows gathered from theirs and given back after.
  ModelState* state = &prompts[group[0]].progress->state;
  if (rows > 1) {
    if (!together_.mixers.empty() && together_.resizable())
      together_.resize(rows);
    else
      together_ = model_.new_state(rows);
    for (int64_t r = 0; r < rows; ++r) prompts[group[size_t(r)]].progress->state.copy_sequence(0, together_, r);
    state = &together_;
  }
  Tensor logits = model_.forward(ids, state, false, ws_);
  if (logits.device() != Device::CPU) {
    Tensor host = host_.take(logits.shape());
    host.copy_from(logits);  // waits for the chunk: the only wait of a prefill chunk
    logits = host;
  }
  const int64_t vocab = model_.config().vocab_size;
  for (int64_t r = 0; r < rows; ++r) {
    const Prefilling& p = prompts[group[size_t(r)]];
    Result& progress = *p.progress;
    if (rows > 1) together_.copy_sequence(r, progress.state, 0);
    const float* row_logits = logits.data<float>() + r * logits.size(1);
    progress.logits.assign(row_logits, row_logits + vocab);
    progress.done += length;
    if (cache_) {
      Snapshot snapshot{model_.new_state(1), progress.logits};
      progress.state.copy_sequence(0, snapshot.state, 0);
      cache_->insert(p.prompt.first(size_t(progress.done)), std::move(snapshot));
    }
  }
}

}  // namespace ssm
