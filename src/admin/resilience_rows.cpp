#include "admin/resilience_rows.hpp"

#include <fmt/format.h>

namespace pgw::admin {
namespace {

const pool::BackendStatus* find_backend(const Snapshot& s, const std::string& name) {
  for (const auto& backend : s.backends) {
    if (backend.name == name) return &backend;
  }
  return nullptr;
}

std::int64_t seconds_up(std::chrono::steady_clock::duration d) {
  return std::chrono::ceil<std::chrono::seconds>(d).count();
}

}  // namespace

std::vector<Column> breaker_columns() {
  return {{"breaker_state", kTextOid},
          {"breaker_last_error", kTextOid},
          {"breaker_next_probe", kInt8Oid}};
}

std::vector<Cell> breaker_cells(const Snapshot& s,
                                const std::vector<config::ServerAddress>& servers) {
  const pool::BackendStatus* backend = nullptr;
  for (const auto& server : servers) {
    const auto* found = find_backend(s, pool::backend_name(server.host, server.port));
    if (backend == nullptr) backend = found;
    if (found != nullptr && found->state != pool::BreakerState::closed) {
      backend = found;
      break;
    }
  }
  if (!backend) return {"closed", Cell{}, Cell{}};
  Cell last_error;
  if (!backend->last_error.empty()) last_error = backend->last_error;
  Cell next_probe;
  if (backend->state == pool::BreakerState::open) {
    next_probe = std::to_string(seconds_up(backend->until_probe));
  }
  return {std::string(pool::to_string(backend->state)), last_error, next_probe};
}

std::vector<Cell> no_breaker_cells() {
  return {Cell{}, Cell{}, Cell{}};
}

std::vector<Row> resilience_state_rows(const Snapshot& s) {
  std::vector<Row> rows;
  for (const auto& backend : s.backends) {
    std::string value(pool::to_string(backend.state));
    if (backend.state == pool::BreakerState::open) {
      value += fmt::format(", next probe in {} s", seconds_up(backend.until_probe));
    }
    if (backend.times_opened > 0) value += fmt::format(", opened {} times", backend.times_opened);
    if (!backend.last_error.empty()) value += ", last error: " + backend.last_error;
    rows.push_back(Row{"breaker " + backend.name, value});
  }
  const auto& h = s.health;
  rows.push_back(Row{"loop_stalls", std::to_string(h.loop_stalls)});
  rows.push_back(Row{"longest_loop_stall_ms", std::to_string(h.longest_stall_ms)});
  rows.push_back(Row{"open_files", std::to_string(h.open_files)});
  rows.push_back(Row{"open_files_limit", std::to_string(h.open_files_limit)});
  rows.push_back(Row{"accepting_connections", h.refusing_connections ? "no" : "yes"});
  rows.push_back(Row{"connections_refused", std::to_string(h.connections_refused)});
  rows.push_back(Row{"shutdown", h.shutdown});
  return rows;
}

}  // namespace pgw::admin
