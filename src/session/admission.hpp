// Who may connect, and which worker serves them. One count of clients: every accepted
// connection is counted on the worker chosen to serve it, from accept until its session ends;
// max_client_conn is checked against the total once the client says who it is (PgBouncer
// counts every client socket the same way). Per application ([apps] max_client_conn) a second
// count is kept by startup application_name, and per database and per login user a third
// (max_db_client_connections, max_user_client_connections), counted for every client as
// PgBouncer does, so SHOW DATABASES and SHOW USERS show them. Any thread: the counts are
// atomics, the maps have a mutex each, taken once per login and once per disconnect.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "util/ranked_mutex.hpp"

namespace pgw::session {

class ClientAdmission {
 public:
  explicit ClientAdmission(unsigned workers)
      : workers_(workers), clients_(std::make_unique<std::atomic<int>[]>(workers)) {}

  // Spreading clients over workers. A few clients are served by one worker: two threads would
  // wake each other for each other's clients' messages. So workers join as clients come:
  // worker k takes new clients once kClientsPerWorker * k sessions exist.
  static constexpr int kClientsPerWorker = 32;
  unsigned workers_for(int clients) const;
  // The worker that serves a client accepted on `accepting`, among the first `in_use`: the
  // accepting one unless another has fewer clients. Counts the client there.
  unsigned place(unsigned accepting, unsigned in_use);
  // The client placed on `worker` is gone.
  void leave(unsigned worker) { clients_[worker].fetch_sub(1, std::memory_order_relaxed); }
  // Clients on all workers (logging in or logged in).
  int count() const;
  // max_client_conn: whether the clients counted (this one among them) fit in `limit`.
  bool within(int limit) const { return count() <= limit; }

  // [apps] max_client_conn: takes a slot of `application` if it has fewer than `cap` clients.
  bool admit_app(const std::string& application, int cap);
  void release_app(const std::string& application);

  // max_db_client_connections and max_user_client_connections: counts the client under its
  // database (the name it asked for) and its login user, unless that makes one of them go over
  // its cap (0: none), and then counts nothing and says which (the database first, as
  // PgBouncer checks it). `exempt` counts without checking (an admin on the console).
  enum class Over : std::uint8_t { none, database, user };
  Over admit_client(const std::string& database, int database_cap, const std::string& user,
                    int user_cap, bool exempt);
  void release_client(const std::string& database, const std::string& user);
  // The counts (SHOW DATABASES, SHOW USERS: current_client_connections).
  std::map<std::string, int> clients_by_database() const;
  std::map<std::string, int> clients_by_user() const;

  // Shutdown: new logins are refused (57P03) from here on.
  void begin_drain() { draining_.store(true, std::memory_order_relaxed); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

 private:
  unsigned workers_;
  std::unique_ptr<std::atomic<int>[]> clients_;  // per worker
  std::atomic<bool> draining_{false};
  util::LeafMutex app_mutex_;
  std::unordered_map<std::string, int> app_clients_;
  mutable util::LeafMutex client_mutex_;
  std::unordered_map<std::string, int> database_clients_, user_clients_;
};

}  // namespace pgw::session
