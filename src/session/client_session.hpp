// One client connection, from accept to close, served by one coroutine that reads top to
// bottom:
//
//   log_in    startup, authentication, route, welcome       LoginFlow     (session/login.cpp)
//   serve     bytes both ways until the relay stops          Relay         (session/relay.cpp)
//   finish    the console, or telling the client why the relay stopped, then cleanup
//
// and the leak guard beside them (LeaseGuard, session/lease_guard.cpp). One ClientState says
// what the session is doing; the janitor's checks, the shutdown drain and the console all read
// it. Everything runs on the session's worker thread, so the state needs no locks.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "net/error_writer.hpp"
#include "net/message_reader.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "net/task.hpp"
#include "pool/params.hpp"
#include "session/apps.hpp"
#include "session/cancel_registry.hpp"
#include "session/lease_guard.hpp"
#include "session/relay.hpp"
#include "session/services.hpp"
#include "session/session_info.hpp"

namespace pgw::session {

using Clock = std::chrono::steady_clock;

class ClientSession final : public std::enable_shared_from_this<ClientSession>,
                            public util::ListHook<ClientSession> {  // SessionRegistry
 public:
  // `fd`: the accepted, non-blocking client socket, registered with `reactor` and tuned (TCP
  // options, from the configuration the session starts with) here; `peer`: its address as
  // accept4() returned it; `first_packet_waiting`: its listener defers accept until the
  // client's first bytes arrive, so the startup read need not wait for epoll first.
  ClientSession(SessionServices& services, net::Reactor& reactor, unsigned worker, int fd,
                const net::Endpoint& peer, bool first_packet_waiting);
  ~ClientSession();

  // The client's whole life, started at once; `self` is this session (the coroutine owns it).
  net::DetachedTask run(std::shared_ptr<ClientSession> self);

  // Called on the session's worker thread.
  // A CancelRequest for the client's running query (a client's own, CANCEL_CLIENT).
  void forward_cancel() { relay_.forward_cancel(); }
  // The janitor's round: the timeouts of the current state and, while a server is held, the
  // policy ladder (query_timeout, idle_transaction_timeout, idle_pinned_timeout, the leak
  // warning). `current` is the configuration now, not the one the client logged in with.
  void check_timeouts(Clock::time_point now, const config::Config& current);
  // Ends the session with a FATAL error (a timeout, an admin KILL, shutdown); its coroutine
  // unwinds, and cleanup returns the server as for any client that leaves.
  void terminate(Err reason, std::string argument = {});
  // Reclaim under pressure (session/reclaim.hpp): the pool of a lease idle in a transaction
  // for longer than its policy's reclaim_under_pressure_after, and since when it is idle;
  // nothing otherwise.
  struct Reclaimable {
    pool::Pool* pool = nullptr;
    Clock::time_point idle_since{};
  };
  std::optional<Reclaimable> reclaimable(Clock::time_point now, const config::Config& current);
  // Ends the lease for the `waiting` clients of its pool: FATAL 25P03, an event; cleanup rolls
  // the transaction back and the server goes to the oldest of them.
  void reclaim(int waiting, Clock::time_point now, const config::Config& current);
  // Records a cancel or disconnect forced on this client by policy or by an admin (SHOW
  // EVENTS, SHOW APPS).
  void note_forced_action(std::string_view action, std::string reason);
  // Session state in transaction pooling: kinds this client came to hold (a log line and a
  // SHOW EVENTS entry for each kind its application had not shown before), and a statement
  // refused under session_state = reject (logged once per kind per application too).
  void note_session_state(proto::SessionStateMask fresh, const proto::SessionState& state);
  void note_session_state_refused(proto::SessionStateKind kind, std::string_view statement);
  // Their log line ("app 'X' (...) <verb> <what>") and SHOW EVENTS entry (`action`, reason
  // `what`); the statement cut to 200 bytes.
  void report_session_state(std::string_view action, std::string_view verb, const std::string& what,
                            std::string_view statement);
  // Adds this client to its worker's sample for SHOW APPS, the growth alarm and pool health.
  void add_to_sample(Clock::time_point now, const config::Config& current, WorkerSample& sample);
  // Shutdown drain: ends the session with 57P01 unless it is inside a transaction, which may
  // finish first; `force` (the drain window is over) ends it anyway (cancel, roll back).
  void drain(bool force);
  // A server connection is held for this client (SIGINT waits until none is).
  bool holds_server() const { return relay_.holds_server(); }
  // Session mode, or transaction pooling with session state that pins the client: the server
  // stays between transactions (idle_pinned_timeout applies).
  bool holds_server_between_transactions() const {
    return relay_.session_mode() || relay_.pinned();
  }

  unsigned worker() const { return relay_.waiter_worker(); }
  ClientState state() const { return state_; }
  std::uint64_t id() const { return who_.id; }
  const std::string& database() const { return who_.database; }
  const std::string& application_name() const { return who_.application_name; }
  bool is_admin() const { return state_ == ClientState::console; }
  // Set by CancelRegistry::add() under its lock: other workers read it while they look up a
  // CancelRequest's key.
  CancelRegistry::Key cancel_key() const { return cancel_key_; }
  SessionInfo info() const;

 private:
  friend class LoginFlow;  // fills in who the client is, its parameters and its pool
  friend class Relay;      // the session's state, the client socket, its parameters
  friend class CancelRegistry;

  // After serving (or a failed login): the console session, or telling the client why the
  // relay stopped; then cleanup.
  asio::awaitable<void> finish(bool logged_in);
  asio::awaitable<void> report_end();
  asio::awaitable<void> serve_console();
  asio::awaitable<void> cleanup();
  // Whether an error sent to the client is logged: refusals at login follow
  // log_pooler_errors; errors that cut off a running session are always logged.
  enum class Log : std::uint8_t { if_configured, always };
  // The one way this session ends its client with an error (net/error_writer.hpp): logs it,
  // remembers it as the disconnect reason, writes it unless the output is in the middle of a
  // server message, half-closes, lingers, closes. `after`: wait when another coroutine reads
  // the socket (login, console), else drain.
  asio::awaitable<void> end_with(const ErrorReport& report, net::AfterError after, Log log);
  // The same when the client already got an error (the server's own FATAL): only closes.
  asio::awaitable<void> close_quietly(net::AfterError after);
  asio::awaitable<bool> write_client(const std::string& bytes);

  void set_state(ClientState state, Clock::time_point now) {
    state_ = state;
    state_since_ = now;
  }
  // The ladder's steps that are due, for a client that holds a server.
  void run_ladder(Clock::time_point now, const config::Config& current);
  LeaseFacts lease_facts() const;
  void log_disconnect(std::string_view reason);
  // Gives back the client's places in the per-database, per-user and [apps] counts (once).
  void release_counts();
  const std::string& disconnect_reason() const;

  SessionServices& services_;
  net::Reactor& reactor_;
  net::Connection client_;
  ClientIdentity who_;
  std::shared_ptr<const config::Config> config_;  // as the client logged in
  // Parameters the client asked for (startup) or changed (SET, reported by ParameterStatus),
  // and their order-independent fingerprint, compared with a server's.
  ParamSet params_;
  std::uint64_t params_fingerprint_ = 0;
  // Whole messages of the login phases; gone after the welcome (the console keeps it).
  std::unique_ptr<net::MessageReader> login_reader_;
  // Holds a slot of its [apps] line's max_client_conn, under this application_name.
  std::unique_ptr<std::string> app_counted_as_;
  // Why the session ended, for the log; allocated only when it is not "client disconnected".
  std::unique_ptr<std::string> disconnect_reason_;
  CancelRegistry::Key cancel_key_{};
  Clock::time_point connect_time_ = Clock::now();
  Clock::time_point state_since_ = connect_time_;
  Relay relay_;
  LeaseGuard lease_guard_;
  ClientState state_ = ClientState::login;
  // Facts beside the state: a FATAL is on its way (the first error wins, no second one); the
  // session is in the cancel registry; a console user may run every command (admin_users),
  // not only SHOW (stats_users).
  bool ending_ = false;
  bool disconnect_logged_ = false;  // the "closing because" line went out with the FATAL
  bool registered_ = false;
  bool console_full_access_ = false;
  // Counted under its database and login user (max_db_client_connections,
  // max_user_client_connections) until it ends.
  bool client_counted_ = false;
  // A Unix-socket client: if it runs as pgwarden's own OS user, the user "pgbouncer" may open
  // the console without a password, as in PgBouncer (LoginFlow::is_local_console_superuser).
  bool unix_client_ = false;
  bool local_console_superuser_ = false;  // authenticate() found it so; route() reads it
};

}  // namespace pgw::session
