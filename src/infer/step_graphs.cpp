#include "infer/step_graphs.h"

namespace ssm {

void StepGraphs::clear() {
  recordings_.clear();
  state_ = nullptr;
}

Tensor StepGraphs::step(const Tensor& ids, ModelState& state, Workspace& ws) {
  // A state that cannot resize in place may be rebuilt at the same size elsewhere, which bytes() would
  // not tell: only resizable ones (which move only to grow) are replayed.
  if (model_.device() == Device::CPU || !model_.replayable_step() || !state.resizable() || recordings_.refused())
    return model_.step(ids, state, ws);
  if (state_ != &state || state_bytes_ != state.bytes()) {
    clear();
    state_ = &state;
    state_bytes_ = state.bytes();
  }
  const GraphRecordings::Key key{ids.size(0), 1};
  if (recordings_.recorded(key, ws)) return recordings_.replay(key, ws);
  const auto work = [&] { return model_.step(ids, state, ws); };
  return recordings_.run(key, ws, work, work);
}

}  // namespace ssm
