// The admin console: the virtual database "pgbouncer" (alias "pgwarden"). A console session is
// a ClientSession whose login found the admin database; after the welcome it hands its socket
// to the ConsoleService the application installed (ConsoleServer, which runs a Console).
// Commands run on the session's worker; what they read or change of the process goes through
// admin::Control.
#pragma once

#include <asio.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "admin/command.hpp"
#include "admin/control.hpp"
#include "admin/tables.hpp"
#include "net/message_reader.hpp"
#include "net/socket.hpp"
#include "session/console_service.hpp"

namespace pgw::admin {

using Identity = session::ConsoleService::Who;

class Console {
 public:
  Console(Control& control, net::Connection& socket, net::MessageReader& reader, Identity who)
      : control_(control),
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
  asio::awaitable<bool> flush();
  asio::awaitable<void> sleep(std::chrono::milliseconds duration);
  Outcome set_setting(const std::string& key, const std::string& value);
  // An ERROR reply; the console session goes on.
  void write_error(Err code, const std::string& argument);

  Control& control_;
  net::Connection& socket_;
  net::Reactor& reactor_;
  net::MessageReader& reader_;
  Identity who_;
  std::string out_;
  std::map<std::string, std::string> statements_;
  std::map<std::string, Portal> portals_;
  bool shutdown_requested_ = false;
};

// The console as the sessions see it (the application installs it in the session services).
class ConsoleServer final : public session::ConsoleService {
 public:
  explicit ConsoleServer(Control& control) : control_(control) {}
  asio::awaitable<End> serve(net::Connection& client, net::MessageReader& reader, Who who) override;

 private:
  Control& control_;
};

// Wire encoding of a result set (RowDescription with types, DataRow, CommandComplete).
void write_row_description(std::string& out, const ResultSet& result);
void write_rows(std::string& out, const ResultSet& result);

}  // namespace pgw::admin
