// The relay: see relay.hpp. In order: the tracker's events, pump() and the two directions,
// getting a server, giving it back, stopping, and the janitor's checks of a waiting client.
#include "session/relay.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "net/buffer_pool.hpp"
#include "net/socket.hpp"
#include "session/client_session.hpp"
#include "session/session_guard.hpp"

namespace pgw::session {

using proto::TransactionStatus;
using asio::experimental::awaitable_operators::operator||;

namespace {

constexpr std::size_t kMinBuffer = 4096;
// Work done for one session before the others on this worker get their turn: reads per
// direction per round, and rounds per pump() call (the rest is posted behind them).
constexpr int kReadsPerRound = 8;
constexpr int kRoundsPerPump = 16;
constexpr int kLinkAttempts = 3;

// A server_reset_query such as DISCARD ALL drops the server's prepared statements.
bool drops_prepared_statements(std::string_view sql) {
  std::string upper(sql);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper.find("DISCARD ALL") != std::string::npos ||
         upper.find("DEALLOCATE ALL") != std::string::npos;
}

// Back to the default: a parameter an earlier client SET (session_state = track).
std::string reset_parameter_sql(std::string_view name) {
  if (name == "transaction_characteristics") {
    return "RESET default_transaction_isolation; RESET default_transaction_read_only; "
           "RESET default_transaction_deferrable;";
  }
  return "RESET " + quote_ident(name) + ";";
}

// set_config() parses the value exactly like a startup "-c name=value" does, so list settings
// such as search_path keep their elements ("SET x = 'a,b'" would make that one element).
std::string set_config_sql(std::string_view name, std::string_view value) {
  return "SELECT pg_catalog.set_config(" + quote_literal(name) + ", " + quote_literal(value) +
         ", false);";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tracker's events: what the relay does with what the tracker saw. Inlined into the scan.

struct Relay::TrackerEvents {
  Relay& relay;

  // Client -> server.
  void on_request() { relay.note_request(); }
  void on_statement(char type, proto::Bytes body, bool whole_body) {
    relay.session_.lease_guard_.on_statement(type, body, whole_body);  // attribution
  }
  // Named prepared statements (transaction pooling): statement_tracker's edits.
  bool on_client_statement_message(const proto::Header& header, proto::Bytes body) {
    return relay.edit_client_message(header, body);
  }
  bool on_server_reply(const proto::Header& header, proto::Bytes body) {
    return relay.edit_server_reply(header, body);
  }

  // Server -> client.
  void on_ready(TransactionStatus status) { relay.note_ready(status); }
  void on_parameter_status(std::string_view name, std::string_view value) {
    relay.note_parameter(name, value);
  }
  void on_server_error(const proto::ErrorFields&) {
    // The request failed, and with it what its statements did to the session.
    if (relay.session_state_) relay.session_state_->on_error();
  }
};

void Relay::note_request() {
  if (query_start_ != Clock::time_point{}) return;  // pipelined: timed from the previous one
  query_start_ = net::turn_now();
  request_time_ = query_start_;
  if (xact_start_ == Clock::time_point{}) xact_start_ = query_start_;
}

void Relay::note_ready(TransactionStatus status) {
  // One time per ReadyForQuery serves the statistics and the lease (whose idle_since also
  // times idle_transaction_timeout); it is also the release time if this ends the
  // transaction. PgBouncer's definitions: every ReadyForQuery ends a query; one that returns
  // to 'I' ends a transaction. Plain stores into this worker's slot: no lock, no shared line.
  const auto now = net::turn_now();
  last_ready_at_ = now;
  const int owed = tracker_.ready_owed();
  stats_->add(pool::Stat::query, 1);
  if (query_start_ != Clock::time_point{}) {
    stats_->add_time(pool::Stat::query_time_us, now - query_start_);
  }
  if (status == TransactionStatus::idle && xact_start_ != Clock::time_point{}) {
    stats_->add(pool::Stat::xact, 1);
    stats_->add_time(pool::Stat::xact_time_us, now - xact_start_);
    xact_start_ = owed > 0 ? now : Clock::time_point{};
  }
  // A pipelined query behind this one starts now.
  query_start_ = owed > 0 ? now : Clock::time_point{};
  session_.lease_guard_.on_ready(status != TransactionStatus::idle, owed, now);
  if (session_state_) settle_session_state(status, now);
}

void Relay::settle_session_state(TransactionStatus status, Clock::time_point now) {
  auto& state = *session_state_;
  const auto fresh = state.on_ready(static_cast<char>(status), now);
  pinned_ = state.pinned();
  if (state.advisory_locks() > 0) server_->advisory_locks_possible = true;
  // The SETs ran on this server: it now carries this client's parameters.
  if (server_->session_sets != state.parameters_fingerprint()) note_server_carries_sets();
  if (fresh != 0) session_.note_session_state(fresh, state);
}

void Relay::note_parameter(std::string_view name, std::string_view value) {
  server_->params.set(name, value);
  auto& s = session_;
  if (s.params_.set(name, value)) {
    s.params_fingerprint_ = s.params_.fingerprint();
    // The server mirrors the pool's defaults plus this client's parameters, as before.
    server_->applied_params = s.params_fingerprint_;
  }
  if (ParamSet::equal_names(name, "application_name")) s.who_.application_name = value;
}

// ---------------------------------------------------------------------------------------------
// Set-up and pumping

Relay::~Relay() {
  if (from_client_.has_storage()) {
    net::BufferPool::give(from_client_.release_storage(), buffer_size_);
  }
}

void Relay::bind(pool::Pool& pool, pool::AppShare* app_share, pool::StatSlot& stats,
                 proto::SessionStateMode session_state) {
  pool_ = &pool;
  app_share_ = app_share;
  stats_ = &stats;
  transaction_pooling_ = pool.mode() != config::PoolMode::session;
  tracker_.set_forbid_transaction_blocks(pool.mode() == config::PoolMode::statement);
  // The StatementTracker itself comes with the client's first message (an idle client holds
  // none).
  tracker_.set_track_statements(transaction_pooling_ && pool.max_prepared_statements() > 0);
  session_state_mode_ = session_state;
  guard_session_state_ = transaction_pooling_ && session_state != proto::SessionStateMode::allow;
  tracker_.set_guard_statements(guard_session_state_);
}

bool Relay::edit_client_message(const proto::Header& header, proto::Bytes body) {
  const auto message_start = from_client_.offset_of(body.data()) - proto::kHeaderSize;
  const auto message_size = proto::kHeaderSize + header.body_size();
  std::string_view replacement;  // the guard's, of the whole message
  if (guard_session_state_ &&
      (header.type == proto::from_client::kQuery || header.type == proto::from_client::kParse)) {
    replacement = guard_statement(header, body);
  }
  if (!tracker_.tracks_statements()) {
    if (replacement.empty()) return false;
    client_edit_ = {message_start, message_size, replacement, false};
    return true;
  }
  auto message_header = header;
  if (!replacement.empty()) {
    // The statement tracker sees what the server will get.
    message_header.length = static_cast<std::uint32_t>(replacement.size() - 1);
    body = proto::as_bytes(replacement.substr(proto::kHeaderSize));
  }
  if (!statements_) statements_ = std::make_unique<proto::StatementTracker>();
  const auto edit = statements_->on_client_message(message_header.type, message_header.body_size(),
                                                   body, server_->statements, statement_capacity_);
  auto& counts = statements_->counts();
  if (counts.client_parses | counts.server_parses | counts.binds) {
    stats_->add(pool::Stat::client_parse, counts.client_parses);
    stats_->add(pool::Stat::server_parse, counts.server_parses);
    stats_->add(pool::Stat::bind, counts.binds);
    counts = {};
  }
  using Outcome = proto::StatementTracker::ClientEdit::Outcome;
  if (!replacement.empty()) {
    // The replacement goes whole, with the statement tracker's edit of its front applied.
    edited_message_.clear();
    if (edit.outcome == Outcome::edit) {
      edited_message_.append(edit.insert);
      edited_message_.append(replacement.substr(edit.erase));
      replacement = edited_message_;
    }
    client_edit_ = {message_start, message_size, replacement, false};
    return true;
  }
  if (edit.outcome == Outcome::pass) return false;
  client_edit_ = {message_start, edit.erase, edit.insert, edit.outcome == Outcome::too_large};
  return true;
}

std::string_view Relay::guard_statement(const proto::Header& header, proto::Bytes body) {
  const bool whole_body = body.size() == header.body_size();
  const auto statement = statement_text(header.type, body, whole_body);
  // The common case: a byte loop over the text, nothing kept.
  if (!proto::may_change_session_state(statement.text)) return {};
  const auto scan = proto::scan_session_state(statement.text, statement.whole);
  if (scan.count == 0) return {};
  if (session_state_mode_ == proto::SessionStateMode::reject && scan.creates_state() &&
      whole_body) {
    // PostgreSQL itself raises the error in place of the statement, so the transaction fails
    // exactly as it would for an error of the statement's own (a failed transaction block,
    // the rest of an extended-protocol batch skipped until Sync).
    proto::SessionStateKind kind = scan.effects[0].kind;
    for (const auto& effect : scan.list()) {
      if (effect.op == proto::SessionStateOp::create) {
        kind = effect.kind;
        break;
      }
    }
    build_refusal(rejected_message_, header.type, body, statement, kind);
    session_.note_session_state_refused(kind, statement.text);
    return rejected_message_;
  }
  if (!session_state_) session_state_ = std::make_unique<proto::SessionState>(session_state_mode_);
  // The statement's own Query is counted already; a Parse's Sync comes later.
  const int ahead = tracker_.ready_owed() - (header.type == proto::from_client::kQuery ? 1 : 0);
  session_state_->on_statement(scan, std::max(ahead, 0), net::turn_now());
  return {};
}

bool Relay::edit_server_reply(const proto::Header& header, proto::Bytes body) {
  if (!statements_) return false;  // nothing sent yet: an asynchronous message
  const auto edit = statements_->on_server_message(header.type, body, server_->statements);
  if (edit.desync) {
    server_edit_ = {};
    server_edit_.fail = true;
    return true;
  }
  if (!edit.edit) return false;
  const auto start = server_buffer().offset_of(body.data()) - proto::kHeaderSize;
  const auto size = proto::kHeaderSize + body.size();
  reply_scratch_.clear();
  if (edit.error != proto::StatementError::none) {
    const auto code = edit.error == proto::StatementError::missing ? Err::prepared_statement_missing
                                                                   : Err::prepared_statement_exists;
    append_error_response(reply_scratch_, report(code, edit.error_name));
  }
  reply_scratch_.append(edit.after);
  server_edit_ = {edit.drop ? start : start + size, edit.drop ? size : 0, reply_scratch_, false};
  return true;
}

bool Relay::client_scan_deferred() const {
  if (!tracker_.tracks_statements() || (server_ && session_.state_ == ClientState::active)) {
    return false;
  }
  const auto rest = from_client_.unscanned();
  return rest.empty() || static_cast<char>(rest[0]) != proto::from_client::kTerminate;
}

bool Relay::scan_client() {
  auto& in = from_client_;
  for (;;) {
    if (client_scan_deferred()) return true;
    TrackerEvents events{*this};
    const auto scan = tracker_.scan_client(in.unscanned(), events);
    in.mark_scanned(scan.scanned);
    switch (scan.stop) {
      case proto::TransactionTracker::Stop::invalid:
        stop(RelayStop::client_protocol, Err::protocol_violation,
             "invalid message from client: " + std::string(proto::describe(scan.error)));
        return false;
      case proto::TransactionTracker::Stop::edit:
        if (client_edit_.fail) {
          stop(RelayStop::client_protocol, Err::prepared_statement_too_large);
          return false;
        }
        in.splice(client_edit_.offset, client_edit_.erase, proto::as_bytes(client_edit_.insert));
        continue;
      case proto::TransactionTracker::Stop::more:
        if (scan.wanted > 0) in.reserve_unscanned(scan.wanted);
        break;
      default:
        break;
    }
    flush_due_replies();
    return true;
  }
}

void Relay::flush_due_replies() {
  if (!statements_ || !statements_->has_due_replies() || !server_ ||
      tracker_.server_mid_message()) {
    return;
  }
  auto& out = server_buffer();
  const auto replies = statements_->take_due_replies();
  out.splice(out.scanned_end(), 0, proto::as_bytes(replies));
}

void Relay::take_pipelined(std::span<const std::byte> bytes, std::size_t buffer_size) {
  buffer_size_ = static_cast<std::uint32_t>(buffer_size);
  if (bytes.empty()) return;
  from_client_.adopt(net::BufferPool::take(buffer_size_));
  from_client_.append(bytes);
}

std::shared_ptr<void> Relay::keep_alive() {
  return session_.shared_from_this();
}

void Relay::start() {
  session_.client_.set_handler(this);
  pump();  // bytes pipelined behind the login, and whatever arrived meanwhile
}

void Relay::on_ready(net::Connection&) {
  pump();
}

void Relay::pump() {
  if (pumping_) {
    // Re-entered (a server handed over from inside this session's own call chain).
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  int rounds = 0;
  bool progress = false;
  auto serving = [this] { return stop_ == RelayStop::none; };
  do {
    pump_again_ = false;
    progress = false;
    if (serving()) progress = server_to_client() || progress;
    if (serving()) progress = client_to_server() || progress;
  } while (serving() && (progress || pump_again_) && ++rounds < kRoundsPerPump);
  pumping_ = false;
  if (serving() && rounds >= kRoundsPerPump) {
    // Still busy (a large COPY or result): continue after the other sessions' events.
    asio::post(session_.reactor_.io(),
               [self = session_.shared_from_this()] { self->relay_.pump(); });
  }
}

// ---------------------------------------------------------------------------------------------
// Client -> server

bool Relay::client_to_server() {
  auto& client = session_.client_;
  auto& in = from_client_;
  bool progress = false;
  for (int reads = 0;;) {
    // Bytes whose scan waited for a server (statement tracking), now that one is attached.
    if (tracker_.tracks_statements() && !in.unscanned().empty() && !client_scan_deferred() &&
        !scan_client()) {
      return false;
    }
    if (session_.state_ == ClientState::idle &&
        (in.has_unsent() || (client_scan_deferred() && !in.unscanned().empty()))) {
      request_server();
    }
    if (stop_ != RelayStop::none) return false;
    if (in.has_unsent() && session_.state_ == ClientState::active && server_->conn.writable()) {
      const auto bytes = in.unsent();
      const auto written = server_->conn.write_some(bytes.data(), bytes.size());
      if (written.error && !written.would_block()) {
        server_broken_ = true;
        stop(RelayStop::server_lost);
        return false;
      }
      in.mark_sent(written.bytes);  // once all is out, only an unscanned partial header stays
      progress = progress || written.bytes > 0;
    }
    const bool terminated = tracker_.client_terminated();
    if (terminated && !in.has_unsent()) {
      stop(RelayStop::client_terminate);  // the Terminate is not passed on: the server stays
      return false;
    }
    // Keep reading while waiting for a server or for the server to take more, as long as the
    // buffer has room: a client that disconnects while it waits is noticed at once.
    if (!client.readable() || reads == kReadsPerRound || terminated) {
      // An idle client holds no buffer.
      if (in.empty() && in.has_storage()) {
        net::BufferPool::give(in.release_storage(), buffer_size_);
      }
      return progress;
    }
    if (in.has_storage() && in.full()) {
      // Full: back-pressure until the server reads (or, scanning deferred, until it comes).
      if (in.has_unsent() || client_scan_deferred()) return progress;
      in.grow();  // (a header split at the end)
    }
    if (!in.has_storage()) in.adopt(net::BufferPool::take(buffer_size_));
    const auto space = in.free_space();
    const auto got = client.read_some(space.data(), space.size());
    if (got.would_block()) {
      if (in.empty()) net::BufferPool::give(in.release_storage(), buffer_size_);
      return progress;
    }
    if (got.error || got.bytes == 0) {
      stop(RelayStop::client_gone);
      return false;
    }
    ++reads;
    progress = true;
    in.added(got.bytes);
    stats_->add(pool::Stat::received, got.bytes);
    // The tracker counts what the server will answer and finds the end of what can go now.
    if (!scan_client()) return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Server -> client

bool Relay::server_to_client() {
  if (!server_ || session_.state_ != ClientState::active) return false;
  auto& client = session_.client_;
  bool progress = false;
  for (int reads = 0;;) {
    auto& out = server_buffer();
    if (out.has_unsent()) {
      if (!client.writable()) return progress;
      const auto bytes = out.unsent();
      const auto written = client.write_some(bytes.data(), bytes.size());
      if (written.error && !written.would_block()) {
        // The client is gone; cleanup lets the server finish and keeps it if it ends clean.
        stop(RelayStop::client_gone);
        return false;
      }
      out.mark_sent(written.bytes);
      stats_->add(pool::Stat::sent, written.bytes);
      progress = progress || written.bytes > 0;
      if (out.has_unsent()) return progress;  // the client's socket is full
      if (transaction_pooling_ && tracker_.at_transaction_boundary() && out.empty() &&
          cancels_in_flight_ == 0 && (!statements_ || statements_->settled()) && !pinned_) {
        // Transaction over: the server goes back to the pool for the next client (with a
        // cancel in flight, once PostgreSQL has acted on it: cancel_finished()).
        release_server();
        return true;
      }
    }
    if (!server_->conn.readable() || reads == kReadsPerRound) return progress;
    if (out.full()) out.grow();
    const auto space = out.free_space();
    const auto got = server_->conn.read_some(space.data(), space.size());
    if (got.would_block()) return progress;
    if (got.error || got.bytes == 0) {
      server_broken_ = true;
      stop(RelayStop::server_lost);
      return false;
    }
    ++reads;
    progress = true;
    out.added(got.bytes);
    TrackerEvents events{*this};
    auto scan = tracker_.scan_server(out.unscanned(), events);
    out.mark_scanned(scan.scanned);
    while (scan.stop == proto::TransactionTracker::Stop::edit) {
      // A reply to a statement message pgwarden rewrote: dropped, replaced or followed by
      // replies it synthesises.
      if (server_edit_.fail) {
        server_broken_ = true;
        stop(RelayStop::server_protocol, Err::protocol_violation,
             "server reply out of step with the prepared statements sent");
        return false;
      }
      out.splice(server_edit_.offset, server_edit_.erase, proto::as_bytes(server_edit_.insert));
      scan = tracker_.scan_server(out.unscanned(), events);
      out.mark_scanned(scan.scanned);
    }
    flush_due_replies();
    switch (scan.stop) {
      case proto::TransactionTracker::Stop::more:
        // A ReadyForQuery, ParameterStatus or ErrorResponse is read whole: room for it.
        if (scan.wanted > 0) out.reserve(scan.wanted);
        break;
      case proto::TransactionTracker::Stop::invalid:
        server_broken_ = true;
        stop(RelayStop::server_protocol, Err::protocol_violation, "invalid message from server");
        return false;
      case proto::TransactionTracker::Stop::transaction_block:
        // Statement pooling: the client must not believe it is in a transaction. It gets the
        // error instead of the results and the ReadyForQuery 'T', and cleanup rolls back.
        out.discard_scanned();
        stop(RelayStop::statement_mode_txn, Err::statement_mode_transaction);
        return false;
      case proto::TransactionTracker::Stop::terminate:
      case proto::TransactionTracker::Stop::edit:
        break;  // only the client sends Terminate; edits are applied above
    }
  }
}

void Relay::release_server() {
  const auto now = last_ready_at_;  // the ReadyForQuery that ended the transaction
  session_.set_state(ClientState::idle, now);
  server_->last_used = now;
  server_->status = tracker_.status();
  session_.lease_guard_.end("transaction ended", session_.who_, session_.services_.leaks);
  server_buffer().clear();
  // A server whose statements are no longer known (a DEALLOCATE by name) serves nobody else.
  bool reusable = true;
  if (statements_) {
    reusable = !statements_->server_statements_unknown();
    statements_->server_detached();
  }
  pool_->release(std::move(server_), reusable, app_share_);
}

// ---------------------------------------------------------------------------------------------
// Getting a server

void Relay::request_server() {
  // The query that needs the server was stamped a moment ago (note_request).
  wait_start_ = query_start_ != Clock::time_point{} ? query_start_ : net::turn_now();
  session_.set_state(ClientState::waiting, wait_start_);
  auto got = pool_->acquire_now(*this, app_share_);
  if (got.server) {
    link(std::move(got.server), wait_start_);
  } else if (!got.queued) {
    stop(RelayStop::pool_error, got.error, got.detail);
  }
}

void Relay::deliver(pool::AcquireResult result) {
  if (session_.state_ != ClientState::waiting) {
    // It stopped meanwhile (timeout, KILL, client gone): the server goes straight back.
    if (result.server) pool_->release(std::move(result.server), true, app_share_);
    return;
  }
  if (!result.server) {
    stop(RelayStop::pool_error, result.error, result.detail);
    return;
  }
  link(std::move(result.server), net::turn_now());
  pump();
}

void Relay::link(pool::ServerPtr server, Clock::time_point now) {
  server_ = std::move(server);
  if (server_->conn.readable()) {
    // An idle backend with something to say (or EOF) that the pool has not evicted yet: it is
    // going away. Never hand it to a client.
    pool_->release(std::move(server_), false, app_share_);
    if (++link_attempts_ < kLinkAttempts) {
      request_server();
    } else {
      stop(RelayStop::pool_error, Err::server_connection_lost,
           ": no healthy server connection after 3 attempts");
    }
    return;
  }
  const bool in_sync = server_->applied_params == session_.params_fingerprint_ &&
                       server_->session_sets == session_sets() && !foreign_locks_possible();
  if (in_sync && !pool_->check_due(*server_, now)) {
    finish_link(now);
    return;
  }
  // Off the data path: a server_check_query, or SETs to make the server's parameters the
  // client's. The data path waits (linking) and resumes in finish_link(). The wait that SHOW
  // CLIENTS shows goes on from when the client started waiting.
  session_.set_state(ClientState::linking, session_.state_since_);
  preparing_server_ = true;
  link_done_.reset();
  asio::co_spawn(session_.reactor_.io(), prepare_server(),
                 [self = session_.shared_from_this()](std::exception_ptr error) {
                   if (!error) return;
                   try {
                     std::rethrow_exception(error);
                   } catch (const std::exception& e) {
                     spdlog::error("C-{}: preparing a server connection failed: {}", self->id(),
                                   e.what());
                   }
                 });
}

asio::awaitable<void> Relay::prepare_server() {
  auto self = session_.shared_from_this();  // the session outlives this coroutine
  bool usable = true;
  if (pool_->check_due(*server_, net::turn_now())) {
    // A server idle for a while may have been terminated: check before handing it out.
    const auto query = pool_->settings()->server_check_query;
    usable = co_await pool::run_internal_query(*server_, query, std::chrono::seconds(5));
  }
  bool synced = usable;
  if (usable) synced = co_await sync_parameters();
  preparing_server_ = false;
  link_done_.set();
  const bool still_linking = session_.state_ == ClientState::linking;
  if (!usable || !synced) {
    pool_->release(std::move(server_), false, app_share_);
    if (!still_linking) co_return;
    if (!usable && ++link_attempts_ < kLinkAttempts) {
      request_server();
      pump();
    } else if (!usable) {
      stop(RelayStop::pool_error, Err::server_connection_lost,
           ": no healthy server connection after 3 attempts");
    } else {
      stop(RelayStop::client_protocol, Err::protocol_violation,
           "could not apply session parameters on the server");
    }
    co_return;
  }
  if (!still_linking) co_return;  // stopped meanwhile: cleanup takes the server from here
  finish_link(net::turn_now());
  pump();
}

asio::awaitable<bool> Relay::sync_parameters() {
  auto& s = session_;
  const auto sets = session_sets();
  const bool unlock = foreign_locks_possible();
  if (server_->applied_params == s.params_fingerprint_ && server_->session_sets == sets &&
      !unlock) {
    co_return true;
  }
  std::string sql;
  if (unlock) sql += "SELECT pg_catalog.pg_advisory_unlock_all();";
  std::vector<std::string> resets;
  // Parameters another client SET on this server (session_state = track) go back to their
  // defaults first; this client's own SETs are re-applied last.
  const bool replace_sets = server_->session_sets != sets;
  static const std::vector<std::string> kNone;
  const auto& sets_reset = replace_sets ? server_->session_set_names : kNone;
  for (const auto& name : sets_reset) sql += reset_parameter_sql(name);
  auto was_reset = [&](std::string_view name) {
    return std::any_of(sets_reset.begin(), sets_reset.end(), [&](const std::string& reset) {
      return ParamSet::equal_names(reset, name);
    });
  };
  for (const auto& [name, value] : s.params_) {
    const std::string* current = server_->params.find(name);
    if (!current || *current != value || was_reset(name)) sql += set_config_sql(name, value);
  }
  // Parameters an earlier client changed and this one did not ask for: back to the default.
  if (auto defaults = pool_->defaults()) {
    for (const auto& [name, value] : server_->params) {
      if (s.params_.find(name) || was_reset(name)) continue;
      const std::string* original = defaults->find(name);
      if (!original) {
        sql += "RESET " + quote_ident(name) + ";";
        resets.push_back(name);
      } else if (*original != value) {
        sql += set_config_sql(name, *original);
      }
    }
  }
  if (replace_sets && session_state_) {
    for (const auto& parameter : session_state_->parameters()) sql += parameter.replay + ";";
  }
  if (!sql.empty()) {
    if (!co_await pool::run_internal_query(*server_, sql, std::chrono::seconds(10))) {
      spdlog::warn("C-{}: could not apply session parameters on the server: {}", s.id(), sql);
      co_return false;
    }
    // Values not reported by ParameterStatus (search_path, ...) are now what we set.
    for (const auto& [name, value] : s.params_) server_->params.set(name, value);
    for (const auto& name : resets) server_->params.erase(name);
    if (auto defaults = pool_->defaults()) {
      for (const auto& name : sets_reset) {
        if (s.params_.find(name)) continue;
        if (const auto* original = defaults->find(name)) {
          server_->params.set(name, *original);
        } else {
          server_->params.erase(name);
        }
      }
    }
  }
  server_->applied_params = s.params_fingerprint_;
  if (unlock) server_->advisory_locks_possible = false;
  if (replace_sets) note_server_carries_sets();
  co_return true;
}

void Relay::note_server_carries_sets() {
  server_->session_sets = session_sets();
  server_->session_set_names.clear();
  if (!session_state_) return;
  for (const auto& parameter : session_state_->parameters()) {
    server_->session_set_names.push_back(parameter.name);
  }
}

void Relay::finish_link(Clock::time_point now) {
  server_->last_client = session_.id();
  stats_->add(pool::Stat::server_assignment, 1);
  stats_->add_time(pool::Stat::wait_time_us, now - wait_start_);
  session_.set_state(ClientState::active, now);
  session_.lease_guard_.begin(now, server_->backend_pid);
  link_attempts_ = 0;
  tracker_.server_attached(server_->status);
  auto& buffer = server_buffer();
  buffer.clear();
  buffer.reserve(std::max<std::size_t>(kMinBuffer, static_cast<std::size_t>(buffer_size_)));
  server_->conn.set_handler(this);
  if (tracker_.tracks_statements()) {
    statement_capacity_ = static_cast<std::uint32_t>(pool_->max_prepared_statements());
  }
}

// ---------------------------------------------------------------------------------------------
// Stopping, and the server after the client

void Relay::stop(RelayStop why, Err error, std::string argument) {
  if (stop_ != RelayStop::none) return;
  const bool was_waiting = session_.state_ == ClientState::waiting;
  stop_ = why;
  stop_error_ = error;
  if (!argument.empty()) stop_argument_ = std::make_unique<std::string>(std::move(argument));
  session_.set_state(ClientState::closing, net::turn_now());
  session_.client_.set_handler(nullptr);
  if (server_) server_->conn.set_handler(nullptr);
  // Still queued: leave the queue (if a hand-off is already on its way, deliver() sees the
  // relay stopped and gives the server back).
  if (was_waiting) pool_->cancel_wait(*this);
  done_.set();
}

LeaseState Relay::lease_state() const {
  return session::lease_state(tracker_.in_flight(),
                              server_ && tracker_.status() != TransactionStatus::idle);
}

bool Relay::inside_transaction() const {
  // Something is in flight or the server's status is not idle: ending now would lose work the
  // client believes is still going. A session-mode client idle at 'I' is not inside one.
  if (!server_) return false;
  return preparing_server_ || tracker_.in_flight() || !server_buffer().empty() ||
         tracker_.server_mid_message() || tracker_.status() != TransactionStatus::idle;
}

bool Relay::mid_server_message() const {
  return server_ && (tracker_.server_mid_message() || server_buffer().has_unsent());
}

asio::awaitable<void> Relay::return_server(std::string_view why) {
  // A check or parameter sync still running on the server finishes first (it owns server_).
  while (preparing_server_) co_await link_done_.async_wait(net::use_nothrow);
  if (!server_) co_return;
  auto& s = session_;
  server_->conn.set_handler(nullptr);
  const auto copy = tracker_.copy();
  if ((copy == proto::CopyMode::in || copy == proto::CopyMode::both) &&
      tracker_.ready_owed() == 0) {
    // A COPY FROM STDIN over the extended protocol that the client abandoned before its
    // closing Sync: a cancel would end the copy, but the server would then wait for a Sync
    // nobody sends. The connection is closed. (A simple-protocol COPY owes its ReadyForQuery:
    // the cancel below ends it cleanly.)
    server_broken_ = true;
  }
  if (!server_broken_ && !tracker_.server_fatal() && !server_quiet()) {
    // A query is still running for a client that left: cancel it rather than wait for it,
    // then read what the server still sends until it is idle again.
    forward_cancel();
    if (!co_await drain_server(std::chrono::seconds(5))) server_broken_ = true;
  }
  // A cancel still on its way could hit the next client's query on this backend: the server
  // stays here until PostgreSQL has acted on it (bounded by send_cancel's own limits).
  while (!server_broken_ && !tracker_.server_fatal() && cancels_in_flight_ > 0) {
    cancel_done_.reset();
    co_await cancel_done_.async_wait(net::use_nothrow);
  }
  server_->status = tracker_.status();
  // An extended-protocol batch without its Sync cannot be ended without committing or
  // guessing at its state: such a server is closed, not reused.
  bool clean =
      !server_broken_ && !tracker_.server_fatal() && server_quiet() && !tracker_.batch_open();
  if (statements_) {
    clean = clean && statements_->settled() && !statements_->server_statements_unknown();
    statements_->server_detached();
  }
  if (clean && server_->status != TransactionStatus::idle) {
    clean = co_await pool::run_internal_query(*server_, "ROLLBACK", std::chrono::seconds(5));
  }
  if (clean && session_state_) clean = co_await reset_session_state();
  const auto settings = pool_->settings();
  const bool reset =
      settings->mode == config::PoolMode::session || settings->server_reset_query_always;
  if (clean && reset && !settings->server_reset_query.empty()) {
    clean = co_await pool::run_internal_query(*server_, settings->server_reset_query,
                                              std::chrono::seconds(5));
    if (clean) {
      auto defaults = pool_->defaults();
      server_->params = defaults ? *defaults : ParamSet{};
      server_->applied_params = 0;
      if (drops_prepared_statements(settings->server_reset_query)) server_->statements.clear();
    }
  }
  s.lease_guard_.end(why, s.who_, s.services_.leaks);
  server_buffer().clear();
  pool_->release(std::move(server_), clean, app_share_);
}

bool Relay::foreign_locks_possible() const {
  return server_->advisory_locks_possible && server_->last_client != session_.id();
}

asio::awaitable<bool> Relay::reset_session_state() {
  using proto::SessionStateKind;
  auto kinds = session_state_->held();
  if (server_->advisory_locks_possible) kinds |= proto::mask_of(SessionStateKind::advisory_lock);
  if (kinds == 0) co_return true;
  if (kinds & proto::mask_of(SessionStateKind::load)) {
    spdlog::info(
        "C-{}: closing server connection {} (backend pid {}): the client LOADed a "
        "library into it",
        session_.id(), server_->id, server_->backend_pid);
    co_return false;
  }
  const auto sql = proto::SessionState::reset_sql(kinds);
  if (!co_await pool::run_internal_query(*server_, sql, std::chrono::seconds(5))) {
    spdlog::warn(
        "C-{}: could not reset the session state the client left ({}); closing server "
        "connection {}",
        session_.id(), proto::to_string(kinds), server_->id);
    co_return false;
  }
  constexpr auto parameters =
      proto::mask_of(SessionStateKind::parameter) | proto::mask_of(SessionStateKind::role);
  if (kinds & parameters) {
    // RESET ALL: the server is back at the pool's defaults.
    auto defaults = pool_->defaults();
    server_->params = defaults ? *defaults : ParamSet{};
    server_->applied_params = 0;
    server_->session_sets = 0;
    server_->session_set_names.clear();
  }
  if (kinds & proto::mask_of(SessionStateKind::advisory_lock)) {
    server_->advisory_locks_possible = false;
  }
  // DEALLOCATE ALL drops protocol-level statements too.
  if (kinds & proto::mask_of(SessionStateKind::sql_prepare)) server_->statements.clear();
  co_return true;
}

void Relay::release_buffer() {
  if (from_client_.has_storage()) {
    from_client_.clear();
    net::BufferPool::give(from_client_.release_storage(), buffer_size_);
  }
}

asio::awaitable<bool> Relay::drain_server(std::chrono::milliseconds timeout) {
  // The client is gone; let the server finish what it owes (the query was cancelled) so the
  // connection can be reused, reading and discarding. Bytes already scanned (counted) go first.
  auto drain = [this]() -> asio::awaitable<bool> {
    // The replies still count (statistics, the lease's tally) and still tell the server's
    // parameters, which the next client of this server relies on.
    TrackerEvents events{*this};
    for (;;) {
      auto& buffer = server_buffer();
      const auto scan = tracker_.scan_server(buffer.unscanned(), events);
      if (scan.stop == proto::TransactionTracker::Stop::invalid) co_return false;
      buffer.mark_scanned(scan.scanned);
      buffer.discard_scanned();
      if (server_quiet()) co_return true;
      // Edits do not matter for replies nobody reads; the statement state moved on.
      if (scan.stop == proto::TransactionTracker::Stop::transaction_block ||
          scan.stop == proto::TransactionTracker::Stop::edit) {
        continue;
      }
      if (buffer.capacity() < kMinBuffer) buffer.reserve(kMinBuffer);
      if (scan.wanted > 0) buffer.reserve(scan.wanted);
      if (buffer.full()) buffer.grow();
      const auto space = buffer.free_space();
      auto got = co_await server_->conn.async_read_some(space.data(), space.size());
      if (got.error || got.bytes == 0) co_return false;
      buffer.added(got.bytes);
    }
  };
  net::Timer limit(session_.reactor_);
  auto outcome = co_await (drain() || limit.async_wait_for(timeout, net::use_nothrow));
  co_return outcome.index() == 0 && std::get<0>(outcome);
}

// ---------------------------------------------------------------------------------------------
// Cancels

void Relay::forward_cancel() {
  if (!server_ || tracker_.ready_owed() == 0) return;  // nothing running: PostgreSQL ignores it
  // Until PostgreSQL has closed the cancel connection (it signals the backend first), the
  // server is not given to anyone else: a late cancel must not hit another client's query.
  ++cancels_in_flight_;
  auto endpoint = server_->endpoint;
  const auto pid = server_->backend_pid;
  const auto key = server_->backend_key;
  asio::co_spawn(
      session_.reactor_.io(),
      [](std::shared_ptr<ClientSession> self, net::Endpoint to, std::int32_t backend_pid,
         std::int32_t backend_key) -> asio::awaitable<void> {
        co_await pool::send_cancel(self->reactor_, to, backend_pid, backend_key);
        self->relay_.cancel_finished();
      }(session_.shared_from_this(), std::move(endpoint), pid, key),
      asio::detached);
}

void Relay::cancel_finished() {
  if (--cancels_in_flight_ > 0) return;
  cancel_done_.set();
  // The transaction ended while the cancel was on its way: the server can go back now.
  if (stop_ == RelayStop::none && server_ && session_.state_ == ClientState::active &&
      transaction_pooling_ && tracker_.at_transaction_boundary() && server_buffer().empty() &&
      (!statements_ || statements_->settled()) && !pinned_) {
    release_server();
    pump();
  }
}

// ---------------------------------------------------------------------------------------------
// The janitor's checks of a waiting client (docs/operations.md)

void Relay::check_wait(Clock::time_point now, const config::Config& current) {
  // query_wait_timeout of the data path (the welcome's first login has its own deadline): the
  // client's [users] entry's, else its [databases] entry's, else the key. The error says why:
  // a full pool (53300) or an unreachable backend (08001).
  const auto& who = session_.who_;
  const auto limit = current.query_wait_timeout_for(who.database, who.user);
  if (limit.count() > 0 && now - wait_start_ > limit && pool_->cancel_wait(*this)) {
    stop(RelayStop::pool_error, pool_->wait_timeout_error(), std::to_string(limit.count() / 1000));
    return;
  }
  notify_waiting(now, current);
}

void Relay::notify_waiting(Clock::time_point now, const config::Config& current) {
  const auto after = current.query_wait_notify;
  if (after.count() <= 0 || session_.state_ != ClientState::waiting || server_) return;
  if (wait_notified_ == wait_start_ || now - wait_start_ < after) return;
  // A waiting client has no server, so no server bytes are on their way to it; a NOTICE may
  // go out between two messages as long as nothing of ours is unsent either: write it only
  // into an empty send queue, where the kernel takes a small message whole.
  auto& client = session_.client_;
  if (!client.writable() || !client.send_queue_empty()) return;
  wait_notified_ = wait_start_;
  const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - wait_start_).count();
  std::string notice;
  append_error_response(
      notice, explain(Err::query_wait_notice, std::to_string(waited), pool_->condition()));
  const auto written = client.write_some(notice.data(), notice.size());
  if (written.bytes == notice.size() || written.bytes == 0) return;  // whole, or not at all
  // Part of it went out: whatever follows would corrupt the stream. Never seen with an empty
  // queue, but if it happens the connection ends rather than carry a broken message.
  spdlog::warn("C-{}: could not write the query_wait_notify NOTICE whole; closing the connection",
               session_.id());
  stop(RelayStop::client_gone);
}

}  // namespace pgw::session
