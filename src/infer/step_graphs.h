// Decode steps on the GPU recorded as device graphs, one per batch size, and replayed
// (graph_recordings.h): a step is then one launch instead of hundreds. A recording holds the
// addresses of everything the step touched, so it is replayed only while none has moved: the ids (the
// caller keeps them at one address per batch size), the state (the same ModelState, resizable and not
// grown since: its bytes() unchanged) and the workspace (GraphRecordings checks its block and mark).
// Otherwise, and for models whose step cannot be recorded, the step runs op by op.
#pragma once
#include <cstdint>

#include "infer/graph_recordings.h"
#include "model/language_model.h"

namespace ssm {

class StepGraphs {
 public:
  explicit StepGraphs(const LanguageModel& model) : model_(model), recordings_(0, 1) {}

  // One decode step of `state` (batch = ids.size(0)) from `ids` on the model's device; returns the
  // logits, taken from `ws` (valid until the caller releases it below where it was at the call). The
  // first step at a batch size runs directly (it plans the workspace, so that recording allocates
  // nothing), then is recorded for the next.
  Tensor step(const Tensor& ids, ModelState& state, Workspace& ws);
  // Drops every recording (the caller is about to free or replace what they point at).
  void clear();
  int64_t replayed() const { return recordings_.replayed(); }  // steps replayed so far

 private:
  const LanguageModel& model_;
  GraphRecordings recordings_;  // by (batch size, 1), every one kept (a server's batch sizes are bounded by its slots)
  const ModelState* state_ = nullptr;  // what the recordings hold: this state at these bytes
  int64_t state_bytes_ = -1;
};

}  // namespace ssm
