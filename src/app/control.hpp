// The console's view of the process (admin::Control), implemented over the application's
// services: the sessions are read and acted on on their own workers, the pools under their
// own mutexes, the configuration through its store.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "admin/control.hpp"
#include "config/config_store.hpp"
#include "pool/pool.hpp"
#include "session/admission.hpp"
#include "session/apps.hpp"
#include "session/lease.hpp"
#include "session/session_registry.hpp"
#include "util/health.hpp"

namespace pgw::app {

class ProcessControl final : public admin::Control {
 public:
  // `reload` does what SIGHUP does ("" or the error); `shutdown` what SIGTERM does. Both may
  // be called on any worker.
  ProcessControl(config::ConfigStore& config, net::TlsStore& tls,
                 session::SessionRegistry& sessions, const session::ClientAdmission& admission,
                 pool::PoolManager& pools, session::LeakBook& leaks, session::AppMonitor& apps,
                 ProcessHealth& health, std::function<std::string()> reload,
                 std::function<void()> shutdown)
      : config_(config),
        tls_(tls),
        sessions_(sessions),
        admission_(admission),
        pools_(pools),
        leaks_(leaks),
        apps_(apps),
        health_(health),
        reload_(std::move(reload)),
        shutdown_(std::move(shutdown)) {}

  asio::awaitable<admin::Snapshot> snapshot(bool with_sessions, bool with_leak_detail) override;
  std::shared_ptr<const config::Config> config() const override { return config_.config(); }
  bool known_database(const std::string& database) const override;
  bool pause(const std::string& database) override;
  bool resume(const std::string& database) override;
  void set_disabled(const std::string& database, bool disabled) override;
  int open_servers(const std::string& database) override;
  void reconnect(const std::string& database) override;
  asio::awaitable<int> servers_to_close(const std::string& database) override;
  asio::awaitable<int> kill_clients(const std::string& database) override;
  asio::awaitable<int> kill_client(std::uint64_t id) override;
  asio::awaitable<int> kill_app(const std::string& application_name,
                                const std::string& by) override;
  asio::awaitable<int> cancel_client(std::uint64_t id, const std::string& by) override;
  std::optional<Refusal> set(const std::string& key, const std::string& value) override;
  std::string reload() override { return reload_ ? reload_() : "no configuration file"; }
  void shutdown() override {
    if (shutdown_) shutdown_();
  }

 private:
  // The pools of `database`, or all of them.
  void for_pools(const std::string& database, const std::function<void(pool::Pool&)>& fn);

  config::ConfigStore& config_;
  net::TlsStore& tls_;
  session::SessionRegistry& sessions_;
  const session::ClientAdmission& admission_;
  pool::PoolManager& pools_;
  session::LeakBook& leaks_;
  session::AppMonitor& apps_;
  ProcessHealth& health_;
  std::function<std::string()> reload_;
  std::function<void()> shutdown_;
};

}  // namespace pgw::app
