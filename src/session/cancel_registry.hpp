// The cancel keys pgwarden hands to clients (BackendKeyData), mapped to their sessions, so a
// CancelRequest arriving on a new connection finds its target in O(1) on any worker. A key is
// kept in its session (ClientSession::cancel_key()), and the table holds only the pointer.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>

#include "util/pointer_table.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::session {

class ClientSession;

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
    std::uint64_t operator()(const ClientSession* session) const;
  };
  mutable util::LeafMutex mutex_;
  util::PointerTable<ClientSession, KeyOf> sessions_;
  std::mt19937_64 random_{std::random_device{}()};
};

}  // namespace pgw::session
