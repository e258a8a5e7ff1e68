// Snapshots of one sequence's model state after a prompt prefix, kept in a radix tree over token ids
// under a memory budget, the least recently used evicted first. A recurrent state has a fixed size
// whatever the prefix's length, so a snapshot replaces the prefill of everything before it.
//
// With the model on the GPU a snapshot's state stays in GPU memory: a hit is then one device-to-device
// copy queued on the stream (mamba2-130m's 19 MB state in some 10 µs at the H200's bandwidth), where a
// snapshot in host memory would cost a PCIe transfer at every hit and every snapshot (about 1 ms for
// the same state), and the budget counts what the snapshot really holds: its state's GPU bytes plus its
// logits' host bytes. The logits stay on the host, where the sampler reads them.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <vector>

#include "model/language_model.h"

namespace ssm {

struct Snapshot {
  ModelState state;           // batch 1, on the model's device
  std::vector<float> logits;  // the next token's logits after the prefix (a whole-prompt hit needs no forward)
  int64_t bytes() const { return state.bytes() + int64_t(logits.size() * sizeof(float)); }
};

class PrefixCache {
 public:
  explicit PrefixCache(int64_t budget_bytes);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Hit {
    int64_t length = 0;                  // tokens the snapshot covers (0: none)
    const Snapshot* snapshot = nullptr;  // valid until the next insert
  };
  // The deepest snapshot of a prefix of `tokens` whose length is a multiple of `align` or all of
  // `tokens` (counted as a use).
  Hit find(std::span<const int32_t> tokens, int64_t align = 1);
  // Stores the snapshot after `tokens` (replacing one there), then evicts down to the budget. A
  // snapshot larger than the whole budget is not kept.
  void insert(std::span<const int32_t> tokens, Snapshot snapshot);

  int64_t bytes() const { return bytes_; }
  int64_t entries() const { return int64_t(lru_.size()); }

  // The state of the snapshot evicted or replaced last, for the next snapshot to be copied into
  // (none, no mixers, when there is none): a server inserts a snapshot per prompt, and allocating and
  // zeroing one (19 MB for mamba2-130m, fresh pages each time) cost more than copying into it.
  // One at most is kept, outside the budget, and only states of a fixed size (ModelState::resizable:
  // a copy overwrites all of them, where a KV cache's length would carry over).
  ModelState take_spare() { return std::move(spare_); }

 private:
  struct Node;
  void keep_spare(Snapshot& snapshot);  // its state becomes the spare where it may
  void evict(Node* node);
  // A node with no snapshot and one child takes the child's place (the tree stays a radix tree).
  void merge_with_child(Node* node);

  std::unique_ptr<Node> root_;
  std::list<Node*> lru_;  // nodes holding a snapshot, most recently used first
  int64_t budget_, bytes_ = 0;
  ModelState spare_;
};

}  // namespace ssm
