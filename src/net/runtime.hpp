// The process: worker threads with one event loop each (net::Reactor), listeners and signals on
// the main thread, the janitors and configuration reloads. Clients are spread over workers at
// accept time and stay there.
#pragma once

#include <asio.hpp>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "net/drain.hpp"
#include "net/overload.hpp"
#include "net/reactor.hpp"
#include "net/watchdog.hpp"
#include "session/shared.hpp"

namespace pgw::net {

class Runtime {
 public:
  Runtime(config::Config config, std::map<std::string, std::string> secrets);
  ~Runtime();

  // Binds the listeners (throws std::system_error on failure), then runs until a stop signal.
  // Returns the process exit code.
  int run();

 private:
  struct Worker {
    asio::io_context io{1};  // the handler queue and coroutine executor of one thread
    Reactor reactor{io};     // that thread's event loop (runs io)
    std::thread thread;
  };

  void bind_listeners();
  asio::awaitable<void> accept_loop(Acceptor& acceptor);
  asio::awaitable<void> janitor(unsigned worker);
  asio::awaitable<void> signals();
  // Re-reads the configuration and auth_file (SIGHUP, console RELOAD): "" or the error.
  std::string reload(std::string_view trigger);
  void stop();

  // Resilience (runtime_resilience.cpp): shutdown modes (net/drain.hpp), the event-loop
  // watchdog and the open-files guard, all driven from the main thread.
  void begin_shutdown(ShutdownMode mode);
  asio::awaitable<void> supervise_shutdown();
  void finish_shutdown();
  // A worker's share of the drain, on that worker (janitor round, and once at the start).
  void drain_worker(unsigned worker);
  asio::awaitable<void> watch_loops();

  std::string config_path_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<session::Shared> shared_;
  asio::io_context main_io_{1};  // signals and accepting
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::string unix_socket_path_;
  unsigned next_worker_ = 0;
  int exit_code_ = 0;
  std::unique_ptr<Drain> drain_;
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<OverloadGuard> overload_;
  bool finishing_ = false;  // main thread: finish_shutdown() has run
};

}  // namespace pgw::net
