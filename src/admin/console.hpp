// The admin console: the virtual database "pgbouncer" (alias "pgwarden"). A console session is
// a ClientSession whose route() found the admin database; after the welcome it hands its
// socket to Console::run() instead of the pool path. Commands run on the session's worker;
// state of other workers is gathered by posting to each worker (see docs/ARCHITECTURE.md,
// "Admin console"), pools are read under their own mutex.
#pragma once

#include <asio.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "admin/command.hpp"
#include "admin/tables.hpp"
#include "net/message_reader.hpp"
#include "net/socket.hpp"
#include "session/console_service.hpp"
#include "session/shared.hpp"

namespace pgw::admin {

using Identity = session::ConsoleService::Who;

class Console {
 public:
  Console(session::Shared& shared, net::Connection& socket, net::MessageReader& reader,
          Identity who)
      : shared_(shared),
        socket_(socket),
        reactor_(*socket.reactor()),
        reader_(reader),
        who_(std::move(who)) {}

  using End = session::ConsoleService::End;
  // Serves simple and extended query protocol until the client leaves.
  asio::awaitable<End> run();

 private:
  struct Outcome {
    std::optional<ResultSet> result;
    std::optional<Err> error;
    std::string error_argument;
  };
  struct Portal {
    std::string query;
    std::optional<ResultSet> result;  // computed at Describe, sent at Execute
  };

  asio::awaitable<Outcome> execute(std::string_view sql);
  asio::awaitable<Outcome> run_command(const Command& command);
  asio::awaitable<Snapshot> snapshot(bool with_sessions);
  asio::awaitable<bool> flush();
  asio::awaitable<void> sleep(std::chrono::milliseconds duration);
  bool known_database(const std::string& name) const;
  asio::awaitable<int> count_closing(const std::string& database);
  asio::awaitable<int> terminate_clients(const std::string& database, std::uint64_t id);
  asio::awaitable<int> cancel_client(std::uint64_t id);
  asio::awaitable<int> terminate_app(const std::string& application_name);
  Outcome set_setting(const std::string& key, const std::string& value);
  // An ERROR reply; the console session goes on.
  void write_error(Err code, const std::string& argument);

  session::Shared& shared_;
  net::Connection& socket_;
  net::Reactor& reactor_;
  net::MessageReader& reader_;
  Identity who_;
  std::string out_;
  std::map<std::string, std::string> statements_;
  std::map<std::string, Portal> portals_;
  bool shutdown_requested_ = false;
};

// The console as the sessions see it (installed in Shared::console by the application).
class ConsoleServer final : public session::ConsoleService {
 public:
  explicit ConsoleServer(session::Shared& shared) : shared_(shared) {}
  asio::awaitable<End> serve(net::Connection& client, net::MessageReader& reader, Who who) override;

 private:
  session::Shared& shared_;
};

// Wire encoding of a result set (RowDescription with types, DataRow, CommandComplete).
void write_row_description(std::string& out, const ResultSet& result);
void write_rows(std::string& out, const ResultSet& result);

}  // namespace pgw::admin
