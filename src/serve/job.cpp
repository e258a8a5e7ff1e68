#include "serve/job.h"

namespace ssm::serve {

Job::Job(GenerationRequest request, Clock::time_point deadline, Clock::time_point arrived)
    : request_(std::move(request)), deadline_(deadline), unfinished_(request_.n) {
  state_.choices.resize(size_t(request_.n));
  state_.timings.arrived = arrived;
}

void Job::changed(std::unique_lock<std::mutex>& lock) {
  news_ = true;
  lock.unlock();
  changed_.notify_all();
}

void Job::admit(int64_t choice, int64_t cached_tokens) {
  const std::lock_guard lock(mutex_);
  state_.choices[size_t(choice)].cached_tokens = cached_tokens;
  if (choice == 0) state_.timings.admitted = Clock::now();
}

void Job::append(int64_t choice, const std::string& text, int64_t completion_tokens, const TokenLogprob* logprob) {
  std::unique_lock lock(mutex_);
  Choice& c = state_.choices[size_t(choice)];
  c.text += text;
  c.completion_tokens = completion_tokens;
  if (choice == 0 && completion_tokens == 1) state_.timings.first_token = Clock::now();
  if (logprob) c.logprobs.push_back(*logprob);
  if (!text.empty() || logprob) changed(lock);
}

void Job::finish(int64_t choice, std::string reason) {
  std::unique_lock lock(mutex_);
  Choice& c = state_.choices[size_t(choice)];
  c.finished = true;
  c.finish_reason = std::move(reason);
  state_.finished = --unfinished_ == 0;
  if (state_.finished) state_.timings.finished = Clock::now();
  changed(lock);
}

void Job::fail(std::string message, int status) {
  cancelled_ = true;
  std::unique_lock lock(mutex_);
  if (state_.error.empty()) {
    state_.error = std::move(message);
    state_.error_status = status;
  }
  state_.finished = true;
  changed(lock);
}

void Job::take(Update& update, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return news_; });
  news_ = false;
  update.choices.resize(state_.choices.size());
  for (size_t i = 0; i < state_.choices.size(); ++i) {
    Choice &from = state_.choices[i], &to = update.choices[i];
    to.text.clear();
    to.logprobs.clear();
    std::swap(to.text, from.text);
    std::swap(to.logprobs, from.logprobs);
    to.finished = from.finished;
    to.finish_reason = from.finish_reason;
    to.completion_tokens = from.completion_tokens;
    to.cached_tokens = from.cached_tokens;
  }
  update.timings = state_.timings;
  update.finished = state_.finished;
  update.error = state_.error;
  update.error_status = state_.error_status;
}

Job::Update Job::wait() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return state_.finished; });
  return state_;
}

}  // namespace ssm::serve
