// One request's generation, shared by the scheduler thread, which appends each choice's text as its
// tokens arrive and then finishes it, and the HTTP handler thread, which takes what is new and may
// cancel it. A request with `n` choices runs n sequences, each appending to its own choice.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "serve/logprobs.h"
#include "serve/request.h"

namespace ssm::serve {

class Job {
 public:
  using Clock = std::chrono::steady_clock;
  // deadline: when the scheduler ends the request with a 504 if it has not finished; arrived: when the
  // server began to read it.
  explicit Job(GenerationRequest request, Clock::time_point deadline = Clock::time_point::max(),
               Clock::time_point arrived = Clock::now());
  const GenerationRequest& request() const { return request_; }
  bool expired(Clock::time_point now) const { return now >= deadline_; }
  int64_t choices() const { return int64_t(state_.choices.size()); }

  // Scheduler side. admit: the choice's prompt starts to prefill, `cached_tokens` of it from the prefix
  // cache. `logprob`: the token's, when the request asked for them (null otherwise, or for EOS).
  void admit(int64_t choice, int64_t cached_tokens);
  void append(int64_t choice, const std::string& text, int64_t completion_tokens, const TokenLogprob* logprob);
  void finish(int64_t choice, std::string reason);  // "stop" or "length"
  // The server could not run it (`status`: the HTTP status that says why): every choice ends, and the
  // sequences of the others leave the batch.
  void fail(std::string message, int status = 500);
  bool cancelled() const { return cancelled_; }

  // Handler side.
  struct Choice {
    std::string text;                    // new since the last take
    std::vector<TokenLogprob> logprobs;  // the new tokens' (when asked for)
    bool finished = false;
    std::string finish_reason;
    int64_t completion_tokens = 0, cached_tokens = 0;
  };
  // Where the request's time went (the first choice's, for a request of several): what a response's
  // "timings" say. A point not reached yet is the clock's epoch.
  struct Timings {
    Clock::time_point arrived, admitted, first_token, finished;
  };
  struct Update {
    std::vector<Choice> choices;
    Timings timings;
    bool finished = false;  // every choice, or the request failed
    std::string error;
    int error_status = 500;
  };
  // Waits up to `timeout` for anything new, then takes what there is into `update`, whose text and
  // log-probability buffers it trades for the job's emptied ones (a stream takes an update per token:
  // no allocation each time).
  void take(Update& update, std::chrono::milliseconds timeout);
  // Waits for the end; all the text.
  Update wait();
  void cancel() { cancelled_ = true; }

 private:
  void changed(std::unique_lock<std::mutex>& lock);
  const GenerationRequest request_;
  const Clock::time_point deadline_;
  std::mutex mutex_;
  std::condition_variable changed_;
  Update state_;
  int64_t unfinished_;
  bool news_ = false;  // changed since the last take
  std::atomic<bool> cancelled_ = false;
};

}  // namespace ssm::serve
