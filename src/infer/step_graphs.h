// Decode steps on the GPU recorded as device graphs (core/graph.h), one per batch size, and replayed:
// a step is then one launch instead of hundreds. A recording holds the addresses of everything the
// step touched, so it is replayed only while none has moved: the ids (the caller keeps them at one
// address per batch size), the state (the same ModelState, resizable and not grown since: its bytes()
// unchanged)
// and the workspace's block (block_allocations() unchanged, the step taking from the same mark). Otherwise, and for models whose step
// cannot be recorded, the step runs op by op.
#pragma once
#include <cstdint>
#include <map>
#include <memory>

#include "core/graph.h"
#include "core/workspace.h"
#include "model/language_model.h"

namespace ssm {

class StepGraphs {
 public:
  explicit StepGraphs(const LanguageModel& model) : model_(model) {}

  // One decode step of `state` (batch = ids.size(0)) from `ids` on the model's device; returns the
  // logits, taken from `ws` (valid until the caller releases it below where it was at the call). The
  // first step at a batch size runs directly (it plans the workspace, so that recording allocates
  // nothing), then is recorded for the next.
  Tensor step(const Tensor& ids, ModelState& state, Workspace& ws);
  // Drops every recording (the caller is about to free or replace what they point at).
  void clear();
  int64_t replayed() const { return replayed_; }  // steps replayed so far

 private:
  struct Recorded {
    DeviceGraph graph;
    Workspace::Mark mark = 0;  // where the workspace stood: the recorded step's takes start there
    Tensor logits;             // where the recorded step writes them
  };
  const LanguageModel& model_;
  std::map<int64_t, std::unique_ptr<Recorded>> recorded_;  // by batch size
  const ModelState* state_ = nullptr;  // what the recordings hold: this state at these bytes, this block
  int64_t state_bytes_ = -1, blocks_ = -1;
  bool refused_ = false;  // a recording failed once: every step runs op by op
  int64_t replayed_ = 0;
};

}  // namespace ssm
