// The top of a client's life: a plain C++20 coroutine that starts at once, owns itself and
// frees its frame when it ends. It waits on a net::TaskEvent directly (the end of the relay)
// and runs Asio coroutines (the login, the console, cleanup) through
// `co_await in_asio(io, awaitable)`.
//
// Why not an Asio awaitable: a suspended asio::awaitable chain costs about 800 bytes per client
// (co_spawn's entry frame, the frame itself, the frame use_awaitable creates for the pending
// operation, the type-erased handler), and an idle client spends its whole life suspended.
// This coroutine keeps one small frame (docs/benchmarks.md has the figures); the Asio frames
// exist only while a phase runs.
#pragma once

#include <spdlog/spdlog.h>
#include <asio.hpp>

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

namespace pgw::net {

// Starts eagerly, destroys itself at the end, logs an escaped exception (there is nobody to
// rethrow it to).
struct DetachedTask {
  struct promise_type {
    DetachedTask get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept {
      try {
        std::rethrow_exception(std::current_exception());
      } catch (const std::exception& e) {
        spdlog::error("client session failed: {}", e.what());
      } catch (...) {
        spdlog::error("client session failed: unknown exception");
      }
    }
  };
};

// co_await in_asio(io, some_awaitable): runs it as an Asio coroutine on `io` and resumes the
// caller (from Asio's completion handler, on io's thread) with its result or exception.
template <typename T>
class AsioAwaiter {
 public:
  AsioAwaiter(asio::io_context& io, asio::awaitable<T> work) : io_(io), work_(std::move(work)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> caller) {
    asio::co_spawn(io_, std::move(work_), [this, caller](std::exception_ptr error, T value) {
      error_ = error;
      if (!error) value_.emplace(std::move(value));
      caller.resume();
    });
  }
  T await_resume() {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }

 private:
  asio::io_context& io_;
  asio::awaitable<T> work_;
  std::exception_ptr error_;
  std::optional<T> value_;
};

template <>
class AsioAwaiter<void> {
 public:
  AsioAwaiter(asio::io_context& io, asio::awaitable<void> work) : io_(io), work_(std::move(work)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> caller) {
    asio::co_spawn(io_, std::move(work_), [this, caller](std::exception_ptr error) {
      error_ = error;
      caller.resume();
    });
  }
  void await_resume() {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  asio::io_context& io_;
  asio::awaitable<void> work_;
  std::exception_ptr error_;
};

template <typename T>
AsioAwaiter<T> in_asio(asio::io_context& io, asio::awaitable<T> work) {
  return AsioAwaiter<T>(io, std::move(work));
}

}  // namespace pgw::net
