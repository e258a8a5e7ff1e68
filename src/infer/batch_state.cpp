#include "infer/batch_state.h"

#include "core/error.h"

namespace ssm {

int64_t BatchState::append(const ModelState& from, int64_t row) {
  const int64_t n = size();
  if (state_.mixers.empty()) {
    state_ = model_.new_state(1);
  } else if (state_.resizable()) {
    state_.resize(n + 1);
  } else {
    ModelState next = model_.new_state(n + 1);
    for (int64_t i = 0; i < n; ++i) state_.copy_sequence(i, next, i);
    state_ = std::move(next);
  }
  from.copy_sequence(row, state_, n);
  return n;
}

void BatchState::retain(const std::vector<bool>& keep) {
  SSM_CHECK(int64_t(keep.size()) == size(), "BatchState::retain: {} flags for {} rows", keep.size(), size());
  int64_t kept = 0;
  for (bool k : keep) kept += k;
  if (kept == size()) return;
  if (state_.resizable()) {
    for (int64_t i = 0, to = 0; i < size(); ++i)
      if (keep[size_t(i)]) {
        if (i != to) state_.copy_sequence(i, state_, to);
        ++to;
      }
    state_.resize(kept);
    return;
  }
  ModelState next = kept > 0 ? model_.new_state(kept) : ModelState();
  for (int64_t i = 0, to = 0; i < size(); ++i)
    if (keep[size_t(i)]) state_.copy_sequence(i, next, to++);
  state_ = std::move(next);
}

}  // namespace ssm
