// What the console may do to the rest of the process. The console parses commands, speaks the
// protocol and formats result sets; everything it reads or changes goes through this one
// interface, which the application implements (app/control.hpp). So the console knows no
// session, worker or thread: gathering the sessions of every worker, killing and cancelling
// them on their own threads, and reloading are the application's business.
#pragma once

#include <asio.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "admin/tables.hpp"
#include "config/config.hpp"
#include "util/errors.hpp"

namespace pgw::admin {

class Control {
 public:
  virtual ~Control() = default;

  // SHOW: the state of the process. `with_sessions` gathers every worker's sessions (on their
  // threads); `with_leak_detail` adds the leak events and the per-application views.
  virtual asio::awaitable<Snapshot> snapshot(bool with_sessions, bool with_leak_detail) = 0;
  virtual std::shared_ptr<const config::Config> config() const = 0;
  // A database that is configured or has a pool ("" means all of them: always known).
  virtual bool known_database(const std::string& database) const = 0;

  // PAUSE / RESUME one database, or all ("" ): false when it already was / was not paused.
  virtual bool pause(const std::string& database) = 0;
  virtual bool resume(const std::string& database) = 0;
  // DISABLE / ENABLE one database: its new logins are refused / admitted again.
  virtual void set_disabled(const std::string& database, bool disabled) = 0;
  // Server connections of the database (or all) that are open or opening.
  virtual int open_servers(const std::string& database) = 0;
  // RECONNECT: idle servers close now, leased ones when their client releases them.
  virtual void reconnect(const std::string& database) = 0;
  // Servers of the database (or all) still marked to close (WAIT_CLOSE).
  virtual asio::awaitable<int> servers_to_close(const std::string& database) = 0;

  // Clients, each acted on by its own worker; each returns how many it found. KILL: every
  // client of the database (or all) but console sessions; KILL_CLIENT: one by id; KILL_APP:
  // every client with that application_name; CANCEL_CLIENT: a CancelRequest for its query.
  // `by` (the console user) goes into the leak guard's events.
  virtual asio::awaitable<int> kill_clients(const std::string& database) = 0;
  virtual asio::awaitable<int> kill_client(std::uint64_t id) = 0;
  virtual asio::awaitable<int> kill_app(const std::string& application_name,
                                        const std::string& by) = 0;
  virtual asio::awaitable<int> cancel_client(std::uint64_t id, const std::string& by) = 0;

  // SET key = value: nullopt once it is in force, else the error to answer with.
  struct Refusal {
    Err code;
    std::string argument;
  };
  virtual std::optional<Refusal> set(const std::string& key, const std::string& value) = 0;
  // RELOAD: what SIGHUP does; "" or why it failed.
  virtual std::string reload() = 0;
  // SHUTDOWN: what SIGTERM does (after the console's reply has gone out).
  virtual void shutdown() = 0;
};

}  // namespace pgw::admin
