#include "app/runtime.hpp"

#include "util/logging.hpp"

#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "admin/console.hpp"
#include "session/client_session.hpp"
#include "session/reclaim.hpp"

namespace pgw::app {

using namespace pgw::net;

namespace {

// A readiness event starts at most one session, and takes at most this many connections in
// all (the others are refused for want of descriptors, or were aborted by their client). The
// listener is level-triggered, so the loop's next turn comes back for the rest: a flood of
// connections cannot hold up the traffic of the clients already served, and a login on a
// quiet machine costs no accept4() that fails with EAGAIN (which a batch would end with).
constexpr int kAcceptTries = 16;
constexpr std::chrono::milliseconds kAcceptPause{100};

// Memory after a burst of logins (docs/benchmarks.md, "Login storm"). What a login allocates
// for a moment (the session of a client that is refused, the login and error-writer coroutine
// frames, the startup and SCRAM messages) is freed in the worker's malloc arena between the
// sessions that stay, and glibc returns only the top of an arena by itself: 4,000 logins with
// 300 in flight left 4.8 MB of free chunks resident around 1,000 clients. Once a worker has seen
// this many sessions come or go and then none for kChurnQuiet, its janitor hands the free pages
// back (malloc_trim). Never while the logins go on: the next ones would fault the pages in again.
constexpr std::uint64_t kChurnWorthTrimming = 64;
constexpr std::chrono::seconds kChurnQuiet{1};

// A worker's sessions coming and going, as its janitor sees them each round: the sessions
// started on it (counted at start) and the ones it lists; the difference is those that ended.
class ChurnWatch {
 public:
  // True when the churn since the last trim is worth a trim and has been quiet for kChurnQuiet.
  // `trims` is the process's count of trims: one that ran after this worker's last churn
  // covered its arena too.
  bool due(std::uint64_t started, std::size_t listed, std::uint64_t trims, Clock::time_point now) {
    const std::uint64_t new_sessions = started - started_;
    const std::uint64_t before = listed_ + new_sessions;
    const std::uint64_t ended = before > listed ? before - listed : 0;
    started_ = started;
    listed_ = listed;
    if (new_sessions + ended > 0) {
      churned_ += new_sessions + ended;
      last_change_ = now;
      trims_seen_ = trims;
    } else if (trims != trims_seen_) {
      churned_ = 0;
      trims_seen_ = trims;
    }
    return churned_ >= kChurnWorthTrimming && now - last_change_ >= kChurnQuiet;
  }
  std::uint64_t churned() const { return churned_; }
  void trimmed(std::uint64_t trims) {
    churned_ = 0;
    trims_seen_ = trims;
  }

 private:
  std::uint64_t started_ = 0;
  std::uint64_t listed_ = 0;
  std::uint64_t churned_ = 0;  // sessions started or ended since the last trim
  std::uint64_t trims_seen_ = 0;
  Clock::time_point last_change_{};
};

// The process's resident set in KiB (/proc/self/statm), for the debug log line of a trim.
long resident_kib() {
  long pages_total = 0;
  long pages_resident = 0;
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (statm == nullptr) return -1;
  const bool read = std::fscanf(statm, "%ld %ld", &pages_total, &pages_resident) == 2;
  std::fclose(statm);
  return read ? pages_resident * (::sysconf(_SC_PAGESIZE) / 1024) : -1;
}

}  // namespace

Runtime::Runtime(config::Config config, config::Secrets secrets) : config_path_(config.path) {
  const unsigned count = static_cast<unsigned>(config.effective_workers());
  std::vector<Reactor*> reactors;
  for (unsigned i = 0; i < count; ++i) {
    workers_.push_back(std::make_unique<Worker>(config.io_uring));
    reactors.push_back(&workers_.back()->reactor);
  }
  config_ = std::make_unique<config::ConfigStore>(
      std::make_shared<const config::Config>(std::move(config)),
      std::make_shared<const config::Secrets>(std::move(secrets)));
  // A TLS setting that cannot be acted on stops the start, as a bad key does.
  if (auto error = tls_.update(*config_->config()); !error.empty())
    throw std::runtime_error("TLS: " + error);
  sessions_ = std::make_unique<session::SessionRegistry>(reactors);
  admission_ = std::make_unique<session::ClientAdmission>(count);
  pools_ = std::make_unique<pool::PoolManager>(reactors, &tls_);
  apps_ = std::make_unique<session::AppMonitor>(count);
  // The console's RELOAD and SHUTDOWN do exactly what SIGHUP and SIGTERM do. stop() touches
  // the acceptors, which belong to the main thread: post it there.
  control_ = std::make_unique<ProcessControl>(
      *config_, tls_, *sessions_, *admission_, *pools_, leaks_, *apps_, health_,
      [this] { return reload("RELOAD"); },
      [this] {
        spdlog::info("SHUTDOWN from the admin console");
        asio::post(main_io_, [this] { stop(); });
      });
  console_ = std::make_unique<admin::ConsoleServer>(*control_);
  services_.reset(new session::SessionServices{*config_, *sessions_, *admission_, cancels_, *pools_,
                                               scram_secrets_, leaks_, *apps_, *console_, tls_,
                                               ldap_});
  drain_ = std::make_unique<Drain>(count);
  watchdog_ =
      std::make_unique<Watchdog>(std::vector<const Reactor*>(reactors.begin(), reactors.end()));
  overload_ = std::make_unique<OverloadGuard>(main_io_, health_);
}

Runtime::~Runtime() {
  // The worker threads have ended (run() joins them). Teardown goes from the top down: what is
  // still queued on a worker (destroyed unrun), then the services, with the pools and their
  // idle servers (members, in reverse order), then the reactors and the listeners. The LDAP
  // threads end first: an outcome is posted to a worker's handler queue, which goes here.
  ldap_.stop();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) {
      worker->reactor.stop();
      worker->thread.join();
    }
    worker->discard_queued();
  }
  if (!unix_socket_path_.empty()) std::filesystem::remove(unix_socket_path_);
}

namespace {

void apply_unix_socket_access(const config::Config& config, const std::string& path) {
  // unix_socket_mode (octal, PgBouncer's default 0777) and unix_socket_group (a group name):
  // who may connect over the socket.
  char* end = nullptr;
  const long mode = std::strtol(config.unix_socket_mode.c_str(), &end, 8);
  if (config.unix_socket_mode.empty() || *end != '\0' || mode < 0 || mode > 07777) {
    throw std::runtime_error("unix_socket_mode: '" + config.unix_socket_mode +
                             "' is not an octal file mode (e.g. 0777, 0770)");
  }
  if (!config.unix_socket_group.empty()) {
    group entry{};
    group* found = nullptr;
    std::array<char, 16384> buffer{};
    if (::getgrnam_r(config.unix_socket_group.c_str(), &entry, buffer.data(), buffer.size(),
                     &found) != 0 ||
        found == nullptr) {
      throw std::runtime_error("unix_socket_group: no group named '" + config.unix_socket_group +
                               "'");
    }
    if (::chown(path.c_str(), static_cast<uid_t>(-1), found->gr_gid) != 0) {
      throw std::runtime_error("unix_socket_group: cannot give " + path + " to group '" +
                               config.unix_socket_group + "': " + std::strerror(errno));
    }
  }
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    throw std::runtime_error("unix_socket_mode: cannot chmod " + path + ": " +
                             std::strerror(errno));
  }
}

}  // namespace

void Runtime::bind_listeners() {
  const auto config = config_->config();
  const int backlog = config->listen_backlog;
  auto listen_tcp = [&](const Endpoint& endpoint) {
    listeners_.push_back(
        Listener::open(endpoint, backlog, config->so_reuseport, config->tcp_defer_accept));
    spdlog::info("listening on {}", listeners_.back()->name());
  };
  if (!config->listen_addr.empty()) {
    std::string list = config->listen_addr;
    std::size_t start = 0;
    while (start <= list.size()) {
      auto end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      std::string addr = list.substr(start, end - start);
      addr.erase(0, addr.find_first_not_of(" \t"));
      addr.erase(addr.find_last_not_of(" \t") + 1);
      start = end + 1;
      if (addr.empty()) continue;
      const auto port = static_cast<unsigned short>(config->listen_port);
      if (addr == "*") {
        // Every IPv4 and every IPv6 address. A machine without IPv6 keeps the IPv4 one.
        listen_tcp(Endpoint(asio::ip::tcp::endpoint(asio::ip::tcp::v4(), port)));
        try {
          listen_tcp(Endpoint(asio::ip::tcp::endpoint(asio::ip::tcp::v6(), port)));
        } catch (const std::exception& e) {
          spdlog::warn("listen_addr = *: no IPv6 listener ({}); IPv4 only", e.what());
        }
        continue;
      }
      std::error_code ec;
      auto endpoint = server_endpoint(addr, port, ec);
      if (ec) throw std::runtime_error("cannot resolve listen_addr " + addr);
      listen_tcp(endpoint);
    }
  }
  if (!config->unix_socket_dir.empty()) {
    unix_socket_path_ =
        config->unix_socket_dir + "/.s.PGSQL." + std::to_string(config->listen_port);
    std::filesystem::remove(unix_socket_path_);
    listeners_.push_back(Listener::open(
        Endpoint(asio::local::stream_protocol::endpoint(unix_socket_path_)), backlog, false));
    apply_unix_socket_access(*config, unix_socket_path_);
    spdlog::info("listening on unix:{}", listeners_.back()->name());
  }
  if (listeners_.empty())
    throw std::runtime_error("no listen_addr and no unix_socket_dir: nothing to listen on");
}

void Runtime::accept_ready(Accepting& accepting) {
  const unsigned worker = accepting.worker;
  Listener& listener = *accepting.listener;
  auto& reactor = workers_[worker]->reactor;
  if (listener.closed()) {  // shutdown: stop_listening() woke every worker to drop it
    reactor.unwatch_listener(listener.fd());
    accepting.in_epoll = false;
    return;
  }
  activity::Scope scope("accepting connections");
  for (int i = 0; i < kAcceptTries; ++i) {
    // The peer's address comes with the connection: no getpeername() (or getsockname() to
    // tell TCP from a Unix socket) per login.
    sockaddr_storage peer{};
    socklen_t peer_size = sizeof peer;
    const int fd = ::accept4(listener.fd(), reinterpret_cast<sockaddr*>(&peer), &peer_size,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      // Another worker took it, or the queue is empty.
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors: the spare one lets us tell the client 53300 instead of looping.
      if ((errno == EMFILE || errno == ENFILE) && overload_->refuse_one_at_limit(listener.fd())) {
        continue;
      }
      spdlog::warn("accept failed on {}: {}", listener.name(), std::strerror(errno));
      // The socket is level-triggered: stop watching it for a moment instead of spinning.
      reactor.unwatch_listener(listener.fd());
      accepting.in_epoll = false;
      accepting.pause.async_wait_for(
          kAcceptPause, asio::bind_executor(reactor.io(), [this, worker](std::error_code ec) {
            if (!ec) sync_listeners(worker);
          }));
      return;
    }
    if (overload_->should_refuse(fd)) {  // near RLIMIT_NOFILE: 53300 (net/overload.hpp)
      overload_->refuse(reactor, fd);
      continue;
    }
    const Endpoint peer_endpoint = endpoint_of(peer, peer_size);
    const bool first_packet_waiting = listener.defers_accept();
    change_accepting(Direction::grow);
    const unsigned serving =
        admission_->place(worker, accepting_workers_.load(std::memory_order_relaxed));
    if (serving == worker) {
      start_session(serving, fd, peer_endpoint, first_packet_waiting);
    } else {
      workers_[serving]->reactor.post([this, serving, fd, peer_endpoint, first_packet_waiting] {
        start_session(serving, fd, peer_endpoint, first_packet_waiting);
      });
    }
    return;
  }
}

void Runtime::change_accepting(Direction direction) {
  const bool grow = direction == Direction::grow;
  const int sessions = admission_->count();
  // Shrinking waits until the sessions are half a step below the threshold: clients coming and
  // going around it do not make a worker start and stop watching each time.
  const unsigned wanted = admission_->workers_for(
      grow ? sessions : sessions + session::ClientAdmission::kClientsPerWorker / 2);
  unsigned have = accepting_workers_.load(std::memory_order_relaxed);
  // One way only: a grow at accept and a shrink in the janitor never undo each other.
  while (grow ? have < wanted : have > wanted) {
    const unsigned next = grow ? have + 1 : have - 1;
    if (!accepting_workers_.compare_exchange_weak(have, next, std::memory_order_relaxed)) continue;
    const unsigned worker = grow ? have : next;  // the one that joins or leaves
    spdlog::info("{} client sessions: worker {} {}", sessions, worker,
                 grow ? "takes new clients too" : "takes no new clients");
    workers_[worker]->reactor.post([this, worker] { sync_listeners(worker); });
    have = next;
  }
}

void Runtime::sync_listeners(unsigned worker) {
  auto& reactor = workers_[worker]->reactor;
  const bool wanted = worker < accepting_workers_.load(std::memory_order_relaxed);
  for (auto& accepting : workers_[worker]->accepting) {
    if (accepting->pause.pending()) continue;  // after an accept failure: the timer decides
    const bool watch = wanted && !accepting->listener->closed();
    if (watch && !accepting->in_epoll)
      reactor.watch_listener(accepting->listener->fd(), *accepting);
    if (!watch && accepting->in_epoll) reactor.unwatch_listener(accepting->listener->fd());
    accepting->in_epoll = watch;
  }
}

void Runtime::start_session(unsigned worker, int fd, const Endpoint& peer,
                            bool first_packet_waiting) {
  // run() starts at once and owns the session (net/task.hpp); the session registers the
  // socket with this worker's reactor and never leaves it.
  ++workers_[worker]->sessions_started;
  auto session = std::make_shared<session::ClientSession>(*services_, workers_[worker]->reactor,
                                                          worker, fd, peer, first_packet_waiting);
  session->run(session);
}

asio::awaitable<void> Runtime::janitor(unsigned worker) {
  // One janitor per worker: it only touches that worker's sessions, so it needs no locks.
  Timer timer(workers_[worker]->reactor);
  ChurnWatch churn;
  for (;;) {
    auto [ec] = co_await timer.async_wait_for(std::chrono::milliseconds(200), use_nothrow);
    if (ec) co_return;
    activity::Scope scope("running the janitor (timeouts, pool upkeep)");
    const auto now = Clock::now();
    if (drain_->active()) drain_worker(worker);  // shutdown: end what may end (net/drain.hpp)
    // Copy first: a timeout may end a session, which removes it from the set.
    std::vector<std::shared_ptr<session::ClientSession>> sessions;
    for (auto* session : sessions_->sessions(worker))
      sessions.push_back(session->shared_from_this());
    if (churn.due(workers_[worker]->sessions_started, sessions.size(),
                  heap_trims_.load(std::memory_order_relaxed), now)) {
      return_freed_memory(worker, churn.churned());
      // The trim posted (or one already on its way) covers this worker's churn.
      churn.trimmed(heap_trims_.load(std::memory_order_relaxed) + 1);
    }
    const auto config = config_->config();
    // Each session's timeouts, and the leak guard's ladder for those holding a server.
    for (auto& session : sessions) session->check_timeouts(now, *config);
    // Leases idle in a transaction that waiting clients need (reclaim_under_pressure_after).
    session::reclaim_under_pressure(sessions, now, *config);
    session::sample_apps(*services_, worker, now, *config);  // SHOW APPS, growth alarm, pool health
    if (worker == 0) {
      change_accepting(Direction::shrink);
      pools_->maintain(now);
      pools_->roll_stats(now, config->stats_period);
    }
  }
}

void Runtime::return_freed_memory(unsigned worker, std::uint64_t churned) {
#if defined(__GLIBC__)
  // On the main thread: a trim walks every arena and takes a few milliseconds for a few
  // megabytes, which a worker's clients would wait for. The workers' data path does not call
  // malloc per message (its buffers come from per-worker free lists), so it does not wait for
  // the arena locks the trim takes; a login or a disconnect might, while its arena is trimmed.
  if (trim_posted_.exchange(true, std::memory_order_relaxed)) return;  // one is on its way
  asio::post(main_io_, [this, worker, churned] {
    activity::Scope scope("returning freed memory to the kernel (malloc_trim)");
    const bool logged = spdlog::should_log(spdlog::level::debug);
    const long before_kib = logged ? resident_kib() : 0;
    const auto started = Clock::now();
    // Whole free pages only (madvise): what the sessions still use stays where it is.
    ::malloc_trim(0);
    heap_trims_.fetch_add(1, std::memory_order_relaxed);
    trim_posted_.store(false, std::memory_order_relaxed);
    if (logged) {
      const auto took =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
      spdlog::debug("worker {}: {} sessions came or went; malloc_trim took {} us, RSS {} -> {} KiB",
                    worker, churned, took, before_kib, resident_kib());
    }
  });
#else
  (void)worker;
  (void)churned;
#endif
}

void Runtime::run_worker(unsigned worker) {
  auto& reactor = workers_[worker]->reactor;
  reactor.run();
  // Shutdown: the clients have gone (or are cut off now), the idle servers closed. What is
  // left, a login on its way, a cancel being forwarded, the janitor's timer, ends here.
  const bool settled = reactor.settle([this, worker] {
    std::vector<std::shared_ptr<session::ClientSession>> left;
    for (auto* session : sessions_->sessions(worker)) left.push_back(session->shared_from_this());
    for (auto& session : left) session->drain(/*force=*/true);
  });
  if (!settled) spdlog::warn("worker {}: work still pending at exit", worker);
}

std::string Runtime::reload(std::string_view trigger) {
  // SIGHUP (main thread) and the console's RELOAD / SET (worker threads) serialize here.
  std::lock_guard lock(config_->change_mutex());
  spdlog::info("got {}, re-reading {}", trigger, config_path_);
  try {
    std::vector<config::Warning> warnings;
    auto config = config::load_file(config_path_, warnings);
    for (auto& warning : config::keep_restart_values(*config_->config(), config)) {
      warnings.push_back(std::move(warning));
    }
    for (const auto& warning : warnings) spdlog::warn("{}", warning.text);
    config::Secrets secrets;
    if (!config.auth_file.empty()) secrets = config::load_auth_file(config.auth_file);
    auto installed = std::make_shared<const config::Config>(std::move(config));
    auto installed_secrets = std::make_shared<const config::Secrets>(std::move(secrets));
    config_->install(installed, installed_secrets);
    set_config_debug(installed->verbose);
    // New certificates for new connections; a context that does not build keeps the old one
    // (the rest of the configuration applies: refusing all of it for a certificate file being
    // rotated would be worse).
    if (auto error = tls_.update(*installed); !error.empty()) spdlog::error("TLS: {}", error);
    pools_->apply(*installed, *installed_secrets);
    spdlog::info("configuration reloaded");
    return {};
  } catch (const std::exception& e) {
    spdlog::error("reload failed, keeping the old configuration: {}", e.what());
    return e.what();
  }
}

asio::awaitable<void> Runtime::signals() {
  // PgBouncer's signals (docs/operations.md): any of them left to its default action would
  // end the process on the spot.
  asio::signal_set set(main_io_, SIGINT, SIGTERM, SIGHUP);
  set.add(SIGQUIT);
  set.add(SIGUSR1);
  set.add(SIGUSR2);
  for (;;) {
    auto [ec, signal] = co_await set.async_wait(use_nothrow);
    if (ec) co_return;
    if (signal == SIGHUP) {
      reload("SIGHUP");
      continue;
    }
    if (signal == SIGUSR1 || signal == SIGUSR2) {
      const bool pause = signal == SIGUSR1;
      spdlog::info("got {}: {} every database", pause ? "SIGUSR1" : "SIGUSR2",
                   pause ? "PAUSE" : "RESUME");
      if (pause) {
        pools_->pause_database("");
      } else {
        pools_->resume_database("");
      }
      continue;
    }
    // SIGTERM drains, SIGINT waits for the servers, SIGQUIT is immediate (PgBouncer's
    // meanings); a second SIGTERM or SIGINT during a shutdown makes it immediate.
    const auto mode = signal == SIGQUIT || drain_->active() ? ShutdownMode::immediate
                      : signal == SIGINT                    ? ShutdownMode::wait_for_servers
                                                            : ShutdownMode::drain;
    const char* name = signal == SIGINT ? "SIGINT" : signal == SIGQUIT ? "SIGQUIT" : "SIGTERM";
    spdlog::info("got {}: {}", name, describe(mode));
    begin_shutdown(mode);
  }
}

void Runtime::stop() {
  // SHUTDOWN on the console does what SIGTERM does.
  begin_shutdown(drain_->active() ? ShutdownMode::immediate : ShutdownMode::drain);
}

int Runtime::run() {
  bind_listeners();
  // Pools that exist before any client (forced users with min_pool_size).
  pools_->apply(*config_->config(), *config_->secrets());
  for (unsigned i = 0; i < workers_.size(); ++i) {
    workers_[i]->reactor.post(
        [this, i] { asio::co_spawn(*workers_[i]->io, janitor(i), asio::detached); });
  }
  // The workers accept from the listeners themselves (net/listener.hpp says why); worker 0
  // starts, the others join as clients come (change_accepting()). Registered before the threads
  // start, so no locking is needed.
  for (unsigned i = 0; i < workers_.size(); ++i) {
    for (auto& listener : listeners_) {
      workers_[i]->accepting.emplace_back(
          std::make_unique<Accepting>(*this, i, *listener, workers_[i]->reactor));
    }
    sync_listeners(i);
  }
  asio::co_spawn(main_io_, signals(), asio::detached);
  overload_->start();
  asio::co_spawn(main_io_, watch_loops(), asio::detached);
  for (unsigned i = 0; i < workers_.size(); ++i) {
    workers_[i]->thread = std::thread([this, i] { run_worker(i); });
  }
  spdlog::info("pgwarden {} started with {} worker threads", PGWARDEN_VERSION, workers_.size());
  main_io_.run();
  for (auto& worker : workers_) {
    worker->reactor.stop();
    if (worker->thread.joinable()) worker->thread.join();
  }
  spdlog::info("pgwarden stopped");
  return exit_code_;
}

}  // namespace pgw::app
