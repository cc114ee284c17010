#include "net/overload.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "net/error_writer.hpp"
#include "net/socket.hpp"

namespace pgw::net {

namespace {

// Refused connections lingering at the same time; past this they are closed right after the
// error is written (a flood must not use up the descriptors the guard is protecting).
constexpr int kMaxLingering = 64;

}  // namespace

bool FileBudget::update(int open, int limit) {
  if (limit <= 0 || open < 0) return false;
  const bool was = refusing_;
  const double used = static_cast<double>(open) / limit;
  if (!refusing_ && used >= kRefuseAt) refusing_ = true;
  if (refusing_ && used < kResumeBelow) refusing_ = false;
  return refusing_ != was;
}

std::chrono::milliseconds FileBudget::recheck_after(int open, int limit) {
  if (limit <= 0 || open < 0) return std::chrono::milliseconds(1000);
  const double used = static_cast<double>(open) / limit;
  if (used < 0.5) return std::chrono::milliseconds(1000);
  if (used < 0.75) return std::chrono::milliseconds(250);
  return std::chrono::milliseconds(100);
}

int count_open_files() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return -1;
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory's own descriptor
}

int open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 30));
}

OverloadGuard::OverloadGuard(asio::io_context& io, ProcessHealth& health)
    : health_(health), timer_(io) {}

OverloadGuard::~OverloadGuard() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

void OverloadGuard::start() {
  {
    std::lock_guard lock(mutex_);
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  recount();
}

void OverloadGuard::recount() {
  const int open = count_open_files();
  const int limit = open_file_limit();
  std::lock_guard lock(mutex_);
  open_ = open;
  limit_ = limit;
  health_.open_files.store(open_, std::memory_order_relaxed);
  health_.open_files_limit.store(limit_, std::memory_order_relaxed);
  if (budget_.update(open_, limit_)) {
    if (budget_.refusing()) {
      spdlog::warn(
          "open files at {} of {} (>= 90 % of RLIMIT_NOFILE): refusing new connections with "
          "53300 until under 80 %",
          open_, limit_);
    } else {
      spdlog::info("open files at {} of {}: accepting connections again", open_, limit_);
    }
  }
  health_.refusing_connections.store(budget_.refusing(), std::memory_order_relaxed);
  schedule_recount();
}

void OverloadGuard::schedule_recount() {
  timer_.expires_after(FileBudget::recheck_after(open_, limit_));
  timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) recount();
  });
}

bool OverloadGuard::should_refuse(int fd) {
  std::lock_guard lock(mutex_);
  if (!budget_.refusing() && limit_ > 0 && fd + 1 >= FileBudget::kRefuseAt * limit_) {
    // Descriptor numbers this high prove the table is that full: refuse now, the next count
    // decides when to take clients again.
    open_ = fd + 1;
    if (budget_.update(open_, limit_)) {
      spdlog::warn("open files at {} of {} or more: refusing new connections with 53300", open_,
                   limit_);
    }
    health_.refusing_connections.store(true, std::memory_order_relaxed);
  }
  return budget_.refusing();
}

ErrorReport OverloadGuard::refusal_locked() const {
  return report(Err::overloaded, open_, limit_);
}

void OverloadGuard::refuse(Reactor& reactor, int fd) {
  health_.connections_refused.fetch_add(1, std::memory_order_relaxed);
  ErrorReport refusal;
  {
    std::lock_guard lock(mutex_);
    refusal = refusal_locked();
  }
  const bool linger = lingering_.fetch_add(1, std::memory_order_relaxed) < kMaxLingering;
  asio::co_spawn(
      reactor.io(),
      [](OverloadGuard& guard, Reactor& on, int socket, ErrorReport error,
         bool may_linger) -> asio::awaitable<void> {
        Connection connection;
        connection.open(on, socket);
        co_await end_with_error(connection, &error,
                                may_linger ? AfterError::drain : AfterError::close);
        guard.lingering_.fetch_sub(1, std::memory_order_relaxed);
      }(*this, reactor, fd, std::move(refusal), linger),
      asio::detached);
}

bool OverloadGuard::refuse_one_at_limit(int listen_fd) {
  std::lock_guard lock(mutex_);
  if (spare_fd_ < 0) return false;
  ::close(spare_fd_);
  spare_fd_ = -1;
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    // At the very limit there is no descriptor to linger with: answer, take the client's
    // startup packet if it is there, close.
    health_.connections_refused.fetch_add(1, std::memory_order_relaxed);
    end_with_error_now(fd, refusal_locked());
  }
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (!budget_.refusing()) {
    open_ = limit_;
    budget_.update(open_, limit_);
    health_.refusing_connections.store(true, std::memory_order_relaxed);
    spdlog::warn("out of file descriptors (limit {}): refusing new connections with 53300", limit_);
  }
  return fd >= 0;
}

}  // namespace pgw::net
