#include "infer/graph_recordings.h"

#include <algorithm>

#include "core/error.h"

namespace ssm {

bool GraphRecordings::recorded(Key key, const Workspace& ws) {
  if (&ws != workspace_ || blocks_ != ws.block_allocations()) clear();  // the block they write in is gone
  const auto found = recorded_.find(key);
  if (found == recorded_.end()) return false;
  if (found->second->mark == ws.mark()) return true;
  recorded_.erase(found);
  return false;
}

Tensor GraphRecordings::replay(Key key, Workspace& ws) {
  SSM_CHECK(recorded(key, ws), "GraphRecordings::replay: nothing recorded for ({}, {}) at this workspace", key.first,
            key.second);
  Recorded& recording = *recorded_.at(key);
  recording.graph.replay();
  recording.used = ++use_clock_;
  ++replayed_;
  ws.take(recording.logits.shape());  // what the recorded call took: the caller's takes go after it
  return recording.logits;
}

Tensor GraphRecordings::run(Key key, Workspace& ws, const Work& direct, const Work& recorded) {
  const Workspace::Mark mark = ws.mark();
  const Tensor logits = direct();
  const bool record = records_next(key);
  ++runs_[key];
  if (!record) return logits;
  ws.release(mark);
  // The direct run grew the workspace (the others' block is gone), or the others are another's.
  if (&ws != workspace_ || blocks_ != ws.block_allocations()) clear();
  workspace_ = &ws;
  blocks_ = ws.block_allocations();
  auto recording = std::make_unique<Recorded>();
  recording->mark = mark;
  recording->used = ++use_clock_;
  // Recording queues nothing, so the direct run's logits stay where they are; it takes from the
  // workspace what the direct run took, so the block the direct run planned holds it.
  refused_ = !recording->graph.record([&] { recording->logits = recorded(); });
  ws.release(mark);
  if (refused_) {
    clear();
  } else {
    recorded_[key] = std::move(recording);
    if (kept_ > 0 && recorded_.size() > kept_)
      recorded_.erase(std::min_element(recorded_.begin(), recorded_.end(), [](const auto& a, const auto& b) {
        return a.second->used < b.second->used;
      }));
  }
  ws.take(logits.shape());  // the direct run's logits, below the caller's next takes
  return logits;
}

bool GraphRecordings::records_next(Key key) const {
  const auto found = runs_.find(key);
  return !refused_ && (found == runs_.end() ? 0 : found->second) + 1 >= direct_runs_;
}

void GraphRecordings::clear() { recorded_.clear(); }

}  // namespace ssm
