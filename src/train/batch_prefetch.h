// Samples the next training micro-batch on a worker thread while the current one is used.
//
// The batches are those of BatchSampler for the steps [first_step, end_step) with micro-batches
// 0 .. micro_batches - 1 each, in that order: the ids are exactly the ones a direct sampler call gives,
// so a resumed run still continues bit for bit. Two pairs of host tensors alternate: next() hands out
// one and the worker fills the other.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>

#include "core/tensor.h"
#include "train/data.h"

namespace ssm {

class BatchPrefetcher {
 public:
  struct Batch {
    const Tensor& ids;      // I32 [batch_size, seq_len], on the host
    const Tensor& targets;  // the same shape: ids shifted by one
  };

  // Starts the worker on the first batch. `sampler` must outlive this object.
  BatchPrefetcher(const BatchSampler& sampler, int64_t batch_size, int64_t seq_len, int64_t micro_batches,
                  int64_t first_step, int64_t end_step);
  ~BatchPrefetcher();  // stops the worker and joins it, also in the middle of a batch
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The batch of (step, micro), which must be the next one in order; it stays valid until the next
  // call, which lets the worker write that pair again. Rethrows on this thread what the sampling threw.
  Batch next(int64_t step, int64_t micro);
  // Seconds that next() spent waiting for the worker in total.
  double wait_seconds() const { return wait_seconds_; }

 private:
  struct Job {
    int64_t step = 0, micro = 0;
    int slot = 0;  // which of the two pairs
  };
  void work();
  void schedule(Job job);  // with mutex_ held

  const BatchSampler& sampler_;
  const int64_t micro_batches_, end_step_;
  Tensor ids_[2], targets_[2];
  std::mutex mutex_;
  std::condition_variable changed_;
  Job job_;              // the batch in progress or done
  bool scheduled_ = false;  // job_ is the next batch to hand out (waiting, being sampled, or done)
  bool pending_ = false;    // job_ is waiting for the worker
  bool done_ = false;       // job_ is sampled (or failed with error_)
  bool stopping_ = false;
  std::exception_ptr error_;
  double wait_seconds_ = 0;
  std::thread worker_;  // last: starts after the members above exist
};

}  // namespace ssm
