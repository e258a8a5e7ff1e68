// Continuous batching on one thread that owns the model: requests wait in a bounded queue, are
// prefilled one per iteration (through the prefix cache), then decode together, one step for every
// active sequence per iteration. Finished and cancelled sequences leave the batch at a step
// boundary; the others carry on.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <thread>
#include <vector>

#include "infer/batch_state.h"
#include "infer/cached_prefill.h"
#include "serve/job.h"
#include "serve/metrics.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct SchedulerOptions {
  int64_t slots = 4;                 // sequences decoding together
  int64_t queue_limit = 64;          // requests waiting for a slot, beyond which submit() refuses
  int64_t cache_bytes = 256 << 20;   // prefix-cache budget (0: no cache)
  int64_t cache_chunk = 256;         // prefill chunk, and where snapshots are taken
  int threads = 0;                   // CPU threads of the model's ops (0: all cores)
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
  void loop();
  void admit(const std::shared_ptr<Job>& job);
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
  std::vector<std::unique_ptr<Sequence>> active_;  // row i of batch_ is active_[i]
  Workspace ws_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace ssm::serve
