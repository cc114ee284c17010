#include "session/lease_guard.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace pgw::session {
namespace {

double seconds(LeaseGuard::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::int64_t milliseconds(LeaseGuard::Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// The union of the tags of all the lease's statements.
std::string lease_tags(const Lease& lease) {
  return format_tags(lease.tag_comments.tags());
}

}  // namespace

LeaseFacts LeaseGuard::facts(LeaseState state, bool session_mode,
                             Clock::time_point query_start) const {
  LeaseFacts out;
  out.state = state;
  out.session_mode = session_mode;
  out.warned = lease_.warned;
  out.query_start = query_start;
  out.idle_since = lease_.idle_from();
  out.xact_start = lease_.xact_start;
  if (query_start != Clock::time_point{} && cancelled_query_start_ == query_start) {
    out.query_cancel_sent = cancel_sent_at_;
  }
  return out;
}

LeaseInfo LeaseGuard::info(const ClientIdentity& who, LeaseState state, bool session_mode,
                           Clock::time_point query_start) const {
  LeaseInfo info;
  info.client_id = who.id;
  info.application_name = who.application_name;
  info.user = who.user;
  info.database = who.database;
  info.addr = who.addr;
  info.port = who.port;
  info.backend_pid = lease_.backend_pid;
  info.state = state;
  info.start = lease_.start;
  info.xact_start = lease_.xact_start;
  info.idle_since = lease_.idle_from();
  info.query_start = query_start;
  info.statements = lease_.statements;
  info.first_query = std::string(lease_.first.view());
  info.last_query = std::string(lease_.last.view());
  info.tags = lease_tags(lease_);
  info.warned = lease_.warned;
  info.reclaimed = lease_.reclaimed;
  info.session_mode = session_mode;
  info.query_cancel_sent = facts(state, session_mode, query_start).query_cancel_sent;
  return info;
}

void LeaseGuard::warn(Clock::time_point now, const LeaseInfo& info, const LeasePolicy& policy,
                      const ClientIdentity& who, LeakBook& leaks) {
  lease_.warned = true;
  lease_.warned_at = now;
  const auto threshold = policy.leak_warn_after;
  const auto count = leaks.note_suspected(who.application_name);
  const std::string xact = info.xact_start == Clock::time_point{}
                               ? "-"
                               : fmt::format("{:.1f}s", seconds(now - info.xact_start));
  spdlog::warn(
      "C-{}: leak suspected: app='{}' user={} db={} client={}:{} backend_pid={} state={} "
      "lease_age={:.1f}s xact_age={} idle={:.1f}s statements={} first_query='{}' tags='{}' "
      "(leak_warn_after={:g}s, suspected leaks of this app: {})",
      who.id, printable(who.application_name), who.user, who.database, who.addr, who.port,
      info.backend_pid, to_string(info.state), seconds(now - info.start), xact,
      seconds(now - info.idle_since), info.statements, printable(info.first_query),
      printable(info.tags), seconds(threshold), count);
  leaks.events.push(
      LeakEvent{std::chrono::system_clock::now(), who.id, who.application_name, "leak_warning",
                fmt::format("{} for {:.1f}s (leak_warn_after {:g}s)", to_string(info.state),
                            seconds(now - info.idle_since), seconds(threshold)),
                milliseconds(now - info.start), info.first_query});
}

void LeaseGuard::end(std::string_view how, const ClientIdentity& who, LeakBook& leaks) {
  if (lease_.held && lease_.warned) {
    const auto now = Clock::now();
    const auto age = now - lease_.start;
    spdlog::info(
        "C-{}: leak resolved after {:.1f}s ({}): app='{}' user={} db={} client={}:{} "
        "backend_pid={} lease_age={:.1f}s statements={} first_query='{}'",
        who.id, seconds(now - lease_.warned_at), printable(how), printable(who.application_name),
        who.user, who.database, who.addr, who.port, lease_.backend_pid, seconds(age),
        lease_.statements, printable(lease_.first.view()));
    leaks.note_resolved(who.application_name);
    leaks.events.push(
        LeakEvent{std::chrono::system_clock::now(), who.id, who.application_name, "leak_resolved",
                  fmt::format("{} after {:.1f}s", how, seconds(now - lease_.warned_at)),
                  milliseconds(age), std::string(lease_.first.view())});
  }
  lease_.reset();
}

void LeaseGuard::note_forced_action(std::string_view action, std::string reason, bool server_held,
                                    const ClientIdentity& who, LeakBook& leaks) const {
  leaks.note_action(who.application_name);
  const bool leased = lease_.held && server_held;
  leaks.events.push(LeakEvent{std::chrono::system_clock::now(), who.id, who.application_name,
                              std::string(action), std::move(reason),
                              leased ? milliseconds(Clock::now() - lease_.start) : 0,
                              leased ? std::string(lease_.first.view()) : std::string()});
}

}  // namespace pgw::session
