// ClientSession's part in resilience (docs/operations.md): errors that explain themselves,
// the query_wait_notify NOTICE and the shutdown drain. All of it runs on the session's worker,
// called by the janitor or the drain, never per message.
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>

#include <linux/sockios.h>

#include "session/client_session.hpp"

namespace pgw::session {

using proto::TransactionStatus;

asio::awaitable<void> ClientSession::fail_explained(Err code, const std::string& argument) {
  pool::Pool::ErrorContext context;
  if (pool_) context = pool_->explain(code);
  co_await fail(code, argument, context.detail, context.hint);
}

bool ClientSession::inside_transaction() const {
  // Something is in flight or the server's status is not idle: ending now would lose work the
  // client believes is still going. A session-mode client idle at 'I' is not inside one.
  if (!server_) return false;
  return linking_ || expected_ready_ > 0 || mid_batch_ || relay_have_ > 0 || relay_remaining_ > 0 ||
         server_->status != TransactionStatus::idle;
}

void ClientSession::notify_waiting(Clock::time_point now, const config::Config& current) {
  const auto after = current.query_wait_notify;
  if (after.count() <= 0 || !waiting_ || !serving_ || server_) return;
  if (wait_notified_ == wait_start_ || now - wait_start_ < after) return;
  // A waiting client has no server, so no server bytes are on their way to it; a NOTICE may
  // go out between two messages as long as nothing of ours is unsent either: write it only
  // into an empty send queue, where the kernel takes a small message whole.
  int unsent = 0;
  if (!client_.writable() || ::ioctl(client_.fd(), SIOCOUTQ, &unsent) != 0 || unsent != 0) return;
  wait_notified_ = wait_start_;
  const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - wait_start_).count();
  const auto& spec = error_spec(Err::query_wait_notice);
  const auto context = pool_->explain(Err::query_wait_notice);
  std::string notice;
  proto::MessageWriter(notice).notice_response(spec.severity, spec.sqlstate,
                                               error_message(Err::query_wait_notice, waited),
                                               context.detail, context.hint);
  const auto written = client_.write_some(notice.data(), notice.size());
  if (written.bytes == notice.size() || written.bytes == 0) return;  // whole, or not at all
  // Part of it went out: whatever follows would corrupt the stream. Never seen with an empty
  // queue, but if it happens the connection ends rather than carry a broken message.
  spdlog::warn("C-{}: could not write the query_wait_notify NOTICE whole; closing the connection",
               id_);
  client_gone_ = true;
  stop_data_path(End::client_gone);
}

void ClientSession::drain(bool force) {
  if (state_ == ClientState::closing) return;
  if (force) {
    // The drain window is over: like any session that is cut off, cleanup() cancels what
    // runs, rolls back, and returns or closes the server.
    terminate(Err::shutting_down);
    return;
  }
  switch (state_) {
    case ClientState::login:
      // Accepted before the drain began, still logging in: told what a new login is told.
      terminate(Err::draining);
      break;
    case ClientState::idle:
    case ClientState::waiting:
      terminate(Err::shutting_down);
      break;
    case ClientState::active:
      // Inside a transaction: it may finish (its COMMIT goes through); the next round ends the
      // session once it is idle again.
      if (admin_ || !inside_transaction()) terminate(Err::shutting_down);
      break;
    case ClientState::closing:
      break;
  }
}

}  // namespace pgw::session
