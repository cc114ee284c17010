// The data path of ClientSession: what runs for every message once a client is logged in.
//
// serve() starts it and sleeps; from then on readiness events of the client socket and of the
// leased server socket call on_ready() -> pump() straight from the worker's event loop. pump()
// moves bytes both ways until neither side can make progress:
//
//   client_to_server(): read what the client sent (one recv per arrival: the reactor knows
//     whether data is there), scan the message headers without buffering bodies, take a server
//     from the pool when there is something to send and none is held, write the scanned bytes
//     to it exactly as received.
//   server_to_client(): read what the server sent, look inside ReadyForQuery, ParameterStatus
//     and ErrorResponse only, write everything to the client, and in transaction pooling give
//     the server back once it owes nothing and is idle ('I').
//
// Back-pressure is natural: while a write is incomplete the bytes stay in the buffer, and that
// side is not read until the peer takes them. Nothing here allocates per message, arms a timer
// or takes a lock, except Pool::acquire_now/release (the pool mutex, once per transaction).
// When the data path must stop it records why and wakes serve(), which tells the client.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "net/buffer_pool.hpp"
#include "session/client_session.hpp"

namespace pgw::session {

using proto::TransactionStatus;
using asio::experimental::awaitable_operators::operator||;

namespace {

constexpr std::size_t kMinBuffer = 4096;
// Largest ReadyForQuery, ParameterStatus or ErrorResponse the relay buffers whole.
constexpr std::size_t kWholeServerMessageLimit = 1 << 20;
// Work done for one session before the others on this worker get their turn: reads per
// direction per round, and rounds per pump() call (the rest is posted behind them).
constexpr int kReadsPerRound = 8;
constexpr int kRoundsPerPump = 16;
constexpr int kLinkAttempts = 3;

bool is_control_copy(char type) {
  return type == 'd' || type == 'c' || type == 'f';
}

// The part of `available` bytes that belongs to the body of a message being streamed through
// (`remaining` bytes of it still to come), which is passed on without looking into it.
std::size_t take_streamed(std::uint32_t& remaining, std::size_t available) {
  const auto take = std::min<std::size_t>(remaining, available);
  remaining -= static_cast<std::uint32_t>(take);
  return take;
}

}  // namespace

void ClientSession::on_ready(net::Connection&) {
  pump();
}

void ClientSession::pump() {
  if (pumping_) {
    // Re-entered (a server handed over from inside this session's own call chain).
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  int rounds = 0;
  bool progress = false;
  do {
    pump_again_ = false;
    progress = false;
    if (serving_) progress = server_to_client() || progress;
    if (serving_) progress = client_to_server() || progress;
  } while (serving_ && (progress || pump_again_) && ++rounds < kRoundsPerPump);
  pumping_ = false;
  if (serving_ && rounds >= kRoundsPerPump) {
    // Still busy (a large COPY or result): continue after the other sessions' events.
    asio::post(reactor_.io(), [self = shared_from_this()] { self->pump(); });
  }
}

// ---------------------------------------------------------------------------------------------
// Client -> server

bool ClientSession::client_to_server() {
  bool progress = false;
  for (int reads = 0;;) {
    if (in_sent_ < in_scanned_ && !server_ && !waiting_ && !linking_) request_server();
    if (!serving_) return false;
    if (in_sent_ < in_scanned_ && server_ && !linking_ && server_->conn.writable()) {
      const auto written = server_->conn.write_some(in_.data() + in_sent_, in_scanned_ - in_sent_);
      if (written.error && !written.would_block()) {
        server_failed_ = true;
        stop_data_path(End::server_lost);
        return false;
      }
      in_sent_ += written.bytes;
      progress = progress || written.bytes > 0;
      if (in_sent_ == in_scanned_) {
        // Everything scanned is out: keep only the unscanned tail (a partial header).
        const std::size_t rest = in_len_ - in_scanned_;
        if (rest > 0) std::memmove(in_.data(), in_.data() + in_scanned_, rest);
        in_len_ = rest;
        in_scanned_ = in_sent_ = 0;
      }
    }
    if (terminate_seen_ && in_sent_ == in_scanned_) {
      stop_data_path(End::client_terminate);
      return false;
    }
    // Keep reading while waiting for a server or for the server to take more, as long as the
    // buffer has room: a client that disconnects while it waits is noticed at once.
    if (!client_.readable() || reads == kReadsPerRound || terminate_seen_) {
      // An idle client holds no buffer.
      if (in_len_ == 0 && !in_.empty()) net::BufferPool::give(std::move(in_), in_buffer_size_);
      return progress;
    }
    if (in_len_ > 0 && in_len_ == in_.size()) {
      if (in_sent_ < in_scanned_) return progress;  // full: back-pressure until the server reads
      in_.resize(in_.size() * 2);                   // (a header split at the end)
    }
    if (in_.empty()) in_ = net::BufferPool::take(in_buffer_size_);
    const auto got = client_.read_some(in_.data() + in_len_, in_.size() - in_len_);
    if (got.would_block()) {
      if (in_len_ == 0) net::BufferPool::give(std::move(in_), in_buffer_size_);
      return progress;
    }
    if (got.error || got.bytes == 0) {
      client_gone_ = true;
      stop_data_path(End::client_gone);
      return false;
    }
    ++reads;
    progress = true;
    in_len_ += got.bytes;
    stats_->add(pool::Stat::received, got.bytes);

    // Scan: count what the server will answer, find the end of what can be passed on now.
    std::size_t pos = in_scanned_;
    while (pos < in_len_) {
      if (in_remaining_ > 0) {
        pos += take_streamed(in_remaining_, in_len_ - pos);
        continue;
      }
      auto parsed = proto::parse_header(std::span<const std::byte>(in_.data() + pos, in_len_ - pos),
                                        proto::Direction::frontend);
      if (std::holds_alternative<proto::NeedMore>(parsed)) break;
      if (auto* error = std::get_if<proto::CodecError>(&parsed)) {
        stop_data_path(End::client_protocol, Err::protocol_violation,
                       "invalid message from client: " + std::string(proto::describe(*error)));
        return false;
      }
      const auto header = std::get<proto::Header>(parsed);
      if (header.type == 'Q' || header.type == 'P' || header.type == 'E') {
        note_statement(header.type, pos, header.body_size());  // lease attribution (leak guard)
      }
      if (header.type == 'X') {
        terminate_seen_ = true;  // not passed on: the server stays in the pool
        break;
      }
      switch (header.type) {
        case 'Q':
        case 'F':
        case 'S':
          ++expected_ready_;
          mid_batch_ = false;
          note_request();
          break;
        case 'H':
          break;
        case 'P':
          // Every Parse reaches the server (no statement cache): both counters move.
          stats_->add(pool::Stat::client_parse, 1);
          stats_->add(pool::Stat::server_parse, 1);
          mid_batch_ = true;
          break;
        case 'B':
          stats_->add(pool::Stat::bind, 1);
          mid_batch_ = true;
          break;
        default:
          if (!is_control_copy(header.type)) mid_batch_ = true;
          break;
      }
      pos += proto::kHeaderSize;
      in_remaining_ = header.body_size();
    }
    in_scanned_ = pos;
  }
}

// ---------------------------------------------------------------------------------------------
// Server -> client

ClientSession::ServerScan ClientSession::scan_server_bytes() {
  ServerScan out;
  auto& buffer = server_->buffer;
  std::size_t pos = 0;
  while (pos < relay_have_) {
    if (relay_remaining_ > 0) {
      pos += take_streamed(relay_remaining_, relay_have_ - pos);
      continue;
    }
    auto parsed =
        proto::parse_header(std::span<const std::byte>(buffer.data() + pos, relay_have_ - pos),
                            proto::Direction::backend);
    if (std::holds_alternative<proto::NeedMore>(parsed)) break;
    if (std::holds_alternative<proto::CodecError>(parsed)) {
      out.bad_message = true;
      return out;
    }
    const auto header = std::get<proto::Header>(parsed);
    const char type = header.type;
    if (type == 'Z' || type == 'S' || type == 'E') {
      // Small messages whose content matters: wait until they are whole. PostgreSQL's are far
      // below the cap; a server claiming more is broken, not a reason to allocate it.
      if (header.total_size() > kWholeServerMessageLimit) {
        out.bad_message = true;
        return out;
      }
      if (relay_have_ - pos < header.total_size()) {
        if (header.total_size() > buffer.size()) buffer.resize(header.total_size());
        break;
      }
      const std::span<const std::byte> body(buffer.data() + pos + proto::kHeaderSize,
                                            header.body_size());
      if (type == 'Z') {
        if (auto status = proto::parse_ready_for_query(body)) server_->status = *status;
        if (expected_ready_ > 0) --expected_ready_;
        // One time per ReadyForQuery serves the statistics and the lease (whose idle_since
        // also times idle_transaction_timeout).
        const auto now = net::turn_now();
        last_ready_at_ = now;  // also the release time if this ends the transaction
        count_ready(server_->status, now);
        lease_.on_ready(server_->status != TransactionStatus::idle, expected_ready_, now);
        if (statement_pooling_ && server_->status != TransactionStatus::idle) {
          out.transaction_block = true;
          out.forward = pos + header.total_size();  // scanned (counted), never forwarded
          return out;
        }
      } else if (type == 'S') {
        if (auto status = proto::parse_parameter_status(body))
          note_parameter(status->name, status->value);
      } else if (auto fields = proto::parse_error_fields(body); fields && fields->is_fatal()) {
        server_failed_ = true;  // the backend is about to close; the client gets its FATAL
        server_fatal_sent_ = true;
      }
      pos += header.total_size();
      continue;
    }
    pos += proto::kHeaderSize;
    relay_remaining_ = header.body_size();
  }
  out.forward = pos;
  return out;
}

bool ClientSession::server_owes_nothing() const {
  return expected_ready_ == 0 && relay_have_ == 0 && relay_remaining_ == 0;
}

bool ClientSession::transaction_over() const {
  return transaction_pooling_ && server_owes_nothing() && !mid_batch_ &&
         relay_out_begin_ == relay_out_end_ && server_->status == TransactionStatus::idle;
}

bool ClientSession::server_to_client() {
  if (!server_ || linking_) return false;
  bool progress = false;
  for (int reads = 0;;) {
    auto& buffer = server_->buffer;
    if (relay_out_begin_ < relay_out_end_) {
      if (!client_.writable()) return progress;
      const auto written =
          client_.write_some(buffer.data() + relay_out_begin_, relay_out_end_ - relay_out_begin_);
      if (written.error && !written.would_block()) {
        // The client is gone; cleanup() lets the server finish and keeps it if it ends clean.
        client_gone_ = true;
        stop_data_path(End::client_gone);
        return false;
      }
      relay_out_begin_ += written.bytes;
      stats_->add(pool::Stat::sent, written.bytes);
      progress = progress || written.bytes > 0;
      if (relay_out_begin_ < relay_out_end_) return progress;  // the client's socket is full
      const std::size_t rest = relay_have_ - relay_out_end_;
      if (rest > 0) std::memmove(buffer.data(), buffer.data() + relay_out_end_, rest);
      relay_have_ = rest;
      relay_out_begin_ = relay_out_end_ = 0;
      if (transaction_over() && cancels_in_flight_ == 0) {
        // Transaction over: the server goes back to the pool for the next client (with a
        // cancel in flight, once PostgreSQL has acted on it: cancel_finished()).
        release_server();
        return true;
      }
    }
    if (!server_->conn.readable() || reads == kReadsPerRound) return progress;
    if (relay_have_ == buffer.size()) buffer.resize(buffer.size() * 2);
    const auto got =
        server_->conn.read_some(buffer.data() + relay_have_, buffer.size() - relay_have_);
    if (got.would_block()) return progress;
    if (got.error || got.bytes == 0) {
      server_failed_ = true;
      stop_data_path(End::server_lost);
      return false;
    }
    ++reads;
    progress = true;
    relay_have_ += got.bytes;
    const auto scan = scan_server_bytes();
    if (scan.bad_message) {
      server_failed_ = true;
      stop_data_path(End::server_protocol, Err::protocol_violation, "invalid message from server");
      return false;
    }
    if (scan.transaction_block) {
      // The client must not believe it is in a transaction: it gets the error instead of the
      // results and the ReadyForQuery 'T', and cleanup() rolls the server back.
      const std::size_t rest = relay_have_ - scan.forward;
      if (rest > 0) std::memmove(buffer.data(), buffer.data() + scan.forward, rest);
      relay_have_ = rest;
      stop_data_path(End::statement_mode_txn, Err::statement_mode_transaction);
      return false;
    }
    relay_out_begin_ = 0;
    relay_out_end_ = scan.forward;
  }
}

void ClientSession::release_server() {
  const auto now = last_ready_at_;  // the ReadyForQuery that ended the transaction
  state_ = ClientState::idle;
  state_since_ = now;
  server_->last_used = now;
  end_lease("transaction ended");
  pool_->release(std::move(server_), true, app_share_);
  relay_have_ = relay_out_begin_ = relay_out_end_ = 0;
  relay_remaining_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Getting a server

void ClientSession::request_server() {
  state_ = ClientState::waiting;
  // The query that needs the server was stamped a moment ago (note_request).
  wait_start_ = query_start_ != Clock::time_point{} ? query_start_ : net::turn_now();
  state_since_ = wait_start_;
  auto got = pool_->acquire_now(*this, app_share_);
  if (got.server) {
    link(std::move(got.server), wait_start_);
  } else if (got.queued) {
    waiting_ = true;
  } else {
    stop_data_path(End::pool_error, got.error, got.detail);
  }
}

void ClientSession::deliver(pool::AcquireResult result) {
  waiting_ = false;
  if (!serving_) {
    // It stopped meanwhile (timeout, KILL, client gone): the server goes straight back.
    if (result.server) pool_->release(std::move(result.server), true, app_share_);
    return;
  }
  if (!result.server) {
    stop_data_path(End::pool_error, result.error, result.detail);
    return;
  }
  link(std::move(result.server), net::turn_now());
  pump();
}

void ClientSession::link(pool::ServerPtr server, Clock::time_point now) {
  server_ = std::move(server);
  if (server_->conn.readable()) {
    // An idle backend with something to say (or EOF) that the pool has not evicted yet: it is
    // going away. Never hand it to a client.
    pool_->release(std::move(server_), false, app_share_);
    if (++link_attempts_ < kLinkAttempts) {
      request_server();
    } else {
      stop_data_path(End::pool_error, Err::server_connection_lost,
                     ": no healthy server connection after 3 attempts");
    }
    return;
  }
  const bool in_sync = server_->applied_params == params_fingerprint_;
  if (in_sync && !pool_->check_due(*server_, now)) {
    finish_link(now);
    return;
  }
  // Off the data path: a server_check_query, or SETs to make the server's parameters the
  // client's. The data path waits (linking_) and resumes in finish_link().
  linking_ = true;
  link_done_.reset();
  asio::co_spawn(
      reactor_.io(), prepare_server(), [self = shared_from_this()](std::exception_ptr error) {
        if (!error) return;
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          spdlog::error("C-{}: preparing a server connection failed: {}", self->id_, e.what());
        }
      });
}

asio::awaitable<void> ClientSession::prepare_server() {
  auto self = shared_from_this();  // the session outlives this coroutine
  bool usable = true;
  if (pool_->check_due(*server_, net::turn_now())) {
    // A server idle for a while may have been terminated: check before handing it out.
    const auto query = pool_->settings().server_check_query;
    usable = co_await pool::run_internal_query(*server_, query, std::chrono::seconds(5));
  }
  bool synced = usable;
  if (usable) synced = co_await sync_parameters();
  linking_ = false;
  link_done_.set();
  if (!usable || !synced) {
    pool_->release(std::move(server_), false, app_share_);
    if (!serving_) co_return;
    if (!usable && ++link_attempts_ < kLinkAttempts) {
      request_server();
      pump();
    } else if (!usable) {
      stop_data_path(End::pool_error, Err::server_connection_lost,
                     ": no healthy server connection after 3 attempts");
    } else {
      stop_data_path(End::client_protocol, Err::protocol_violation,
                     "could not apply session parameters on the server");
    }
    co_return;
  }
  if (!serving_) co_return;  // stopped meanwhile: cleanup() takes the server from here
  finish_link(net::turn_now());
  pump();
}

void ClientSession::finish_link(Clock::time_point now) {
  server_->last_client = id_;
  stats_->add(pool::Stat::server_assignment, 1);
  stats_->add_time(pool::Stat::wait_time_us, now - wait_start_);
  state_ = ClientState::active;
  state_since_ = now;
  lease_.begin(now, server_->backend_pid);
  link_attempts_ = 0;
  relay_have_ = relay_out_begin_ = relay_out_end_ = 0;
  relay_remaining_ = 0;
  if (server_->buffer.size() < kMinBuffer) {
    server_->buffer.resize(
        std::max<std::size_t>(kMinBuffer, static_cast<std::size_t>(config_->pkt_buf)));
  }
  server_->conn.set_handler(this);
}

// ---------------------------------------------------------------------------------------------
// Stopping

void ClientSession::stop_data_path(End why, Err error, std::string argument) {
  if (!serving_) return;
  serving_ = false;
  end_ = why;
  end_error_ = error;
  if (!argument.empty()) end_texts().argument = std::move(argument);
  client_.set_handler(nullptr);
  if (server_) server_->conn.set_handler(nullptr);
  if (waiting_ && pool_->cancel_wait(*this)) waiting_ = false;
  data_path_done_.set();
}

asio::awaitable<bool> ClientSession::drain_server(std::chrono::milliseconds timeout) {
  // The client is gone; let the server finish what it owes (the query was cancelled) so the
  // connection can be reused, reading and discarding. Bytes already scanned (counted) go first.
  {
    auto& buffer = server_->buffer;
    const std::size_t rest = relay_have_ - relay_out_end_;
    if (rest > 0 && relay_out_end_ > 0)
      std::memmove(buffer.data(), buffer.data() + relay_out_end_, rest);
    relay_have_ = rest;
    relay_out_begin_ = relay_out_end_ = 0;
  }
  auto drain = [this]() -> asio::awaitable<bool> {
    while (!server_owes_nothing()) {
      auto& buffer = server_->buffer;
      if (buffer.size() < kMinBuffer) buffer.resize(kMinBuffer);
      if (relay_have_ == buffer.size()) buffer.resize(buffer.size() * 2);
      auto got = co_await server_->conn.async_read_some(buffer.data() + relay_have_,
                                                        buffer.size() - relay_have_);
      if (got.error || got.bytes == 0) co_return false;
      relay_have_ += got.bytes;
      const auto scan = scan_server_bytes();
      if (scan.bad_message) co_return false;
      const std::size_t rest = relay_have_ - scan.forward;
      if (rest > 0) std::memmove(buffer.data(), buffer.data() + scan.forward, rest);
      relay_have_ = rest;
    }
    co_return true;
  };
  net::Timer limit(reactor_);
  auto outcome = co_await (drain() || limit.async_wait_for(timeout, net::use_nothrow));
  co_return outcome.index() == 0 && std::get<0>(outcome);
}

}  // namespace pgw::session
