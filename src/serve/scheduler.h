// Continuous batching on one thread that owns the model: requests wait in a bounded queue, then are
// prefilled one at a time through the prefix cache, a chunk per iteration, so that a long prompt
// delays the running streams by a chunk's time per token rather than by its whole prefill; then
// they decode together, one step for every active sequence per iteration. Finished and cancelled
// sequences leave the batch at a step boundary; the others carry on.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "infer/batch_state.h"
#include "infer/cached_prefill.h"
#include "serve/job.h"
#include "serve/metrics.h"
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
  Submitted submit(std::shared_ptr<Job> job);
  // Fails every job queued or running, refuses new ones, and returns once the thread has ended.
  void stop();

 private:
  struct Sequence;
  struct Prefilling {
    std::shared_ptr<Job> job;
    CachedPrefill::Result progress;
  };
  void loop();
  void start_prefill(const std::shared_ptr<Job>& job);
  // Runs the next chunk of the prompt prefilling; one that is all in joins the batch.
  void prefill_chunk();
  void step();
  // Takes a sampled token: text to the job, and whether the sequence goes on.
  bool accept(Sequence& sequence, int32_t token);
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

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace ssm::serve
