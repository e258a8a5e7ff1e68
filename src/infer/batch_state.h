// The recurrent state of sequences that decode together, one row each, in a batch whose membership
// changes at step boundaries: a prefilled sequence joins, finished ones leave, the others keep going.
#pragma once
#include <cstdint>
#include <vector>

#include "model/language_model.h"

namespace ssm {

class BatchState {
 public:
  explicit BatchState(const LanguageModel& model) : model_(model) {}

  int64_t size() const { return state_.batch; }
  ModelState& state() { return state_; }

  // Appends row `row` of `from` (a state of the same model) as the last row; returns its index.
  int64_t append(const ModelState& from, int64_t row = 0);
  // Drops the rows whose `keep` is false; the kept rows stay in order.
  void retain(const std::vector<bool>& keep);

 private:
  const LanguageModel& model_;
  // A step runs on a state whose batch is exactly the active rows. Where every mixer's state can
  // resize in place (ModelState::resizable), that batch is a view of the first rows of memory kept
  // for the largest batch seen: a join writes the row after the last, a leave moves the kept rows
  // down, and steady serving allocates nothing (reallocating at every change fragmented the heap:
  // docs/performance.md, Server). Otherwise (KV caches, RAT) a change builds the new batch and
  // copies every row into it.
  ModelState state_;
};

}  // namespace ssm
