// What a console session (database "pgbouncer" or "pgwarden") runs once it is logged in. The
// admin console lives in a layer above the sessions (src/admin); the application installs it
// in the session services (SessionServices::console), so a session can hand its socket over
// without knowing it.
#pragma once

#include <asio.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "net/message_reader.hpp"
#include "net/reactor.hpp"
#include "util/errors.hpp"

namespace pgw::session {

class ConsoleService {
 public:
  // Who logged in to the console.
  struct Who {
    std::uint64_t session_id = 0;
    std::string user;
    bool full_access = false;  // admin_users (else stats_users: SHOW only)
  };
  // Why the console session ended: the reason for the log, and the error to end the
  // connection with (a malformed message), which the session writes (net/error_writer.hpp).
  struct End {
    std::string reason;
    std::optional<ErrorReport> error;
  };

  virtual ~ConsoleService() = default;
  // Serves console commands on `client` until it leaves; `reader` holds whatever the client
  // pipelined after its login. Runs on the session's worker.
  virtual asio::awaitable<End> serve(net::Connection& client, net::MessageReader& reader,
                                     Who who) = 0;
};

}  // namespace pgw::session
