// The configuration in force: an immutable snapshot of pgbouncer.ini and of the auth_file,
// swapped whole by a reload or a console SET. Readers (a login, the janitor, the console) take
// the current snapshot and keep it as long as they need; nothing reads it per message.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "config/config.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::config {

class ConfigStore {
 public:
  ConfigStore(std::shared_ptr<const Config> config, std::shared_ptr<const Secrets> secrets)
      : config_(std::move(config)), secrets_(std::move(secrets)) {}
  ConfigStore(const ConfigStore&) = delete;
  ConfigStore& operator=(const ConfigStore&) = delete;

  std::shared_ptr<const Config> config() const { return config_.load(); }
  std::shared_ptr<const Secrets> secrets() const { return secrets_.load(); }
  // Installs a new snapshot. Callers that read, change and install (SET, RELOAD, SIGHUP)
  // hold change_mutex() for the whole of it, so one change never undoes another.
  void install(std::shared_ptr<const Config> config, std::shared_ptr<const Secrets> secrets) {
    config_.store(std::move(config));
    secrets_.store(std::move(secrets));
  }
  util::ConfigChangeMutex& change_mutex() { return change_mutex_; }

 private:
  std::atomic<std::shared_ptr<const Config>> config_;
  std::atomic<std::shared_ptr<const Secrets>> secrets_;
  util::ConfigChangeMutex change_mutex_;
};

}  // namespace pgw::config
