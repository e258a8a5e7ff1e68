// The scheduler's batched prefill, driven directly (no HTTP, so that what arrives together is known):
// prompts that wait together are prefilled together, as few forwards as their chunks allow, within
// the token budget of an iteration, and each gets what it gets alone: the same tokens, log-probabilities
// equal up to rounding (a batched forward sums in another order: tests/infer/test_prefix_cache.cpp).
#include <gtest/gtest.h>

#include <thread>

#include "serve/scheduler.h"
#include "server_fixture.h"

namespace ssm::serve {
namespace {

using Ids = std::vector<int32_t>;

Ids bytes_of(const std::string& text) { return Ids(text.begin(), text.end()); }

GenerationRequest greedy_request(const Ids& prompt, int64_t max_tokens = 8) {
  GenerationRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  r.logprobs = true;  // compared below
  r.top_logprobs = 3;
  return r;
}

// Waits until `done` holds (polling the scheduler's metrics), failing after a few seconds.
template <typename Condition>
void wait_for(Condition done) {
  for (int i = 0; i < 2000 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(done());
}

class SchedulerTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { tokenizer_ = make_byte_tokenizer(); }
  static void TearDownTestSuite() { tokenizer_.reset(); }
  void SetUp() override { model_ = std::make_unique<LanguageModel>(LanguageModel::load(fixture_dir(GetParam()))); }
  bool same_position() const { return !model_->new_state(1).resizable(); }

  static SchedulerOptions options() {
    return {.slots = 6, .queue_limit = 16, .cache_bytes = 16 << 20, .cache_chunk = 16};
  }
  // What the request gets alone, from a scheduler without a cache.
  Job::Choice alone(const GenerationRequest& request) {
    Metrics metrics;
    SchedulerOptions o = options();
    o.cache_bytes = 0;
    Scheduler scheduler(*model_, *tokenizer_, o, metrics);
    auto job = std::make_shared<Job>(request);
    EXPECT_EQ(scheduler.submit(job), Scheduler::Submitted::queued);
    const Job::Update done = job->wait();
    EXPECT_EQ(done.error, "");
    return done.choices.at(0);
  }
  // Submits the requests while every slot is busy (a job of as many endless choices), then frees the
  // slots at once: the requests wait in the queue together, and the next iteration takes them.
  // Cancels the requests at `cancelled` while they wait. The jobs, in the order given.
  std::vector<std::shared_ptr<Job>> run_together(Scheduler& scheduler, const Metrics& metrics,
                                                 const std::vector<GenerationRequest>& requests,
                                                 const std::vector<size_t>& cancelled = {}) {
    GenerationRequest endless = greedy_request(bytes_of("#blocking the slots#"), 1 << 30);
    endless.logprobs = false;
    endless.n = options().slots;
    const auto blocker = std::make_shared<Job>(endless);
    EXPECT_EQ(scheduler.submit(blocker), Scheduler::Submitted::queued);
    wait_for([&] { return metrics.slots_in_use == options().slots && metrics.decode_steps > 0; });
    std::vector<std::shared_ptr<Job>> jobs;
    for (const GenerationRequest& r : requests) {
      jobs.push_back(std::make_shared<Job>(r));
      EXPECT_EQ(scheduler.submit(jobs.back()), Scheduler::Submitted::queued);
    }
    for (size_t i : cancelled) jobs[i]->cancel();
    batches_before_ = metrics.prefill_batches;
    rows_before_ = metrics.prefill_batch_rows;
    tokens_before_ = metrics.prefill_tokens;
    blocker->cancel();
    for (size_t i = 0; i < jobs.size(); ++i)
      if (std::find(cancelled.begin(), cancelled.end(), i) == cancelled.end()) jobs[i]->wait();
    return jobs;
  }
  // Each job's first choice is what its request gets alone: the same text and tokens (the top ones
  // too), log-probabilities within 1e-4.
  void expect_as_alone(const std::vector<std::shared_ptr<Job>>& jobs, const std::vector<GenerationRequest>& requests,
                       const std::vector<size_t>& cancelled = {}) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (std::find(cancelled.begin(), cancelled.end(), i) != cancelled.end()) continue;
      const Job::Update got = jobs[i]->wait();
      ASSERT_EQ(got.error, "") << "request " << i;
      const Job::Choice want = alone(requests[i]);
      const Job::Choice& c = got.choices.at(0);
      EXPECT_EQ(c.text, want.text) << "request " << i;
      ASSERT_EQ(c.logprobs.size(), want.logprobs.size()) << "request " << i;
      for (size_t t = 0; t < c.logprobs.size(); ++t) {
        const TokenLogprob &a = c.logprobs[t], &b = want.logprobs[t];
        EXPECT_EQ(a.token, b.token) << "request " << i << ", token " << t;
        EXPECT_NEAR(a.logprob, b.logprob, 1e-4) << "request " << i << ", token " << t;
        ASSERT_EQ(a.top.size(), b.top.size());
        for (size_t k = 0; k < a.top.size(); ++k) {
          EXPECT_EQ(a.top[k].first, b.top[k].first) << "request " << i << ", token " << t;
          EXPECT_NEAR(a.top[k].second, b.top[k].second, 1e-4) << "request " << i << ", token " << t;
        }
      }
    }
  }
  int64_t batches(const Metrics& m) const { return m.prefill_batches - batches_before_; }
  int64_t rows(const Metrics& m) const { return m.prefill_batch_rows - rows_before_; }
  int64_t prefilled(const Metrics& m) const { return m.prefill_tokens - tokens_before_; }

  static inline std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LanguageModel> model_;
  int64_t batches_before_ = 0, rows_before_ = 0, tokens_before_ = 0;
};

TEST_P(SchedulerTest, PromptsOfOneLengthArrivingTogetherPrefillInOneForward) {
  Metrics metrics;
  Scheduler scheduler(*model_, *tokenizer_, options(), metrics);
  std::vector<GenerationRequest> requests;
  for (const char* p : {"first prompt", "2nd prompt!!", "third prompt", "a 4th prompt"})
    requests.push_back(greedy_request(bytes_of(p)));
  const auto jobs = run_together(scheduler, metrics, requests);
  EXPECT_EQ(batches(metrics), 1);
  EXPECT_EQ(rows(metrics), 4);
  expect_as_alone(jobs, requests);
}

// Mixed lengths, a cache hit among misses, and a request cancelled while it waits: one forward per
// chunk length (and per start, where the model's KV caches want one), the cancelled one never run.
TEST_P(SchedulerTest, MixedLengthsACacheHitAndACancelledRequest) {
  Metrics metrics;
  Scheduler scheduler(*model_, *tokenizer_, options(), metrics);
  const std::string cached(40, 'x');
  const auto first = std::make_shared<Job>(greedy_request(bytes_of(cached)));  // snapshots at 16, 32 and 40
  EXPECT_EQ(scheduler.submit(first), Scheduler::Submitted::queued);
  first->wait();
  const std::vector<GenerationRequest> requests = {
      greedy_request(bytes_of(cached + "yy")),        // from the snapshot at 32: 10 tokens at 32
      greedy_request(bytes_of("ten tokens")),          // 10 at 0
      greedy_request(bytes_of("a prompt of 20 bytes")),  // 16 at 0, then 4
      greedy_request(bytes_of("cancelled...")),        // never run
      greedy_request(bytes_of("five!")),               // 5 at 0
  };
  const auto jobs = run_together(scheduler, metrics, requests, {3});
  // The first iteration: 10 tokens for the hit and the 10-token prompt (together unless the KV caches
  // want one start), 16 and 5 for the others; the second, the 20-token prompt's last 4.
  EXPECT_EQ(batches(metrics), same_position() ? 5 : 4);
  EXPECT_EQ(rows(metrics), 5);
  EXPECT_EQ(prefilled(metrics), 10 + 10 + 20 + 5);
  EXPECT_EQ(jobs[0]->wait().choices[0].cached_tokens, 32);
  Job::Update cancelled;
  jobs[3]->take(cancelled, std::chrono::milliseconds(0));
  EXPECT_EQ(cancelled.choices[0].completion_tokens, 0);
  EXPECT_FALSE(cancelled.finished);
  expect_as_alone(jobs, requests, {3});
}

// With a budget of 40 prompt tokens an iteration: a 100-token prompt's 16-token chunks and the
// 12-token prompts behind it share the iterations, 40 tokens at most each.
TEST_P(SchedulerTest, AnIterationPrefillsNoMoreThanItsTokenBudget) {
  Metrics metrics;
  SchedulerOptions o = options();
  o.prefill_batch_tokens = 40;
  Scheduler scheduler(*model_, *tokenizer_, o, metrics);
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += char('a' + i % 26);
  std::vector<GenerationRequest> requests = {greedy_request(bytes_of(long_prompt))};
  for (const char* p : {"short one #1", "short one #2", "short one #3", "short one #4"})
    requests.push_back(greedy_request(bytes_of(p)));
  const auto jobs = run_together(scheduler, metrics, requests);
  // Iterations: 16 + 12 + 12, then 16 + 12 + 12 (two forwards each), then the long prompt's 16, 16,
  // 16, 16 and 4 alone.
  EXPECT_EQ(batches(metrics), 2 + 2 + 5);
  EXPECT_EQ(rows(metrics), 7 + 4);
  expect_as_alone(jobs, requests);
}

// Prompts that share a prefix and arrive together: the first prefills the prefix, the others wait an
// iteration at each of its chunks and start from its snapshots, so the prefix runs once.
TEST_P(SchedulerTest, ABurstSharingAPrefixPrefillsItOnce) {
  Metrics metrics;
  Scheduler scheduler(*model_, *tokenizer_, options(), metrics);
  const std::string prefix(40, 'p');
  std::vector<GenerationRequest> requests;
  for (const char* suffix : {"a1", "b2", "c3"}) requests.push_back(greedy_request(bytes_of(prefix + suffix)));
  const auto jobs = run_together(scheduler, metrics, requests);
  EXPECT_EQ(jobs[0]->wait().choices[0].cached_tokens, 0);
  EXPECT_EQ(jobs[1]->wait().choices[0].cached_tokens, 32);
  EXPECT_EQ(jobs[2]->wait().choices[0].cached_tokens, 32);
  EXPECT_EQ(prefilled(metrics), 42 + 10 + 10);
  expect_as_alone(jobs, requests);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SchedulerTest, ::testing::Values("mamba2_tiny", "bamba_tiny"));

}  // namespace
}  // namespace ssm::serve
