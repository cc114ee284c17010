#include "admin/console.hpp"

#include <spdlog/spdlog.h>

#include "protocol/message_types.hpp"
#include "session/lease.hpp"

namespace pgw::admin {
namespace {

// g++ 12 destroys temporaries of a co_await full-expression twice (PR 99576): callers pass
// named strings, never temporaries with destructors, and keep co_await out of conditions.

std::optional<std::string_view> read_cstring(proto::Bytes body, std::size_t& pos) {
  const auto text = proto::as_chars(body);
  const auto end = text.find('\0', pos);
  if (end == std::string_view::npos) return std::nullopt;
  auto out = text.substr(pos, end - pos);
  pos = end + 1;
  return out;
}

}  // namespace

void write_row_description(std::string& out, const ResultSet& result) {
  proto::MessageWriter w(out);
  w.begin(proto::from_server::kRowDescription)
      .int16(static_cast<std::int16_t>(result.columns.size()));
  for (const auto& column : result.columns) {
    const std::int16_t size = column.type_oid == kInt8Oid || column.type_oid == kFloat8Oid ? 8 : -1;
    w.cstring(column.name).int32(0).int16(0).int32(column.type_oid).int16(size).int32(-1).int16(0);
  }
  w.finish();
}

void write_rows(std::string& out, const ResultSet& result) {
  proto::MessageWriter w(out);
  for (const auto& notice : result.notices) w.notice_response("NOTICE", "00000", notice);
  for (const auto& row : result.rows) {
    w.begin(proto::from_server::kDataRow).int16(static_cast<std::int16_t>(row.size()));
    for (const auto& cell : row) {
      if (!cell) {
        w.int32(-1);
      } else {
        w.int32(static_cast<std::int32_t>(cell->size())).raw(*cell);
      }
    }
    w.finish();
  }
  w.command_complete(result.tag);
}

void Console::write_error(Err code, const std::string& argument) {
  append_error_response(out_, report(code, argument));
}

asio::awaitable<bool> Console::flush() {
  if (out_.empty()) co_return true;
  auto ec = co_await socket_.async_write_all(out_);
  out_.clear();
  co_return !ec;
}

asio::awaitable<void> Console::sleep(std::chrono::milliseconds duration) {
  net::Timer timer(reactor_);
  co_await timer.async_wait_for(duration, net::use_nothrow);
}

asio::awaitable<session::ConsoleService::End> ConsoleServer::serve(net::Connection& client,
                                                                   net::MessageReader& reader,
                                                                   Who who) {
  Console console(control_, client, reader, std::move(who));
  co_return co_await console.run();
}

asio::awaitable<Console::End> Console::run() {
  using namespace proto::from_client;
  namespace reply = proto::from_server;
  bool skip_to_sync = false;  // after an error in an extended-protocol batch
  for (;;) {
    auto next = co_await reader_.next(socket_, proto::Direction::frontend);
    if (std::holds_alternative<std::error_code>(next))
      co_return End{"client disconnected", std::nullopt};
    if (auto* error = std::get_if<proto::CodecError>(&next)) {
      // What was answered so far goes out first; the session then ends the connection with
      // the error (net/error_writer.hpp).
      co_await flush();
      co_return End{"protocol violation",
                    report(Err::protocol_violation,
                           "invalid message from client: " + std::string(proto::describe(*error)))};
    }
    const auto message = std::get<proto::Message>(next);
    const char type = message.header.type;
    const auto body = message.body;
    if (type == kTerminate) co_return End{"client close request", std::nullopt};
    if (skip_to_sync && type != kSync) continue;
    proto::MessageWriter w(out_);
    switch (type) {
      case kQuery: {
        auto sql = proto::query_text(body);
        auto outcome = co_await execute(sql);
        if (outcome.error) {
          write_error(*outcome.error, outcome.error_argument);
        } else if (!outcome.result) {
          w.empty_query_response();
        } else {
          if (!outcome.result->columns.empty()) write_row_description(out_, *outcome.result);
          write_rows(out_, *outcome.result);
        }
        proto::MessageWriter(out_).ready_for_query(proto::TransactionStatus::idle);
        if (!co_await flush()) co_return End{"client disconnected", std::nullopt};
        break;
      }
      case kParse: {  // Parse: remember the text; commands run at Execute
        auto parse = proto::parse_parse(body);
        if (!parse) {
          write_error(Err::admin_syntax_error, "malformed Parse message");
          skip_to_sync = true;
          break;
        }
        statements_[std::string(parse->statement)] = std::string(parse->query);
        w.begin(reply::kParseComplete).finish();
        break;
      }
      case kBind: {  // Bind: portal <- statement (console commands take no parameters)
        std::size_t pos = 0;
        auto portal = read_cstring(body, pos);
        auto statement = portal ? read_cstring(body, pos) : std::nullopt;
        auto it = statement ? statements_.find(std::string(*statement)) : statements_.end();
        if (it == statements_.end()) {
          write_error(Err::admin_syntax_error, "Bind of an unknown prepared statement");
          skip_to_sync = true;
          break;
        }
        portals_[std::string(*portal)] = Portal{it->second, std::nullopt};
        w.begin(reply::kBindComplete).finish();
        break;
      }
      case kDescribe: {  // Describe: RowDescription for SHOW, NoData for the other commands
        std::size_t pos = 1;
        auto name = body.empty() ? std::nullopt : read_cstring(body, pos);
        const char what = body.empty() ? '?' : static_cast<char>(body[0]);
        if (!name || (what != proto::describe_target::kStatement &&
                      what != proto::describe_target::kPortal)) {
          write_error(Err::admin_syntax_error, "malformed Describe message");
          skip_to_sync = true;
          break;
        }
        std::string query;
        Portal* portal = nullptr;
        if (what == proto::describe_target::kStatement) {
          auto it = statements_.find(std::string(*name));
          if (it == statements_.end()) {
            write_error(Err::admin_syntax_error, "Describe of an unknown prepared statement");
            skip_to_sync = true;
            break;
          }
          query = it->second;
          w.begin(reply::kParameterDescription)
              .int16(0)
              .finish();  // ParameterDescription: no parameters
        } else {
          auto it = portals_.find(std::string(*name));
          if (it == portals_.end()) {
            write_error(Err::admin_syntax_error, "Describe of an unknown portal");
            skip_to_sync = true;
            break;
          }
          portal = &it->second;
          query = portal->query;
        }
        auto parsed = parse_command(query);
        const auto* command = std::get_if<Command>(&parsed);
        if (!command || command->verb != Verb::show || command->arg == "help") {
          w.begin(reply::kNoData).finish();  // NoData (errors surface at Execute)
          break;
        }
        if (portal) {
          // Run the SHOW now so the description and the rows agree; Execute sends the rows.
          auto outcome = co_await execute(query);
          if (outcome.error) {
            write_error(*outcome.error, outcome.error_argument);
            skip_to_sync = true;
            break;
          }
          portal->result = std::move(outcome.result);
          write_row_description(out_, *portal->result);
        } else {
          // The shape only: the columns of the SHOW over an empty snapshot.
          Snapshot empty;
          empty.config = control_.config();
          write_row_description(out_, build_show(command->arg, empty));
        }
        break;
      }
      case kExecute: {
        std::size_t pos = 0;
        auto name = read_cstring(body, pos);
        auto it = name ? portals_.find(std::string(*name)) : portals_.end();
        if (it == portals_.end()) {
          write_error(Err::admin_syntax_error, "Execute of an unknown portal");
          skip_to_sync = true;
          break;
        }
        std::optional<ResultSet> result = std::move(it->second.result);
        it->second.result.reset();
        if (!result) {
          auto outcome = co_await execute(it->second.query);
          if (outcome.error) {
            write_error(*outcome.error, outcome.error_argument);
            skip_to_sync = true;
            break;
          }
          if (!outcome.result) {
            proto::MessageWriter(out_).empty_query_response();
            break;
          }
          result = std::move(outcome.result);
        }
        write_rows(out_, *result);
        break;
      }
      case kClose: {  // Close statement or portal
        std::size_t pos = 1;
        auto name = body.empty() ? std::nullopt : read_cstring(body, pos);
        if (name && !body.empty()) {
          if (static_cast<char>(body[0]) == proto::describe_target::kStatement) {
            statements_.erase(std::string(*name));
          } else {
            portals_.erase(std::string(*name));
          }
        }
        w.begin(reply::kCloseComplete).finish();
        break;
      }
      case kFlush:
        if (!co_await flush()) co_return End{"client disconnected", std::nullopt};
        break;
      case kSync:
        skip_to_sync = false;
        portals_.erase("");  // the unnamed portal ends with the transaction
        w.ready_for_query(proto::TransactionStatus::idle);
        if (!co_await flush()) co_return End{"client disconnected", std::nullopt};
        break;
      default:
        write_error(Err::admin_syntax_error, std::string("message type '") + type +
                                                 "' is not supported by the admin console");
        skip_to_sync = true;
        break;
    }
    if (type == kQuery || type == kSync) {
      if (shutdown_requested_) {
        // The reply is out; now do what SIGTERM does (this session ends with everyone else).
        shutdown_requested_ = false;
        control_.shutdown();
      }
    }
  }
}

asio::awaitable<Console::Outcome> Console::execute(std::string_view sql) {
  auto parsed = parse_command(sql);
  if (auto* error = std::get_if<ParseError>(&parsed)) {
    co_return Outcome{std::nullopt, error->code, error->argument};
  }
  const auto& command = std::get<Command>(parsed);
  if (command.verb == Verb::empty) co_return Outcome{};
  if (needs_admin(command) && !who_.full_access) {
    co_return Outcome{std::nullopt, Err::admin_permission_denied,
                      std::string(verb_name(command.verb))};
  }
  if (command.verb != Verb::show) {
    spdlog::info("C-{}: admin console: {} by {}", who_.session_id, sql, who_.user);
  }
  co_return co_await run_command(command);
}

Console::Outcome Console::set_setting(const std::string& key, const std::string& value) {
  if (auto refused = control_.set(key, value)) {
    return Outcome{std::nullopt, refused->code, refused->argument};
  }
  spdlog::info("SET {} = '{}' from the admin console", key, value);
  ResultSet done;
  done.tag = "SET";
  return Outcome{std::move(done), std::nullopt, {}};
}

asio::awaitable<Console::Outcome> Console::run_command(const Command& command) {
  ResultSet done;
  done.tag = std::string(verb_name(command.verb));
  const std::string& db = command.arg;
  auto check_db = [&]() -> std::optional<Outcome> {
    if (control_.known_database(db)) return std::nullopt;
    return Outcome{std::nullopt, Err::admin_no_such_database, db};
  };
  switch (command.verb) {
    case Verb::empty:
      co_return Outcome{};
    case Verb::show: {
      const bool sessions = show_needs_sessions(command.arg);
      const bool leak_detail = command.arg == "events" || command.arg == "apps";
      auto snap = co_await control_.snapshot(sessions, leak_detail);
      co_return Outcome{build_show(command.arg, snap), std::nullopt, {}};
    }
    case Verb::set:
      co_return set_setting(command.arg, command.value);
    case Verb::pause: {
      if (auto bad = check_db()) co_return *bad;
      if (!control_.pause(db)) {
        co_return Outcome{std::nullopt, Err::admin_wrong_state,
                          db.empty() ? "already paused" : "database " + db + " is already paused"};
      }
      // PgBouncer's PAUSE returns once every server of the database is released and closed:
      // running transactions finish first, new ones wait for RESUME.
      while (control_.open_servers(db) > 0) co_await sleep(std::chrono::milliseconds(50));
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::resume: {
      if (auto bad = check_db()) co_return *bad;
      if (!control_.resume(db)) {
        co_return Outcome{
            std::nullopt, Err::admin_wrong_state,
            db.empty() ? "pooler is not paused" : "database " + db + " is not paused"};
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::disable:
    case Verb::enable: {
      // As PgBouncer: any name the configuration routes (a "*" line included), never the
      // console's own database.
      const bool disable = command.verb == Verb::disable;
      if (config::is_console_database(db)) {
        co_return Outcome{std::nullopt, Err::admin_wrong_state,
                          std::string("cannot ") + (disable ? "disable" : "enable") +
                              " the admin database: " + db};
      }
      if (!control_.known_database(db) && !control_.config()->database_line(db)) {
        co_return Outcome{std::nullopt, Err::admin_no_such_database, db};
      }
      control_.set_disabled(db, disable);
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::reconnect: {
      if (auto bad = check_db()) co_return *bad;
      control_.reconnect(db);
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill: {
      if (auto bad = check_db()) co_return *bad;
      // As in PgBouncer: the database stays paused (new clients wait) until RESUME.
      control_.pause(db);
      co_await control_.kill_clients(db);
      control_.reconnect(db);
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill_client: {
      const std::uint64_t id = std::stoull(command.arg);
      int killed = 0;
      if (id != 0) killed = co_await control_.kill_client(id);
      if (killed == 0) {
        co_return Outcome{std::nullopt, Err::admin_no_such_client, command.arg};
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::cancel_client: {
      const std::uint64_t id = std::stoull(command.arg);
      int found = 0;
      if (id != 0) found = co_await control_.cancel_client(id, who_.user);
      if (found == 0) co_return Outcome{std::nullopt, Err::admin_no_such_client, command.arg};
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill_app: {
      const int killed = co_await control_.kill_app(command.arg, who_.user);
      if (killed == 0) co_return Outcome{std::nullopt, Err::admin_no_such_app, command.arg};
      spdlog::info("KILL_APP {}: {} client(s) disconnected", session::printable(command.arg),
                   killed);
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::wait_close: {
      if (auto bad = check_db()) co_return *bad;
      for (;;) {
        const int closing = co_await control_.servers_to_close(db);
        if (closing == 0) break;
        co_await sleep(std::chrono::milliseconds(100));
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::reload: {
      const std::string error = control_.reload();
      if (!error.empty()) co_return Outcome{std::nullopt, Err::admin_reload_failed, error};
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::shutdown: {
      if (!command.arg.empty()) {
        co_return Outcome{std::nullopt, Err::admin_syntax_error,
                          "SHUTDOWN " + command.arg + " is not supported; use SHUTDOWN"};
      }
      shutdown_requested_ = true;
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
  }
  co_return Outcome{};
}

}  // namespace pgw::admin
