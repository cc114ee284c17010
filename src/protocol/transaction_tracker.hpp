// What a server connection owes its client, followed from both directions of the relayed
// stream. The relay hands every byte it reads to scan_client() or scan_server() before passing
// it on; the tracker frames the messages (StreamScanner), keeps the state that decides whether
// the server may be given back (ReadyForQuery owed per Query, Sync and FunctionCall, an open
// extended-protocol batch, COPY, the transaction status of the last ReadyForQuery, a FATAL, a
// Terminate, statement-mode violations) and tells its consumer what happened through events.
// Pure: no I/O, no clock, no allocation; the same code runs in the relay, the unit tests and
// the fuzz target (fuzz/stream_fuzz.cpp).
//
// Events: the consumer passed to scan_*() may define any of these member functions; the ones it
// does not define are not called (so a consumer pays only for what it uses):
//   on_request()                                   Query, Sync or FunctionCall: one more
//                                                  ReadyForQuery is owed
//   on_statement(char type, Bytes body, bool whole) Query, Parse or Execute, with the part of
//                                                  its body already buffered (attribution)
//   on_parse(), on_bind()                          Parse and Bind (statistics)
//   on_ready(TransactionStatus)                    a ReadyForQuery; the state is updated first
//   on_parameter_status(name, value)               a ParameterStatus
//   on_server_error(const ErrorFields&)            an ErrorResponse (FATAL or not)
//   on_copy_started(CopyMode), on_copy_ended()     COPY in, out or both begins or ends
// With statement tracking on (set_track_statements), two more, whose `true` asks to edit the
// message just scanned (the scan stops behind it with Stop::edit):
//   bool on_client_statement_message(Header, Bytes body)  every client message but COPY data
//                                                  and Terminate; a Parse, Bind, Describe or
//                                                  Close read whole up to kWholeMessageLimit
//   bool on_server_reply(Header, Bytes body)       each reply StatementTracker::reply_type()
//                                                  names, read whole
// With the session-state guard on (set_guard_statements), on_client_statement_message() is
// called for Query and Parse too, read whole up to kWholeMessageLimit (the statement text).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/message_types.hpp"
#include "protocol/prepared_statements.hpp"
#include "protocol/stream_scanner.hpp"

namespace pgw::proto {

enum class CopyMode : std::uint8_t { none, in, out, both };
std::string_view to_string(CopyMode mode);

class TransactionTracker {
 public:
  // Why a scan stopped before the end of its input.
  enum class Stop : std::uint8_t {
    more,               // all of it is scanned, or the rest waits for more bytes
    terminate,          // the client's Terminate is next; it is not scanned (not passed on)
    invalid,            // a malformed message (`error`); nothing after it can be trusted
    transaction_block,  // statement mode: a ReadyForQuery 'T' or 'E' was scanned (the last
                        // scanned message); what the server sent in that batch must not reach
                        // the client, who gets an error instead
    edit,               // statement tracking: the consumer asked to edit the last scanned
                        // message before the scan goes on
  };
  struct Scan {
    std::size_t scanned = 0;  // bytes at the front of the input that are scanned
    Stop stop = Stop::more;
    // With Stop::more: the message at `scanned` is needed whole and is this long (0: none).
    std::size_t wanted = 0;
    CodecError error = CodecError::invalid_length;  // with Stop::invalid
  };

  // Statement pooling: a transaction block (ReadyForQuery 'T' or 'E') ends the scan.
  void set_forbid_transaction_blocks(bool forbid) { forbid_transaction_blocks_ = forbid; }
  // Prepared statements in transaction pooling: the consumer sees the messages it needs.
  void set_track_statements(bool track) { track_statements_ = track; }
  bool tracks_statements() const { return track_statements_; }
  // The session-state guard: Query and Parse texts go to on_client_statement_message().
  void set_guard_statements(bool guard) { guard_statements_ = guard; }
  bool guards_statements() const { return guard_statements_; }

  // Client bytes that follow the last scanned client byte.
  template <class Events>
  Scan scan_client(Bytes input, Events& events) {
    if (terminated_) return {0, Stop::terminate};
    ClientReader<Events> reader{*this, events};
    return finish(client_.scan(input, reader), Stop::terminate);
  }

  // Server bytes that follow the last scanned server byte.
  template <class Events>
  Scan scan_server(Bytes input, Events& events) {
    ServerReader<Events> reader{*this, events};
    return finish(server_.scan(input, reader), Stop::transaction_block);
  }

  // A server connection is attached: its status is `status`, and it sends from a message
  // boundary. What the client already sent and is owed stays counted.
  void server_attached(TransactionStatus status) {
    server_.reset();
    status_ = status;
    server_fatal_ = false;
    copy_ = CopyMode::none;
  }

  // ReadyForQuery messages the server still owes (one per Query, Sync and FunctionCall).
  int ready_owed() const { return ready_owed_; }
  // Extended-protocol messages were sent since the last Sync: the server will not answer
  // with ReadyForQuery before one comes, and nothing can end the batch without guessing.
  bool batch_open() const { return batch_open_; }
  // The transaction status of the last ReadyForQuery ('I' before any).
  TransactionStatus status() const { return status_; }
  CopyMode copy() const { return copy_; }
  // The server sent a FATAL (or PANIC): it is about to close.
  bool server_fatal() const { return server_fatal_; }
  // The client sent Terminate (everything before it may still be passed on).
  bool client_terminated() const { return terminated_; }
  // Streamed bodies partway through.
  bool client_mid_message() const { return !client_.between_messages(); }
  bool server_mid_message() const { return !server_.between_messages(); }

  // A query, a batch or a COPY is in flight: the server is working for the client.
  bool in_flight() const { return ready_owed_ > 0 || batch_open_ || copy_ != CopyMode::none; }
  // Every reply owed has come (as far as scanned) and no server message is partway.
  bool server_owes_nothing() const { return ready_owed_ == 0 && server_.between_messages(); }
  // Transaction pooling may give the server back: it owes nothing, no batch or COPY is under
  // way and it is idle outside a transaction. (The relay adds: no unscanned or unsent bytes are
  // buffered.) A server that sent a FATAL is never given back.
  bool at_transaction_boundary() const {
    return server_owes_nothing() && !batch_open_ && copy_ == CopyMode::none &&
           status_ == TransactionStatus::idle && !server_fatal_;
  }

 private:
  template <class Events>
  struct ClientReader {
    TransactionTracker& tracker;
    Events& events;
    Framing framing(const Header& header) const { return tracker.client_framing(header.type); }
    Verdict on_message(const Header& header, Bytes body, bool whole_body) {
      const auto verdict = tracker.client_message(header.type, body, whole_body, events);
      if constexpr (requires { events.on_client_statement_message(header, body); }) {
        if (verdict == Verdict::next &&
            (tracker.track_statements_ ||
             (tracker.guard_statements_ &&
              (header.type == from_client::kQuery || header.type == from_client::kParse))) &&
            events.on_client_statement_message(header, body)) {
          tracker.edit_requested_ = true;
          return Verdict::stop_after;
        }
      }
      return verdict;
    }
  };
  template <class Events>
  struct ServerReader {
    TransactionTracker& tracker;
    Events& events;
    Framing framing(const Header& header) const { return tracker.server_framing(header.type); }
    Verdict on_message(const Header& header, Bytes body, bool) {
      if constexpr (requires { events.on_server_reply(header, body); }) {
        // Before the tracker's own handling: an error it replaces is the client's, and a
        // statement-mode stop must not skip the edit.
        if (tracker.track_statements_ && StatementTracker::reply_type(header.type) &&
            events.on_server_reply(header, body)) {
          // A statement-mode transaction block ends the relay: the edit no longer matters.
          if (tracker.server_message(header.type, body, events) == Verdict::next) {
            tracker.edit_requested_ = true;
          }
          return Verdict::stop_after;
        }
      }
      return tracker.server_message(header.type, body, events);
    }
  };

  // Which messages the tracker looks at: a client's every message but its COPY data (which
  // can be most of what it sends); of a server's, what carries state, read whole when its
  // content matters, and none of its rows or completions.
  Framing client_framing(char type) const {
    using namespace from_client;
    if (type == kCopyData) return Framing::pass;
    if (guard_statements_ && (type == kQuery || type == kParse)) return Framing::lead;
    if (track_statements_ &&
        (type == kParse || type == kBind || type == kDescribe || type == kClose)) {
      return Framing::lead;
    }
    return Framing::stream;
  }
  Framing server_framing(char type) const {
    using namespace from_server;
    if (track_statements_ && StatementTracker::reply_type(type)) return Framing::whole;
    switch (type) {
      case kReadyForQuery:
      case kParameterStatus:
      case kErrorResponse:
        return Framing::whole;
      case kCopyInResponse:
      case kCopyOutResponse:
      case kCopyBothResponse:
      case kCopyDone:
        return Framing::stream;
      default:
        return Framing::pass;
    }
  }

  Scan finish(const ScanResult& result, Stop reader_stop) {
    Scan out;
    out.scanned = result.scanned;
    out.wanted = result.wanted;
    out.error = result.error;
    switch (result.stop) {
      case ScanResult::Stop::more:
        out.stop = Stop::more;
        break;
      case ScanResult::Stop::invalid:
        out.stop = Stop::invalid;
        break;
      case ScanResult::Stop::reader:
        out.stop = edit_requested_ ? Stop::edit : reader_stop;
        edit_requested_ = false;
        break;
    }
    return out;
  }

  template <class Events>
  Verdict client_message(char type, Bytes body, bool whole_body, Events& events) {
    using namespace from_client;
    switch (type) {
      case kTerminate:
        terminated_ = true;
        return Verdict::stop_before;
      case kQuery:
        emit_statement(events, type, body, whole_body);
        request(events);
        open_copy_window();  // this statement may be a COPY FROM STDIN
        break;
      case kSync:
        request(events);
        if (copy_window_open_ && copy_window_syncs_ < kMaxWindowSyncs) ++copy_window_syncs_;
        break;
      case kFunctionCall:
        request(events);
        break;
      case kFlush:
        break;
      case kParse:
        emit_statement(events, type, body, whole_body);
        if constexpr (requires { events.on_parse(); }) events.on_parse();
        batch_open_ = true;
        break;
      case kExecute:
        emit_statement(events, type, body, whole_body);
        batch_open_ = true;
        open_copy_window();  // this statement may be a COPY FROM STDIN
        break;
      case kBind:
        if constexpr (requires { events.on_bind(); }) events.on_bind();
        batch_open_ = true;
        break;
      case kCopyDone:
      case kCopyFail:
        // The end of COPY FROM STDIN; the server's CommandComplete or ErrorResponse and its
        // ReadyForQuery follow.
        if (copy_ == CopyMode::in || copy_ == CopyMode::both) end_copy(events);
        copy_window_open_ = false;  // later Syncs come after the copy, whenever it started
        break;
      default:
        // Describe, Close, and anything else a client sends inside a batch.
        batch_open_ = true;
        break;
    }
    return Verdict::next;
  }

  template <class Events>
  Verdict server_message(char type, Bytes body, Events& events) {
    using namespace from_server;
    switch (type) {
      case kReadyForQuery: {
        if (auto status = parse_ready_for_query(body)) status_ = *status;
        if (ready_owed_ > 0) --ready_owed_;
        if (copy_ != CopyMode::none) end_copy(events);
        if constexpr (requires { events.on_ready(status_); }) events.on_ready(status_);
        if (forbid_transaction_blocks_ && status_ != TransactionStatus::idle) {
          return Verdict::stop_after;
        }
        break;
      }
      case kParameterStatus:
        if constexpr (requires { events.on_parameter_status(std::string_view{}, {}); }) {
          if (auto parameter = parse_parameter_status(body)) {
            events.on_parameter_status(parameter->name, parameter->value);
          }
        }
        break;
      case kErrorResponse:
        if (auto fields = parse_error_fields(body)) {
          if (fields->is_fatal()) server_fatal_ = true;
          if constexpr (requires { events.on_server_error(*fields); }) {
            events.on_server_error(*fields);
          }
        }
        // An error ends a COPY in either direction.
        if (copy_ != CopyMode::none) end_copy(events);
        break;
      case kCopyInResponse:
        // The server reads in COPY mode from the statement that started the copy on, and
        // ignores the Syncs it finds there: libpq sends Execute and Sync together and only
        // learns afterwards that the statement was a COPY, then ends it with CopyDone and a
        // Sync of its own. Those ignored Syncs owe no ReadyForQuery.
        ready_owed_ -= std::min<std::int32_t>(ready_owed_, copy_window_syncs_);
        copy_window_syncs_ = 0;
        copy_window_open_ = false;
        start_copy(events, CopyMode::in);
        break;
      case kCopyOutResponse:
        start_copy(events, CopyMode::out);
        break;
      case kCopyBothResponse:
        start_copy(events, CopyMode::both);
        break;
      case kCopyDone:
        if (copy_ == CopyMode::out || copy_ == CopyMode::both) end_copy(events);
        break;
      default:
        break;
    }
    return Verdict::next;
  }

  template <class Events>
  void request(Events& events) {
    ++ready_owed_;
    batch_open_ = false;
    if constexpr (requires { events.on_request(); }) events.on_request();
  }
  template <class Events>
  static void emit_statement(Events& events, char type, Bytes body, bool whole_body) {
    if constexpr (requires { events.on_statement(type, body, whole_body); }) {
      events.on_statement(type, body, whole_body);
    }
  }
  template <class Events>
  void start_copy(Events& events, CopyMode mode) {
    copy_ = mode;
    if constexpr (requires { events.on_copy_started(mode); }) events.on_copy_started(mode);
  }
  template <class Events>
  void end_copy(Events& events) {
    copy_ = CopyMode::none;
    if constexpr (requires { events.on_copy_ended(); }) events.on_copy_ended();
  }

  // Syncs the client sent after its last Query or Execute and before a CopyDone or CopyFail
  // (while the window is open): the ones a server in COPY FROM STDIN mode would ignore, should
  // that statement turn out to be one. Syncs the tracker sees after the CopyInResponse still
  // count: owing one too many keeps a server, owing one too few would give it away with a
  // reply on its way.
  static constexpr std::uint16_t kMaxWindowSyncs = 0xffff;
  void open_copy_window() {
    copy_window_syncs_ = 0;
    copy_window_open_ = true;
  }

  StreamScanner<Direction::frontend> client_;
  StreamScanner<Direction::backend> server_;
  std::int32_t ready_owed_ = 0;
  std::uint16_t copy_window_syncs_ = 0;
  TransactionStatus status_ = TransactionStatus::idle;
  CopyMode copy_ = CopyMode::none;
  // One byte for the flags: every client session holds a tracker.
  bool batch_open_ : 1 = false;
  bool server_fatal_ : 1 = false;
  bool terminated_ : 1 = false;
  bool forbid_transaction_blocks_ : 1 = false;
  bool copy_window_open_ : 1 = false;
  bool track_statements_ : 1 = false;
  bool edit_requested_ : 1 = false;
  bool guard_statements_ : 1 = false;
};

}  // namespace pgw::proto
