#include "net/reactor.hpp"

#include "net/tls.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <linux/sockios.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
thread_local Reactor* current_reactor = nullptr;

constexpr std::uintptr_t kListenTag = 1;

}  // namespace

thread_local Clock::rep detail::turn_time = 0;

struct Reactor::epoll_event_storage {
  epoll_event events[Reactor::kBatch];
};

// ---------------------------------------------------------------------------------------------
// Reactor

Reactor::Reactor(asio::io_context& io, bool batch_io)
    : io_(io), events_(std::make_unique<epoll_event_storage>()), want_batch_(batch_io) {
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
  PGW_ASSERT_OWNED(this);
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
  PGW_ASSERT_OWNED(this);
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

bool Reactor::owned_here() const {
  return current_reactor == this || !loop_active_.load(std::memory_order_relaxed);
}

void Reactor::assert_owned(const Reactor* reactor, const char* where) {
  if (reactor == nullptr || reactor->owned_here()) return;
  spdlog::critical("thread ownership violated in {}: an object of another worker's loop", where);
  std::fprintf(stderr, "pgwarden: thread ownership violated in %s\n", where);
  std::abort();
}

Reactor* Reactor::current() {
  return current_reactor;
}

void Reactor::add(Connection& connection) {
  PGW_ASSERT_OWNED(this);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &connection;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection.fd_, &ev) != 0) {
    throw std::system_error(last_error(), "epoll_ctl(ADD)");
  }
  connections_.insert(&connection);
}

void Reactor::remove(Connection& connection, bool closing) {
  PGW_ASSERT_OWNED(this);
  connections_.erase(&connection);
  if (!closing) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, connection.fd_, nullptr);
  // Events of this connection still waiting in the current batch must not reach it.
  for (int i = batch_next_; i < batch_size_; ++i) {
    if (events_->events[i].data.ptr == &connection) events_->events[i].data.ptr = nullptr;
  }
  std::replace(send_failed_.begin(), send_failed_.end(), &connection,
               static_cast<Connection*>(nullptr));
  if (connection.read_slot_ >= 0) {
    ahead_[static_cast<std::size_t>(connection.read_slot_)].connection = nullptr;
    connection.read_slot_ = -1;
  }
}

bool Reactor::queue_write(Connection& connection, const void* data, std::size_t size) {
  if (!batch_ || batch_->failure() != 0 || current_reactor != this || size > IoBatch::kMaxWrite)
    return false;
  const bool append = connection.batch_slot_ >= 0 && batch_->is_last(connection.batch_slot_);
  if (connection.batch_slot_ >= 0 && !append) {
    // Queued earlier in this turn, with other connections' writes behind it: a second entry
    // could be sent before the first, so those bytes go out now and this write after them.
    if (!connection.push_waiting()) return false;
  }
  if (!batch_->has_room(size, append)) {
    send_batch();  // a full batch goes out now; failures are told at the end of the turn
    // If this connection's own earlier bytes did not all go, write_some() sees it.
    if (batch_->failure() != 0 || connection.has_unsent() || connection.send_error_ != 0)
      return false;
    return queue_write(connection, data, size);
  }
  if (append) {
    batch_->append(connection.batch_slot_, data, size);
  } else {
    connection.batch_slot_ = batch_->add(connection, data, size);
  }
  ++batch_counters_.batched_writes;
  return true;
}

void Reactor::send_batch() {
  if (!batch_ || batch_->empty()) return;
  auto entries = batch_->entries();
  if (entries.size() == 1) {
    // Nothing to batch (one client, or a quiet moment): a send() costs less than a submission.
    if (Connection* connection = entries[0].connection) {
      connection->push_waiting();
      if (connection->send_error_ != 0) send_failed_.push_back(connection);
    }
    batch_->clear();
    return;
  }
  const auto results = batch_->send_all();
  ++batch_counters_.write_submissions;
  for (std::size_t slot = 0; slot < entries.size(); ++slot) {
    Connection* connection = entries[slot].connection;
    if (connection == nullptr) continue;
    connection->batch_slot_ = -1;
    const auto bytes = batch_->bytes(static_cast<std::int16_t>(slot));
    const int result = results[slot];
    const bool told = result >= 0
                          ? connection->batch_sent(bytes, static_cast<std::size_t>(result), 0)
                          : connection->batch_sent(bytes, 0, -result);
    if (!told) send_failed_.push_back(connection);
  }
  batch_->clear();
}

void Reactor::read_ahead(int begin, int end) {
  ahead_count_ = 0;
  if (!batch_ || batch_->failure() != 0) return;
  std::array<int, IoBatch::kReadAhead> fds;
  for (int i = begin; i < end; ++i) {
    const epoll_event& ev = events_->events[i];
    if (ev.data.ptr == nullptr || ev.data.ptr == &wake_marker || ev.data.ptr == &timer_marker ||
        (ev.data.u64 & kListenTag) != 0) {
      continue;
    }
    auto* connection = static_cast<Connection*>(ev.data.ptr);
    // Only the data path's sockets (coroutines read with their own buffers and timing), only
    // on news of data, and not where bytes from before still wait (already readable, or kept
    // unread): those must be read first, in order.
    if (connection->handler_ == nullptr || connection->readable_ || connection->has_unread() ||
        (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) {
      continue;
    }
    ahead_[ahead_count_] = {connection, 0, 0};
    fds[ahead_count_++] = connection->fd_;
  }
  if (ahead_count_ < 2) {
    // A single read gains nothing from a submission: its handler's recv() costs less.
    ahead_count_ = 0;
    return;
  }
  const auto results = batch_->receive_all({fds.data(), ahead_count_});
  ++batch_counters_.read_submissions;
  for (std::size_t slot = 0; slot < ahead_count_; ++slot) {
    ReadAhead& ahead = ahead_[slot];
    ahead.result = results[slot];
    if (ahead.result == IoBatch::kNotRead) {
      ahead.connection = nullptr;  // never read: its handler reads the socket itself
      continue;
    }
    ahead.connection->read_slot_ = static_cast<std::int16_t>(slot);
    ++batch_counters_.reads_ahead;
  }
}

void Reactor::keep_unread() {
  for (std::size_t slot = 0; slot < ahead_count_; ++slot) {
    if (Connection* connection = ahead_[slot].connection) connection->keep_read_ahead();
  }
  ahead_count_ = 0;
}

IoResult Reactor::take_read_ahead(Connection& connection, void* data, std::size_t size) {
  ReadAhead& ahead = ahead_[static_cast<std::size_t>(connection.read_slot_)];
  IoResult result;
  if (ahead.result > 0) {
    const std::size_t have = static_cast<std::size_t>(ahead.result) - ahead.taken;
    result.bytes = std::min(size, have);
    std::memcpy(data,
                batch_->read_slot(static_cast<std::size_t>(connection.read_slot_)) + ahead.taken,
                result.bytes);
    ahead.taken += static_cast<std::uint32_t>(result.bytes);
    if (result.bytes < have) return result;
    // All taken. A read that did not fill its slot found the socket's queue empty, as a short
    // recv() does (new data brings a new edge); a full one may have left more behind.
    if (static_cast<std::size_t>(ahead.result) < IoBatch::kReadSlot && !connection.peer_closed_)
      connection.readable_ = false;
  } else if (ahead.result == 0) {
    // End of stream: readable_ stays set, and the next read (a recv()) says so again.
  } else if (ahead.result == -EAGAIN || ahead.result == -EWOULDBLOCK) {
    connection.readable_ = false;
    result.error = std::make_error_code(std::errc::operation_would_block);
  } else {
    result.error = {-ahead.result, std::system_category()};
  }
  ahead.connection = nullptr;
  connection.read_slot_ = -1;
  return result;
}

void Reactor::flush_sends() {
  while (batch_ && !batch_->empty()) {
    send_batch();
    // The data path learns of a failed send as of a broken socket: readable, and the next
    // write fails. Its handler may queue more writes: the loop sends those too.
    for (std::size_t i = 0; i < send_failed_.size(); ++i) {
      if (Connection* connection = std::exchange(send_failed_[i], nullptr))
        connection->on_events(0);
    }
    send_failed_.clear();
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
  Reactor* outer = current_reactor;
  current_reactor = this;
  loop_active_.store(true, std::memory_order_relaxed);
  activity::Marker* outer_marker = activity::this_thread();
  activity::bind_this_thread(&activity_);
  struct Restore {
    Reactor* self;
    Reactor* outer;
    activity::Marker* outer_marker;
    Clock::rep outer_turn_time;
    ~Restore() {
      current_reactor = outer;
      activity::bind_this_thread(outer_marker);
      detail::turn_time = outer_turn_time;
      self->loop_active_.store(false, std::memory_order_relaxed);
    }
  } restore{this, outer, outer_marker, detail::turn_time};
  if (want_batch_ && !batch_) {
    // Set up here, on the loop's own thread: the ring is bound to the thread that submits.
    std::string why;
    batch_ = IoBatch::open(why);
    if (!batch_) spdlog::warn("io_uring unavailable ({}): this worker uses send() and recv()", why);
  }
  struct FlushAtExit {
    Reactor& reactor;
    ~FlushAtExit() { reactor.flush_sends(); }
  } flush_at_exit{*this};
  while (!stopped_.load(std::memory_order_relaxed)) {
    auto now = Clock::now();
    detail::turn_time = now.time_since_epoch().count();
    last_turn_.store(detail::turn_time, std::memory_order_relaxed);
    // The watchdog's report of a stall names the phase (one relaxed store each).
    activity_.set("firing timers");
    fire_due_timers(now);
    // Every post counted before this load was queued before it, so the poll below runs it.
    const std::uint64_t seen_posts = posted_.load(std::memory_order_seq_cst);
    activity_.set("running posted handlers and coroutines");
    io_.poll();  // handlers posted from this thread or others; coroutine resumptions
    if (stopped_.load(std::memory_order_relaxed)) break;
    activity_.set("sending the turn's writes");
    flush_sends();

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
    // The loop may have slept: the events' handlers stamp with the time it woke.
    if (timeout != 0) detail::turn_time = Clock::now().time_since_epoch().count();
    batch_size_ = n;
    activity_.set("handling socket events (data path)");
    for (batch_next_ = 0; batch_next_ < batch_size_;) {
      // The reads of the next chunk of events in one submission, then their handlers.
      const int chunk_end =
          std::min(batch_size_, batch_next_ + static_cast<int>(IoBatch::kReadAhead));
      read_ahead(batch_next_, chunk_end);
      while (batch_next_ < chunk_end) {
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
      keep_unread();
    }
    batch_size_ = batch_next_ = 0;
    // The replies and queries of this batch of events go out together now, not after the next
    // turn's timers and posted handlers.
    activity_.set("sending the turn's writes");
    flush_sends();
    if (batch_ && batch_->failure() != 0) {
      // io_uring itself failed (not a send or a read): stop using it rather than fail again
      // each turn. Nothing of it is in use now (the read slots are kept, the writes sent).
      spdlog::error(
          "io_uring submission failed ({}): this worker uses send() and recv() from now on",
          std::strerror(batch_->failure()));
      batch_.reset();
    }
  }
}

bool Reactor::settle(const std::function<void()>& before_round, int max_rounds) {
  Reactor* outer = current_reactor;
  current_reactor = this;
  loop_active_.store(true, std::memory_order_relaxed);
  struct Restore {
    Reactor& reactor;
    Reactor* outer;
    ~Restore() {
      current_reactor = outer;
      reactor.loop_active_.store(false, std::memory_order_relaxed);
    }
  } restore{*this, outer};
  for (int round = 0; round < max_rounds; ++round) {
    if (before_round) before_round();
    // Every armed wait ends now; their coroutines resume with operation_aborted below and
    // unwind (a wait armed again is ended in the next round).
    while (!timers_.empty()) timers_.begin()->second->cancel();
    for (Connection* connection : connections_) {
      connection->read_wait_.complete(asio::error::operation_aborted);
      connection->write_wait_.complete(asio::error::operation_aborted);
    }
    io_.restart();
    const std::size_t ran = io_.poll();
    flush_sends();
    if (ran == 0) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Timer

void Timer::schedule(Clock::time_point deadline) {
  PGW_ASSERT_OWNED(reactor_);
  position_ = reactor_->timers_.emplace(deadline, this);
  scheduled_ = true;
}

void Timer::cancel() {
  PGW_ASSERT_OWNED(reactor_);
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

Connection::Connection() = default;

Connection::~Connection() {
  close();
}

void Connection::open(Reactor& reactor, int fd, bool connecting) {
  close();
  fd_ = fd;
  attach(reactor);
  if (connecting) writable_ = false;
}

void Connection::attach(Reactor& reactor) {
  PGW_ASSERT_OWNED(&reactor);
  reactor_ = &reactor;
  // Registration reports the current state as a first event: until it arrives, assume the
  // socket can take writes and has nothing to read, unless bytes from before a move still wait.
  readable_ = has_unread();
  writable_ = !has_unsent();
  peer_closed_ = false;
  reactor.add(*this);
}

void Connection::detach() {
  PGW_ASSERT_OWNED(reactor_);
  // Bytes still queued in this reactor's batch go out now, and what the socket cannot take, or
  // what was read ahead and not taken, moves with the connection (the spill).
  push_waiting();
  keep_read_ahead();
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
  if (broken || (events & EPOLLOUT)) writable_ = !has_unsent() || push_waiting();
  if (handler_) {
    handler_->on_ready(*this);
    return;
  }
  if (readable_) read_wait_.complete({});
  if (writable_) write_wait_.complete({});
}

void Connection::keep_read_ahead() {
  if (read_slot_ < 0) return;
  const auto slot = static_cast<std::size_t>(read_slot_);
  const auto& ahead = reactor_->ahead_[slot];
  if (ahead.result > 0 && ahead.taken < static_cast<std::uint32_t>(ahead.result)) {
    if (!spill_) spill_ = std::make_unique<Spill>();
    const std::byte* bytes = reactor_->batch_->read_slot(slot);
    spill_->unread.insert(spill_->unread.end(), bytes + ahead.taken, bytes + ahead.result);
  }
  // A result not taken that was the end of stream or an error shows again in the next recv()
  // (an error as the end of stream): readable_ is still set from the event.
  reactor_->ahead_[slot].connection = nullptr;
  read_slot_ = -1;
}

IoResult Connection::read_some(void* data, std::size_t size) {
  if (tls_) [[unlikely]]
    return tls_read_some(data, size);
  return raw_read_some(data, size);
}

IoResult Connection::tls_read_some(void* data, std::size_t size) {
  PGW_ASSERT_OWNED(reactor_);
  const auto result = tls_->read(data, size);
  // Records decrypted or received beyond what the caller took: no epoll edge will come for
  // them, so the connection stays readable (if what is left is a partial record, the next
  // read finds the socket empty and clears it).
  if (result.bytes > 0 && tls_->has_pending()) readable_ = true;
  return result;
}

IoResult Connection::raw_read_some(void* data, std::size_t size) {
  PGW_ASSERT_OWNED(reactor_);
  if (read_slot_ >= 0) return reactor_->take_read_ahead(*this, data, size);
  IoResult result;
  if (has_unread()) {
    // Read ahead in an earlier turn and not taken then; readable_ stays set, so the read after
    // these bytes asks the socket.
    const std::size_t have = spill_->unread.size() - spill_->unread_at;
    result.bytes = std::min(size, have);
    std::memcpy(data, spill_->unread.data() + spill_->unread_at, result.bytes);
    spill_->unread_at += result.bytes;
    if (spill_->unread_at == spill_->unread.size()) {
      spill_->unread.clear();
      spill_->unread_at = 0;
      drop_empty_spill();
    }
    return result;
  }
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

bool Connection::batch_sent(std::span<const std::byte> bytes, std::size_t sent, int error) {
  if (error == 0 && sent == bytes.size()) return true;
  if (error == 0 || error == EAGAIN || error == EWOULDBLOCK) {
    // The socket's buffer is full: the rest waits here, and nothing more is taken until it
    // has gone (EPOLLOUT brings it).
    if (!spill_) spill_ = std::make_unique<Spill>();
    spill_->unsent.assign(bytes.begin() + static_cast<long>(sent), bytes.end());
    writable_ = false;
    return true;
  }
  send_error_ = error;
  readable_ = writable_ = true;  // as for EPOLLERR: the next read or write reports it
  return false;
}

bool Connection::push_waiting() {
  if (fd_ < 0) return true;
  if (batch_slot_ >= 0) {
    const auto bytes = reactor_->batch_->bytes(batch_slot_);
    reactor_->batch_->forget(batch_slot_);
    batch_slot_ = -1;
    const auto sent = send_now(bytes.data(), bytes.size());
    const bool ok = !sent.error || sent.would_block();
    // Nothing is unsent here: a connection with unsent bytes takes no new writes.
    batch_sent(bytes, sent.bytes, ok ? 0 : sent.error.value());
  } else if (has_unsent()) {
    auto& unsent = spill_->unsent;
    const auto sent = send_now(unsent.data(), unsent.size());
    if (sent.error && !sent.would_block()) {
      send_error_ = sent.error.value();
      unsent.clear();
    } else {
      unsent.erase(unsent.begin(), unsent.begin() + static_cast<long>(sent.bytes));
    }
    drop_empty_spill();
  }
  if (has_unsent()) return false;
  if (shutdown_after_unsent_) {
    shutdown_after_unsent_ = false;
    ::shutdown(fd_, SHUT_WR);
  }
  return true;
}

IoResult Connection::write_some(const void* data, std::size_t size) {
  PGW_ASSERT_OWNED(reactor_);
  if (tls_) [[unlikely]]
    return tls_write(data, size, /*now=*/false);
  if (send_error_ != 0) return {0, {send_error_, std::system_category()}};
  if (has_unsent() || shutdown_after_unsent_) {
    writable_ = false;  // earlier bytes first
    return {0, std::make_error_code(std::errc::operation_would_block)};
  }
  if (reactor_ && reactor_->queue_write(*this, data, size)) return {size, {}};
  return write_now(data, size);  // too large for the batch, or off the loop's thread
}

IoResult Connection::write_now(const void* data, std::size_t size) {
  PGW_ASSERT_OWNED(reactor_);
  if (tls_) [[unlikely]]
    return tls_write(data, size, /*now=*/true);
  if (send_error_ != 0) return {0, {send_error_, std::system_category()}};
  // What is queued of this connection goes first.
  if (!push_waiting()) {
    writable_ = false;
    return {0, send_error_ != 0 ? std::error_code(send_error_, std::system_category())
                                : std::make_error_code(std::errc::operation_would_block)};
  }
  if (send_error_ != 0) return {0, {send_error_, std::system_category()}};
  return send_now(data, size);
}

IoResult Connection::tls_write(const void* data, std::size_t size, bool now) {
  if (send_error_ != 0) return {0, {send_error_, std::system_category()}};
  if (has_unsent() || shutdown_after_unsent_) {
    writable_ = false;  // earlier records first
    return {0, std::make_error_code(std::errc::operation_would_block)};
  }
  auto result = tls_->write(data, size);
  if (now) push_waiting();
  if (send_error_ != 0 && !result.error) result.error = {send_error_, std::system_category()};
  return result;
}

void Connection::write_all_or_keep(const void* data, std::size_t size) {
  if (fd_ < 0 || send_error_ != 0) return;
  const auto* bytes = static_cast<const std::byte*>(data);
  if (!has_unsent() && !shutdown_after_unsent_) {
    if (reactor_ && reactor_->queue_write(*this, data, size)) return;
    if (push_waiting() && send_error_ == 0) {
      const auto sent = send_now(data, size);
      if (sent.error && !sent.would_block()) {
        send_error_ = sent.error.value();
        readable_ = writable_ = true;  // as for a failed batched send: the next I/O reports it
        return;
      }
      bytes += sent.bytes;
      size -= sent.bytes;
      if (size == 0) return;
    }
    if (send_error_ != 0) return;
  }
  if (!spill_) spill_ = std::make_unique<Spill>();
  spill_->unsent.insert(spill_->unsent.end(), bytes, bytes + size);
  writable_ = false;
}

void Connection::start_tls(std::unique_ptr<TlsStream> tls) {
  PGW_ASSERT_OWNED(reactor_);
  tls_ = std::move(tls);
}

asio::awaitable<std::string> Connection::async_tls_handshake() {
  for (;;) {
    if (fd_ < 0 || !tls_) co_return "connection closed";
    switch (tls_->handshake()) {
      case TlsStream::Step::done:
        // The peer may have sent its first message right behind the handshake.
        if (tls_->has_pending()) readable_ = true;
        co_return std::string();
      case TlsStream::Step::failed:
        co_return tls_->error().empty() ? std::string("TLS handshake failed") : tls_->error();
      case TlsStream::Step::want_read:
        break;
    }
    // The records written so far go out with the turn's batch; wait for the peer's answer.
    auto [ec] = co_await async_wait_readable(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return ec == asio::error::operation_aborted ? "aborted" : ec.message();
  }
}

IoResult Connection::send_now(const void* data, std::size_t size) {
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

bool Connection::send_queue_empty() const {
  if (fd_ < 0 || batch_slot_ >= 0 || has_unsent()) return false;
  int unsent = 0;
  return ::ioctl(fd_, SIOCOUTQ, &unsent) == 0 && unsent == 0;
}

void Connection::shutdown_send() {
  PGW_ASSERT_OWNED(reactor_);
  if (fd_ < 0) return;
  if (tls_ && send_error_ == 0) tls_->close_notify();  // its records go before the FIN
  shutdown_after_unsent_ = true;
  push_waiting();  // shuts down now if nothing is left, else once the last bytes have gone
}

void Connection::close() {
  PGW_ASSERT_OWNED(reactor_);
  if (fd_ < 0) {
    tls_.reset();
    return;
  }
  if (tls_) {
    if (send_error_ == 0) tls_->close_notify();
    tls_.reset();
  }
  // What was written before the close goes out if the socket takes it, as it would have had
  // it been sent at once.
  push_waiting();
  spill_.reset();  // unread bytes go with the socket, as a close discards its receive queue
  shutdown_after_unsent_ = false;
  send_error_ = 0;
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
      auto result = write_now(bytes.data() + done, bytes.size() - done);
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
