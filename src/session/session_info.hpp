// The state of a client session, and a session as the console sees it. Small on purpose: the
// console (src/admin) reads these without knowing how a session works.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pool/pool.hpp"
#include "session/lease.hpp"

namespace pgw::session {

// What a client session is doing. This one value decides what the janitor checks, what the
// shutdown drain does, whether a server may be handed to the session, and what SHOW CLIENTS,
// SHOW POOLS and SHOW APPS count; every transition is made by the session's own worker.
//
//   login ──> waiting_login ──> idle <──> waiting ──> linking ──> active ──> idle ...
//     │                          │            │          │          │
//     └──> console               └────────────┴──────────┴──────────┴──> closing
enum class ClientState : std::uint8_t {
  login,          // startup, authentication, route, welcome (a coroutine reads the socket)
  waiting_login,  // the first client of a pool waits for the pool's first server login, which
                  // tells the welcome the server's parameters (deadline: query_wait_timeout)
  console,        // an admin console session (its coroutine reads the socket)
  idle,           // served by the relay; holds no server and has nothing to send
  waiting,        // queued in its pool for a server (query_wait_timeout, query_wait_notify)
  linking,        // got a server that is being checked or given the client's parameters
  active,         // holds a server: the relay passes bytes both ways (the policy ladder runs)
  closing,        // the relay stopped: the client is told why, the server returned or closed
};

// Which of PgBouncer's client lists a state is counted in (SHOW POOLS cl_active / cl_waiting,
// SHOW APPS); `none`: not a client of a pool (yet or any more).
enum class ClientList : std::uint8_t { none, active, waiting };

struct ClientStateNames {
  ClientState state;
  std::string_view name;      // pgwarden's name (logs, docs)
  std::string_view shown_as;  // SHOW CLIENTS "state", in PgBouncer's vocabulary
  ClientList list;
};

// The one table of client states, in enum order.
inline constexpr std::array kClientStates{
    ClientStateNames{ClientState::login, "login", "login", ClientList::none},
    ClientStateNames{ClientState::waiting_login, "waiting_login", "waiting", ClientList::waiting},
    ClientStateNames{ClientState::console, "console", "active", ClientList::none},
    ClientStateNames{ClientState::idle, "idle", "idle", ClientList::active},
    ClientStateNames{ClientState::waiting, "waiting", "waiting", ClientList::waiting},
    ClientStateNames{ClientState::linking, "linking", "waiting", ClientList::waiting},
    ClientStateNames{ClientState::active, "active", "active", ClientList::active},
    ClientStateNames{ClientState::closing, "closing", "active", ClientList::none},
};
constexpr bool client_states_in_order() {
  for (std::size_t i = 0; i < kClientStates.size(); ++i) {
    if (static_cast<std::size_t>(kClientStates[i].state) != i) return false;
  }
  return static_cast<std::size_t>(ClientState::closing) + 1 == kClientStates.size();
}
static_assert(client_states_in_order(), "kClientStates lists every ClientState, in enum order");

inline const ClientStateNames& names_of(ClientState state) {
  return kClientStates[static_cast<std::size_t>(state)];
}
inline std::string_view to_string(ClientState state) {
  return names_of(state).name;
}

// A session as the admin console shows it (SHOW CLIENTS / SERVERS / POOLS / LEASES / APPS),
// copied on the session's worker thread.
struct SessionInfo {
  using Clock = std::chrono::steady_clock;
  std::uint64_t id = 0;
  ClientState state = ClientState::login;
  bool admin = false;
  std::string user, database, application_name;
  std::string addr, local_addr;
  std::string tls;  // "TLSv1.3/TLS_AES_256_GCM_SHA384"; "" in clear
  int port = 0, local_port = 0;
  Clock::time_point connect_time{}, request_time{}, state_since{};
  const pool::Pool* pool = nullptr;
  std::uintptr_t ptr = 0;
  std::size_t prepared_statements = 0;  // named statements it prepared (transaction pooling)
  // Session state it holds in transaction pooling (proto::to_string of the kinds, "" = none),
  // since when, the statement that began it, and whether it pins the client to its server.
  std::string session_state;
  Clock::time_point session_state_since{};
  std::string session_state_statement;
  bool pinned = false;
  std::optional<pool::ServerInfo> server;  // the leased server, if any
  std::optional<LeaseInfo> lease;          // the lease, while a server is held for the client
  SessionTally unreported;                 // completed work not yet in its application's totals
};

}  // namespace pgw::session
