// Reclaim under pressure (docs/leak-guard.md#reclaim-under-pressure): while clients wait for a
// server of a pool, the leases of that pool idle in a transaction past their policy's
// reclaim_under_pressure_after are ended, oldest idle first, at most one per waiting client;
// each server goes back to the pool (rolled back) and from there to the oldest waiter.
#pragma once

#include <chrono>
#include <memory>
#include <span>

#include "config/config.hpp"

namespace pgw::session {

class ClientSession;

// One janitor round on one worker, over that worker's sessions.
void reclaim_under_pressure(std::span<const std::shared_ptr<ClientSession>> sessions,
                            std::chrono::steady_clock::time_point now,
                            const config::Config& current);

}  // namespace pgw::session
