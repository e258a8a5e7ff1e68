// Continuous batching on one thread that owns the model: requests wait in a bounded queue, then are
// prefilled through the prefix cache, a chunk per prompt per iteration, so that a long prompt delays
// the running streams by a chunk's time per token rather than by its whole prefill; then they decode
// together, one step for every active sequence per iteration. An iteration prefills several prompts
// at once, as few forwards as their chunks' lengths allow (cached_prefill.h), within a budget of
// prompt tokens per iteration (the running streams wait for them); a prompt whose next chunk another
// prompt is running waits an iteration and starts from its snapshot instead. Finished and cancelled
// sequences leave the batch at a step boundary; the others carry on. A prompt all in joins the batch
// straight from the prefill forward's rows, and one the cache had nothing for starts on a blank row:
// a prompt holds a state of its own only between its chunks or from a cache hit. A job past its
// deadline ends with a 504 wherever it is.
//
// With the model on the GPU (everything runs on this thread's stream): the batch's state rows, the
// step's activations and the prefix cache's snapshots stay in GPU memory, and joins, leaves, cache
// hits and snapshots are device-to-device copies queued on the stream, and so are the copies of
// prompts' states into a batched prefill's rows and out of them; a prefill forward brings its rows'
// last logits to the host in one copy, which waits for it. A step brings to the host
// only what choosing the tokens needs: the ids of the greedy rows (an argmax on the GPU) and the
// logits of the rows that sample or report log-probabilities; that copy waits for the step. The only
// other wait is the copy of the step's ids to the GPU (core's host-to-device copies wait), which finds
// no more queued than the joins' and leaves' copies. The step itself is replayed from a recording of
// its batch size where the model allows (step_graphs.h).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "infer/batch_state.h"
#include "infer/cached_prefill.h"
#include "infer/step_graphs.h"
#include "serve/job.h"
#include "serve/logprobs.h"
#include "serve/metrics.h"
#include "serve/slot_file.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct SchedulerOptions {
  int64_t slots = 4;                // sequences decoding together
  int64_t queue_limit = 64;         // requests waiting for a slot, beyond which submit() refuses
  int64_t cache_bytes = 256 << 20;  // prefix-cache budget (0: no cache)
  int64_t cache_chunk = 256;        // prefill chunk, and where snapshots are taken
  // Prompt tokens prefilled per iteration at most (but at least one chunk), so that a burst of
  // prompts holds up the running streams for a bounded time (2048 cost them 3 s an iteration with
  // mamba2-130m on two CPU cores: docs/performance.md, Server), and bounds the rows prefilled at once.
  int64_t prefill_batch_tokens = 512;
  int threads = 0;                  // CPU threads of the model's ops (0: all cores)
};

class Scheduler {
 public:
  Scheduler(const LanguageModel& model, const Tokenizer& tokenizer, const SchedulerOptions& options, Metrics& metrics);
  ~Scheduler();  // stop()

  enum class Submitted { queued, queue_full, stopped };
  // Queues the job's choices, each a sequence of its own (queue_full unless there is room for all).
  Submitted submit(std::shared_ptr<Job> job);
  // Fails every job queued or running, refuses new ones, and returns once the thread has ended.
  void stop();

  // Slots are the places sequences run in (0 .. slots-1); each remembers the prompt it ran last.
  // The prompt slot `slot` ran last and the prefix cache's snapshots along it (copies), for saving the
  // slot (ssm::Error when it ran none yet, or none of it is cached).
  SlotSnapshots slot_snapshots(int64_t slot);
  // Puts the snapshots into the prefix cache, where they stay as any other (LRU within the budget), and
  // makes their prompt the slot's last; returns how many the budget kept.
  int64_t restore_slot(int64_t slot, SlotSnapshots snapshots);

 private:
  struct Sequence;
  struct Task {  // work for the scheduler thread, and its end
    std::function<void()> work;
    std::promise<void> done;
  };
  // Runs `work` on the scheduler thread between iterations (the prefix cache and the slots are that
  // thread's own) and returns once it has run; rethrows what it threw.
  void run_on_thread(std::function<void()> work);
  int64_t take_slot(const std::vector<int32_t>& prompt);  // the lowest free one
  struct Pending {  // one choice of a job
    std::shared_ptr<Job> job;
    int64_t choice = 0;
  };
  struct Prefilling {
    Pending pending;
    int64_t slot = 0;
    CachedPrefill::Result progress;
  };
  struct Slot {
    bool busy = false;
    std::vector<int32_t> prompt;  // the last one it ran
  };
  void loop();
  // Takes from the queue (its lock held) the prompts this iteration starts prefilling: within the free
  // slots and, counting a first chunk at its longest, the prompt tokens the prompts prefilling leave of
  // the iteration's budget (at least one prompt when none is prefilling).
  std::vector<Pending> admit();
  // Fails the jobs whose deadline has passed (queued, prefilling or decoding) with a 504.
  void expire();
  // Starts the arrivals' prefills (those that should wait for another's snapshot go back to the
  // queue), runs the next chunk of every prompt prefilling, and lets the prompts all in join the batch.
  void prefill(const std::vector<Pending>& arrivals);
  // Looks the arrival's prompt up in the prefix cache and makes it a prompt prefilling; returns false
  // when it should rather wait for the snapshot a prompt prefilling is about to leave.
  bool start_prefill(const Pending& pending);
  // The prompt all in, its state row `row` of `state`: its first token, then a place in the batch
  // (a copy of that row) unless that token ends it.
  void join(Prefilling& prefilled, const ModelState& state, int64_t row);
  static bool all_in(const Prefilling& p);  // (and so joined, or ended at its first token)
  void step();
  // What a decode step gives each row, on the host: its logits, or the id the GPU's argmax picked
  // (greedy rows without log-probabilities, on the GPU: the logits stay there).
  struct StepTokens {
    std::vector<bool> on_host;  // per row: its logits are in `logits`, else its token in `picked`
    Tensor logits;              // F32 [rows, vocab] (only the on_host rows written)
    Tensor picked;              // I32 [rows]
  };
  StepTokens read_step(const Tensor& logits);
  bool greedy_on_device(const Sequence& sequence) const;
  // A sequence's next token and, when its request asks, its log-probabilities.
  struct Choice {
    int32_t token = 0;
    std::optional<TokenLogprob> logprob;
  };
  // The sequence's next token from `logits` (which the sampler may change; `raw` then keeps them as
  // they were, for the log-probabilities). Touches nothing but the sequence's sampler and `raw`: the
  // rows of a step choose on the threads.
  Choice choose(Sequence& sequence, float* logits, std::vector<float>& raw) const;
  // Takes the token: text (and log-probability) to the job; returns whether the sequence goes on.
  bool accept(Sequence& sequence, const Choice& choice);
  // The rows whose `keep` is false leave the batch (the last rows take their places).
  void leave(const std::vector<bool>& keep);

  const LanguageModel& model_;
  const Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  Metrics& metrics_;
  const int64_t sample_vocab_;  // ids the tokenizer can turn into text
  std::unique_ptr<PrefixCache> cache_;
  CachedPrefill prefill_;
  BatchState batch_;
  StepGraphs graphs_;  // the GPU's decode steps, recorded per batch size
  std::vector<Prefilling> prefilling_;             // in arrival order, each holding a slot
  std::vector<std::unique_ptr<Sequence>> active_;  // row i of batch_ is active_[i]
  Workspace ws_;    // the decode step's, on the model's device
  Workspace host_;  // its ids and what read_step brings to the host
  Tensor step_ids_, picked_;  // on the GPU: a step's ids and the greedy rows' picks, I32 [slots]
  std::vector<std::vector<float>> raw_logits_;  // per row, its logits before sampling (see choose)
  std::vector<Slot> slots_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;
  std::deque<Task> tasks_;
  bool stopping_ = false;
  std::atomic<uint64_t> posts_ = 0;  // submits, tasks and stop so far (changed under mutex_): what the idle loop polls
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace ssm::serve
