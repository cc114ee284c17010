// The event loop of one worker thread: an edge-triggered epoll instance, a timer list and the
// worker's asio::io_context, which here is only a handler queue and the executor of the
// coroutines (no Asio socket or timer ever lives on a worker, so Asio's own reactor is never
// created there and io_context::poll() costs no system call).
//
// Why not Asio's reactor: it re-arms a descriptor with epoll_ctl for every non-speculative
// wait and tries a speculative recv() before many reads, so a pooled transaction cost two
// extra system calls, plus a handler allocation and several type-erased hops per operation.
// Here every descriptor is registered once (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) and keeps
// its readiness in two flags: set by epoll, cleared when a read or write comes back short
// (edge-triggered epoll reports new data even if old data was left unread, so a short read
// proves the queue empty and nothing is missed). A read is only tried when the flag says data
// is there: one recv() per arrival, no failed ones.
//
// Two ways to use a Connection:
//  * the hot path sets a ReadyHandler, called directly from the loop on every readiness event;
//  * coroutines (login, authentication, console, internal queries) co_await readable() /
//    writable() / read_some() / write_all(), whose completions are posted to the io_context.
//
// System calls are batched through io_uring (IoBatch), see docs/ARCHITECTURE.md:
//  * Writes made on the loop's thread are queued and sent together once per turn (one
//    io_uring_enter for all of them) instead of one send() each: to the caller a queued write
//    is done, as a send() into the socket buffer is. The bytes of one connection keep their
//    order; if the socket cannot take all of them, the rest waits in the connection and it
//    stops being writable until epoll says it has room, so back-pressure works as with send().
//  * The reads of a batch of readiness events (hot-path connections, two or more) are done in
//    one submission before the handlers run; read_some() then takes the bytes from the read
//    slot, and what the handler leaves is kept in the connection, in order, for its next read.
// Where io_uring is not available (or `io_uring = 0`), every write is a send() and every read
// a recv().
//
// Everything about a Connection, Timer or Event happens on its reactor's thread; only post(),
// wake() and stop() may be called from other threads. Debug builds check it on every operation
// (PGW_ASSERT_OWNED): the loop's own thread, or no thread at all while no loop runs it (before
// run(), and once settle() has ended what was left at shutdown).
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "net/io_batch.hpp"
#include "net/turn_clock.hpp"
#include "util/activity.hpp"
#include "util/intrusive_list.hpp"

#ifndef NDEBUG
#define PGW_ASSERT_OWNED(reactor) ::pgw::net::Reactor::assert_owned((reactor), __func__)
#else
#define PGW_ASSERT_OWNED(reactor) static_cast<void>(0)
#endif

namespace pgw::net {

// Clock: net/turn_clock.hpp
class Reactor;
class Connection;
class TlsStream;  // net/tls.hpp

// One pending completion handler of a coroutine waiting on a Connection, Timer or Event.
// Type-erased (the handler types come from Asio's completion tokens) and cancellable through
// the handler's cancellation slot, so awaitable_operators (a || b) can abandon it.
class PendingWait {
 public:
  PendingWait() = default;
  PendingWait(const PendingWait&) = delete;
  PendingWait& operator=(const PendingWait&) = delete;
  ~PendingWait() { complete(asio::error::operation_aborted); }

  bool armed() const { return op_ != nullptr; }

  template <typename Handler>
  void arm(Handler&& handler) {
    complete(asio::error::operation_aborted);  // one waiter at a time
    auto op = std::make_unique<Op<std::decay_t<Handler>>>(std::forward<Handler>(handler));
    auto slot = asio::get_associated_cancellation_slot(op->handler);
    if (slot.is_connected()) {
      slot.assign([this](asio::cancellation_type) {
        // Runs inside the slot's handler: the slot must not be cleared from here.
        if (auto pending = std::move(op_)) pending->complete(asio::error::operation_aborted, false);
      });
    }
    op_ = std::move(op);
  }

  // Posts the handler with `ec` to its executor (it never runs inside the caller).
  void complete(std::error_code ec) {
    if (!op_) return;
    auto op = std::move(op_);
    op->complete(ec, true);
  }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void complete(std::error_code ec, bool clear_slot) = 0;
  };
  template <typename Handler>
  struct Op final : Base {
    explicit Op(Handler&& h) : handler(std::move(h)) {}
    void complete(std::error_code ec, bool clear_slot) override {
      if (clear_slot) {
        auto slot = asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) slot.clear();
      }
      auto executor = asio::get_associated_executor(handler);
      asio::post(executor, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
    }
    Handler handler;
  };
  std::unique_ptr<Base> op_;
};

// Readiness callback of the data path. Called on the connection's reactor thread, directly
// from the event loop (not posted), with the connection whose flags changed.
class ReadyHandler {
 public:
  virtual void on_ready(Connection& connection) = 0;

 protected:
  virtual ~ReadyHandler() = default;
};

// Readiness callback of a listening socket (net/listener.hpp), called from the event loop
// while connections are waiting to be accepted (level-triggered: it is called again on the
// next turn if it left some).
class AcceptHandler {
 public:
  virtual void on_acceptable() = 0;

 protected:
  virtual ~AcceptHandler() = default;
};

// Result of a non-blocking read or write. `bytes` > 0: transferred; bytes == 0 and no error on
// a read: end of stream; `error` == would_block: nothing to do until the next readiness event.
struct IoResult {
  std::size_t bytes = 0;
  std::error_code error;
  bool would_block() const { return error == std::errc::operation_would_block; }
};

class Timer {
 public:
  explicit Timer(Reactor& reactor) : reactor_(&reactor) {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer() { cancel(); }

  // Completes with success at `deadline`, or operation_aborted if cancelled first.
  template <typename Token>
  auto async_wait_until(Clock::time_point deadline, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this, deadline](auto handler) {
          cancel();
          wait_.arm(std::move(handler));
          schedule(deadline);
        },
        token);
  }
  template <typename Token>
  auto async_wait_for(Clock::duration duration, Token&& token) {
    return async_wait_until(Clock::now() + duration, std::forward<Token>(token));
  }
  void cancel();
  // Armed and not yet due.
  bool pending() const { return scheduled_; }

 private:
  friend class Reactor;
  void schedule(Clock::time_point deadline);
  void fire();
  Reactor* reactor_;
  PendingWait wait_;
  bool scheduled_ = false;
  std::multimap<Clock::time_point, Timer*>::iterator position_;
};

// A flag a coroutine can wait for (a finished check, a gathered console snapshot).
class Event {
 public:
  Event() = default;
  bool is_set() const { return set_; }
  void set() {
    set_ = true;
    wait_.complete({});
  }
  void reset() { set_ = false; }
  // Completes at once if the event is set.
  template <typename Token>
  auto async_wait(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler) {
          wait_.arm(std::move(handler));
          if (set_) wait_.complete({});
        },
        token);
  }

 private:
  bool set_ = false;
  PendingWait wait_;
};

// The same for a plain coroutine (net::DetachedTask): the end of the data path, which an idle
// client waits for all its life, so it is as small as it can be.
class TaskEvent {
 public:
  void set() {
    set_ = true;
    // Never resumed inline: set() is called from deep inside the data path.
    if (waiter_) asio::post(*io_, [caller = std::exchange(waiter_, nullptr)] { caller.resume(); });
  }
  auto wait_on(asio::io_context& io) {
    struct Awaiter {
      TaskEvent& event;
      asio::io_context& io;
      bool await_ready() const noexcept { return event.set_; }
      void await_suspend(std::coroutine_handle<> caller) noexcept {
        event.waiter_ = caller;
        event.io_ = &io;
      }
      void await_resume() const noexcept {}
    };
    return Awaiter{*this, io};
  }

 private:
  bool set_ = false;
  std::coroutine_handle<> waiter_;
  asio::io_context* io_ = nullptr;
};

// A stream socket (TCP or Unix) registered with one reactor. Not movable: the reactor keeps
// its address, and lists it (the hook) so that settle() can end its waits at shutdown.
class Connection : public util::ListHook<Connection> {
 public:
  Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Takes ownership of the non-blocking descriptor `fd` and registers it with `reactor`.
  // `connecting`: a connect() is about to start, so the socket is not writable until epoll
  // says so.
  void open(Reactor& reactor, int fd, bool connecting = false);
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  Reactor* reactor() const { return reactor_; }

  // Moving between workers: detach() on the old reactor's thread, attach() on the new one's.
  void detach();
  void attach(Reactor& reactor);

  void set_handler(ReadyHandler* handler) { handler_ = handler; }
  bool readable() const { return readable_; }
  // A write now would be taken (queued or sent), not refused with would_block.
  bool writable() const { return writable_; }
  // Bytes are known to be waiting (a connection from a TCP_DEFER_ACCEPT listener): the first
  // read tries at once instead of waiting for the registration's first event. If the guess is
  // wrong the read reports EAGAIN and the flag clears, so it costs one system call at most.
  void assume_readable() { readable_ = true; }

  // TLS from now on (after an SSLRequest answered 'S'): reads and writes carry plaintext and
  // `tls` turns it into records on the same socket, batches and spill (net/tls.hpp). Run
  // async_tls_handshake() before anything else is read or written.
  void start_tls(std::unique_ptr<TlsStream> tls);
  TlsStream* tls() const { return tls_.get(); }
  // "" once the handshake is done, else why it failed (the socket stays open: the caller
  // decides whether to close it or to tell the peer).
  asio::awaitable<std::string> async_tls_handshake();

  IoResult read_some(void* data, std::size_t size);
  // On the reactor's thread while it runs, small writes are queued for the end of the turn and
  // reported as written; a failure to send them shows in the next write_some() (and the
  // handler is called, with the connection readable, so the data path finds out).
  IoResult write_some(const void* data, std::size_t size);
  // A write that goes to the kernel now (after whatever of this connection is still queued).
  IoResult write_now(const void* data, std::size_t size);
  // Nothing written to this connection is still waiting: not in this turn's batch, not kept
  // back by a full socket, and not in the kernel's send queue either (SIOCOUTQ). A small
  // message written now then reaches the peer whole, between two of its reads.
  bool send_queue_empty() const;
  // Half-closes after everything written so far has gone out.
  void shutdown_send();
  // Closes the descriptor; pending waits complete with operation_aborted.
  void close();

  // Coroutine waits for readiness (complete at once if the flag is already set).
  template <typename Token>
  auto async_wait_readable(Token&& token) {
    return wait_for(read_wait_, readable_, std::forward<Token>(token));
  }
  template <typename Token>
  auto async_wait_writable(Token&& token) {
    return wait_for(write_wait_, writable_, std::forward<Token>(token));
  }

  // Coroutine I/O for the paths off the hot one. async_write_all completes once the kernel has
  // every byte (write_now, not queued), so a close or a FATAL's half-close after it loses
  // nothing.
  asio::awaitable<IoResult> async_read_some(void* data, std::size_t size);
  asio::awaitable<std::error_code> async_write_all(std::span<const std::byte> bytes);
  asio::awaitable<std::error_code> async_write_all(std::string_view bytes) {
    return async_write_all(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
  }

 private:
  friend class Reactor;
  friend struct TlsBio;
  IoResult raw_read_some(void* data, std::size_t size);
  // TLS records: every byte is taken; what the socket cannot take now waits in the spill and
  // makes the connection unwritable, as a batched write that did not all go does.
  void write_all_or_keep(const void* data, std::size_t size);
  IoResult tls_read_some(void* data, std::size_t size);
  IoResult tls_write(const void* data, std::size_t size, bool now);
  template <typename Token>
  auto wait_for(PendingWait& wait, const bool& flag, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this, &wait, &flag](auto handler) {
          wait.arm(std::move(handler));
          if (flag || fd_ < 0)
            wait.complete(fd_ < 0 ? asio::error::bad_descriptor : std::error_code{});
        },
        token);
  }
  void on_events(std::uint32_t events);
  // Sends what waits for this connection in its reactor's batch and in the spill with send(),
  // now; true if nothing is left waiting (what the socket could not take stays in the spill).
  bool push_waiting();
  bool has_unsent() const { return spill_ && !spill_->unsent.empty(); }
  bool has_unread() const { return spill_ && spill_->unread_at < spill_->unread.size(); }
  // Keeps the bytes of this connection's read slot that its reader has not taken (the end of a
  // dispatch batch, or a move to another worker) in the spill.
  void keep_read_ahead();
  void drop_empty_spill() {
    if (spill_ && spill_->unsent.empty() && spill_->unread.empty()) spill_.reset();
  }
  // The outcome of this connection's entry in a batch that was just sent: `sent` bytes of
  // `bytes`, or `error` (an errno). False if the handler must be told (a failed send).
  bool batch_sent(std::span<const std::byte> bytes, std::size_t sent, int error);
  IoResult send_now(const void* data, std::size_t size);

  int fd_ = -1;
  std::int16_t batch_slot_ = -1;  // this connection's write entry in its reactor's IoBatch
  std::int16_t read_slot_ = -1;   // its read slot in the current batch of events
  Reactor* reactor_ = nullptr;
  ReadyHandler* handler_ = nullptr;
  bool readable_ = false;
  bool writable_ = false;
  bool peer_closed_ = false;  // EPOLLRDHUP/HUP/ERR seen: a short read no longer means empty
  bool shutdown_after_unsent_ = false;  // shutdown_send() came while bytes were still waiting
  int send_error_ = 0;                  // errno of a queued write that failed
  // Bytes between the batches and the socket (rare; allocated only then, and moved with the
  // connection between workers):
  struct Spill {
    // Queued bytes the socket could not take when the batch went out (a full socket buffer);
    // sent first when epoll says there is room.
    std::vector<std::byte> unsent;
    // Bytes read ahead that the reader did not take in its turn (back-pressure); read first.
    std::vector<std::byte> unread;
    std::size_t unread_at = 0;
  };
  std::unique_ptr<Spill> spill_;
  std::unique_ptr<TlsStream> tls_;  // null: plain TCP or Unix socket
  PendingWait read_wait_;
  PendingWait write_wait_;
};

class Reactor {
 public:
  // `batch_io`: queue the writes made on the loop's thread and send them once per turn with
  // io_uring, and read a batch of events' sockets in one submission (see IoBatch); if the
  // kernel refuses io_uring the loop uses send() and recv() and logs why.
  explicit Reactor(asio::io_context& io, bool batch_io = true);
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;
  ~Reactor();

  asio::io_context& io() { return io_; }
  bool running_in_this_thread() const;
  // The reactor whose loop runs on this thread (nullptr off the workers).
  static Reactor* current();

  // Runs the loop on the calling thread until stop().
  void run();
  // After run() has returned, on the same thread: ends what is still waiting on this loop, so
  // that the process can be torn down with nothing suspended. Each round calls `before_round`
  // (the owner ends what it still runs here: sessions), completes every armed timer and
  // connection wait with operation_aborted, and runs the handlers that became ready, until a
  // round runs none. False if that took more than `max_rounds` rounds.
  bool settle(const std::function<void()>& before_round, int max_rounds = 100);
  // The loop's own thread, or no loop running (see the comment at the top).
  bool owned_here() const;
  static void assert_owned(const Reactor* reactor, const char* where);
  // Any thread.
  void stop();
  void wake();
  template <typename Fn>
  void post(Fn&& fn) {
    asio::post(io_, std::forward<Fn>(fn));
    posted_.fetch_add(1, std::memory_order_seq_cst);
    wake();
  }

  // Listening sockets: `fd` is added to this loop's epoll set with EPOLLEXCLUSIVE, so of the
  // workers sleeping on it one is woken per connection, not all. Call on the reactor's thread,
  // or before run(). `fd` must stay open while watched (Listener keeps it until the end).
  void watch_listener(int fd, AcceptHandler& handler);
  void unwatch_listener(int fd);

  // Watchdog (issue: a loop stalled for over a second): when the loop last came round, and
  // how many iterations it has done. Read from other threads.
  Clock::time_point last_turn() const {
    return Clock::time_point(Clock::duration(last_turn_.load(std::memory_order_relaxed)));
  }
  // What the loop is doing now (its phase, or an activity::Scope inside it), for the report.
  const char* activity() const { return activity_.get(); }

  // Writes sent through the batch and reads done ahead, and the io_uring submissions that
  // carried them (loop thread; tests read them after run()).
  struct BatchCounters {
    std::uint64_t batched_writes = 0;
    std::uint64_t write_submissions = 0;
    std::uint64_t reads_ahead = 0;
    std::uint64_t read_submissions = 0;
  };
  const BatchCounters& batch_counters() const { return batch_counters_; }
  // Whether system calls are batched (after run() has started: io_uring may have been refused).
  bool batches_io() const { return batch_ != nullptr; }

 private:
  friend class Connection;
  friend class Timer;
  void add(Connection& connection);
  // Takes the socket out of the epoll set (it moves to another worker). `closing`: the
  // descriptor is about to be closed, which removes it from the set by itself (pgwarden never
  // duplicates a socket descriptor), so no epoll_ctl is needed, only the batch clean-up.
  void remove(Connection& connection, bool closing = false);
  void fire_due_timers(Clock::time_point now);
  // Programs the timerfd for the earliest timer, with a system call only when that deadline
  // changed (the janitor's every 200 ms, not every sleep); true if a timer is due already.
  bool arm_timer_fd(Clock::time_point now);
  // Queues a write of `connection` in the batch, if this is the loop's thread and the batch
  // takes it; false: the caller sends it itself.
  bool queue_write(Connection& connection, const void* data, std::size_t size);
  // Sends the batch; connections whose send failed are noted in send_failed_.
  void send_batch();
  // Reads ahead, in one submission, for the hot-path connections among events [begin, end)
  // that epoll reports readable.
  void read_ahead(int begin, int end);
  // The end of a chunk of events: read slots their readers left are kept in the connections.
  void keep_unread();
  // read_some() for a connection with a read slot.
  IoResult take_read_ahead(Connection& connection, void* data, std::size_t size);
  // Sends the batch and tells the handlers of failed sends, until nothing is queued.
  void flush_sends();

  asio::io_context& io_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  // Timers wake the loop through a timerfd in the epoll set, so epoll_wait sleeps without a
  // timeout: the kernel then arms no timer of its own each time the loop goes to sleep.
  int timer_fd_ = -1;
  Clock::time_point timer_fd_deadline_ = Clock::time_point::max();
  std::atomic<bool> stopped_{false};
  std::atomic<bool> sleeping_{false};
  std::atomic<std::uint64_t> posted_{0};
  std::atomic<Clock::rep> last_turn_{0};
  activity::Marker activity_;  // next to last_turn_: the loop writes both, on one cache line
  std::multimap<Clock::time_point, Timer*> timers_;
  util::IntrusiveList<Connection> connections_;  // registered ones (for settle())
  std::atomic<bool> loop_active_{false};         // run() or settle() is on its thread
  // A watched listening socket. Its epoll entry carries the address with the lowest bit set
  // (Connection addresses are aligned, so theirs is clear): one bit test on the hot path.
  struct ListenWatch {
    int fd;
    AcceptHandler* handler;
  };
  std::vector<std::unique_ptr<ListenWatch>> listen_watches_;
  // The batch being dispatched: a connection closed meanwhile is blanked out of it.
  static constexpr int kBatch = 256;
  struct epoll_event_storage;
  std::unique_ptr<epoll_event_storage> events_;
  int batch_size_ = 0;
  int batch_next_ = 0;
  // The turn's queued writes and its read slots (null: every write is a send() and every read a
  // recv()). Set up in run(), on the loop's thread.
  bool want_batch_;
  std::unique_ptr<IoBatch> batch_;
  std::vector<Connection*> send_failed_;  // told after the batch (a close blanks its entry)
  // The read slots of the current chunk of events: whose they are, the read's result, and how
  // much of it the reader has taken.
  struct ReadAhead {
    Connection* connection = nullptr;  // null once taken, or if the connection closed
    int result = 0;
    std::uint32_t taken = 0;
  };
  std::array<ReadAhead, IoBatch::kReadAhead> ahead_{};
  std::size_t ahead_count_ = 0;
  BatchCounters batch_counters_;
};

}  // namespace pgw::net
