// State shared by every client session across workers: the configuration snapshot, the
// auth_file, the pools, the cancel-key registry and global counters. Sessions read snapshots
// (shared_ptr copies) at login, never per message.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>

#include "config/config.hpp"
#include "pool/pool.hpp"
#include "session/apps.hpp"
#include "session/console_service.hpp"
#include "session/lease.hpp"
#include "util/health.hpp"
#include "util/intrusive_list.hpp"
#include "util/pointer_table.hpp"

namespace pgw::session {

class ClientSession;
using SessionList = util::IntrusiveList<ClientSession>;

// Maps the cancel keys pgwarden hands to clients (BackendKeyData) to their sessions, so a
// CancelRequest arriving on a new connection finds its target in O(1) on any worker. A key is
// kept in its session (ClientSession::cancel_key()), and the table holds only the pointer.
class CancelRegistry {
 public:
  struct Key {
    std::int32_t pid;
    std::int32_t secret;
  };
  // Gives `session` a fresh random key (sets its cancel_key(), under the registry's lock, so
  // other threads' lookups never see it half-written) and registers it. `session` must call
  // remove() in its destructor.
  void add(ClientSession* session);
  void remove(Key key);
  std::shared_ptr<ClientSession> find(Key key) const;

 private:
  static std::uint64_t pack(Key key) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(key.pid)) << 32) |
           static_cast<std::uint32_t>(key.secret);
  }
  struct KeyOf {
    std::uint64_t operator()(const ClientSession* session) const;  // shared.cpp
  };
  mutable std::mutex mutex_;
  util::PointerTable<ClientSession, KeyOf> sessions_;
  std::mt19937_64 random_{std::random_device{}()};
};

class Shared {
 public:
  explicit Shared(std::vector<net::Reactor*> workers)
      : pools(workers),
        apps(static_cast<unsigned>(workers.size())),
        sessions_by_worker_(workers.size()),
        clients_by_worker_(std::make_unique<std::atomic<int>[]>(workers.size())) {}

  // Sessions living on a worker; touched only from that worker's thread (janitor, shutdown).
  // Intrusive: being listed costs an idle client no allocation.
  SessionList& sessions(unsigned worker) { return sessions_by_worker_[worker]; }

  // Spreading clients over workers. A few clients are served by one worker: with two threads
  // each wakes for its own clients' messages, and at 10 clients on 2 cores that cost about a
  // tenth more CPU per transaction than one thread serving them all. So workers join as
  // clients come: worker k takes new clients once kClientsPerWorker * k sessions exist
  // (workers_for(); the Runtime keeps the number in use and lets only those workers accept).
  // Among the `in_use` workers the one that accepted the connection serves it unless another
  // has fewer clients: the session needs no hand-off (no second thread woken), and the workers
  // in use stay within one client of each other. Counts the client on the chosen worker; its
  // session gives it back with client_left() when run() ends. Any thread.
  static constexpr int kClientsPerWorker = 32;
  unsigned workers_for(int sessions) const {
    const auto workers = static_cast<unsigned>(sessions_by_worker_.size());
    return std::min(workers, 1 + static_cast<unsigned>(std::max(sessions, 0) / kClientsPerWorker));
  }
  unsigned assign_worker(unsigned accepting, unsigned in_use) {
    unsigned chosen = accepting < in_use ? accepting : 0;
    int fewest = clients_by_worker_[chosen].load(std::memory_order_relaxed);
    for (unsigned w = 0; w < in_use && w < sessions_by_worker_.size(); ++w) {
      const int on_worker = clients_by_worker_[w].load(std::memory_order_relaxed);
      if (on_worker < fewest) {
        fewest = on_worker;
        chosen = w;
      }
    }
    clients_by_worker_[chosen].fetch_add(1, std::memory_order_relaxed);
    return chosen;
  }
  // Client sessions on all workers, logging in or logged in (assign_worker() counts them).
  int session_count() const {
    int total = 0;
    for (std::size_t w = 0; w < sessions_by_worker_.size(); ++w) {
      total += clients_by_worker_[w].load(std::memory_order_relaxed);
    }
    return total;
  }
  void client_left(unsigned worker) {
    clients_by_worker_[worker].fetch_sub(1, std::memory_order_relaxed);
  }

  std::shared_ptr<const config::Config> config() const {
    std::lock_guard lock(mutex_);
    return config_;
  }
  std::shared_ptr<const std::map<std::string, std::string>> secrets() const {
    std::lock_guard lock(mutex_);
    return secrets_;
  }
  void set_config(std::shared_ptr<const config::Config> config,
                  std::shared_ptr<const std::map<std::string, std::string>> secrets) {
    std::lock_guard lock(mutex_);
    config_ = std::move(config);
    secrets_ = std::move(secrets);
  }

  // Installs a new configuration snapshot and brings every pool's settings in line with it
  // (RELOAD, SIGHUP, SET on the console). The caller holds config_change_mutex, so that a
  // read-modify-apply (SET) cannot interleave with a reload.
  void apply_config(std::shared_ptr<const config::Config> config,
                    std::shared_ptr<const std::map<std::string, std::string>> secrets);
  std::mutex config_change_mutex;

  // The admin console, installed by the application (the console is a layer above this one).
  ConsoleService* console = nullptr;

  // Installed by the Runtime for the console: RELOAD (does what SIGHUP does; returns "" or the
  // error) and SHUTDOWN (does what SIGTERM does). Callable from any thread.
  std::function<std::string()> reload;
  std::function<void()> shutdown;

  // The settings of the pool for (database entry, user) under `config`.
  static pool::PoolSettings pool_settings(const config::Config& config,
                                          const config::DatabaseEntry& database,
                                          const std::string& user,
                                          const std::map<std::string, std::string>& secrets);

  // SCRAM secret derived from a plaintext auth_file password, cached: PBKDF2 with 4096
  // iterations costs milliseconds, far more than the rest of a login.
  std::string scram_secret_for(const std::string& user, const std::string& password);

  // Clients per application_name, for the max_client_conn of [apps] lines. Taken once per
  // login and once per disconnect, never per message.
  bool admit_app_client(const std::string& application_name, int cap);
  void release_app_client(const std::string& application_name);

  pool::PoolManager pools;
  CancelRegistry cancels;
  std::atomic<int> clients{0};  // connected clients, for max_client_conn
  std::atomic<bool> shutting_down{false};
  std::atomic<std::uint64_t> next_client_id{0};
  LeakBook leaks;        // leak guard: per-application counters and the recent leak events
  AppMonitor apps;       // per-application totals, growth alarm, pool health rounds
  ProcessHealth health;  // watchdog, open files, shutdown: for SHOW STATE

 private:
  std::vector<SessionList> sessions_by_worker_;  // never resized: lists cannot move
  std::unique_ptr<std::atomic<int>[]> clients_by_worker_;
  std::mutex app_clients_mutex_;
  std::unordered_map<std::string, int> app_clients_;
  std::mutex scram_mutex_;
  std::map<std::string, std::pair<std::string, std::string>> scram_cache_;  // user -> (pw, secret)
  mutable std::mutex mutex_;
  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<const std::map<std::string, std::string>> secrets_;
};

}  // namespace pgw::session
