#include "infer/batch_state.h"

#include "core/error.h"

namespace ssm {

void BatchState::reserve(int64_t rows) {
  SSM_CHECK(size() == 0, "BatchState::reserve: the batch has {} rows already", size());
  ModelState reserved = model_.new_state(rows);
  if (!reserved.resizable()) return;
  reserved.resize(0);
  state_ = std::move(reserved);
}

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
  std::vector<int64_t> from;
  for (int64_t i = 0; i < size(); ++i)
    if (keep[size_t(i)]) from.push_back(i);
  keep_rows(from);
}

std::vector<int64_t> BatchState::remove(const std::vector<bool>& keep) {
  SSM_CHECK(int64_t(keep.size()) == size(), "BatchState::remove: {} flags for {} rows", keep.size(), size());
  int64_t kept = 0;
  for (bool k : keep) kept += k;
  // Rows below `kept` stay where they are; each dropped one there takes the next kept row above.
  std::vector<int64_t> from(static_cast<size_t>(kept));
  for (int64_t i = 0, above = kept; i < kept; ++i) {
    if (keep[size_t(i)]) {
      from[size_t(i)] = i;
      continue;
    }
    while (!keep[size_t(above)]) ++above;
    from[size_t(i)] = above++;
  }
  keep_rows(from);
  return from;
}

void BatchState::keep_rows(const std::vector<int64_t>& from) {
  const int64_t kept = int64_t(from.size());
  if (kept == size()) return;  // every row kept, each where it was
  if (state_.resizable()) {
    // In place: a row is written only after the row it held has moved (or left).
    for (int64_t to = 0; to < kept; ++to)
      if (from[size_t(to)] != to) state_.copy_sequence(from[size_t(to)], state_, to);
    state_.resize(kept);
    return;
  }
  ModelState next = kept > 0 ? model_.new_state(kept) : ModelState();
  for (int64_t to = 0; to < kept; ++to) state_.copy_sequence(from[size_t(to)], next, to);
  state_ = std::move(next);
}

}  // namespace ssm
