// The recurrent state of sequences that decode together, one row each, in a batch whose membership
// changes at step boundaries: a prefilled sequence joins, finished ones leave, the others keep going.
// On the GPU the rows live in device memory and every join and leave is device-to-device copies
// queued on the stream (core/device.h): nothing goes through the host.
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

  // Where every mixer's state resizes in place, allocates `rows` rows now (the batch must be empty),
  // so that the state stays where it is while at most `rows` sequences join: what a recorded decode
  // step needs (infer/step_graphs.h). Otherwise nothing.
  void reserve(int64_t rows);
  // Appends row `row` of `from` (a state of the same model) as the last row; returns its index.
  int64_t append(const ModelState& from, int64_t row = 0);
  // Drops the rows whose `keep` is false; the kept rows stay in order (each row after the first
  // dropped one moves down).
  void retain(const std::vector<bool>& keep);
  // Drops the rows whose `keep` is false, moving the last kept rows into the holes: at most one row
  // copy per dropped row, however large the batch (a server whose 256 streams end at random times
  // would otherwise move half the batch at every leave). Returns, for each row now, the row it was.
  std::vector<int64_t> remove(const std::vector<bool>& keep);

 private:
  // Makes row i the old row from[i] for every i (from: increasing, or each row below from.size() that
  // is not kept replaced by one above it), and the batch from.size() rows.
  void keep_rows(const std::vector<int64_t>& from);

  const LanguageModel& model_;
  // A step runs on a state whose batch is exactly the active rows. Where every mixer's state can
  // resize in place (ModelState::resizable), that batch is a view of the first rows of memory kept
  // for the largest batch seen: a join writes the row after the last, a leave moves kept rows into
  // the places freed, and steady serving allocates nothing (reallocating at every change fragmented
  // the heap: docs/performance.md, Server). Otherwise (KV caches, RAT) a change builds the new batch
  // and copies every row into it.
  ModelState state_;
};

}  // namespace ssm
