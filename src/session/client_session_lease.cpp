// The leak guard's side of ClientSession: the data-path hooks' out-of-line parts, the janitor's
// leak check, and the lease as the console sees it. See session/lease.hpp and
// docs/leak-guard.md. Everything here runs on the session's worker thread.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "session/client_session.hpp"

namespace pgw::session {
namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string lease_tags(const Lease& lease) {
  auto tags = parse_sqlcomment_tags(lease.first.view());
  if (tags.empty() && !lease.first_tail.empty())
    tags = parse_sqlcomment_tags(lease.first_tail.view());
  return format_tags(tags);
}

}  // namespace

void ClientSession::note_statement(char type, std::size_t at, std::uint32_t body_size) {
  // Only the part of the body already in the buffer: nothing is buffered for this.
  const std::size_t body_at = at + proto::kHeaderSize;
  const std::size_t available = std::min<std::size_t>(body_size, in_len_ - body_at);
  lease_.on_message(
      type, std::string_view(reinterpret_cast<const char*>(in_.data()) + body_at, available),
      available == body_size);
}

LeaseState ClientSession::lease_state() const {
  const bool in_transaction = server_ && server_->status != proto::TransactionStatus::idle;
  return session::lease_state(expected_ready_ > 0 || mid_batch_, in_transaction);
}

LeaseInfo ClientSession::lease_info() const {
  LeaseInfo info;
  info.client_id = id_;
  info.application_name = application_name_;
  info.user = user_;
  info.database = database_;
  info.addr = peer_addr_;
  info.port = peer_port_;
  info.backend_pid = lease_.backend_pid;
  info.state = lease_state();
  info.start = lease_.start;
  info.xact_start = lease_.xact_start;
  info.idle_since = lease_.idle_from();
  info.query_start = query_start_;
  info.statements = lease_.statements;
  info.first_query = std::string(lease_.first.view());
  info.last_query = std::string(lease_.last.view());
  info.tags = lease_tags(lease_);
  info.warned = lease_.warned;
  info.session_mode = pool_ && pool_->mode() == config::PoolMode::session;
  return info;
}

void ClientSession::check_leak(Clock::time_point now, const config::Config& c) {
  if (lease_.warned || !is_suspected_leak(now, c)) return;
  const auto state = lease_state();
  const auto idle_since = lease_.idle_from();
  const auto threshold = policy(c).leak_warn_after;  // cached per session
  lease_.warned = true;
  lease_.warned_at = now;
  const auto info = lease_info();
  const auto count = shared_.leaks.note_suspected(application_name_);
  const std::string xact = info.xact_start == Clock::time_point{}
                               ? "-"
                               : fmt::format("{:.1f}s", seconds(now - info.xact_start));
  spdlog::warn(
      "C-{}: leak suspected: app='{}' user={} db={} client={}:{} backend_pid={} state={} "
      "lease_age={:.1f}s xact_age={} idle={:.1f}s statements={} first_query='{}' tags='{}' "
      "(leak_warn_after={:g}s, suspected leaks of this app: {})",
      id_, printable(application_name_), user_, database_, peer_addr_, peer_port_, info.backend_pid,
      to_string(state), seconds(now - info.start), xact, seconds(now - idle_since), info.statements,
      printable(info.first_query), printable(info.tags), seconds(threshold), count);
  shared_.leaks.events.push(
      LeakEvent{std::chrono::system_clock::now(), id_, application_name_, "leak_warning",
                fmt::format("{} for {:.1f}s (leak_warn_after {:g}s)", to_string(state),
                            seconds(now - idle_since), seconds(threshold)),
                std::chrono::duration_cast<std::chrono::milliseconds>(now - info.start).count(),
                info.first_query});
}

void ClientSession::end_lease(std::string_view how) {
  if (lease_.held && lease_.warned) {
    const auto now = Clock::now();
    const auto age = now - lease_.start;
    spdlog::info(
        "C-{}: leak resolved after {:.1f}s ({}): app='{}' user={} db={} client={}:{} "
        "backend_pid={} lease_age={:.1f}s statements={} first_query='{}'",
        id_, seconds(now - lease_.warned_at), printable(how), printable(application_name_), user_,
        database_, peer_addr_, peer_port_, lease_.backend_pid, seconds(age), lease_.statements,
        printable(lease_.first.view()));
    shared_.leaks.note_resolved(application_name_);
    shared_.leaks.events.push(
        LeakEvent{std::chrono::system_clock::now(), id_, application_name_, "leak_resolved",
                  fmt::format("{} after {:.1f}s", how, seconds(now - lease_.warned_at)),
                  std::chrono::duration_cast<std::chrono::milliseconds>(age).count(),
                  std::string(lease_.first.view())});
  }
  lease_.reset();
}

void ClientSession::note_forced_action(std::string_view action, std::string reason) {
  shared_.leaks.note_action(application_name_);
  const bool leased = lease_.held && server_;
  shared_.leaks.events.push(LeakEvent{
      std::chrono::system_clock::now(), id_, application_name_, std::string(action),
      std::move(reason),
      leased ? std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - lease_.start)
                   .count()
             : 0,
      leased ? std::string(lease_.first.view()) : std::string()});
}

void ClientSession::check_idle_lease(Clock::time_point now, const config::Config& c) {
  // The rungs of the ladder that end the session. The client gets its FATAL first; cleanup()
  // then rolls the server back (and resets it in session mode) and returns it to the pool
  // only if it is clean, as for any client that leaves.
  if (!lease_.held || !server_) return;
  const auto state = lease_state();
  if (state == LeaseState::active) return;
  const auto& p = policy(c);
  const auto idle = now - lease_.idle_from();
  if (state == LeaseState::idle_in_transaction) {
    if (p.idle_transaction_timeout.count() <= 0 || idle <= p.idle_transaction_timeout) return;
    note_forced_action("disconnect", fmt::format("idle_transaction_timeout ({:g}s)",
                                                 seconds(p.idle_transaction_timeout)));
    terminate(Err::idle_transaction_timeout);
    return;
  }
  // idle_pinned. In transaction mode such a lease lasts only until the relay releases it.
  if (!pool_ || pool_->mode() != config::PoolMode::session) return;
  if (p.idle_pinned_timeout.count() <= 0 || idle <= p.idle_pinned_timeout) return;
  const auto limit = fmt::format("{:g}", seconds(p.idle_pinned_timeout));
  note_forced_action("disconnect", "idle_pinned_timeout (" + limit + "s)");
  terminate(Err::idle_pinned_timeout, limit);
}

bool ClientSession::is_suspected_leak(Clock::time_point now, const config::Config& c) {
  // SHOW LEAKS' definition: not active and idle longer than the application's leak_warn_after.
  if (!lease_.held || !server_ || lease_state() == LeaseState::active) return false;
  const auto threshold = policy(c).leak_warn_after;
  return threshold.count() > 0 && now - lease_.idle_from() > threshold;
}

void ClientSession::add_to_sample(Clock::time_point now, const config::Config& c,
                                  WorkerSample& sample) {
  if (admin_) return;
  // Work done since the last sample goes to the application the client has now.
  if (const auto delta = lease_.tally - reported_; !delta.empty()) {
    sample.counted[application_name_] += delta;
    reported_ = lease_.tally;
  }
  if (state_ == ClientState::login || state_ == ClientState::closing) return;
  AppLive& app = sample.apps[application_name_];
  ++app.clients;
  PoolLive* pool = pool_ ? &sample.pools[pool_] : nullptr;
  if (state_ == ClientState::waiting) {
    ++app.waiting;
    if (pool) ++pool->clients_waiting;
  } else if (pool) {
    ++pool->clients_active;
  }
  if (!lease_.held || !server_) return;
  switch (lease_state()) {
    case LeaseState::active:
      ++app.active;
      break;
    case LeaseState::idle_in_transaction:
      ++app.idle_in_transaction;
      break;
    case LeaseState::idle_pinned:
      ++app.idle_pinned;
      break;
  }
  if (is_suspected_leak(now, c)) {
    ++app.leaks;
    if (pool) ++pool->leaks;
  }
  if (pool && lease_.xact_start != Clock::time_point{} &&
      (pool->oldest_xact == Clock::time_point{} || lease_.xact_start < pool->oldest_xact)) {
    pool->oldest_xact = lease_.xact_start;
  }
}

void ClientSession::retire_app_tally() {
  if (const auto delta = lease_.tally - reported_; !delta.empty()) {
    shared_.apps.retire(application_name_, delta);
  }
  reported_ = lease_.tally;
}

}  // namespace pgw::session
