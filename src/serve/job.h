// One request's generation, shared by the scheduler thread, which appends text as tokens arrive and
// then finishes it, and the HTTP handler thread, which takes what is new and may cancel it.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "serve/request.h"

namespace ssm::serve {

class Job {
 public:
  explicit Job(GenerationRequest request) : request_(std::move(request)) {}
  const GenerationRequest& request() const { return request_; }

  // Scheduler side.
  void set_cached_tokens(int64_t tokens);
  void append(const std::string& text, int64_t completion_tokens);
  void finish(std::string reason);  // "stop" or "length"
  void fail(std::string message);   // the server could not run it
  bool cancelled() const { return cancelled_; }

  // Handler side.
  struct Update {
    std::string text;  // new since the last take
    bool finished = false;
    std::string finish_reason, error;
    int64_t completion_tokens = 0, cached_tokens = 0;
  };
  // Waits up to `timeout` for new text or the end, then takes what there is.
  Update take(std::chrono::milliseconds timeout);
  // Waits for the end; all the text.
  Update wait();
  void cancel() { cancelled_ = true; }

 private:
  const GenerationRequest request_;
  std::mutex mutex_;
  std::condition_variable changed_;
  Update state_;
  std::atomic<bool> cancelled_ = false;
};

}  // namespace ssm::serve
