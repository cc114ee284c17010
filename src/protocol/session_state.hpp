// Session state in transaction pooling (docs/transaction-pooling.md#session-state): what a
// client's statements leave on the server connection beyond their transaction, found from the
// statement text, and what each client holds. Pure: no I/O; times are values passed in.
//
// scan_session_state() reads one Query or Parse text and lists its effects: SET/RESET and
// set_config(..., false) of parameters, SET ROLE / SET SESSION AUTHORIZATION, session-level
// advisory locks (pg_advisory_lock and friends, not the _xact_ ones), LISTEN/UNLISTEN,
// temporary tables (CREATE TEMP ... without ON COMMIT DROP; DROP TABLE), SQL PREPARE and
// DEALLOCATE, DECLARE ... WITH HOLD and CLOSE, LOAD, DISCARD, and ROLLBACK (which voids the
// transaction's effects). It is on the per-statement path: a statement without any of these
// costs one pass over its bytes and no allocation.
//
// SessionState applies a client's effects as PostgreSQL does: parameter changes, temp tables,
// LISTEN, PREPARE and WITH HOLD cursors count once their transaction commits (an error or a
// ROLLBACK voids them); a session advisory lock is held even if its transaction rolls back.
// Under `track` the client's parameter changes are kept as statements that re-create them on
// another server; anything that cannot be re-created pins the client to its server.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pgw::proto {

// What the key session_state asks for (per database, per [apps] line).
enum class SessionStateMode : std::uint8_t {
  track,   // parameters re-applied on the next server; other state pins the client
  pin,     // any session state pins the client to its server
  reject,  // a statement that would create session state gets ERROR 0A000
  allow,   // not looked at (the server may carry state to the next client)
};
std::string_view to_string(SessionStateMode mode);
// "track", "pin", "reject", "allow" (case-insensitive); false if none of them.
bool parse_session_state_mode(std::string_view text, SessionStateMode& out);

// The kinds of session state, in the order the console lists them.
enum class SessionStateKind : std::uint8_t {
  parameter,      // SET / set_config(..., false) of a parameter
  role,           // SET ROLE, SET SESSION AUTHORIZATION
  advisory_lock,  // pg_advisory_lock(), pg_try_advisory_lock() and their _shared forms
  listen,         // LISTEN channel
  temp_table,     // CREATE TEMP TABLE / SEQUENCE / VIEW without ON COMMIT DROP
  sql_prepare,    // PREPARE name AS ...
  hold_cursor,    // DECLARE name ... WITH HOLD
  load,           // LOAD 'library' (never undone)
};
inline constexpr int kSessionStateKinds = 8;
using SessionStateMask = std::uint16_t;
constexpr SessionStateMask mask_of(SessionStateKind kind) {
  return static_cast<SessionStateMask>(1u << static_cast<unsigned>(kind));
}
// "parameter", "role", "advisory_lock", "listen", "temp_table", "sql_prepare", "hold_cursor",
// "load".
std::string_view to_string(SessionStateKind kind);
// What the kind is, for messages: "session-level SET", "SET ROLE", "session advisory locks"...
std::string_view describe(SessionStateKind kind);
// Kinds joined with ',' in enum order ("" for none): SHOW CLIENTS' session_state.
std::string to_string(SessionStateMask kinds);

enum class SessionStateOp : std::uint8_t {
  create,       // SET x, SET ROLE, pg_advisory_lock(), LISTEN c, CREATE TEMP TABLE t, PREPARE p,
                // DECLARE c ... WITH HOLD, LOAD
  release,      // RESET x / SET x TO DEFAULT, RESET ROLE, pg_advisory_unlock(), UNLISTEN c,
                // DROP TABLE t, DEALLOCATE p, CLOSE c
  release_all,  // RESET ALL (parameters only: not the role), pg_advisory_unlock_all(),
                // UNLISTEN *, DISCARD TEMP, DEALLOCATE ALL, CLOSE ALL
  discard_all,  // DISCARD ALL: every kind but load (`kind` is parameter)
  rollback,     // ROLLBACK / ABORT (not TO SAVEPOINT, not PREPARED): the transaction's
                // effects are void (`kind` is parameter)
};

struct SessionStateEffect {
  SessionStateKind kind = SessionStateKind::parameter;
  SessionStateOp op = SessionStateOp::create;
  // parameter/role create: the effect can be re-created on another server by `replay`
  // (false: set_config() with a computed name, value or is_local, a parameter "FROM
  // CURRENT", or a statement cut off where the text ends).
  bool replayable = false;
  // The object: a parameter's name as written (SET's special forms give the parameter's own
  // name: "timezone", "client_encoding", "search_path", "xmloption", "role",
  // "session_authorization", "transaction_characteristics"; set_config() gives its name
  // literal, quotes included), a channel, a table (schema-qualified as written), a statement
  // or cursor name; empty for advisory locks and the *_all ops.
  std::string_view name;
  // The whole statement, trimmed, without its ';' (attribution, and the replay of a SET).
  std::string_view statement;
  // set_config(): the value literal, quotes included (else empty).
  std::string_view value;
};

struct SessionStateScan {
  static constexpr std::size_t kMaxEffects = 8;
  std::array<SessionStateEffect, kMaxEffects> effects{};
  std::uint8_t count = 0;
  bool overflow = false;  // more effects than kMaxEffects: the rest are not listed
  std::span<const SessionStateEffect> list() const { return {effects.data(), count}; }
  // Anything but rollback: the statement text creates or releases session state.
  bool any_state() const;
  // Some effect creates state (what `reject` refuses).
  bool creates_state() const;
};

// False when the text certainly has no effect (scan_session_state() would list none): a single
// SELECT, INSERT, UPDATE, DELETE, WITH or VALUES statement that mentions no advisory lock
// function, no set_config and (a SELECT or WITH) no INTO. Most statements are this; the relay
// asks it first and runs the scan only when it says true (a byte loop, no lexing).
bool may_change_session_state(std::string_view sql);
// The effects of one Query or Parse text. `complete`: the text is the whole statement string
// (false: a prefix; a statement running into its end is cut: its SETs are not replayable).
SessionStateScan scan_session_state(std::string_view sql, bool complete);

// A parameter name as PostgreSQL compares it: lower-case, quotes removed ("Search_Path" and
// "search_path" are one parameter; set_config()'s 'App.Tenant' literal gives app.tenant).
std::string normalize_parameter_name(std::string_view name);
// An SQL identifier or qualified name as PostgreSQL resolves it: unquoted parts lower-case,
// quoted parts as written ("Foo".bar -> Foo.bar).
std::string normalize_identifier(std::string_view name);

// The state one client holds, and its pending (uncommitted) effects.
class SessionState {
 public:
  using Clock = std::chrono::steady_clock;

  // A parameter the client set, with the statement that re-creates it ("" when it cannot be).
  struct Parameter {
    std::string name;  // normalize_parameter_name()
    std::string
        replay;  // "SET search_path TO a, b" or "SELECT pg_catalog.set_config('x', '1', false)"
    SessionStateKind kind = SessionStateKind::parameter;  // or role
  };

  explicit SessionState(SessionStateMode mode) : mode_(mode) {}
  SessionStateMode mode() const { return mode_; }

  // --- Events, in stream order (the relay calls them from the tracker's events).
  // A Query or Parse text's effects. `ready_owed`: ReadyForQuery messages the server owes for
  // requests sent before this statement (the statement's own Query or Sync comes later). Its
  // effects settle with the ReadyForQuery of that request.
  void on_statement(const SessionStateScan& scan, int ready_owed, Clock::time_point now);
  // An ErrorResponse that is not FATAL: the request it answers failed (and with it the
  // transaction it was in).
  void on_error();
  // A ReadyForQuery: effects of finished transactions are committed or voided; returns the
  // kinds that became held with it that the client did not hold before (a log line and a
  // SHOW EVENTS entry per new kind per application are the caller's). Precisely: the kinds
  // held now that were not held when on_ready() last returned, so that an advisory lock,
  // which counts from its statement on, is reported with its request's ReadyForQuery.
  SessionStateMask on_ready(char transaction_status, Clock::time_point now);
  // The server went away under the client (closed, lost): what it held is gone; parameters
  // stay (they are re-applied on the next server).
  void on_server_lost();

  // --- What the client holds (committed).
  SessionStateMask held() const;
  bool holds_anything() const { return held() != 0; }
  // The client must keep its server: `pin` holds anything; `track` holds something that is
  // not a replayable parameter.
  bool pinned() const;
  // Replayable parameters in the order they were last set (RESET removes, a new SET of the
  // same name moves it to the end). Under `track` these are re-applied on another server.
  const std::vector<Parameter>& parameters() const { return parameters_; }
  // Changes with every change of parameters() (0 when empty): a server that got this client's
  // parameters remembers it.
  std::uint64_t parameters_fingerprint() const { return fingerprint_; }
  // When the client first came to hold what it holds now, and the statement that did it (at
  // most 200 bytes): SHOW CLIENTS and SHOW LEASES.
  Clock::time_point since() const { return since_; }
  const std::string& first_statement() const { return first_statement_; }
  int advisory_locks() const { return advisory_locks_; }
  // The statement (at most 200 bytes) that last made the client hold `kind` after it held
  // none of it: what a log line about that kind quotes.
  const std::string& origin_statement(SessionStateKind kind) const {
    return origins_[static_cast<std::size_t>(kind)];
  }

  // The statements that remove `kinds` from a server, as one simple-query string:
  // "RESET ROLE; RESET SESSION AUTHORIZATION; SELECT pg_catalog.pg_advisory_unlock_all();
  // UNLISTEN *; DISCARD TEMP; DEALLOCATE ALL; CLOSE ALL; RESET ALL;" in part (the role first,
  // so that the rest runs as the user that logged in). `load` cannot be removed: the caller
  // closes such a server. Returns "" for 0.
  static std::string reset_sql(SessionStateMask kinds);

 private:
  // An effect waiting for its request's ReadyForQuery, then for its transaction's end.
  struct Pending {
    SessionStateKind kind = SessionStateKind::parameter;
    SessionStateOp op = SessionStateOp::create;
    bool replayable = false;
    bool failed = false;    // its request or its transaction failed
    int ready_ahead = 0;    // ReadyForQuery messages before its own; -1: its own has come
    int later_locks = 0;    // advisory locks counted after this statement (unlock, DISCARD ALL)
    std::string name;       // normalized
    std::string replay;     // parameter/role create, replayable: what re-creates it
    std::string statement;  // at most kFirstStatementLimit bytes
    Clock::time_point at{};
  };
  static constexpr std::size_t kFirstStatementLimit = 200;
  std::string& origin(SessionStateKind kind) { return origins_[static_cast<std::size_t>(kind)]; }
  void apply(const Pending& effect);
  void update_fingerprint();

  SessionStateMode mode_;
  std::vector<Pending> pending_;
  std::vector<Parameter> parameters_;
  std::vector<Parameter> unreplayable_parameters_;  // set, but not re-creatable (replay ""): pins
  std::vector<std::string> channels_, temp_tables_, sql_statements_, cursors_;
  int advisory_locks_ = 0;
  bool loaded_ = false;
  SessionStateMask reported_ = 0;  // held() when on_ready() last returned
  std::uint64_t fingerprint_ = 0;
  std::array<std::string, kSessionStateKinds> origins_;  // origin_statement()
  Clock::time_point since_{};
  std::string first_statement_;
};

}  // namespace pgw::proto
