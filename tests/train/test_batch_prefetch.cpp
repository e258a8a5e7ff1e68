// BatchPrefetcher: the sampler's batches in order, its errors on the caller's thread, a clean stop.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"
#include "train/batch_prefetch.h"

namespace ssm {
namespace {

std::vector<int32_t> counting_ids(size_t n) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = int32_t(i * 7 % 1009);
  return ids;
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data<int32_t>(), b.data<int32_t>(), size_t(a.numel()) * 4) == 0;
}

TEST(TrainBatchPrefetch, GivesTheSamplersBatchesInOrder) {
  const std::vector<int32_t> ids = counting_ids(5000);
  const BatchSampler sampler(&ids, 33, 7, "ids");
  Tensor want_ids = Tensor::empty({5, 33}, DType::I32), want_targets = Tensor::empty({5, 33}, DType::I32);
  for (int64_t accum : {1, 3}) {
    // Steps 4 .. 8, as a run resumed after step 4 samples them.
    BatchPrefetcher batches(sampler, 5, 33, accum, 4, 9);
    for (int64_t step = 4; step < 9; ++step)
      for (int64_t micro = 0; micro < accum; ++micro) {
        const BatchPrefetcher::Batch got = batches.next(step, micro);
        sampler.sample(step, micro, want_ids, want_targets);
        EXPECT_TRUE(same(got.ids, want_ids)) << "step " << step << " micro " << micro;
        EXPECT_TRUE(same(got.targets, want_targets)) << "step " << step << " micro " << micro;
      }
    EXPECT_THROW(batches.next(9, 0), Error);  // past the end
  }
  BatchPrefetcher batches(sampler, 5, 33, 2, 0, 3);
  EXPECT_THROW(batches.next(0, 1), Error);  // out of order
  EXPECT_TRUE(same(batches.next(0, 0).ids, (sampler.sample(0, 0, want_ids, want_targets), want_ids)));
}

TEST(TrainBatchPrefetch, SamplingErrorsSurfaceOnTheCallersThread) {
  const std::vector<int32_t> ids = counting_ids(100);
  const BatchSampler sampler(&ids, 16, 1, "ids");
  BatchPrefetcher batches(sampler, 2, 15, 1, 0, 5);  // rows of 15 for a sampler of 16: sample() throws
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      batches.next(0, 0);
      ADD_FAILURE() << "no ssm::Error thrown";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("BatchSampler: inputs and targets must be contiguous I32 [batch, 16]"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(TrainBatchPrefetch, DestructionStopsTheWorkerAnywhere) {
  // Batches big enough that the worker is usually still sampling when the prefetcher goes away; a
  // worker left unjoined would end the process (std::terminate).
  const std::vector<int32_t> ids = counting_ids(1 << 20);
  const BatchSampler sampler(&ids, 4096, 3, "ids");
  for (int run = 0; run < 20; ++run) {
    BatchPrefetcher batches(sampler, 256, 4096, 2, 0, 100);
    if (run % 2) {
      EXPECT_EQ(batches.next(0, 0).ids.size(0), 256);
    }
  }
  { BatchPrefetcher nothing_to_do(sampler, 16, 4096, 1, 5, 5); }
  EXPECT_THROW(BatchPrefetcher(sampler, 16, 4096, 1, 5, 5).next(5, 0), Error);
}

// Asking at once, again and again, lands while the worker samples (neither waiting nor done): that is
// a wait, not an "out of order" error (the bug of the first version, seen by CI under load).
TEST(TrainBatchPrefetch, AskingWhileTheWorkerSamplesWaits) {
  const std::vector<int32_t> ids = counting_ids(1 << 20);
  const BatchSampler sampler(&ids, 4096, 3, "ids");
  Tensor want_ids = Tensor::empty({64, 4096}, DType::I32), want_targets = Tensor::empty({64, 4096}, DType::I32);
  BatchPrefetcher batches(sampler, 64, 4096, 2, 0, 40);
  for (int64_t step = 0; step < 40; ++step)
    for (int64_t micro = 0; micro < 2; ++micro) {
      const BatchPrefetcher::Batch got = batches.next(step, micro);
      sampler.sample(step, micro, want_ids, want_targets);
      ASSERT_TRUE(same(got.ids, want_ids)) << "step " << step << " micro " << micro;
    }
}

TEST(TrainBatchPrefetch, SamplesTheNextBatchWhileTheCallerWorks) {
  // Batches of 2 x 16 MiB, so that sampling one takes milliseconds.
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  const std::vector<int32_t> ids = counting_ids(1 << 20);
  const BatchSampler sampler(&ids, 16384, 5, "ids");
  Tensor direct_ids = Tensor::empty({256, 16384}, DType::I32), direct_targets = Tensor::empty({256, 16384}, DType::I32);
  double direct = 1e9;  // the fastest of three direct sampler calls
  for (int64_t step = 0; step < 3; ++step) {
    const auto t0 = Clock::now();
    sampler.sample(step, 0, direct_ids, direct_targets);
    direct = std::min(direct, seconds_since(t0));
  }
  BatchPrefetcher batches(sampler, 256, 16384, 1, 0, 4);
  auto t0 = Clock::now();
  batches.next(0, 0);  // right after the start: waits for the worker
  const double first_call = seconds_since(t0);
  EXPECT_GT(batches.wait_seconds(), 0.0);
  EXPECT_LE(batches.wait_seconds(), first_call);
  // While the caller "steps" (sleeps) the worker samples the next batch: next() then only hands it over.
  double fastest = 1e9;
  for (int64_t step = 1; step < 4; ++step) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.2, 20 * direct)));
    t0 = Clock::now();
    batches.next(step, 0);
    fastest = std::min(fastest, seconds_since(t0));
  }
  EXPECT_LT(fastest, direct / 2) << "a direct sample took " << direct << " s";
}

}  // namespace
}  // namespace ssm
