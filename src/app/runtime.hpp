// The process: worker threads with one event loop each (net::Reactor), which accept from the
// shared listeners and serve the clients; signals, the open-files guard and shutdown on the
// main thread; the janitors and configuration reloads. A client stays on the worker that
// serves it from its first message.
#pragma once

#include <asio.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "admin/console.hpp"
#include "app/control.hpp"
#include "auth/ldap.hpp"
#include "auth/secret_cache.hpp"
#include "config/config.hpp"
#include "config/config_store.hpp"
#include "net/drain.hpp"
#include "net/listener.hpp"
#include "net/overload.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "net/watchdog.hpp"
#include "pool/pool.hpp"
#include "session/admission.hpp"
#include "session/apps.hpp"
#include "session/cancel_registry.hpp"
#include "session/lease.hpp"
#include "session/services.hpp"
#include "session/session_registry.hpp"
#include "util/health.hpp"

namespace pgw::app {

class Runtime {
 public:
  Runtime(config::Config config, config::Secrets secrets);
  ~Runtime();

  // Binds the listeners (throws std::system_error on failure), then runs until a stop signal.
  // Returns the process exit code.
  int run();

 private:
  // One worker's watch on one listener: what the reactor calls when connections wait.
  struct Accepting final : net::AcceptHandler {
    Accepting(Runtime& owner, unsigned on_worker, net::Listener& watched, net::Reactor& reactor)
        : runtime(owner), worker(on_worker), listener(&watched), pause(reactor) {}
    void on_acceptable() override { runtime.accept_ready(*this); }
    Runtime& runtime;
    unsigned worker;
    net::Listener* listener;
    net::Timer pause;       // accept() failed for want of resources: wait before watching again
    bool in_epoll = false;  // in the worker's epoll set (touched on that worker's thread only)
  };
  struct Worker {
    explicit Worker(bool batch_io)
        : io(std::make_unique<asio::io_context>(1)), reactor(*io, batch_io) {}
    // The handler queue and coroutine executor of one thread. Destroyed first at teardown
    // (discard_queued()), while the reactor and the services its handlers refer to are there.
    std::unique_ptr<asio::io_context> io;
    net::Reactor reactor;  // that thread's event loop (runs io)
    std::vector<std::unique_ptr<Accepting>> accepting;
    std::thread thread;
    // Sessions started on this worker so far (touched on its thread only): with the number it
    // lists, how its janitor sees logins come and go (return_freed_memory()).
    std::uint64_t sessions_started = 0;
    // Handlers still queued once the thread has ended (a hand-off another worker posted while
    // this one settled) are destroyed unrun.
    void discard_queued() {
      accepting.clear();
      io.reset();
    }
  };

  void bind_listeners();
  // On a worker: accepts the next connection queued on a listener and starts its session on
  // the worker that Shared::assign_worker() picks (one per readiness event, see runtime.cpp).
  void accept_ready(Accepting& accepting);
  void start_session(unsigned worker, int fd, const net::Endpoint& peer, bool first_packet_waiting);
  // The workers that take new clients (Shared::workers_for() says how many the sessions call
  // for) are the ones that watch the listeners: a worker that takes no new clients is not woken
  // by connections either (it would only hand them over). The number grows at accept and
  // shrinks in worker 0's janitor once the sessions are half a step below it; each change
  // posts sync_listeners() to the worker concerned, which brings its epoll set in line with
  // the number current when it runs (so posts that cross each other still end right).
  enum class Direction : std::uint8_t { grow, shrink };
  void change_accepting(Direction direction);
  void sync_listeners(unsigned worker);
  asio::awaitable<void> janitor(unsigned worker);
  // After a burst of sessions that came and went on `worker`, has the main thread give the
  // malloc arenas' free pages back to the kernel (malloc_trim); the worker's janitor calls it
  // once the burst has been quiet a while.
  void return_freed_memory(unsigned worker, std::uint64_t churned);
  // A worker thread: the loop until stop(), then what is left on it is ended on it
  // (net::Reactor::settle), so that the Runtime can be destroyed with nothing suspended.
  void run_worker(unsigned worker);
  asio::awaitable<void> signals();
  // Re-reads the configuration and auth_file (SIGHUP, console RELOAD): "" or the error.
  std::string reload(std::string_view trigger);
  void stop();

  // Resilience (runtime_resilience.cpp): shutdown modes (net/drain.hpp), the event-loop
  // watchdog and the open-files guard, all driven from the main thread.
  void begin_shutdown(net::ShutdownMode mode);
  asio::awaitable<void> supervise_shutdown();
  void finish_shutdown();
  // A worker's share of the drain, on that worker (janitor round, and once at the start).
  void drain_worker(unsigned worker);
  asio::awaitable<void> watch_loops();

  std::string config_path_;
  // Before workers_, so destroyed after them: a descriptor is closed only once no worker can
  // watch it any more.
  std::vector<std::unique_ptr<net::Listener>> listeners_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // The services the sessions, the console and the janitors share, each of its own, built in
  // this order (services_ is the sessions' view of them).
  ProcessHealth health_;  // watchdog, open files, shutdown: for SHOW STATE
  std::unique_ptr<config::ConfigStore> config_;
  net::TlsStore tls_;  // the TLS contexts, rebuilt with the configuration
  std::unique_ptr<session::SessionRegistry> sessions_;
  std::unique_ptr<session::ClientAdmission> admission_;
  session::CancelRegistry cancels_;
  std::unique_ptr<pool::PoolManager> pools_;
  auth::ScramSecretCache scram_secrets_;
  // Its threads post outcomes to the workers' loops: stopped first in ~Runtime, before the
  // workers' handler queues go.
  auth::LdapAuthenticator ldap_;
  session::LeakBook leaks_;
  std::unique_ptr<session::AppMonitor> apps_;
  std::unique_ptr<ProcessControl> control_;        // what the console may do
  std::unique_ptr<admin::ConsoleServer> console_;  // what console sessions run
  std::unique_ptr<session::SessionServices> services_;
  asio::io_context main_io_{1};  // signals, the open-files guard, shutdown supervision
  std::string unix_socket_path_;
  int exit_code_ = 0;
  std::unique_ptr<net::Drain> drain_;
  std::unique_ptr<net::Watchdog> watchdog_;
  std::unique_ptr<net::OverloadGuard> overload_;
  bool finishing_ = false;                      // main thread: finish_shutdown() has run
  std::atomic<unsigned> accepting_workers_{1};  // workers 0 .. n-1 watch the listeners
  // How many times return_freed_memory() has run: one trim covers every worker's arena, so a
  // janitor whose burst another worker's trim came after does not trim again.
  std::atomic<std::uint64_t> heap_trims_{0};
  std::atomic<bool> trim_posted_{false};  // a trim is queued on the main thread
};

}  // namespace pgw::app
