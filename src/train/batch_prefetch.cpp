#include "train/batch_prefetch.h"

#include <chrono>

#include "core/error.h"

namespace ssm {

BatchPrefetcher::BatchPrefetcher(const BatchSampler& sampler, int64_t batch_size, int64_t seq_len,
                                 int64_t micro_batches, int64_t first_step, int64_t end_step)
    : sampler_(sampler), micro_batches_(micro_batches), end_step_(end_step) {
  SSM_CHECK(batch_size > 0 && seq_len > 0 && micro_batches > 0,
            "BatchPrefetcher: batch size {}, sequence length {} and micro-batches {} must be positive", batch_size,
            seq_len, micro_batches);
  for (int slot = 0; slot < 2; ++slot) {
    ids_[slot] = Tensor::empty({batch_size, seq_len}, DType::I32);
    targets_[slot] = Tensor::empty({batch_size, seq_len}, DType::I32);
  }
  if (first_step < end_step) schedule({first_step, 0, 0});
  worker_ = std::thread([this] { work(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void BatchPrefetcher::schedule(Job job) {
  job_ = job;
  scheduled_ = true;
  pending_ = true;
  done_ = false;
  changed_.notify_all();
}

void BatchPrefetcher::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || pending_; });
    if (stopping_) return;
    const Job job = job_;
    pending_ = false;
    lock.unlock();
    std::exception_ptr error;
    try {
      sampler_.sample(job.step, job.micro, ids_[job.slot], targets_[job.slot]);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    done_ = true;
    changed_.notify_all();
  }
}

BatchPrefetcher::Batch BatchPrefetcher::next(int64_t step, int64_t micro) {
  std::unique_lock lock(mutex_);
  // (Not pending_ || done_: while the worker samples, both are false.)
  SSM_CHECK(scheduled_ && job_.step == step && job_.micro == micro,
            "BatchPrefetcher: batch (step {}, micro {}) asked for out of order", step, micro);
  const auto t0 = std::chrono::steady_clock::now();
  changed_.wait(lock, [&] { return done_; });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (error_) std::rethrow_exception(error_);  // done_ stays set: asking again rethrows again
  const int slot = job_.slot;
  // The following batch goes into the other pair while the caller uses this one.
  const bool last_micro = micro + 1 == micro_batches_;
  if (!last_micro || step + 1 < end_step_) {
    schedule({last_micro ? step + 1 : step, last_micro ? 0 : micro + 1, 1 - slot});
  } else {
    scheduled_ = false;  // nothing left to hand out
  }
  return {ids_[slot], targets_[slot]};
}

}  // namespace ssm
