#include "serve/job.h"

namespace ssm::serve {

void Job::set_cached_tokens(int64_t tokens) {
  const std::lock_guard lock(mutex_);
  state_.cached_tokens = tokens;
}

void Job::append(const std::string& text, int64_t completion_tokens) {
  {
    const std::lock_guard lock(mutex_);
    state_.text += text;
    state_.completion_tokens = completion_tokens;
  }
  if (!text.empty()) changed_.notify_all();
}

void Job::finish(std::string reason) {
  {
    const std::lock_guard lock(mutex_);
    state_.finished = true;
    state_.finish_reason = std::move(reason);
  }
  changed_.notify_all();
}

void Job::fail(std::string message) {
  {
    const std::lock_guard lock(mutex_);
    state_.finished = true;
    state_.error = std::move(message);
  }
  changed_.notify_all();
}

Job::Update Job::take(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return state_.finished || !state_.text.empty(); });
  Update update = state_;
  state_.text.clear();
  return update;
}

Job::Update Job::wait() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return state_.finished; });
  return state_;
}

}  // namespace ssm::serve
