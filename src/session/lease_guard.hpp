// The leak guard's part of a client session (docs/leak-guard.md): the lease record with its
// attribution, the application's policy ladder, and what the ladder does to this lease. The
// relay feeds it (a statement, a server obtained, a ReadyForQuery, the server given back); the
// janitor asks it what is due. Plain data and a few functions, touched only on the session's
// worker; it logs and counts through the LeakBook it is handed.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "session/lease.hpp"

namespace pgw::session {

// Who a client is: set by the login, read by every part of the session (logs, the console,
// leak events).
struct ClientIdentity {
  std::uint64_t id = 0;
  std::string user, database, application_name;
  std::string addr;  // the peer's address ("unix" for a Unix socket)
  int port = 0;
};

class LeaseGuard {
 public:
  using Clock = std::chrono::steady_clock;

  // --- Data-path hooks: a few stores and at most one bounded copy, no allocation.
  // A Query, Parse or Execute with the part of its body already buffered.
  void on_statement(char type, proto::Bytes body, bool whole_body) {
    lease_.on_message(type, proto::as_chars(body), whole_body);
  }
  // The server was obtained.
  void begin(Clock::time_point now, std::int32_t backend_pid) { lease_.begin(now, backend_pid); }
  // A ReadyForQuery: `owed` is what the server still owes after it.
  void on_ready(bool in_transaction, int owed, Clock::time_point now) {
    lease_.on_ready(in_transaction, owed, now);
  }
  // The server went back to the pool or is being closed: logs "leak resolved" if this lease
  // was warned about, and forgets it.
  void end(std::string_view how, const ClientIdentity& who, LeakBook& leaks);

  bool held() const { return lease_.held; }
  const Lease& lease() const { return lease_; }

  // --- The ladder.
  // The policy of the client's application, database and user under `current`, cached per
  // snapshot and name.
  const LeasePolicy& policy(const config::Config& current, const ClientIdentity& who) {
    return policy_cache_.get(current, who.application_name, who.database, who.user);
  }
  // What the ladder knows of this lease, given what the relay knows: the lease's state, the
  // pool's mode and when the running query started ({}: none).
  LeaseFacts facts(LeaseState state, bool session_mode, Clock::time_point query_start) const;
  // reclaim_under_pressure_after ended the lease (SHOW LEASES' action_taken).
  void note_reclaimed() { lease_.reclaimed = true; }
  // query_timeout sent a CancelRequest for the query that started at `query_start`.
  void note_query_cancelled(Clock::time_point query_start, Clock::time_point now) {
    cancelled_query_start_ = query_start;
    cancel_sent_at_ = now;
  }
  // The warning rung: logs the leak once and records it (SHOW EVENTS, SHOW APPS).
  void warn(Clock::time_point now, const LeaseInfo& info, const LeasePolicy& policy,
            const ClientIdentity& who, LeakBook& leaks);
  // A cancel or disconnect forced on the client by the ladder or by an admin.
  void note_forced_action(std::string_view action, std::string reason, bool server_held,
                          const ClientIdentity& who, LeakBook& leaks) const;

  // The lease as the console shows it, given the relay's side of it.
  LeaseInfo info(const ClientIdentity& who, LeaseState state, bool session_mode,
                 Clock::time_point query_start) const;

  // --- Per-application totals (SHOW APPS, the growth alarm).
  // Work done since it was last reported, and the mark that it now is.
  SessionTally unreported() const { return lease_.tally - reported_; }
  void mark_reported() { reported_ = lease_.tally; }

 private:
  Lease lease_;
  PolicyCache policy_cache_;
  SessionTally reported_;  // the part of lease_.tally already in its application's totals
  // query_timeout: the query (by its start time) already cancelled, and when.
  Clock::time_point cancelled_query_start_{};
  Clock::time_point cancel_sent_at_{};
};

}  // namespace pgw::session
