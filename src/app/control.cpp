#include "app/control.hpp"

#include <spdlog/spdlog.h>

#include <mutex>

#include "session/client_session.hpp"
#include "util/logging.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::app {
namespace {

using Clock = std::chrono::steady_clock;

// g++ 12 destroys temporaries of a co_await full-expression twice (PR 99576): callers pass
// named lambdas and strings, never temporaries with destructors.
//
// Runs fn(worker) on every worker's thread (the only thread allowed to touch that worker's
// sessions) and collects what each returns. The calling coroutine waits on an Event of its own
// worker (`home`); the last worker to finish posts the event's set() back there.
template <typename T, typename Fn>
asio::awaitable<std::vector<T>> on_every_worker(session::SessionRegistry& registry, const Fn& fn) {
  struct State {
    util::LeafMutex mutex;
    std::vector<T> items;
    unsigned left = 0;
    net::Event done;  // touched on `home` only
  };
  net::Reactor& home = *net::Reactor::current();  // the calling console's worker
  const unsigned workers = registry.worker_count();
  auto state = std::make_shared<State>();
  state->left = workers;
  for (unsigned i = 0; i < workers; ++i) {
    registry.reactor(i).post([state, fn, i, &home] {
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

int sum(const std::vector<int>& counts) {
  int total = 0;
  for (int n : counts) total += n;
  return total;
}

}  // namespace

asio::awaitable<admin::Snapshot> ProcessControl::snapshot(bool with_sessions,
                                                          bool with_leak_detail) {
  admin::Snapshot s;
  s.config = config_.config();
  s.secrets = config_.secrets();
  if (with_sessions) {
    auto collect = [&registry = sessions_](unsigned worker) {
      std::vector<session::SessionInfo> out;
      for (auto* session : registry.sessions(worker)) out.push_back(session->info());
      return out;
    };
    s.sessions = co_await on_every_worker<session::SessionInfo>(sessions_, collect);
  }
  pools_.for_each([&](pool::Pool& pool) {
    admin::PoolSnapshot p;
    p.pool = &pool;
    p.database = pool.database();
    p.user = pool.user();
    p.settings = *pool.settings();
    p.stats = pool.stats();
    p.totals = pool.stat_totals();
    std::tie(p.period_delta, p.period) = pool.last_period();
    p.idle = pool.idle_servers();
    s.db_connections[p.database] = pools_.db_connections(p.database);
    s.user_connections[p.user] = pools_.user_connections(p.user);
    s.pools.push_back(std::move(p));
  });
  for (const auto& [name, entry] : s.config->databases) {
    if (pools_.database_paused(name)) s.paused_databases.insert(name);
  }
  for (const auto& p : s.pools) {
    if (p.stats.paused) s.paused_databases.insert(p.database);
  }
  s.all_paused = pools_.all_paused();
  s.disabled_databases = pools_.disabled_databases();
  s.database_clients = admission_.clients_by_database();
  s.user_clients = admission_.clients_by_user();
  s.backends = pools_.backend_statuses(Clock::now());
  s.health = health_.read();
  if (with_leak_detail) {
    s.events = leaks_.events.newest_first();
    s.apps = apps_.view();
    s.leak_counters = leaks_.counters();
  }
  s.now = Clock::now();
  s.wall_now = std::chrono::system_clock::now();
  co_return s;
}

bool ProcessControl::known_database(const std::string& database) const {
  if (database.empty()) return true;
  if (config_.config()->databases.contains(database)) return true;
  bool found = false;
  pools_.for_each([&](pool::Pool& pool) { found = found || pool.database() == database; });
  return found;
}

void ProcessControl::for_pools(const std::string& database,
                               const std::function<void(pool::Pool&)>& fn) {
  pools_.for_each([&](pool::Pool& pool) {
    if (database.empty() || pool.database() == database) fn(pool);
  });
}

bool ProcessControl::pause(const std::string& database) {
  return pools_.pause_database(database);
}

bool ProcessControl::resume(const std::string& database) {
  return pools_.resume_database(database);
}

void ProcessControl::set_disabled(const std::string& database, bool disabled) {
  pools_.set_database_disabled(database, disabled);
}

int ProcessControl::open_servers(const std::string& database) {
  int servers = 0;
  for_pools(database, [&](pool::Pool& pool) { servers += pool.stats().total; });
  return servers;
}

void ProcessControl::reconnect(const std::string& database) {
  // Idle servers close now, leased ones when their client releases them.
  for_pools(database, [](pool::Pool& pool) { pool.close_all(true); });
}

asio::awaitable<int> ProcessControl::servers_to_close(const std::string& database) {
  // Servers marked to close (RECONNECT, a reload that changed the target): leased ones are
  // seen by their sessions, idle ones by the pools.
  auto count = [&registry = sessions_, database](unsigned worker) {
    int n = 0;
    for (auto* session : registry.sessions(worker)) {
      auto info = session->info();
      if (info.server && info.server->close_needed && info.pool &&
          (database.empty() || info.pool->database() == database)) {
        ++n;
      }
    }
    return std::vector<int>{n};
  };
  auto counts = co_await on_every_worker<int>(sessions_, count);
  int total = sum(counts);
  for_pools(database, [&](pool::Pool& pool) {
    for (const auto& server : pool.idle_servers()) total += server.close_needed ? 1 : 0;
  });
  co_return total;
}

asio::awaitable<int> ProcessControl::kill_clients(const std::string& database) {
  // KILL: every non-console client of `database` (or of all) gets FATAL 57P01.
  auto kill = [&registry = sessions_, database](unsigned worker) {
    std::vector<std::shared_ptr<session::ClientSession>> victims;
    for (auto* session : registry.sessions(worker)) {
      if (!session->is_admin() && (database.empty() || session->database() == database)) {
        victims.push_back(session->shared_from_this());
      }
    }
    for (auto& victim : victims) victim->terminate(Err::admin_shutdown);
    return std::vector<int>{static_cast<int>(victims.size())};
  };
  auto counts = co_await on_every_worker<int>(sessions_, kill);
  co_return sum(counts);
}

asio::awaitable<int> ProcessControl::kill_client(std::uint64_t id) {
  auto kill = [&registry = sessions_, id](unsigned worker) {
    std::vector<std::shared_ptr<session::ClientSession>> victims;
    for (auto* session : registry.sessions(worker)) {
      if (session->id() == id) victims.push_back(session->shared_from_this());
    }
    for (auto& victim : victims) victim->terminate(Err::admin_shutdown);
    return std::vector<int>{static_cast<int>(victims.size())};
  };
  auto counts = co_await on_every_worker<int>(sessions_, kill);
  co_return sum(counts);
}

asio::awaitable<int> ProcessControl::kill_app(const std::string& application_name,
                                              const std::string& by) {
  // KILL_APP: every client (not console sessions) whose current application_name is exactly
  // `application_name` gets FATAL 57P01; each session's cleanup returns its server clean.
  auto kill = [&registry = sessions_, application_name, by](unsigned worker) {
    std::vector<std::shared_ptr<session::ClientSession>> victims;
    for (auto* session : registry.sessions(worker)) {
      if (!session->is_admin() && session->application_name() == application_name) {
        victims.push_back(session->shared_from_this());
      }
    }
    for (auto& victim : victims) {
      victim->note_forced_action("disconnect", "KILL_APP by " + by);
      victim->terminate(Err::admin_shutdown);
    }
    return std::vector<int>{static_cast<int>(victims.size())};
  };
  auto counts = co_await on_every_worker<int>(sessions_, kill);
  co_return sum(counts);
}

asio::awaitable<int> ProcessControl::cancel_client(std::uint64_t id, const std::string& by) {
  // CANCEL_CLIENT: a CancelRequest for the client's running query, sent by the session's own
  // worker through the same path as a client's CancelRequest (forward_cancel).
  auto cancel = [&registry = sessions_, id, by](unsigned worker) {
    std::vector<int> found;
    for (auto* client : registry.sessions(worker)) {
      if (client->id() != id || client->is_admin()) continue;
      const auto info = client->info();
      const bool running = info.lease && info.lease->state == session::LeaseState::active;
      client->forward_cancel();
      client->note_forced_action("cancel",
                                 "CANCEL_CLIENT by " + by + (running ? "" : " (no query running)"));
      found.push_back(1);
    }
    return found;
  };
  auto found = co_await on_every_worker<int>(sessions_, cancel);
  co_return static_cast<int>(found.size());
}

std::optional<admin::Control::Refusal> ProcessControl::set(const std::string& key,
                                                           const std::string& value) {
  // Read, modify and apply under the lock RELOAD and SIGHUP take too.
  std::lock_guard lock(config_.change_mutex());
  auto current = config_.config();
  config::Config changed = *current;
  try {
    config::set_key(changed, key, value);
  } catch (const config::ConfigError& e) {
    if (e.kind() == config::ConfigError::Kind::unknown_key) {
      return Refusal{Err::admin_unknown_setting, key};
    }
    return Refusal{Err::admin_invalid_value, e.message()};
  }
  if (!config::is_runtime_changeable(key)) return Refusal{Err::admin_setting_fixed, key};
  auto secrets = config_.secrets();
  if (key == "auth_file" && !changed.auth_file.empty()) {
    try {
      secrets = std::make_shared<const config::Secrets>(config::load_auth_file(changed.auth_file));
    } catch (const std::exception& e) {
      return Refusal{Err::admin_invalid_value, e.what()};
    }
  }
  auto installed = std::make_shared<const config::Config>(std::move(changed));
  // TLS keys are set one at a time (a key file, then its certificate), so a context that does
  // not build yet is not an error of this SET: as at a reload, the log says why and the
  // previous context stays until one builds (PgBouncer does the same).
  if (key.find("tls") != std::string::npos) {
    if (auto error = tls_.update(*installed); !error.empty()) spdlog::error("TLS: {}", error);
  }
  config_.install(installed, secrets);
  if (key == "verbose") set_config_debug(installed->verbose);
  pools_.apply(*installed, *secrets);
  return std::nullopt;
}

}  // namespace pgw::app
