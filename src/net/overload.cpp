#include "net/overload.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "net/socket.hpp"
#include "protocol/codec.hpp"
#include "util/errors.hpp"

namespace pgw::net {

namespace {

// Refused connections drained at the same time; past this they are closed right after the
// error is written (a flood must not use up the descriptors the guard is protecting).
constexpr int kMaxLingering = 64;
constexpr std::chrono::milliseconds kLinger{250};

// Reads whatever the client already sent (its startup packet), so closing sends FIN rather
// than a reset that could make the client lose our error.
void discard_pending_input(int fd) {
  char sink[1024];
  for (int i = 0; i < 16; ++i) {
    if (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) return;
  }
}

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
    : io_(io), health_(health), timer_(io) {}

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

std::string OverloadGuard::refusal_message() const {
  const auto& spec = error_spec(Err::overloaded);
  std::string out;
  proto::MessageWriter(out).error_response(
      spec.severity, spec.sqlstate, error_message(Err::overloaded),
      fmt::format("pgwarden has {} of its {} file descriptors open (RLIMIT_NOFILE) and takes no "
                  "new connections until it is under 80 %.",
                  open_, limit_),
      "Retry later; raise the open files limit (ulimit -n) if this happens often.");
  return out;
}

void OverloadGuard::refuse(int fd) {
  health_.connections_refused.fetch_add(1, std::memory_order_relaxed);
  std::string error;
  {
    std::lock_guard lock(mutex_);
    error = refusal_message();
  }
  [[maybe_unused]] const auto sent =
      ::send(fd, error.data(), error.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  if (lingering_ >= kMaxLingering) {
    discard_pending_input(fd);
    ::close(fd);
    return;
  }
  // Half-closed: read and drop what the client sends until it closes (it has read the error
  // by then), bounded in time, on this thread's io_context.
  sockaddr_storage address{};
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  asio::error_code ec;
  auto socket = std::make_shared<asio::generic::stream_protocol::socket>(io_);
  socket->assign(asio::generic::stream_protocol(address.ss_family, 0), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  ++lingering_;
  asio::co_spawn(
      io_,
      [this, socket]() -> asio::awaitable<void> {
        using asio::experimental::awaitable_operators::operator||;
        asio::steady_timer limit(io_, kLinger);
        auto drain = [socket]() -> asio::awaitable<void> {
          std::array<char, 512> sink{};
          for (;;) {
            auto [read_error, n] =
                co_await socket->async_read_some(asio::buffer(sink), use_nothrow);
            if (read_error || n == 0) co_return;
          }
        };
        co_await (drain() || limit.async_wait(use_nothrow));
        asio::error_code ignored;
        socket->close(ignored);
        --lingering_;
      },
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
    const std::string error = refusal_message();
    [[maybe_unused]] const auto sent =
        ::send(fd, error.data(), error.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    discard_pending_input(fd);
    ::close(fd);
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
