#include "infer/cached_prefill.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace ssm {

CachedPrefill::CachedPrefill(const LanguageModel& model, PrefixCache* cache, int64_t chunk)
    : model_(model),
      cache_(cache),
      chunk_(chunk),
      blank_(model.new_state(1)),
      ws_(model.device()),
      host_(Workspace::staging_for(model.device())),
      graphs_(model) {
  same_position_ = !blank_.resizable();
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
  const PrefixCache::Hit hit = cache_ ? cache_->find(prompt, chunk_) : PrefixCache::Hit{};
  if (hit.snapshot) {
    // A state to overwrite whole: one a prompt left behind or the cache evicted, else a new one left
    // unset (on the GPU a fresh state costs more than the copy: allocations, zeroing, A).
    result.state = std::move(spare_);
    spare_ = ModelState();
    if (result.state.mixers.empty()) result.state = cache_->take_spare();
    if (result.state.mixers.empty()) result.state = model_.unset_state(blank_, 1);
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

int64_t CachedPrefill::advance(std::span<const Prefilling> prompts, const AllIn& all_in) {
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
  for (const auto& group : groups) run_together(prompts, group, all_in);
  return int64_t(groups.size());
}

void CachedPrefill::run_together(std::span<const Prefilling> prompts, const std::vector<size_t>& group,
                                 const AllIn& all_in) {
  const int64_t rows = int64_t(group.size());
  const int64_t length = next_chunk(prompts[group[0]].prompt, *prompts[group[0]].progress);
  const auto hands_over = [&](const Prefilling& p) {  // whether the state leaves through all_in after this chunk
    return all_in && p.progress->done + length == int64_t(p.prompt.size());
  };
  const WorkspaceScope scope(ws_), host_scope(host_);
  Tensor ids = host_.take({rows, length}, DType::I32);  // the model copies them to its device
  for (int64_t r = 0; r < rows; ++r) {
    const Prefilling& p = prompts[group[size_t(r)]];
    const auto from = p.prompt.begin() + p.progress->done;
    std::copy(from, from + length, ids.data<int32_t>() + r * length);
  }
  // One prompt that has (or will keep) a state of its own runs on it; otherwise the rows, each the
  // prompt's state or a blank one.
  const Prefilling& first = prompts[group[0]];
  ModelState* state = &first.progress->state;
  if (rows == 1 && (!state->mixers.empty() || !hands_over(first))) {
    if (state->mixers.empty()) *state = model_.new_state(1);
  } else {
    const bool reused = !together_.mixers.empty() && together_.resizable();
    if (reused)
      together_.resize(rows);
    else
      together_ = model_.new_state(rows);  // fresh rows: blank already
    for (int64_t r = 0; r < rows; ++r) {
      const ModelState& own = prompts[group[size_t(r)]].progress->state;
      if (!own.mixers.empty())
        own.copy_sequence(0, together_, r);
      else if (reused)
        blank_.copy_sequence(0, together_, r);
    }
    state = &together_;
  }
  Tensor logits = graphs_.forward(ids, *state, ws_);
  if (logits.device() != Device::CPU) {
    Tensor host = host_.take(logits.shape());
    host.copy_from(logits);  // waits for the chunk: the only wait of a prefill chunk
    logits = host;
  }
  const int64_t vocab = model_.config().vocab_size;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t index = group[size_t(r)];
    const Prefilling& p = prompts[index];
    Result& progress = *p.progress;
    const bool leaves = hands_over(p);
    const int64_t row = state == &together_ ? r : 0;
    const float* row_logits = logits.data<float>() + r * logits.size(1);
    progress.logits.assign(row_logits, row_logits + vocab);
    progress.done += length;
    // A prompt all in is handed over before its snapshot is taken: its first token need not wait for
    // the copy (all_in copies the state, it does not move it).
    if (leaves) all_in(index, *state, row);
    if (cache_) {
      Snapshot snapshot{cache_->take_spare(), progress.logits};
      if (snapshot.state.mixers.empty()) snapshot.state = model_.unset_state(blank_, 1);
      state->copy_sequence(row, snapshot.state, 0);
      cache_->insert(p.prompt.first(size_t(progress.done)), std::move(snapshot));
    }
    if (leaves) {  // (after the snapshot: it may be the state handed over)
      if (state == &progress.state && progress.state.resizable()) spare_ = std::move(progress.state);
      progress.state = ModelState();
    } else if (state == &together_) {
      if (progress.state.mixers.empty()) progress.state = model_.unset_state(blank_, 1);
      together_.copy_sequence(r, progress.state, 0);
    }
  }
}

}  // namespace ssm
