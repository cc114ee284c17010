// Overload protection: pgwarden's open file descriptors against RLIMIT_NOFILE. From 90 % of
// the limit it takes no new clients: a new connection is still accepted, but only to be told
// 53300 ("sorry, too many clients already", with a DETAIL) and closed, so the listen queue
// does not fill with connections that time out and accept() does not spin on EMFILE. Under
// 80 % it takes clients again. The gap keeps it from flapping at the threshold.
//
// Counting descriptors means scanning /proc/self/fd, so the count is refreshed by a timer on
// the main thread, more often the closer it is to the limit. Between two counts, the number
// accept() returns is a free lower bound: Linux hands out the lowest free descriptor, so
// descriptor N means 0..N-1 are all in use.
#pragma once

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <mutex>

#include "net/reactor.hpp"
#include "util/errors.hpp"
#include "util/health.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::net {

// The rule alone (unit-tested): refuse from 90 %, accept again under 80 %.
class FileBudget {
 public:
  static constexpr double kRefuseAt = 0.90;
  static constexpr double kResumeBelow = 0.80;

  // Feeds a count; true when this changed whether connections are refused.
  bool update(int open, int limit);
  bool refusing() const { return refusing_; }
  // When to count again: every second while far from the limit, every 100 ms near it.
  static std::chrono::milliseconds recheck_after(int open, int limit);

 private:
  bool refusing_ = false;
};

// Entries of /proc/self/fd (-1 if it cannot be read), and the soft RLIMIT_NOFILE.
int count_open_files();
int open_file_limit();

// Counts on the main thread; the workers that accept (Runtime::accept_ready) ask
// should_refuse() and refuse them, or refuse_one_at_limit(), from theirs, so the state is behind
// a mutex (one uncontended lock per accepted connection, nothing per message). A refused
// connection is ended on the worker that accepted it, through the error writer
// (net/error_writer.hpp), like any other client told an error.
class OverloadGuard {
 public:
  OverloadGuard(asio::io_context& io, ProcessHealth& health);
  ~OverloadGuard();
  OverloadGuard(const OverloadGuard&) = delete;
  OverloadGuard& operator=(const OverloadGuard&) = delete;

  // Takes the spare descriptor and starts counting.
  void start();
  // After accept4() returned `fd`: whether the connection must be refused. Any thread.
  bool should_refuse(int fd);
  // Answers `fd` with FATAL 53300 and closes it once the client has read it (or after 250 ms).
  // On the thread of `reactor`, which the connection joins while it lingers.
  void refuse(Reactor& reactor, int fd);
  // accept4() failed with EMFILE/ENFILE: gives up the spare descriptor to accept one waiting
  // connection, refuses it, and takes the spare again. False when none was waiting. Any
  // thread.
  bool refuse_one_at_limit(int listen_fd);

 private:
  void recount();
  void schedule_recount();
  // 53300 with the counts (caller holds mutex_).
  ErrorReport refusal_locked() const;

  ProcessHealth& health_;
  util::LeafMutex mutex_;  // budget_, spare_fd_, open_, limit_
  FileBudget budget_;
  asio::steady_timer timer_;
  int spare_fd_ = -1;
  int open_ = 0;
  int limit_ = 0;
  std::atomic<int> lingering_{0};  // refused connections still lingering, on every worker
};

}  // namespace pgw::net
