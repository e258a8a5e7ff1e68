#include "infer/cached_prefill.h"

#include <algorithm>

#include "core/error.h"

namespace ssm {

CachedPrefill::CachedPrefill(const LanguageModel& model, PrefixCache* cache, int64_t chunk)
    : model_(model), cache_(cache), chunk_(chunk) {
  SSM_CHECK(chunk > 0, "prefill chunk must be > 0, got {}", chunk);
  SSM_CHECK(model.device() == Device::CPU, "the prefix cache keeps logits on the host: the model must be on the CPU");
}

CachedPrefill::Result CachedPrefill::run(std::span<const int32_t> prompt) {
  SSM_CHECK(!prompt.empty(), "empty prompt: give at least one token");
  Result result;
  result.state = model_.new_state(1);
  const PrefixCache::Hit hit = cache_ ? cache_->find(prompt, chunk_) : PrefixCache::Hit{};
  if (hit.snapshot) {
    hit.snapshot->state.copy_sequence(0, result.state, 0);
    result.logits = hit.snapshot->logits;
    result.cached_tokens = hit.length;
  }
  const int64_t vocab = model_.config().vocab_size;
  for (int64_t pos = hit.length, end; pos < int64_t(prompt.size()); pos = end) {
    end = std::min<int64_t>((pos / chunk_ + 1) * chunk_, int64_t(prompt.size()));
    const WorkspaceScope scope(ws_);
    Tensor ids = ws_.take({1, end - pos}, DType::I32);
    std::copy(prompt.begin() + pos, prompt.begin() + end, ids.data<int32_t>());
    const Tensor logits = model_.forward(ids, &result.state, false, ws_);
    result.logits.assign(logits.data<float>(), logits.data<float>() + vocab);
    if (!cache_) continue;
    Snapshot snapshot{model_.new_state(1), result.logits};
    result.state.copy_sequence(0, snapshot.state, 0);
    cache_->insert(prompt.first(size_t(end)), std::move(snapshot));
  }
  return result;
}

}  // namespace ssm
