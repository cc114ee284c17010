// The data path of a client session: the I/O shell around the protocol tracker. Once the
// client is logged in, readiness events of its socket and of the server it leases call
// on_ready() -> pump() straight from the worker's event loop, and pump() moves bytes both ways:
// what is read goes through proto::TransactionTracker (which frames messages and knows what
// the server owes) and out to the other side exactly as it came, from the same buffer
// (proto::StreamBuffer). The tracker's events drive everything else: statistics, the lease,
// the client's parameters, and whether the server can go back to the pool. The relay never
// looks at a byte itself.
//
// It takes a server from the pool when the client has something to send and holds none,
// checks it or gives it the client's parameters off the data path when it has to (linking),
// and in transaction and statement pooling gives it back at the end of each transaction. When
// it must stop it records why and wakes the session's coroutine. Everything runs on the
// session's worker; nothing per message allocates, locks or makes a system call beyond the
// reads and writes (Pool::acquire_now/release take the pool mutex, once per transaction).
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "net/reactor.hpp"
#include "net/task.hpp"
#include "pool/pool.hpp"
#include "pool/stats.hpp"
#include "protocol/prepared_statements.hpp"
#include "protocol/session_state.hpp"
#include "protocol/stream_buffer.hpp"
#include "protocol/transaction_tracker.hpp"
#include "session/lease.hpp"
#include "util/errors.hpp"

namespace pgw::session {

class ClientSession;

// Why the relay stopped; the session tells the client accordingly.
enum class RelayStop : std::uint8_t {
  none,
  client_terminate,    // Terminate message
  client_gone,         // EOF or error on the client socket
  client_protocol,     // a malformed message from the client
  pool_error,          // no server: query_wait_timeout, login failure, ...
  server_lost,         // the server closed or failed under the client
  server_protocol,     // a malformed message from the server
  statement_mode_txn,  // statement pooling and the client opened a transaction
  terminated,          // ended from outside: timeouts, KILL, shutdown
};

class Relay final : public net::ReadyHandler, public pool::Waiter {
 public:
  using Clock = std::chrono::steady_clock;

  Relay(ClientSession& session, unsigned worker) : pool::Waiter(worker), session_(session) {}
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // --- Set up by the login.
  // The pool the client's servers come from (route()), and what to do with session state in
  // transaction pooling (the key session_state of the client's [apps] line or database).
  void bind(pool::Pool& pool, pool::AppShare* app_share, pool::StatSlot& stats,
            proto::SessionStateMode session_state);
  pool::Pool* pool() const { return pool_; }
  pool::AppShare* app_share() const { return app_share_; }
  pool::StatSlot& stats() const { return *stats_; }
  // Bytes the client pipelined behind its login (welcome()); `buffer_size` is pkt_buf.
  void take_pipelined(std::span<const std::byte> bytes, std::size_t buffer_size);

  // --- Serving.
  // Installs the handlers and pumps what is already there; the relay then runs on readiness
  // events until it stops, and `done()` is set.
  void start();
  net::TaskEvent& done() { return done_; }
  // Stops the relay (a timeout, KILL, shutdown, or its own reasons): both handlers detach,
  // the session's coroutine wakes. Only the first call counts.
  void stop(RelayStop why, Err error = Err::internal, std::string argument = {});
  RelayStop stop_reason() const { return stop_; }
  Err stop_error() const { return stop_error_; }
  // The argument of the error that stopped the relay ("" = none).
  std::string stop_argument() const { return stop_argument_ ? *stop_argument_ : std::string(); }

  // --- Control from the janitor, the console and cancels (on the session's worker).
  // A CancelRequest to the backend for the running query; the server is not given to anyone
  // else until PostgreSQL has acted on it.
  void forward_cancel();
  // The janitor's round for a queued client: query_wait_timeout tells it why it waited too
  // long (53300 or 08001); before that, query_wait_notify sends it one NOTICE.
  void check_wait(Clock::time_point now, const config::Config& current);

  // --- After serving: the server goes back to the pool only if it is provably clean (the
  // running query cancelled and its replies read, cancels acted on, ROLLBACK, and in session
  // mode server_reset_query); otherwise it is closed. Ends the lease with `why`.
  asio::awaitable<void> return_server(std::string_view why);
  // The client read buffer goes back to the worker's pool.
  void release_buffer();

  // --- Facts for the session, the console and the leak guard.
  pool::ServerConn* server() const { return server_.get(); }
  bool holds_server() const { return server_ != nullptr; }
  const proto::TransactionTracker& tracker() const { return tracker_; }
  // The client's named prepared statements (transaction pooling; null when not tracked).
  const proto::StatementTracker* statements() const { return statements_.get(); }
  bool session_mode() const { return !transaction_pooling_; }
  // The session state the client holds (transaction pooling; null until its first statement
  // that creates any, or when session_state = allow).
  const proto::SessionState* session_state() const { return session_state_.get(); }
  // Transaction pooling, and the client's session state keeps its server between transactions.
  bool pinned() const { return pinned_; }
  LeaseState lease_state() const;
  // Something is in flight or a transaction is open: the shutdown drain lets it finish.
  bool inside_transaction() const;
  // The output holds part of a server message: an error written now would corrupt it.
  bool mid_server_message() const;
  // The server sent its own FATAL, which the client got.
  bool server_fatal() const { return tracker_.server_fatal(); }
  Clock::time_point query_start() const { return query_start_; }
  Clock::time_point request_time() const { return request_time_; }
  Clock::time_point wait_start() const { return wait_start_; }

 private:
  struct TrackerEvents;  // the tracker's events, delivered to this relay (relay.cpp)

  // net::ReadyHandler and pool::Waiter.
  void on_ready(net::Connection& connection) override;
  void deliver(pool::AcquireResult result) override;
  std::shared_ptr<void> keep_alive() override;

  void pump();
  bool client_to_server();
  // Scans what the client sent (editing statement messages); false when the relay stopped.
  bool scan_client();
  // Statement tracking scans the client's bytes only with a server attached (the edits depend
  // on what that server has prepared); a Terminate needs none.
  bool client_scan_deferred() const;
  // Synthesised replies due now go into the server's stream at its scanned end.
  void flush_due_replies();
  // The tracker's statement events (transaction pooling with max_prepared_statements > 0).
  bool edit_client_message(const proto::Header& header, proto::Bytes body);
  // The session-state guard's look at a Query or Parse text: records what it creates, or (under
  // reject) returns the whole message to send instead ("" = unchanged).
  std::string_view guard_statement(const proto::Header& header, proto::Bytes body);
  // A ReadyForQuery settled the client's session state: pins, the server's parameters, events.
  void settle_session_state(proto::TransactionStatus status, Clock::time_point now);
  bool edit_server_reply(const proto::Header& header, proto::Bytes body);
  bool server_to_client();
  // The client has something to send and holds no server.
  void request_server();
  void link(pool::ServerPtr server, Clock::time_point now);
  // A server_check_query, or SETs that give the server the client's parameters, off the data
  // path (state linking).
  asio::awaitable<void> prepare_server();
  asio::awaitable<bool> sync_parameters();
  void finish_link(Clock::time_point now);
  // Transaction over: the server goes back to the pool.
  void release_server();
  void cancel_finished();
  void notify_waiting(Clock::time_point now, const config::Config& current);
  // Server bytes the client will never read (it left): read and dropped until the server
  // owes nothing (true) or fails.
  asio::awaitable<bool> drain_server(std::chrono::milliseconds timeout);
  // The server owes nothing and nothing of it is buffered.
  bool server_quiet() const { return tracker_.server_owes_nothing() && server_buffer().empty(); }
  proto::StreamBuffer& server_buffer() const { return server_->buffer; }
  // The fingerprint of the parameters this client SET (session_state = track; 0: none).
  std::uint64_t session_sets() const {
    return session_state_ ? session_state_->parameters_fingerprint() : 0;
  }
  // The server now holds exactly this client's SETs (ServerConn::session_sets and names).
  void note_server_carries_sets();
  // The server may hold advisory locks another client took (unlocked before this one uses it).
  bool foreign_locks_possible() const;
  // The client leaves: what its session state left on the server is removed (false: it could
  // not be, and the server must be closed).
  asio::awaitable<bool> reset_session_state();

  // Tracker events (statistics, lease, parameters).
  void note_request();
  void note_ready(proto::TransactionStatus status);
  void note_parameter(std::string_view name, std::string_view value);

  ClientSession& session_;
  pool::Pool* pool_ = nullptr;
  pool::AppShare* app_share_ = nullptr;  // [apps] max_server_conn of the client's application
  pool::StatSlot* stats_ = nullptr;      // this worker's counters of pool_ (SHOW STATS)
  pool::ServerPtr server_;
  proto::StreamBuffer from_client_;  // held only while bytes are in it (net::BufferPool)
  // The argument of the error that stopped the relay; allocated only when there is one (an idle
  // client has none).
  std::unique_ptr<std::string> stop_argument_;
  net::TaskEvent done_;
  net::Event link_done_;    // set when prepare_server() has finished
  net::Event cancel_done_;  // set when the last cancel in flight has been acted on
  Clock::time_point wait_start_{};
  Clock::time_point wait_notified_{};  // wait_start_ of the wait query_wait_notify told about
  Clock::time_point last_ready_at_{};  // time of the last ReadyForQuery (a release's time)
  Clock::time_point query_start_{};    // the running query (statistics, query_timeout)
  Clock::time_point xact_start_{};     // first query of the current transaction (statistics)
  Clock::time_point request_time_{};   // last query sent (SHOW CLIENTS)
  proto::TransactionTracker tracker_;
  // Named prepared statements in transaction pooling; allocated at bind() when enabled.
  std::unique_ptr<proto::StatementTracker> statements_;
  // The edit a statement event asked for: replace `erase` bytes at `offset` with `insert`.
  struct StreamEdit {
    std::size_t offset = 0;
    std::size_t erase = 0;
    std::string_view insert;
    bool fail = false;  // the message cannot be handled (too large; a reply out of step)
  };
  StreamEdit client_edit_;
  StreamEdit server_edit_;
  std::string reply_scratch_;  // an error in place of a server's, and replies behind it
  // Session state in transaction pooling (proto::SessionState), allocated with the client's
  // first statement that creates any.
  std::unique_ptr<proto::SessionState> session_state_;
  std::string rejected_message_;  // a refused statement's replacement (session_state = reject)
  std::string edited_message_;    // that replacement after the statement tracker's edit
  proto::SessionStateMode session_state_mode_ = proto::SessionStateMode::allow;
  std::uint32_t statement_capacity_ = 0;  // max_prepared_statements when the server was linked
  std::uint32_t buffer_size_ = 0;         // pkt_buf: the client read buffer's size
  int cancels_in_flight_ = 0;             // CancelRequests sent for this lease, not yet acted on
  Err stop_error_ = Err::internal;
  RelayStop stop_ = RelayStop::none;
  std::uint8_t link_attempts_ = 0;
  // Transaction or statement pooling: the server goes back at the end of each transaction.
  bool transaction_pooling_ = false;
  // The session-state guard reads the client's statements (transaction pooling, not allow).
  bool guard_session_state_ = false;
  // The client's session state holds its server between transactions (SessionState::pinned()).
  bool pinned_ = false;
  // Facts that are not the session's state: pump() is on the stack (a re-entry only asks for
  // another round); a coroutine owns server_ (prepare_server()); the server connection broke
  // (I/O error, malformed message) and must be closed, never reused.
  bool pumping_ = false;
  bool pump_again_ = false;
  bool preparing_server_ = false;
  bool server_broken_ = false;
};

}  // namespace pgw::session
