// A worker loop for unit tests: a real Reactor on the test's thread, run until a flag is set or
// a deadline passes (another thread stops it).
#pragma once

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "net/reactor.hpp"

namespace pgw::test {

struct Loop {
  asio::io_context io{1};
  net::Reactor reactor{io};
  // Runs the loop on this thread until `done` is true or `limit` has passed; returns `done`.
  bool run_until(const std::atomic<bool>& done,
                 std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
    std::thread stopper([&] {
      const auto deadline = net::Clock::now() + limit;
      while (!done.load() && net::Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      reactor.stop();
    });
    reactor.run();
    stopper.join();
    return done.load();
  }
};

}  // namespace pgw::test
