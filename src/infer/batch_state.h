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
  // Rebuilt at each change, since a step runs on a state whose batch is exactly the active rows: a
  // change allocates the new batch and copies every row, about the state traffic of one decode step.
  // Keeping the memory of the largest batch and stepping a view of its first rows would save that.
  ModelState state_;
};

}  // namespace ssm
