#include "session/cancel_registry.hpp"

#include "session/client_session.hpp"

namespace pgw::session {

std::uint64_t CancelRegistry::KeyOf::operator()(const ClientSession* session) const {
  return pack(session->cancel_key());
}

void CancelRegistry::add(ClientSession* session) {
  std::lock_guard lock(mutex_);
  for (;;) {
    const auto bits = random_();
    const Key key{static_cast<std::int32_t>(bits & 0x7fffffff),
                  static_cast<std::int32_t>(bits >> 32)};
    if (key.pid == 0) continue;
    // The table reads the key from the session, so it is written first; insert() refuses a
    // key another session holds, and the loop draws again.
    session->cancel_key_ = key;
    if (sessions_.insert(session)) return;
  }
}

void CancelRegistry::remove(Key key) {
  std::lock_guard lock(mutex_);
  sessions_.erase(pack(key));
}

std::shared_ptr<ClientSession> CancelRegistry::find(Key key) const {
  std::lock_guard lock(mutex_);
  ClientSession* session = sessions_.find(pack(key));
  // A session removes itself in its destructor, under this mutex; until then its weak self
  // reference tells whether it is still alive (lock() fails once the last owner let go).
  return session ? session->weak_from_this().lock() : nullptr;
}

}  // namespace pgw::session
