#include "admin/console.hpp"

#include <spdlog/spdlog.h>

#include <mutex>

#include "session/client_session.hpp"

namespace pgw::admin {
namespace {

using Clock = std::chrono::steady_clock;

// g++ 12 destroys temporaries of a co_await full-expression twice (PR 99576): callers pass
// named lambdas and strings, never temporaries with destructors, and keep co_await out of
// conditions.
//
// Runs fn(worker) on every worker's thread (the only thread allowed to touch that worker's
// sessions) and collects what each returns. The console's coroutine waits on an Event of its
// own worker; the last worker to finish posts the event's set() back to that worker.
template <typename T, typename Fn>
asio::awaitable<std::vector<T>> on_every_worker(session::Shared& shared, net::Reactor& home,
                                                const Fn& fn) {
  struct State {
    std::mutex mutex;
    std::vector<T> items;
    unsigned left = 0;
    net::Event done;  // touched on `home` only
  };
  const unsigned workers = shared.pools.worker_count();
  auto state = std::make_shared<State>();
  state->left = workers;
  for (unsigned i = 0; i < workers; ++i) {
    shared.pools.reactor(i).post([state, fn, i, &home] {
      std::vector<T> part = fn(i);
      bool last = false;
      {
        std::lock_guard lock(state->mutex);
        for (auto& item : part) state->items.push_back(std::move(item));
        last = --state->left == 0;
      }
      if (last) home.post([state] { state->done.set(); });
    });
  }
  auto& done = state->done;
  co_await done.async_wait(net::use_nothrow);
  std::lock_guard lock(state->mutex);
  co_return std::move(state->items);
}

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
  Console console(shared_, client, reader, std::move(who));
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
          empty.config = shared_.config();
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
        if (shared_.shutdown) shared_.shutdown();
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

asio::awaitable<Snapshot> Console::snapshot(bool with_sessions) {
  Snapshot s;
  s.config = shared_.config();
  s.secrets = shared_.secrets();
  if (with_sessions) {
    auto collect = [&shared = shared_](unsigned worker) {
      std::vector<session::SessionInfo> out;
      for (auto* session : shared.sessions(worker)) out.push_back(session->info());
      return out;
    };
    s.sessions = co_await on_every_worker<session::SessionInfo>(shared_, reactor_, collect);
  }
  shared_.pools.for_each([&](pool::Pool& pool) {
    PoolSnapshot p;
    p.pool = &pool;
    p.database = pool.database();
    p.user = pool.user();
    p.settings = pool.settings();
    p.stats = pool.stats();
    p.totals = pool.stat_totals();
    std::tie(p.period_delta, p.period) = pool.last_period();
    p.idle = pool.idle_servers();
    s.db_connections[p.database] = shared_.pools.db_connections(p.database);
    s.user_connections[p.user] = shared_.pools.user_connections(p.user);
    s.pools.push_back(std::move(p));
  });
  for (const auto& [name, entry] : s.config->databases) {
    if (shared_.pools.database_paused(name)) s.paused_databases.insert(name);
  }
  for (const auto& p : s.pools) {
    if (p.stats.paused) s.paused_databases.insert(p.database);
  }
  s.all_paused = shared_.pools.all_paused();
  s.backends = shared_.pools.backend_statuses(Clock::now());
  s.health = shared_.health.read();
  s.now = Clock::now();
  s.wall_now = std::chrono::system_clock::now();
  co_return s;
}

bool Console::known_database(const std::string& name) const {
  if (name.empty()) return true;
  auto config = shared_.config();
  if (config->databases.contains(name)) return true;
  bool found = false;
  shared_.pools.for_each([&](pool::Pool& pool) { found = found || pool.database() == name; });
  return found;
}

asio::awaitable<int> Console::count_closing(const std::string& database) {
  // Servers marked to close (RECONNECT, a reload that changed the target): leased ones are
  // seen by their sessions, idle ones by the pools.
  auto count = [&shared = shared_, database](unsigned worker) {
    int n = 0;
    for (auto* session : shared.sessions(worker)) {
      auto info = session->info();
      if (info.server && info.server->close_needed && info.pool &&
          (database.empty() || info.pool->database() == database)) {
        ++n;
      }
    }
    return std::vector<int>{n};
  };
  auto counts = co_await on_every_worker<int>(shared_, reactor_, count);
  int total = 0;
  for (int n : counts) total += n;
  shared_.pools.for_each([&](pool::Pool& pool) {
    if (!database.empty() && pool.database() != database) return;
    for (const auto& server : pool.idle_servers()) total += server.close_needed ? 1 : 0;
  });
  co_return total;
}

asio::awaitable<int> Console::terminate_clients(const std::string& database, std::uint64_t id) {
  // KILL (id == 0: every non-console client of `database`, or of all) and KILL_CLIENT (by id).
  auto kill = [&shared = shared_, database, id](unsigned worker) {
    std::vector<std::shared_ptr<session::ClientSession>> victims;
    for (auto* session : shared.sessions(worker)) {
      const bool match =
          id != 0 ? session->id() == id
                  : !session->is_admin() && (database.empty() || session->database() == database);
      if (match) victims.push_back(session->shared_from_this());
    }
    for (auto& victim : victims) victim->terminate(Err::admin_shutdown);
    return std::vector<int>{static_cast<int>(victims.size())};
  };
  auto counts = co_await on_every_worker<int>(shared_, reactor_, kill);
  int total = 0;
  for (int n : counts) total += n;
  co_return total;
}

asio::awaitable<int> Console::cancel_client(std::uint64_t id) {
  // CANCEL_CLIENT: a CancelRequest for the client's running query, sent by the session's own
  // worker through the same path as a client's CancelRequest (forward_cancel).
  auto cancel = [&shared = shared_, id, who = who_.user](unsigned worker) {
    std::vector<int> found;
    for (auto* client : shared.sessions(worker)) {
      if (client->id() != id || client->is_admin()) continue;
      const auto info = client->info();
      const bool running = info.lease && info.lease->state == session::LeaseState::active;
      client->forward_cancel();
      client->note_forced_action(
          "cancel", "CANCEL_CLIENT by " + who + (running ? "" : " (no query running)"));
      found.push_back(1);
    }
    return found;
  };
  auto found = co_await on_every_worker<int>(shared_, reactor_, cancel);
  co_return static_cast<int>(found.size());
}

asio::awaitable<int> Console::terminate_app(const std::string& application_name) {
  // KILL_APP: every client (not console sessions) whose current application_name is exactly
  // `application_name` gets FATAL 57P01; each session's cleanup returns its server clean.
  auto kill = [&shared = shared_, application_name, who = who_.user](unsigned worker) {
    std::vector<std::shared_ptr<session::ClientSession>> victims;
    for (auto* session : shared.sessions(worker)) {
      if (!session->is_admin() && session->application_name() == application_name) {
        victims.push_back(session->shared_from_this());
      }
    }
    for (auto& victim : victims) {
      victim->note_forced_action("disconnect", "KILL_APP by " + who);
      victim->terminate(Err::admin_shutdown);
    }
    return std::vector<int>{static_cast<int>(victims.size())};
  };
  auto counts = co_await on_every_worker<int>(shared_, reactor_, kill);
  int total = 0;
  for (int n : counts) total += n;
  co_return total;
}

Console::Outcome Console::set_setting(const std::string& key, const std::string& value) {
  // Read, modify and apply under the lock RELOAD and SIGHUP take too.
  std::lock_guard lock(shared_.config_change_mutex);
  auto current = shared_.config();
  config::Config changed = *current;
  try {
    config::set_key(changed, key, value);
  } catch (const config::ConfigError& e) {
    std::string text = e.what();
    if (text.rfind("unknown configuration key", 0) == 0) {
      return Outcome{std::nullopt, Err::admin_unknown_setting, key};
    }
    if (text.rfind("SET:0: ", 0) == 0) text.erase(0, 7);
    return Outcome{std::nullopt, Err::admin_invalid_value, text};
  }
  if (!config::is_runtime_changeable(key)) {
    return Outcome{std::nullopt, Err::admin_setting_fixed, key};
  }
  auto secrets = shared_.secrets();
  if (key == "auth_file" && !changed.auth_file.empty()) {
    try {
      secrets = std::make_shared<const std::map<std::string, std::string>>(
          config::load_auth_file(changed.auth_file));
    } catch (const std::exception& e) {
      return Outcome{std::nullopt, Err::admin_invalid_value, e.what()};
    }
  }
  shared_.apply_config(std::make_shared<const config::Config>(std::move(changed)), secrets);
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
    if (known_database(db)) return std::nullopt;
    return Outcome{std::nullopt, Err::admin_no_such_database, db};
  };
  auto for_pools = [&](const std::function<void(pool::Pool&)>& fn) {
    shared_.pools.for_each([&](pool::Pool& pool) {
      if (db.empty() || pool.database() == db) fn(pool);
    });
  };
  switch (command.verb) {
    case Verb::empty:
      co_return Outcome{};
    case Verb::show: {
      const bool sessions = show_needs_sessions(command.arg);
      auto snap = co_await snapshot(sessions);
      if (command.arg == "events") snap.events = shared_.leaks.events.newest_first();
      if (command.arg == "apps") {
        snap.apps = shared_.apps.view();
        snap.leak_counters = shared_.leaks.counters();
      }
      co_return Outcome{build_show(command.arg, snap), std::nullopt, {}};
    }
    case Verb::set:
      co_return set_setting(command.arg, command.value);
    case Verb::pause: {
      if (auto bad = check_db()) co_return *bad;
      if (!shared_.pools.pause_database(db)) {
        co_return Outcome{std::nullopt, Err::admin_wrong_state,
                          db.empty() ? "already paused" : "database " + db + " is already paused"};
      }
      // PgBouncer's PAUSE returns once every server of the database is released and closed:
      // running transactions finish first, new ones wait for RESUME.
      for (;;) {
        int servers = 0;
        for_pools([&](pool::Pool& pool) { servers += pool.stats().total; });
        if (servers == 0) break;
        co_await sleep(std::chrono::milliseconds(50));
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::resume: {
      if (auto bad = check_db()) co_return *bad;
      if (!shared_.pools.resume_database(db)) {
        co_return Outcome{
            std::nullopt, Err::admin_wrong_state,
            db.empty() ? "pooler is not paused" : "database " + db + " is not paused"};
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::reconnect: {
      if (auto bad = check_db()) co_return *bad;
      // Idle servers close now, leased ones when their client releases them.
      for_pools([](pool::Pool& pool) { pool.close_all(true); });
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill: {
      if (auto bad = check_db()) co_return *bad;
      // As in PgBouncer: the database stays paused (new clients wait) until RESUME.
      shared_.pools.pause_database(db);
      co_await terminate_clients(db, 0);
      for_pools([](pool::Pool& pool) { pool.close_all(true); });
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill_client: {
      const std::uint64_t id = std::stoull(command.arg);
      const std::string all_databases;
      int killed = 0;
      if (id != 0) killed = co_await terminate_clients(all_databases, id);
      if (killed == 0) {
        co_return Outcome{std::nullopt, Err::admin_no_such_client, command.arg};
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::cancel_client: {
      const std::uint64_t id = std::stoull(command.arg);
      int found = 0;
      if (id != 0) found = co_await cancel_client(id);
      if (found == 0) co_return Outcome{std::nullopt, Err::admin_no_such_client, command.arg};
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::kill_app: {
      const int killed = co_await terminate_app(command.arg);
      if (killed == 0) co_return Outcome{std::nullopt, Err::admin_no_such_app, command.arg};
      spdlog::info("KILL_APP {}: {} client(s) disconnected", session::printable(command.arg),
                   killed);
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::wait_close: {
      if (auto bad = check_db()) co_return *bad;
      for (;;) {
        const int closing = co_await count_closing(db);
        if (closing == 0) break;
        co_await sleep(std::chrono::milliseconds(100));
      }
      co_return Outcome{std::move(done), std::nullopt, {}};
    }
    case Verb::reload: {
      const std::string error = shared_.reload ? shared_.reload() : "no configuration file";
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
