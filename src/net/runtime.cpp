#include "net/runtime.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "session/client_session.hpp"

namespace pgw::net {

namespace {

std::unique_ptr<Acceptor> make_acceptor(asio::io_context& io, const Endpoint& endpoint, int backlog,
                                        bool reuse_port) {
  auto acceptor = std::make_unique<Acceptor>(io);
  acceptor->open(endpoint.protocol());
  if (endpoint.protocol().family() != AF_UNIX) {
    acceptor->set_option(asio::socket_base::reuse_address(true));
    if (reuse_port) {
      const int one = 1;
      ::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
  }
  acceptor->bind(endpoint);
  acceptor->listen(backlog);
  return acceptor;
}

}  // namespace

Runtime::Runtime(config::Config config, std::map<std::string, std::string> secrets)
    : config_path_(config.path) {
  const unsigned count = static_cast<unsigned>(config.effective_workers());
  std::vector<Reactor*> reactors;
  for (unsigned i = 0; i < count; ++i) {
    workers_.push_back(std::make_unique<Worker>());
    reactors.push_back(&workers_.back()->reactor);
  }
  shared_ = std::make_unique<session::Shared>(reactors);
  drain_ = std::make_unique<Drain>(count);
  watchdog_ =
      std::make_unique<Watchdog>(std::vector<const Reactor*>(reactors.begin(), reactors.end()));
  overload_ = std::make_unique<OverloadGuard>(main_io_, shared_->health);
  shared_->set_config(
      std::make_shared<const config::Config>(std::move(config)),
      std::make_shared<const std::map<std::string, std::string>>(std::move(secrets)));
  // The console's RELOAD and SHUTDOWN do exactly what SIGHUP and SIGTERM do. stop() touches
  // the acceptors, which belong to the main thread: post it there.
  shared_->reload = [this] { return reload("RELOAD"); };
  shared_->shutdown = [this] {
    spdlog::info("SHUTDOWN from the admin console");
    asio::post(main_io_, [this] { stop(); });
  };
}

Runtime::~Runtime() {
  if (!unix_socket_path_.empty()) std::filesystem::remove(unix_socket_path_);
}

void Runtime::bind_listeners() {
  const auto config = shared_->config();
  const int backlog = config->listen_backlog;
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
      std::vector<asio::ip::tcp::endpoint> endpoints;
      if (addr == "*") {
        endpoints.emplace_back(asio::ip::tcp::v4(), port);
      } else {
        std::error_code ec;
        auto endpoint = server_endpoint(addr, port, ec);
        if (ec) throw std::runtime_error("cannot resolve listen_addr " + addr);
        acceptors_.push_back(make_acceptor(main_io_, endpoint, backlog, config->so_reuseport));
        spdlog::info("listening on {}", describe(endpoint));
        continue;
      }
      for (const auto& tcp : endpoints) {
        acceptors_.push_back(make_acceptor(main_io_, Endpoint(tcp), backlog, config->so_reuseport));
        spdlog::info("listening on {}", describe(Endpoint(tcp)));
      }
    }
  }
  if (!config->unix_socket_dir.empty()) {
    unix_socket_path_ =
        config->unix_socket_dir + "/.s.PGSQL." + std::to_string(config->listen_port);
    std::filesystem::remove(unix_socket_path_);
    acceptors_.push_back(
        make_acceptor(main_io_, Endpoint(asio::local::stream_protocol::endpoint(unix_socket_path_)),
                      backlog, false));
    ::chmod(unix_socket_path_.c_str(), 0777);
    spdlog::info("listening on unix:{}", unix_socket_path_);
  }
  if (acceptors_.empty())
    throw std::runtime_error("no listen_addr and no unix_socket_dir: nothing to listen on");
}

asio::awaitable<void> Runtime::accept_loop(Acceptor& acceptor) {
  acceptor.non_blocking(true);
  for (;;) {
    auto [ec] = co_await acceptor.async_wait(Acceptor::wait_read, use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      spdlog::warn("accept failed: {}", ec.message());
      continue;
    }
    // Take every connection that is there (bounded, so a flood cannot starve signals). The
    // socket goes to the next worker, which registers it with its own reactor: the session
    // never touches another thread.
    for (int i = 0; i < 64; ++i) {
      const int fd =
          ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // Out of descriptors: the spare one lets us tell the client 53300 instead of looping.
        if ((errno == EMFILE || errno == ENFILE) &&
            overload_->refuse_one_at_limit(acceptor.native_handle())) {
          continue;
        }
        spdlog::warn("accept failed: {}", std::strerror(errno));
        // Out of file descriptors and similar: back off instead of spinning.
        asio::steady_timer pause(main_io_, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_nothrow);
        break;
      }
      if (overload_->should_refuse(fd)) {  // near RLIMIT_NOFILE: 53300 (net/overload.hpp)
        overload_->refuse(fd);
        continue;
      }
      const unsigned worker = next_worker_++ % workers_.size();
      auto& reactor = workers_[worker]->reactor;
      reactor.post([this, &reactor, worker, fd] {
        // run() starts at once and owns the session (net/task.hpp).
        auto session = std::make_shared<session::ClientSession>(*shared_, reactor, worker, fd);
        session->run(session);
      });
    }
  }
}

asio::awaitable<void> Runtime::janitor(unsigned worker) {
  // One janitor per worker: it only touches that worker's sessions, so it needs no locks.
  Timer timer(workers_[worker]->reactor);
  for (;;) {
    auto [ec] = co_await timer.async_wait_for(std::chrono::milliseconds(200), use_nothrow);
    if (ec) co_return;
    activity::Scope scope("running the janitor (timeouts, pool upkeep)");
    const auto now = Clock::now();
    if (drain_->active()) drain_worker(worker);  // shutdown: end what may end (net/drain.hpp)
    // Copy first: a timeout may end a session, which removes it from the set.
    std::vector<std::shared_ptr<session::ClientSession>> sessions;
    for (auto* session : shared_->sessions(worker)) sessions.push_back(session->shared_from_this());
    const auto config = shared_->config();
    for (auto& session : sessions) {
      session->check_timeouts(now, *config);
      session->check_leak(now, *config);  // leak guard: leak_warn_after
    }
    session::sample_apps(*shared_, worker, now, *config);  // SHOW APPS, growth alarm, pool health
    if (worker == 0) {
      shared_->pools.maintain(now);
      shared_->pools.roll_stats(now, config->stats_period);
    }
  }
}

std::string Runtime::reload(std::string_view trigger) {
  // SIGHUP (main thread) and the console's RELOAD / SET (worker threads) serialize here.
  std::lock_guard lock(shared_->config_change_mutex);
  spdlog::info("got {}, re-reading {}", trigger, config_path_);
  try {
    std::vector<config::Warning> warnings;
    auto config = config::load_file(config_path_, warnings);
    for (const auto& warning : warnings) spdlog::warn("{}", warning.text);
    std::map<std::string, std::string> secrets;
    if (!config.auth_file.empty()) secrets = config::load_auth_file(config.auth_file);
    shared_->apply_config(
        std::make_shared<const config::Config>(std::move(config)),
        std::make_shared<const std::map<std::string, std::string>>(std::move(secrets)));
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
        shared_->pools.pause_database("");
      } else {
        shared_->pools.resume_database("");
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
  for (unsigned i = 0; i < workers_.size(); ++i) {
    workers_[i]->reactor.post(
        [this, i] { asio::co_spawn(workers_[i]->io, janitor(i), asio::detached); });
  }
  for (auto& acceptor : acceptors_)
    asio::co_spawn(main_io_, accept_loop(*acceptor), asio::detached);
  asio::co_spawn(main_io_, signals(), asio::detached);
  overload_->start();
  asio::co_spawn(main_io_, watch_loops(), asio::detached);
  for (auto& worker : workers_) {
    worker->thread = std::thread([&reactor = worker->reactor] { reactor.run(); });
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

}  // namespace pgw::net
