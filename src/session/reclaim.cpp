#include "session/reclaim.hpp"

#include <algorithm>
#include <tuple>
#include <vector>

#include "session/client_session.hpp"

namespace pgw::session {

void reclaim_under_pressure(std::span<const std::shared_ptr<ClientSession>> sessions,
                            std::chrono::steady_clock::time_point now,
                            const config::Config& current) {
  struct Candidate {
    pool::Pool* pool;
    std::chrono::steady_clock::time_point idle_since;
    ClientSession* session;
  };
  std::vector<Candidate> candidates;
  for (const auto& session : sessions) {
    if (auto r = session->reclaimable(now, current)) {
      candidates.push_back({r->pool, r->idle_since, session.get()});
    }
  }
  if (candidates.empty()) return;
  // By pool, and in each pool the longest idle first.
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.pool, a.idle_since) < std::tie(b.pool, b.idle_since);
  });
  for (auto group = candidates.begin(); group != candidates.end();) {
    const auto end =
        std::find_if(group, candidates.end(),
                     [pool = group->pool](const Candidate& c) { return c.pool != pool; });
    // The pool counts what it grants until the servers come back, so another worker's
    // janitor (or the next round) does not reclaim for the same waiting clients again.
    const auto grant = group->pool->grant_reclaims(static_cast<int>(end - group));
    for (int i = 0; i < grant.granted; ++i) group[i].session->reclaim(grant.waiting, now, current);
    group = end;
  }
}

}  // namespace pgw::session
