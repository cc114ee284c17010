// One client connection, served by one coroutine that reads top to bottom:
//   startup -> authenticate -> route -> welcome -> serve -> cleanup.
// While a server connection is leased, a second coroutine (the relay) streams the server's
// replies to the client, so both directions flow at once (pipelines, COPY, cancels) and a
// client that vanishes mid-query is noticed immediately. Both coroutines run on the session's
// worker thread, so the state they share needs no locks.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "net/message_reader.hpp"
#include "net/socket.hpp"
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

class ClientSession : public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(Shared& shared, asio::io_context& io, unsigned worker, net::Socket socket);
  ~ClientSession();

  asio::awaitable<void> run();

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

  unsigned worker() const { return worker_; }
  ClientState state() const { return state_; }
  std::uint64_t id() const { return id_; }
  const std::string& database() const { return database_; }
  const std::string& application_name() const { return application_name_; }
  bool is_admin() const { return admin_; }
  SessionInfo info() const;

 private:
  // Phases of run(), in order. Each returns false when the session must end.
  asio::awaitable<bool> startup();
  asio::awaitable<bool> authenticate();
  asio::awaitable<bool> route();
  asio::awaitable<bool> welcome();
  asio::awaitable<void> serve();
  // The admin console (database "pgbouncer"/"pgwarden"): src/admin/console.cpp serves it.
  asio::awaitable<bool> welcome_admin();
  asio::awaitable<void> serve_admin();
  asio::awaitable<void> cleanup();

  // Authentication methods.
  asio::awaitable<bool> auth_cleartext(const std::string* secret);
  asio::awaitable<bool> auth_md5(const std::string* secret);
  asio::awaitable<bool> auth_scram(const std::string* secret);
  asio::awaitable<std::optional<proto::Message>> read_auth_reply();

  // Leasing and relaying.
  asio::awaitable<bool> link_server(bool for_client_traffic);
  asio::awaitable<bool> sync_parameters();
  asio::awaitable<void> relay();
  void start_relay();
  void note_parameter(std::string_view name, std::string_view value);
  bool server_is_clean() const;
  // Statistics on the data path (see pool/stats.hpp).
  void note_request();
  void count_ready(proto::TransactionStatus status, Clock::time_point now);

  // Sends ErrorResponse FATAL, half-closes, drains briefly, closes: the driver sees the error.
  asio::awaitable<void> fail(Err code, const std::string& argument = {},
                             const std::string& detail = {});
  // The same while serve() or the relay may be using the socket (no drain of its own).
  asio::awaitable<void> abort_client(Err code, const std::string& argument = {});
  asio::awaitable<bool> write_client(const std::string& bytes);
  void log_disconnect(std::string_view reason);

  Shared& shared_;
  asio::io_context& io_;
  unsigned worker_;
  net::Socket client_;
  std::uint64_t id_;
  std::string peer_addr_;
  int peer_port_ = 0;
  std::shared_ptr<const config::Config> config_;
  net::MessageReader login_reader_;
  bool counted_ = false;  // holds a slot of max_client_conn
  bool app_counted_ = false;    // holds a slot of its [apps] line's max_client_conn
  std::string app_counted_as_;  // the application_name it was counted under
  bool registered_ = false;
  CancelRegistry::Key cancel_key_{};

  ClientState state_ = ClientState::login;
  Clock::time_point state_since_ = Clock::now();
  Clock::time_point connect_time_ = Clock::now();
  std::string user_;
  std::string database_;
  std::string application_name_;
  ParamSet params_;  // parameters the client asked for (startup) or changed (SET)
  std::uint64_t params_version_ = 1;
  pool::Pool* pool_ = nullptr;
  pool::StatSlot* stats_ = nullptr;  // this worker's counters of pool_ (SHOW STATS)
  bool admin_ = false;               // a console session
  bool admin_full_access_ = false;   // admin_users (else stats_users: SHOW only)

  // Client read buffer: bytes [0, in_len_) are unconsumed.
  // Held only while bytes are in it (net::BufferPool); in_buffer_size_ is pkt_buf.
  std::vector<std::byte> in_;
  std::size_t in_buffer_size_ = 0;
  std::size_t in_len_ = 0;
  std::uint32_t in_remaining_ = 0;  // body bytes of a streamed message still to pass on

  // The lease.
  pool::ServerPtr server_;
  int expected_ready_ = 0;   // ReadyForQuery messages still owed by the server
  bool mid_batch_ = false;   // extended-protocol messages sent since the last Sync
  bool relay_running_ = false;
  bool relay_writing_ = false;
  bool client_gone_ = false;
  bool server_failed_ = false;
  std::size_t relay_leftover_ = 0;  // partial server message bytes held by the relay
  asio::steady_timer relay_done_;   // cancelled when the relay exits
  Clock::time_point query_start_{};
  Clock::time_point xact_start_{};    // first query of the current transaction (stats)
  Clock::time_point request_time_ = Clock::now();  // last query sent (SHOW CLIENTS)
  bool timed_out_ = false;
  // query_timeout: the query (by its start time) already cancelled, and when.
  Clock::time_point query_timeout_cancelled_{};
  Clock::time_point query_timeout_cancel_sent_{};
  std::string disconnect_reason_ = "client disconnected";

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
