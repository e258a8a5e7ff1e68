// Model calls on the GPU recorded as device graphs (core/graph.h) and replayed: a call is then one
// launch instead of hundreds. What the decode steps (step_graphs.h) and the short prefill chunks
// (prefill_graphs.h) share: recordings by shape, each the logits it writes into the workspace, kept
// while the workspace's block is the one they were recorded in and the call takes from the same mark.
// A shape runs directly (op by op) first, which plans the workspace so that the recording allocates
// nothing from it, then is recorded for the next call; the least recently used recording goes first
// when more than a bound are kept. Each owner keeps everything else the recorded work reads or writes
// at fixed addresses (ids, state) and clears the recordings when one of those moves.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include "core/graph.h"
#include "core/workspace.h"

namespace ssm {

class GraphRecordings {
 public:
  using Key = std::pair<int64_t, int64_t>;  // the shape of the call: (rows, tokens)
  using Work = std::function<Tensor()>;     // queues the call, returns its logits (taken first from the workspace)

  // kept: recordings held at most (0: no bound); direct_runs: runs of a shape op by op before it is
  // recorded (1: record at the first call, for work that repeats; 2: a shape seen once is never recorded).
  GraphRecordings(size_t kept, int64_t direct_runs) : kept_(kept), direct_runs_(direct_runs) {}

  // Whether `key` has a recording that holds for `ws` as it stands (one that no longer does is dropped).
  bool recorded(Key key, const Workspace& ws);
  // Replays it (recorded() first): its logits, taken from ws where it writes them, valid until the
  // caller releases ws below its mark at the call.
  Tensor replay(Key key, Workspace& ws);
  // Runs `direct` op by op and returns its logits (from ws, as above); then, once `key` has run so
  // often, records `recorded` (the same work on the addresses the replays will use) at the same mark.
  Tensor run(Key key, Workspace& ws, const Work& direct, const Work& recorded);

  // Whether run() of `key` would record it (so that the owner prepares what the recording needs).
  bool records_next(Key key) const;

  void clear();  // drops every recording (what they point at is about to move or be freed)
  bool refused() const { return refused_; }  // a recording failed once: the owner runs op by op from then on
  int64_t replayed() const { return replayed_; }
  size_t size() const { return recorded_.size(); }

 private:
  struct Recorded {
    DeviceGraph graph;
    Workspace::Mark mark = 0;  // where the workspace stood: the recorded call's takes start there
    Tensor logits;             // where the recorded call writes them
    uint64_t used = 0;         // when it was last recorded or replayed (use_clock_)
  };
  size_t kept_;
  int64_t direct_runs_;
  std::map<Key, std::unique_ptr<Recorded>> recorded_;
  std::map<Key, int64_t> runs_;  // direct runs of each shape (kept past its recording: a shape recorded
                                 // once is recorded again at its next direct run)
  const Workspace* workspace_ = nullptr;  // the workspace the recordings take from,
  int64_t blocks_ = -1;                   // and its block_allocations() when they were made
  uint64_t use_clock_ = 0;
  bool refused_ = false;
  int64_t replayed_ = 0;
};

}  // namespace ssm
