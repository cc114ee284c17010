#include "net/reactor.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace pgw::net {

namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

// The wake-up eventfd's and the timerfd's epoll entries point here instead of at a Connection.
// Aligned, like everything else in an epoll entry, so that the lowest bit stays free to tag
// listening sockets.
alignas(8) char wake_marker;
alignas(8) char timer_marker;

// The reactor whose loop runs on this thread (events are dispatched outside io_context::poll,
// so Asio's running_in_this_thread() cannot tell).
thread_local const Reactor* current_reactor = nullptr;

constexpr std::uintptr_t kListenTag = 1;

}  // namespace

struct Reactor::epoll_event_storage {
  epoll_event events[Reactor::kBatch];
};

// ---------------------------------------------------------------------------------------------
// Reactor

Reactor::Reactor(asio::io_context& io) : io_(io), events_(std::make_unique<epoll_event_storage>()) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // steady_clock is CLOCK_MONOTONIC, so its time points are the timerfd's absolute times.
  timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0 || timer_fd_ < 0) {
    throw std::system_error(last_error(), "epoll/eventfd/timerfd");
  }
  for (auto [fd, marker] :
       {std::pair{wake_fd_, &wake_marker}, std::pair{timer_fd_, &timer_marker}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = marker;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::system_error(last_error(), "epoll_ctl(eventfd/timerfd)");
    }
  }
  last_turn_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
}

Reactor::~Reactor() {
  ::close(timer_fd_);
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void Reactor::watch_listener(int fd, AcceptHandler& handler) {
  auto watch = std::make_unique<ListenWatch>(ListenWatch{fd, &handler});
  static_assert(alignof(ListenWatch) > 1 && alignof(Connection) > 1);
  epoll_event ev{};
  // Level-triggered: connections left queued (a bounded batch was taken) are reported again.
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u64 = reinterpret_cast<std::uintptr_t>(watch.get()) | kListenTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    throw std::system_error(last_error(), "epoll_ctl(ADD listener)");
  }
  listen_watches_.push_back(std::move(watch));
}

void Reactor::unwatch_listener(int fd) {
  for (auto it = listen_watches_.begin(); it != listen_watches_.end(); ++it) {
    if ((*it)->fd != fd) continue;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    const auto tagged = reinterpret_cast<std::uintptr_t>(it->get()) | kListenTag;
    for (int i = batch_next_; i < batch_size_; ++i) {
      if (events_->events[i].data.u64 == tagged) events_->events[i].data.ptr = nullptr;
    }
    listen_watches_.erase(it);
    return;
  }
}

bool Reactor::running_in_this_thread() const {
  return current_reactor == this;
}

void Reactor::add(Connection& connection) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &connection;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection.fd_, &ev) != 0) {
    throw std::system_error(last_error(), "epoll_ctl(ADD)");
  }
}

void Reactor::remove(Connection& connection, bool closing) {
  if (!closing) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, connection.fd_, nullptr);
  // Events of this connection still waiting in the current batch must not reach it.
  for (int i = batch_next_; i < batch_size_; ++i) {
    if (events_->events[i].data.ptr == &connection) events_->events[i].data.ptr = nullptr;
  }
}

void Reactor::wake() {
  // Only a sleeping loop needs the system call; a running one polls its queue before it
  // sleeps again (see run()).
  if (sleeping_.load(std::memory_order_seq_cst)) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void Reactor::stop() {
  stopped_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
}

bool Reactor::arm_timer_fd(Clock::time_point now) {
  const auto next = timers_.empty() ? Clock::time_point::max() : timers_.begin()->first;
  if (next <= now) return true;
  if (next != timer_fd_deadline_) {
    itimerspec spec{};  // all zero: disarmed
    if (next != Clock::time_point::max()) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next.time_since_epoch());
      spec.it_value.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
      spec.it_value.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
    }
    ::timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
    timer_fd_deadline_ = next;
  }
  return false;
}

void Reactor::fire_due_timers(Clock::time_point now) {
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Timer* timer = timers_.begin()->second;
    timers_.erase(timers_.begin());
    timer->scheduled_ = false;
    timer->fire();
  }
}

void Reactor::run() {
  auto guard = asio::make_work_guard(io_);
  const Reactor* outer = current_reactor;
  current_reactor = this;
  activity::Marker* outer_marker = activity::this_thread();
  activity::bind_this_thread(&activity_);
  struct Restore {
    const Reactor* outer;
    activity::Marker* outer_marker;
    ~Restore() {
      current_reactor = outer;
      activity::bind_this_thread(outer_marker);
    }
  } restore{outer, outer_marker};
  while (!stopped_.load(std::memory_order_relaxed)) {
    auto now = Clock::now();
    last_turn_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
    // The watchdog's report of a stall names the phase (one relaxed store each).
    activity_.set("firing timers");
    fire_due_timers(now);
    // Every post counted before this load was queued before it, so the poll below runs it.
    const std::uint64_t seen_posts = posted_.load(std::memory_order_seq_cst);
    activity_.set("running posted handlers and coroutines");
    io_.poll();  // handlers posted from this thread or others; coroutine resumptions
    if (stopped_.load(std::memory_order_relaxed)) break;

    // Dekker-style hand-shake with post(): either we see its count move, or it sees us
    // sleeping and writes the eventfd.
    sleeping_.store(true, std::memory_order_seq_cst);
    const bool more_posts = posted_.load(std::memory_order_seq_cst) != seen_posts;
    const bool timer_due = arm_timer_fd(now);
    const int timeout = more_posts || timer_due ? 0 : -1;
    const int n = ::epoll_wait(epoll_fd_, events_->events, kBatch, timeout);
    sleeping_.store(false, std::memory_order_relaxed);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(last_error(), "epoll_wait");
    }
    batch_size_ = n;
    activity_.set("handling socket events (data path)");
    for (batch_next_ = 0; batch_next_ < batch_size_;) {
      const epoll_event ev = events_->events[batch_next_++];
      if (ev.data.ptr == nullptr) continue;  // closed by an earlier event of this batch
      if (ev.data.ptr == &wake_marker || ev.data.ptr == &timer_marker) {
        std::uint64_t count = 0;
        const int fd = ev.data.ptr == &wake_marker ? wake_fd_ : timer_fd_;
        [[maybe_unused]] const auto r = ::read(fd, &count, sizeof count);
        if (fd == timer_fd_) timer_fd_deadline_ = Clock::time_point::max();  // it has fired
        continue;
      }
      if (ev.data.u64 & kListenTag) {
        reinterpret_cast<ListenWatch*>(ev.data.u64 & ~kListenTag)->handler->on_acceptable();
        continue;
      }
      static_cast<Connection*>(ev.data.ptr)->on_events(ev.events);
    }
    batch_size_ = batch_next_ = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Timer

void Timer::schedule(Clock::time_point deadline) {
  position_ = reactor_->timers_.emplace(deadline, this);
  scheduled_ = true;
}

void Timer::cancel() {
  if (scheduled_) {
    reactor_->timers_.erase(position_);
    scheduled_ = false;
  }
  wait_.complete(asio::error::operation_aborted);
}

void Timer::fire() {
  wait_.complete({});
}

// ---------------------------------------------------------------------------------------------
// Connection

void Connection::open(Reactor& reactor, int fd, bool connecting) {
  close();
  fd_ = fd;
  attach(reactor);
  if (connecting) writable_ = false;
}

void Connection::attach(Reactor& reactor) {
  reactor_ = &reactor;
  // Registration reports the current state as a first event: until it arrives, assume the
  // socket can take writes and has nothing to read.
  readable_ = false;
  writable_ = true;
  peer_closed_ = false;
  reactor.add(*this);
}

void Connection::detach() {
  if (reactor_ && fd_ >= 0) reactor_->remove(*this);
  reactor_ = nullptr;
  handler_ = nullptr;
}

void Connection::on_events(std::uint32_t events) {
  // Errors and hang-ups make both directions "ready": the next read or write reports them.
  const bool broken = (events & (EPOLLERR | EPOLLHUP)) != 0;
  if (broken || (events & (EPOLLIN | EPOLLRDHUP))) readable_ = true;
  // The peer has closed: its end of stream may sit behind data that arrived in this same
  // edge, and no further edge will come for it.
  if (broken || (events & EPOLLRDHUP)) peer_closed_ = true;
  if (broken || (events & EPOLLOUT)) writable_ = true;
  if (handler_) {
    handler_->on_ready(*this);
    return;
  }
  if (readable_) read_wait_.complete({});
  if (writable_) write_wait_.complete({});
}

IoResult Connection::read_some(void* data, std::size_t size) {
  IoResult result;
  for (;;) {
    const ssize_t n = ::recv(fd_, data, size, 0);
    if (n > 0) {
      result.bytes = static_cast<std::size_t>(n);
      // Short read: the receive queue is empty now; new data brings a new edge. Not so once
      // the peer has closed: the next read returns the end of stream.
      if (result.bytes < size && !peer_closed_) readable_ = false;
      return result;
    }
    if (n == 0) return result;  // end of stream (readable_ stays set: it stays at the end)
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      readable_ = false;
      result.error = std::make_error_code(std::errc::operation_would_block);
    } else {
      result.error = last_error();
    }
    return result;
  }
}

IoResult Connection::write_some(const void* data, std::size_t size) {
  IoResult result;
  for (;;) {
    const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
    if (n >= 0) {
      result.bytes = static_cast<std::size_t>(n);
      if (result.bytes < size) writable_ = false;  // the send buffer is full
      return result;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      writable_ = false;
      result.error = std::make_error_code(std::errc::operation_would_block);
    } else {
      result.error = last_error();
    }
    return result;
  }
}

void Connection::shutdown_send() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Connection::close() {
  if (fd_ < 0) return;
  if (reactor_) reactor_->remove(*this, /*closing=*/true);
  ::close(fd_);
  fd_ = -1;
  reactor_ = nullptr;
  handler_ = nullptr;
  readable_ = writable_ = false;
  read_wait_.complete(asio::error::operation_aborted);
  write_wait_.complete(asio::error::operation_aborted);
}

asio::awaitable<IoResult> Connection::async_read_some(void* data, std::size_t size) {
  for (;;) {
    if (fd_ < 0) co_return IoResult{0, asio::error::bad_descriptor};
    if (readable_) {
      auto result = read_some(data, size);
      if (!result.would_block()) co_return result;
    }
    auto [ec] = co_await async_wait_readable(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return IoResult{0, ec};
  }
}

asio::awaitable<std::error_code> Connection::async_write_all(std::span<const std::byte> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    if (fd_ < 0) co_return asio::error::bad_descriptor;
    if (writable_) {
      auto result = write_some(bytes.data() + done, bytes.size() - done);
      done += result.bytes;
      if (result.error && !result.would_block()) co_return result.error;
      if (done == bytes.size()) break;
    }
    auto [ec] = co_await async_wait_writable(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

}  // namespace pgw::net
