// A listening socket (TCP or Unix) that every worker accepts from.
//
// Why the workers accept, not the main thread: a connection accepted on one thread and served
// on another costs a second thread's wake-up (an eventfd write, its epoll_wait) per login, and
// on a small machine that wake-up latency was most of the gap between pgwarden's and
// PgBouncer's login rate. Each worker has the descriptor in its epoll set with EPOLLEXCLUSIVE,
// so a new connection wakes one sleeping worker, which accepts it and serves it (or passes it
// to a worker with fewer clients: see Runtime::accept_ready()). One shared socket rather than
// one per worker with SO_REUSEPORT: it works for Unix sockets too, and a second pgwarden on the
// same port still fails with "address in use" unless so_reuseport asks for sharing.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "net/socket.hpp"

namespace pgw::net {

class Listener {
 public:
  // Binds and listens (non-blocking, close-on-exec); throws std::system_error.
  // `defer_accept_seconds` > 0 sets TCP_DEFER_ACCEPT on a TCP listener: accept() returns a
  // connection once its first bytes are there (or, from a silent client, after about that many
  // seconds of the kernel's SYN-ACK retries); Unix sockets ignore it.
  static std::unique_ptr<Listener> open(const Endpoint& endpoint, int backlog, bool reuse_port,
                                        int defer_accept_seconds = 0);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  int fd() const { return fd_; }
  const std::string& name() const { return name_; }
  // TCP_DEFER_ACCEPT is on: an accepted connection almost always has its first packet waiting.
  bool defers_accept() const { return defers_accept_; }

  // Stops listening: new connections are refused from now on, and each worker's epoll set
  // reports the socket once more, so the workers see closed() and drop it. The descriptor
  // stays open until the destructor (after the workers have stopped), so no worker can ever
  // accept() on a reused descriptor number. Any thread.
  void stop_listening();
  bool closed() const { return closed_.load(std::memory_order_acquire); }

 private:
  Listener(int fd, std::string name, bool defers_accept)
      : fd_(fd), name_(std::move(name)), defers_accept_(defers_accept) {}
  int fd_;
  std::string name_;
  bool defers_accept_;
  std::atomic<bool> closed_{false};
};

}  // namespace pgw::net
