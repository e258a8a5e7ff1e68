// Continuous batching on one thread that owns the model: requests wait in a bounded queue, then are
// prefilled one at a time through the prefix cache, a chunk per iteration, so that a long prompt
// delays the running streams by a chunk's time per token rather than by its whole prefill; then
// they decode together, one step for every active sequence per iteration. Finished and cancelled
// sequences leave the batch at a step boundary; the others carry on. A job past its deadline ends with
// a 504 wherever it is.
#pragma once
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
#include "serve/job.h"
#include "serve/metrics.h"
#include "serve/slot_file.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct SchedulerOptions {
  int64_t slots = 4;                // sequences decoding together
  int64_t queue_limit = 64;         // requests waiting for a slot, beyond which submit() refuses
  int64_t cache_bytes = 256 << 20;  // prefix-cache budget (0: no cache)
  int64_t cache_chunk = 256;        // prefill chunk, and where snapshots are taken
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
  // Fails the jobs whose deadline has passed (queued, prefilling or decoding) with a 504.
  void expire();
  void start_prefill(const Pending& pending);
  // Runs the next chunk of the prompt prefilling; one that is all in joins the batch.
  void prefill_chunk();
  void step();
  // Samples the sequence's next token from `logits` (which it may change), with its log-probability
  // when the request asked for them; then takes it: text to the job, and whether the sequence goes on.
  bool sample_and_accept(Sequence& sequence, float* logits);
  void leave(const std::vector<bool>& keep);

  const LanguageModel& model_;
  const Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  Metrics& metrics_;
  const int64_t sample_vocab_;  // ids the tokenizer can turn into text
  std::unique_ptr<PrefixCache> cache_;
  CachedPrefill prefill_;
  BatchState batch_;
  std::optional<Prefilling> prefilling_;           // holds a slot
  std::vector<std::unique_ptr<Sequence>> active_;  // row i of batch_ is active_[i]
  Workspace ws_;
  std::vector<float> raw_logits_;  // a row's logits before sampling, for its log-probabilities
  std::vector<Slot> slots_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;
  std::deque<Task> tasks_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace ssm::serve
