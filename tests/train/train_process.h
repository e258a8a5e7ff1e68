// `ssm` as a child process a test can signal, stop, limit and wait for, and a watch on a folder that
// tells when a checkpoint starts being written or is complete (inotify).
#pragma once
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/file_util.h"

namespace ssm::test {

using Clock = std::chrono::steady_clock;

struct ChildSetup {
  rlim_t max_file_bytes = RLIM_INFINITY;  // RLIMIT_FSIZE (ssm ignores SIGXFSZ: writes fail with EFBIG)
  uid_t uid = 0;                          // run as this user (and group) when not 0; the test must be root
};

class SsmProcess {
 public:
  SsmProcess(const std::vector<std::string>& args, std::string log, ChildSetup setup = {}) : log_(std::move(log)) {
    std::vector<std::string> all = {SSM_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    started_ = Clock::now();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {  // the child: async-signal-safe calls only, then exec
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) ::_exit(125);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const rlimit limit{setup.max_file_bytes, setup.max_file_bytes};
      if (setup.max_file_bytes != RLIM_INFINITY && ::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(125);
      if (setup.uid != 0 && (::setgroups(0, nullptr) != 0 || ::setgid(setup.uid) != 0 || ::setuid(setup.uid) != 0))
        ::_exit(125);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  SsmProcess(const SsmProcess&) = delete;
  SsmProcess& operator=(const SsmProcess&) = delete;
  ~SsmProcess() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }

  pid_t pid() const { return pid_; }
  Clock::time_point started() const { return started_; }
  void signal(int signal_number) const { ::kill(pid_, signal_number); }
  bool running() {
    if (status_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return !status_;
  }
  int wait() {  // the wait status
    if (!status_) {
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      status_ = status;
    }
    return *status_;
  }
  int exit_code() { return WIFEXITED(wait()) ? WEXITSTATUS(wait()) : -1; }
  bool killed_by(int signal_number) { return WIFSIGNALED(wait()) && WTERMSIG(wait()) == signal_number; }
  std::string output() const { return read_text_file(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  std::optional<int> status_;
  Clock::time_point started_;
};

// Whether a child can switch to `uid` (root with the right to; the id mapped in this namespace).
inline bool can_run_as(uid_t uid) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(::setgroups(0, nullptr) == 0 && ::setgid(uid) == 0 && ::setuid(uid) == 0 ? 0 : 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Entries created in, or renamed into, one folder, with the time each was seen.
class FolderEvents {
 public:
  struct Event {
    std::string name;
    Clock::time_point time;
  };

  explicit FolderEvents(const std::string& folder) {
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0 || ::inotify_add_watch(fd_, folder.c_str(), IN_CREATE | IN_MOVED_TO) < 0)
      throw std::runtime_error("cannot watch " + folder);
  }
  FolderEvents(const FolderEvents&) = delete;
  FolderEvents& operator=(const FolderEvents&) = delete;
  ~FolderEvents() { ::close(fd_); }

  // How many entries whose names start with `prefix` have been seen.
  int seen(const std::string& prefix) const {
    int n = 0;
    for (const Event& e : events_) n += e.name.rfind(prefix, 0) == 0;
    return n;
  }
  // Waits until `count` such entries have been seen; false when `process` ended first or
  // `max_seconds` passed.
  bool wait_for(const std::string& prefix, int count, SsmProcess& process, double max_seconds = 1e9) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(max_seconds));
    while (seen(prefix) < count) {
      if (!process.running() || Clock::now() >= deadline) {
        drain();
        return seen(prefix) >= count;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 5) > 0) drain();
    }
    return true;
  }
  // Records the events, as they come, until `process` ends.
  void follow(SsmProcess& process) { wait_for("", 1 << 30, process); }
  const std::vector<Event>& events() const { return events_; }

 private:
  // Reads what is queued.
  void drain() {
    alignas(inotify_event) char buffer[16384];
    ssize_t n;
    while ((n = ::read(fd_, buffer, sizeof buffer)) > 0) {
      const auto now = Clock::now();
      for (char* p = buffer; p < buffer + n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(p);
        if (e->len > 0) events_.push_back({e->name, now});
        p += sizeof(inotify_event) + e->len;
      }
    }
  }

  int fd_ = -1;
  std::vector<Event> events_;
};

inline void sleep_seconds(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

}  // namespace ssm::test
