// The Runtime's resilience duties, all started from the main thread: the shutdown modes
// (net/drain.hpp: what SIGTERM and SIGINT do), and the event-loop watchdog
// (net/watchdog.hpp). The open-files guard (net/overload.hpp) is consulted by accept_ready().
#include <spdlog/spdlog.h>

#include "app/runtime.hpp"
#include "session/client_session.hpp"

namespace pgw::app {

using namespace pgw::net;

namespace {

constexpr std::chrono::milliseconds kShutdownTick{100};
// After the drain window, sessions that are cut off still cancel their query and roll back
// (each bounded by 5 s, all at once): wait that long for them before exiting regardless.
constexpr std::chrono::seconds kCleanupGrace{7};
// An immediate shutdown waits only briefly for the FATALs to be written.
constexpr std::chrono::seconds kImmediateGrace{1};
constexpr std::chrono::milliseconds kWatchdogTick{250};

}  // namespace

void Runtime::begin_shutdown(ShutdownMode mode) {
  if (finishing_) return;
  const bool first = !drain_->active();
  const auto window = mode == ShutdownMode::immediate ? std::chrono::milliseconds(0)
                                                      : config_->config()->shutdown_drain_timeout;
  // New logins are told 57P03 from now on (ClientSession::startup); the listeners stay open so
  // that they are told rather than refused.
  admission_->begin_drain();
  drain_->begin(mode, Clock::now(), window);
  health_.shutdown.store(describe(mode), std::memory_order_relaxed);
  if (mode == ShutdownMode::wait_for_servers) {
    // PgBouncer's SIGINT: PAUSE (clients that want a server queue), then shut down when every
    // server is back.
    pools_->pause_database("");
  } else {
    // No client gets a server any more; those waiting for one are told 57P01 now.
    pools_->begin_drain(Err::shutting_down);
  }
  spdlog::info("shutdown: {}; window {:.0f} s (shutdown_drain_timeout)", describe(mode),
               std::chrono::duration<double>(window).count());
  // Each worker acts now rather than at its next janitor round.
  for (unsigned i = 0; i < workers_.size(); ++i) {
    workers_[i]->reactor.post([this, i] { drain_worker(i); });
  }
  if (first) asio::co_spawn(main_io_, supervise_shutdown(), asio::detached);
}

void Runtime::drain_worker(unsigned worker) {
  // On the worker's thread: its sessions are touched only here.
  std::vector<std::shared_ptr<session::ClientSession>> sessions;
  for (auto* session : sessions_->sessions(worker)) sessions.push_back(session->shared_from_this());
  const bool force = drain_->final_phase();
  const bool draining = drain_->mode() == ShutdownMode::drain;
  int leased = 0;
  for (auto& session : sessions) {
    if (force || draining) session->drain(force);
    if (session->holds_server()) ++leased;
  }
  drain_->report(worker, static_cast<int>(sessions_->sessions(worker).size()), leased);
}

asio::awaitable<void> Runtime::supervise_shutdown() {
  asio::steady_timer tick(main_io_);
  for (;;) {
    tick.expires_after(kShutdownTick);
    auto [ec] = co_await tick.async_wait(use_nothrow);
    if (ec || finishing_) co_return;
    const auto now = Clock::now();
    if (drain_->all_sessions_gone()) {
      spdlog::info("shutdown: every client session has ended");
      finish_shutdown();
      co_return;
    }
    if (!drain_->final_phase()) {
      const bool window_over = now >= drain_->deadline();
      const bool servers_back =
          drain_->mode() == ShutdownMode::wait_for_servers && drain_->no_server_leased();
      if (window_over || servers_back) {
        if (window_over) {
          spdlog::warn(
              "shutdown: shutdown_drain_timeout is over; ending the remaining sessions (running "
              "queries are cancelled, open transactions rolled back)");
        } else {
          spdlog::info("shutdown: every server connection is back; closing the clients");
        }
        drain_->end_window();
        pools_->begin_drain(Err::shutting_down);
        for (unsigned i = 0; i < workers_.size(); ++i) {
          workers_[i]->reactor.post([this, i] { drain_worker(i); });
        }
      }
    }
    const auto give_up = drain_->mode() == ShutdownMode::immediate
                             ? drain_->deadline() + kImmediateGrace
                             : drain_->deadline() + kCleanupGrace;
    if (now > give_up) {
      spdlog::warn("shutdown: sessions still ending after the grace period; exiting anyway");
      finish_shutdown();
      co_return;
    }
  }
}

void Runtime::finish_shutdown() {
  if (finishing_) return;
  finishing_ = true;
  // New connections are refused from here on; the workers drop the listeners at their next
  // turn (the descriptors are closed with the Runtime, after the workers have stopped).
  for (auto& listener : listeners_) listener->stop_listening();
  pools_->for_each([](pool::Pool& pool) { pool.close_all(true); });
  // Idle servers are closed on their owners' threads (posted just now): give those a moment.
  auto grace = std::make_shared<asio::steady_timer>(main_io_, std::chrono::milliseconds(100));
  grace->async_wait([this, grace](const asio::error_code&) {
    for (auto& worker : workers_) worker->reactor.stop();
    main_io_.stop();
  });
}

asio::awaitable<void> Runtime::watch_loops() {
  asio::steady_timer tick(main_io_);
  for (;;) {
    tick.expires_after(kWatchdogTick);
    auto [ec] = co_await tick.async_wait(use_nothrow);
    if (ec || finishing_) co_return;
    watchdog_->check(Clock::now());
    health_.loop_stalls.store(watchdog_->stalls(), std::memory_order_relaxed);
    health_.longest_stall_ms.store(
        std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_->longest()).count(),
        std::memory_order_relaxed);
  }
}

}  // namespace pgw::app
