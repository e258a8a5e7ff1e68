#include "infer/cached_prefill.h"

#include <algorithm>

#include "core/error.h"

namespace ssm {

CachedPrefill::CachedPrefill(const LanguageModel& model, PrefixCache* cache, int64_t chunk)
    : model_(model), cache_(cache), chunk_(chunk), ws_(model.device()) {
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

bool CachedPrefill::advance(std::span<const int32_t> prompt, Result& progress) {
  const int64_t size = int64_t(prompt.size()), pos = progress.done;
  if (pos == size) return true;
  const int64_t end = std::min((pos / chunk_ + 1) * chunk_, size);
  const WorkspaceScope scope(ws_), host_scope(host_);
  Tensor ids = host_.take({1, end - pos}, DType::I32);  // the model copies them to its device
  std::copy(prompt.begin() + pos, prompt.begin() + end, ids.data<int32_t>());
  Tensor logits = model_.forward(ids, &progress.state, false, ws_);
  if (logits.device() != Device::CPU) {
    Tensor host = host_.take(logits.shape());
    host.copy_from(logits);  // waits for the chunk: the only wait of a prefill chunk
    logits = host;
  }
  progress.logits.assign(logits.data<float>(), logits.data<float>() + model_.config().vocab_size);
  progress.done = end;
  if (cache_) {
    Snapshot snapshot{model_.new_state(1), progress.logits};
    progress.state.copy_sequence(0, snapshot.state, 0);
    cache_->insert(prompt.first(size_t(end)), std::move(snapshot));
  }
  return end == size;
}

}  // namespace ssm
