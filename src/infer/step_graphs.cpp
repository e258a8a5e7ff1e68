#include "infer/step_graphs.h"

namespace ssm {

void StepGraphs::clear() {
  recorded_.clear();
  state_ = nullptr;
}

Tensor StepGraphs::step(const Tensor& ids, ModelState& state, Workspace& ws) {
  const Workspace::Mark mark = ws.mark();
  // A state that cannot resize in place may be rebuilt at the same size elsewhere, which bytes() would
  // not tell: only resizable ones (which move only to grow) are replayed.
  if (model_.device() == Device::CPU || !model_.replayable_step() || !state.resizable() || refused_)
    return model_.step(ids, state, ws);
  const int64_t batch = ids.size(0);
  if (state_ != &state || state_bytes_ != state.bytes() || blocks_ != ws.block_allocations()) clear();
  const auto found = recorded_.find(batch);
  if (found != recorded_.end() && found->second->mark != mark) recorded_.erase(found);
  else if (found != recorded_.end()) {
    found->second->graph.replay();
    ++replayed_;
    ws.take(found->second->logits.shape());  // what the recorded step took: the caller's takes go after it
    return found->second->logits;
  }
  // Run directly first: it plans the workspace for this shape, so that the recording takes no memory
  // and its addresses hold for every replay.
  Tensor logits = model_.step(ids, state, ws);
  ws.release(mark);
  if (blocks_ != ws.block_allocations()) clear();  // the step grew the workspace: the others' block is gone
  state_ = &state;
  state_bytes_ = state.bytes();
  blocks_ = ws.block_allocations();
  auto recording = std::make_unique<Recorded>();
  recording->mark = mark;
  Tensor recorded_logits;
  refused_ = !recording->graph.record([&] { recorded_logits = model_.step(ids, state, ws); });
  ws.release(mark);
  if (!refused_) {
    recording->logits = recorded_logits;
    recorded_.emplace(batch, std::move(recording));
  } else {
    clear();
  }
  ws.take(logits.shape());  // the direct step's logits, below the caller's next takes
  return logits;
}

}  // namespace ssm
