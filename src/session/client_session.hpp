// One client connection, served by one coroutine that reads top to bottom:
//   startup -> authenticate -> route -> welcome -> serve -> cleanup.
// serve() hands the connection to the data path (client_session_relay.cpp) and sleeps until it
// ends: readiness events of the client and of the leased server call pump() directly from the
// worker's event loop, which streams bytes both ways (pipelines, COPY, cancels) with one read
// and one write per arrival, takes and returns servers, and tells the coroutine why it stopped.
// Everything runs on the session's worker thread, so the state they share needs no locks.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "net/message_reader.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "net/task.hpp"
#include "pool/params.hpp"
#include "pool/pool.hpp"
#include "session/apps.hpp"
#include "session/shared.hpp"

namespace pgw::session {

using Clock = std::chrono::steady_clock;

// What a client is doing; shown by the console, used by the janitor.
enum class ClientState : std::uint8_t {
  login,    // before ReadyForQuery of the welcome
  idle,     // no server leased, nothing in flight
  waiting,  // queued for a server connection
  active,   // holds a server connection
  closing,  // cleaning up
};
std::string_view to_string(ClientState state);

// A session as the admin console shows it (SHOW CLIENTS / SERVERS / POOLS), taken on the
// session's worker thread.
struct SessionInfo {
  std::uint64_t id = 0;
  ClientState state = ClientState::login;
  bool admin = false;
  std::string user, database, application_name;
  std::string addr, local_addr;
  int port = 0, local_port = 0;
  Clock::time_point connect_time{}, request_time{}, state_since{};
  const pool::Pool* pool = nullptr;
  std::uintptr_t ptr = 0;
  std::optional<pool::ServerInfo> server;  // the leased server, if any
  std::optional<LeaseInfo> lease;          // the lease, while a server is held for the client
  SessionTally unreported;                 // completed work not yet in its application's totals
};

class ClientSession final : public std::enable_shared_from_this<ClientSession>,
                            public net::ReadyHandler,
                            public pool::Waiter,
                            public util::ListHook<ClientSession> {  // Shared::sessions()
 public:
  // `fd`: the accepted, non-blocking client socket, registered with `reactor` and tuned (TCP
  // options, from the configuration the session starts with) here; `peer`: its address as
  // accept4() returned it; `first_packet_waiting`: its listener defers accept until the
  // client's first bytes arrive, so the startup read need not wait for epoll first.
  ClientSession(Shared& shared, net::Reactor& reactor, unsigned worker, int fd,
                const net::Endpoint& peer, bool first_packet_waiting);
  ~ClientSession();

  // The client's whole life, started at once; `self` is this session (the coroutine owns it).
  net::DetachedTask run(std::shared_ptr<ClientSession> self);

  // Called on the session's worker thread.
  void forward_cancel();
  void check_timeouts(Clock::time_point now, const config::Config& current);
  // Leak guard (client_session_lease.cpp): warns once about a lease idle past leak_warn_after.
  void check_leak(Clock::time_point now, const config::Config& current);
  // Ends the session with a FATAL error (shutdown, admin KILL): the coroutine unwinds.
  void terminate(Err reason, std::string argument = {});
  // Leak guard (client_session_lease.cpp): records a cancel or disconnect forced on this
  // client by policy or by an admin (SHOW EVENTS, SHOW APPS).
  void note_forced_action(std::string_view action, std::string reason);
  // Adds this client to its worker's sample for SHOW APPS, the growth alarm and pool health.
  void add_to_sample(Clock::time_point now, const config::Config& current, WorkerSample& sample);
  // Resilience (client_session_resilience.cpp, docs/operations.md).
  // query_wait_notify: one NOTICE to a client queued for a server longer than that.
  void notify_waiting(Clock::time_point now, const config::Config& current);
  // Shutdown drain: ends the session with 57P01 unless it is inside a transaction, which may
  // finish first; `force` (the drain window is over) ends it anyway (cancel, roll back).
  void drain(bool force);
  // A server connection is held for this client (SIGINT waits until none is).
  bool holds_server() const { return server_ != nullptr; }

  unsigned worker() const { return waiter_worker(); }
  ClientState state() const { return state_; }
  std::uint64_t id() const { return id_; }
  const std::string& database() const { return database_; }
  const std::string& application_name() const { return application_name_; }
  bool is_admin() const { return admin_; }
  // Set by CancelRegistry::add() under its lock: other workers read it while they look up a
  // CancelRequest's key.
  CancelRegistry::Key cancel_key() const { return cancel_key_; }
  SessionInfo info() const;

 private:
  // Phases of run(), in order. Each returns false when the session must end.
  asio::awaitable<bool> log_in();  // startup, authenticate, route, welcome
  // After serving (or a failed login): the console session, or telling the client why the
  // data path stopped; then cleanup.
  asio::awaitable<void> finish(bool logged_in);
  asio::awaitable<bool> startup();
  // authenticate() and welcome() append their last messages to `greeting`, which welcome()
  // writes: AuthenticationOk, the parameters and ReadyForQuery leave in one send.
  asio::awaitable<bool> authenticate(std::string& greeting);
  asio::awaitable<bool> route();
  asio::awaitable<bool> welcome(std::string& greeting);
  // Hands the client to the data path; run() then waits for data_path_done_.
  void serve();
  // Tells the client why the data path stopped (a FATAL, or nothing after a Terminate).
  asio::awaitable<void> report_end();
  // The admin console (database "pgbouncer"/"pgwarden"): src/admin/console.cpp serves it.
  asio::awaitable<bool> welcome_admin(std::string& greeting);
  asio::awaitable<void> serve_admin();
  asio::awaitable<void> cleanup();

  // Authentication methods.
  asio::awaitable<bool> auth_cleartext(const std::string* secret);
  asio::awaitable<bool> auth_md5(const std::string* secret);
  asio::awaitable<bool> auth_scram(const std::string* secret, std::string& greeting);
  asio::awaitable<std::optional<proto::Message>> read_auth_reply();

  // Why the data path stopped; serve() reports it to the client.
  enum class End : std::uint8_t {
    none,
    client_terminate,    // Terminate message
    client_gone,         // EOF or error on the client socket
    client_protocol,     // a malformed message from the client
    pool_error,          // no server: query_wait_timeout, login failure, ...
    server_lost,         // the server closed or failed under the client
    server_protocol,     // a malformed message from the server
    statement_mode_txn,  // statement pooling and the client opened a transaction
    terminated,          // terminate(): timeouts, KILL, shutdown
  };

  // The data path (client_session_relay.cpp).
  void on_ready(net::Connection& connection) override;
  void deliver(pool::AcquireResult result) override;
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
  void pump();
  bool client_to_server();
  bool server_to_client();
  void request_server();
  void link(pool::ServerPtr server, Clock::time_point now);
  asio::awaitable<void> prepare_server();
  void finish_link(Clock::time_point now);
  void release_server();
  void stop_data_path(End why, Err error = Err::internal, std::string argument = {});
  // Scans the server bytes buffered in `server_->buffer` [0, relay_have_): returns how many
  // can go to the client now; whole ReadyForQuery / ParameterStatus / ErrorResponse are
  // looked into (transaction status, parameters, FATAL), everything else streams.
  struct ServerScan {
    std::size_t forward = 0;
    bool bad_message = false;
    bool transaction_block = false;  // statement mode: a ReadyForQuery 'T' or 'E'
  };
  ServerScan scan_server_bytes();
  // Reads and discards the server's remaining replies after the client has gone, until it
  // owes nothing (true) or fails.
  asio::awaitable<bool> drain_server(std::chrono::milliseconds timeout);
  bool server_owes_nothing() const;
  // Transaction pooling and the server is idle with nothing owed: it may go back to the pool.
  bool transaction_over() const;
  void cancel_finished();
  // Something is in flight or a transaction is open: the shutdown drain lets it finish.
  bool inside_transaction() const;

  // Leasing off the data path: the welcome's first login, parameter sync, checks.
  asio::awaitable<bool> first_server();
  asio::awaitable<bool> sync_parameters();
  void note_parameter(std::string_view name, std::string_view value);
  bool server_is_clean() const;
  // Statistics on the data path (see pool/stats.hpp).
  void note_request();
  void count_ready(proto::TransactionStatus status, Clock::time_point now);

  // Sends ErrorResponse FATAL, half-closes, drains briefly, closes: the driver sees the error.
  asio::awaitable<void> fail(Err code, const std::string& argument = {},
                             const std::string& detail = {}, const std::string& hint = {});
  // fail() with the DETAIL and HINT the pool gives for `code` (breaker state, pool occupancy).
  asio::awaitable<void> fail_explained(Err code, const std::string& argument = {});
  // The same for a session whose output may hold half a server message (then only closes),
  // or while another coroutine reads the socket (login, console: no drain of its own).
  // `send_error` false: the client already has an error (the server's FATAL): only close.
  asio::awaitable<void> abort_client(Err code, const std::string& argument, bool send_error = true,
                                     const std::string& detail = {}, const std::string& hint = {});
  asio::awaitable<bool> write_client(const std::string& bytes);
  void log_disconnect(std::string_view reason);
  std::string_view disconnect_reason() const {
    if (!end_texts_ || end_texts_->disconnect_reason.empty()) return "client disconnected";
    return end_texts_->disconnect_reason;
  }

  // Members are grouped by size (8-byte, then 4, then 1) so that an idle client, which is
  // mostly this object, wastes no padding.
  Shared& shared_;
  net::Reactor& reactor_;
  net::Connection client_;
  std::uint64_t id_;
  std::string peer_addr_;
  std::shared_ptr<const config::Config> config_;
  // Whole messages of the login phases; gone after the welcome (the console keeps it).
  std::unique_ptr<net::MessageReader> login_reader_ = std::make_unique<net::MessageReader>();
  // Holds a slot of its [apps] line's max_client_conn, under this application_name.
  std::unique_ptr<std::string> app_counted_as_;
  friend class CancelRegistry;
  CancelRegistry::Key cancel_key_{};
  Clock::time_point state_since_ = Clock::now();
  Clock::time_point connect_time_ = Clock::now();
  std::string user_;
  std::string database_;
  std::string application_name_;
  ParamSet params_;  // parameters the client asked for (startup) or changed (SET)
  std::uint64_t params_fingerprint_ = 0;  // params_.fingerprint(): compared with a server's
  pool::Pool* pool_ = nullptr;
  pool::AppShare* app_share_ = nullptr;  // [apps] max_server_conn of this client's application
  pool::StatSlot* stats_ = nullptr;      // this worker's counters of pool_ (SHOW STATS)

  // Client -> server. Bytes [0, in_len_) of the read buffer are unsent; [0, in_scanned_) are
  // whole headers (and the body bytes after them) that may go to the server now. The buffer is
  // held only while bytes are in it (net::BufferPool); in_buffer_size_ is pkt_buf.
  std::vector<std::byte> in_;
  std::uint32_t in_buffer_size_ = 0;
  std::uint32_t in_len_ = 0;
  std::uint32_t in_scanned_ = 0;
  std::uint32_t in_sent_ = 0;
  std::uint32_t in_remaining_ = 0;  // body bytes of a streamed message not yet scanned
  // Server -> client, in server_->buffer: [0, relay_have_) received; [relay_out_begin_,
  // relay_out_end_) still to write to the client.
  std::uint32_t relay_have_ = 0;
  std::uint32_t relay_out_begin_ = 0;
  std::uint32_t relay_out_end_ = 0;
  std::uint32_t relay_remaining_ = 0;  // body bytes of a streamed message not yet received
  int peer_port_ = 0;

  // Texts of the session's end: the argument of the error that stopped the data path, and the
  // disconnect reason for the log. Allocated only when there is one (an idle client has none).
  struct EndTexts {
    std::string argument;
    std::string disconnect_reason;  // empty: "client disconnected"
  };
  std::unique_ptr<EndTexts> end_texts_;
  EndTexts& end_texts() {
    if (!end_texts_) end_texts_ = std::make_unique<EndTexts>();
    return *end_texts_;
  }
  net::TaskEvent data_path_done_;
  net::Event link_done_;  // set when prepare_server() has finished

  // The lease.
  pool::ServerPtr server_;
  Clock::time_point wait_start_{};
  Clock::time_point wait_notified_{};  // wait_start_ of the wait query_wait_notify told about
  Clock::time_point last_ready_at_{};  // time of the last ReadyForQuery
  Clock::time_point query_start_{};
  Clock::time_point xact_start_{};                 // first query of the current transaction (stats)
  Clock::time_point request_time_ = Clock::now();  // last query sent (SHOW CLIENTS)
  net::Event cancel_done_;
  // query_timeout: the query (by its start time) already cancelled, and when.
  Clock::time_point query_timeout_cancelled_{};
  Clock::time_point query_timeout_cancel_sent_{};
  int expected_ready_ = 0;     // ReadyForQuery messages still owed by the server
  int cancels_in_flight_ = 0;  // CancelRequests sent for this lease's queries, not yet done
  int link_attempts_ = 0;
  Err end_error_ = Err::internal;
  End end_ = End::none;
  ClientState state_ = ClientState::login;
  bool counted_ = false;     // holds a slot of max_client_conn
  bool registered_ = false;  // in the cancel registry
  bool transaction_pooling_ = false;
  bool statement_pooling_ = false;
  bool admin_ = false;              // a console session
  bool admin_full_access_ = false;  // admin_users (else stats_users: SHOW only)
  bool terminate_seen_ = false;     // a Terminate is next: end after forwarding what precedes it
  // The data path's state.
  bool serving_ = false;  // the data path owns both connections
  bool waiting_ = false;  // queued in the pool for a server
  bool linking_ = false;  // a server is being checked or synced off the data path
  bool pumping_ = false;  // pump() is on the stack (re-entry only sets pump_again_)
  bool pump_again_ = false;
  bool mid_batch_ = false;  // extended-protocol messages sent since the last Sync
  bool client_gone_ = false;
  bool server_failed_ = false;
  bool server_fatal_sent_ = false;  // the client already got the server's own FATAL
  bool ending_ = false;             // a FATAL is on its way (terminate() or fail()): no second one

  // Lease tracking and leak attribution (session/lease.hpp, client_session_lease.cpp).
  Lease lease_;
  void note_statement(char type, std::size_t at, std::uint32_t body_size);
  void end_lease(std::string_view how);
  LeaseState lease_state() const;
  LeaseInfo lease_info() const;
  // The policy ladder for this client's application_name under `current`.
  const LeasePolicy& policy(const config::Config& current) {
    return policy_cache_.get(current, application_name_);
  }
  // idle_transaction_timeout and idle_pinned_timeout, from check_timeouts().
  void check_idle_lease(Clock::time_point now, const config::Config& current);
  bool is_suspected_leak(Clock::time_point now, const config::Config& current);
  // Hands the counts not yet reported to the application's totals (the client is leaving).
  void retire_app_tally();
  PolicyCache policy_cache_;
  SessionTally reported_;  // the part of lease_.tally already in its application's totals
};

}  // namespace pgw::session
