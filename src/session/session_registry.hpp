// The workers and the sessions each one serves. A worker's list is touched only on that
// worker's thread (its sessions insert and remove themselves; its janitor, its share of the
// shutdown drain and the console's gathering run there). Intrusive: being listed costs an idle
// client no allocation.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "net/reactor.hpp"
#include "util/intrusive_list.hpp"

namespace pgw::session {

class ClientSession;
using SessionList = util::IntrusiveList<ClientSession>;

class SessionRegistry {
 public:
  explicit SessionRegistry(std::vector<net::Reactor*> workers)
      : workers_(std::move(workers)), sessions_(workers_.size()) {}
  SessionRegistry(const SessionRegistry&) = delete;
  SessionRegistry& operator=(const SessionRegistry&) = delete;

  unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
  net::Reactor& reactor(unsigned worker) const { return *workers_.at(worker); }
  // The sessions of `worker`; only on that worker's thread.
  SessionList& sessions(unsigned worker) { return sessions_[worker]; }
  // The id of a new client (the C-<id> of the log, what KILL_CLIENT takes).
  std::uint64_t next_id() { return ++next_id_; }

 private:
  std::vector<net::Reactor*> workers_;
  std::vector<SessionList> sessions_;  // never resized: lists cannot move
  std::atomic<std::uint64_t> next_id_{0};
};

}  // namespace pgw::session
