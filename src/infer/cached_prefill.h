// Prefill of one prompt through a prefix cache: start from the deepest snapshot of a prefix of the
// prompt, run the rest in chunks that end at multiples of `chunk` tokens, and leave a snapshot at
// each chunk end and at the prompt end. A run resumes only at a chunk end or from the snapshot of its
// whole prompt: its chunks then end where a cold run's do, so on the CPU a hit gives a cold run's
// logits bit for bit (resuming mid-chunk would change the sums' order, and the bits).
// With the model on the GPU the states (the prompt's and the snapshots') are in GPU memory and a hit
// or a snapshot is a device-to-device copy; the logits come to the host once per chunk, where the
// sampler and the snapshots keep them (prefix_cache.h says why).
//
// Several prompts advance together: their next chunks run as one forward of [k, length] wherever they
// have the same length (and, for models whose state is a cache that grows with the position, start
// at the same position). A prompt keeps a state of its own only between its chunks (or from a cache
// hit): a server takes the states of the prompts all in straight from the forward's rows. On the CPU
// a row of a batched forward equals that prompt's forward alone up to rounding (the product's kernel
// and blocking follow the rows: tests/infer/test_prefix_cache.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/workspace.h"
#include "infer/prefill_graphs.h"
#include "infer/prefix_cache.h"
#include "model/language_model.h"

namespace ssm {

class CachedPrefill {
 public:
  // cache may be null (chunked prefill without snapshots).
  CachedPrefill(const LanguageModel& model, PrefixCache* cache, int64_t chunk);

  // A prompt's prefill so far.
  struct Result {
    // Batch 1, after the first `done` tokens; none (no mixers) before the first chunk of a prompt the
    // cache had nothing for (a blank state), and after the last chunk of a prompt whose state an
    // advance handed over (below).
    ModelState state;
    std::vector<float> logits;  // the next token's logits after them (on the host)
    int64_t cached_tokens = 0;  // prompt tokens the snapshot covered
    int64_t done = 0;           // prompt tokens in the state
  };
  // The whole prefill. prompt: non-empty ids inside the vocabulary.
  Result run(std::span<const int32_t> prompt);
  // The same a chunk at a time (a server runs other work between chunks): start() takes the snapshot,
  // each advance() runs one chunk of the same prompt and says whether the prompt is all in.
  Result start(std::span<const int32_t> prompt);
  bool advance(std::span<const int32_t> prompt, Result& progress);
  // The prompt tokens start() would take from the cache now (without copying the snapshot).
  int64_t cached_tokens(std::span<const int32_t> prompt);
  // Tokens the next advance of the prompt runs (0 when it is all in).
  int64_t next_chunk(std::span<const int32_t> prompt, const Result& progress) const;
  // Forwards replayed from a recording so far (short chunks on the GPU: prefill_graphs.h).
  int64_t replayed() const { return graphs_.replayed(); }

  // One prompt of a batched advance.
  struct Prefilling {
    std::span<const int32_t> prompt;
    Result* progress;
  };
  // Where a prompt's state is when its last chunk has run: row `row` of `rows`, valid only during
  // the call (the next group's forward reuses the rows).
  using AllIn = std::function<void(size_t prompt, const ModelState& rows, int64_t row)>;
  // Runs the next chunk of every prompt (of distinct progresses; the prompts all in are left alone),
  // one forward per group of chunks that can run together; returns the number of forwards. With
  // `all_in`, each prompt whose last chunk ran is handed to it (its index in `prompts`) and keeps no
  // state of its own; without, its state stays in its Result.
  int64_t advance(std::span<const Prefilling> prompts, const AllIn& all_in = nullptr);

 private:
  // The chunks of `group` (indices into prompts, all of one length) as one forward.
  void run_together(std::span<const Prefilling> prompts, const std::vector<size_t>& group, const AllIn& all_in);

  const LanguageModel& model_;
  PrefixCache* cache_;
  int64_t chunk_;
  // Whether chunks that run together must start at the same position: true where a mixer's state is
  // a cache that grows with the position (attention, RAT: the ones that cannot resize in place),
  // whose prefill takes one position for the whole batch.
  bool same_position_;
  // The rows of a forward, kept from one to the next where it resizes in place. A group runs there
  // unless it is one prompt with a state of its own: copying 19 MB states in and out (mamba2-130m's)
  // cost more than the forwards on 16 cores, so a prompt the cache had nothing for starts on a blank
  // row, and a prompt all in leaves from its row (docs/performance.md, Server).
  ModelState together_;
  // A fresh state of one sequence, copied into the rows of prompts that start blank; the states left
  // unset for copies share what is not per sequence with it (A: the weights do not change here).
  ModelState blank_;
  // The state of one sequence of the last prompt handed over from a state of its own (a cache hit's),
  // for the next hit to copy its snapshot into. Only states that resize in place (as the cache's spare).
  ModelState spare_;
  Workspace ws_;    // the forward's, on the model's device
  Workspace host_;  // the chunk's ids and, from the GPU, its logits
  // Short chunks on the GPU replayed from recordings (a hit's suffix: one launch instead of ~240).
  PrefillGraphs graphs_;
};

}  // namespace ssm
