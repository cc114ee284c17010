// What the console shows of resilience (docs/operations.md): the circuit breaker of each
// database's backend as extra SHOW DATABASES columns (after PgBouncer's, so tools that read
// PgBouncer's columns by position keep working), and SHOW STATE rows for the breakers, the
// event-loop watchdog, open files and the shutdown.
#pragma once

#include <string>
#include <vector>

#include "admin/tables.hpp"

namespace pgw::admin {

// breaker_state, breaker_last_error, breaker_next_probe (seconds; NULL unless open).
std::vector<Column> breaker_columns();
// The cells of those columns for a database whose backends are `servers` (one per host and
// port): the first host's whose breaker is not closed, else the first host's. A backend no pool
// has connected to yet is "closed". SHOW STATE lists every backend.
std::vector<Cell> breaker_cells(const Snapshot& snapshot,
                                const std::vector<config::ServerAddress>& servers);
// For rows that have no backend (the console's own "pgbouncer" database).
std::vector<Cell> no_breaker_cells();

std::vector<Row> resilience_state_rows(const Snapshot& snapshot);

}  // namespace pgw::admin
