// The relay's protocol tracking (src/protocol/transaction_tracker.hpp, stream_scanner.hpp,
// stream_buffer.hpp): what each message type of each direction does to the state that decides
// whether a server may be given back, the events the relay, the leak guard and the statistics
// consume, and that none of it depends on how the bytes were split into reads.
#include "protocol/transaction_tracker.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/message_types.hpp"
#include "protocol/stream_buffer.hpp"

namespace pgw::proto {
namespace {

using Stop = TransactionTracker::Stop;
namespace fc = from_client;
namespace fs = from_server;

// ---------------------------------------------------------------------------------------------
// Bytes by hand.

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff),
          static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}
std::string msg(char type, std::string_view body = {}) {
  return std::string(1, type) + be32(static_cast<std::uint32_t>(body.size() + 4)) +
         std::string(body);
}
std::string cstr(std::string_view s) {
  return std::string(s) + '\0';
}
std::string ready(char status) {
  return msg(fs::kReadyForQuery, std::string(1, status));
}
std::string error(std::string_view severity, std::string_view text = "boom") {
  return msg(fs::kErrorResponse, "S" + cstr(severity) + "V" + cstr(severity) + "C" + cstr("XX000") +
                                     "M" + cstr(text) + std::string(1, '\0'));
}
std::string parameter(std::string_view name, std::string_view value) {
  return msg(fs::kParameterStatus, cstr(name) + cstr(value));
}
std::string query(std::string_view sql) {
  return msg(fc::kQuery, cstr(sql));
}
std::string parse(std::string_view name, std::string_view sql) {
  return msg(fc::kParse, cstr(name) + cstr(sql) + std::string(2, '\0'));
}
Bytes bytes_of(std::string_view s) {
  return as_bytes(s);
}

// ---------------------------------------------------------------------------------------------
// A consumer that writes down every event, and a relay in miniature: bytes arrive in pieces of
// a given size into a StreamBuffer, are scanned, and "sent" (the scanned part is dropped).

struct Recorder {
  std::string trace;
  // Statement bodies are what had arrived when the header was scanned, so they depend on how
  // the stream was split: comparisons across fragmentations leave them out.
  bool bodies = true;
  void add(std::string_view what) {
    trace += what;
    trace += ';';
  }
  void on_request() { add("request"); }
  void on_statement(char type, Bytes body, bool whole) {
    if (!bodies) {
      add(std::string("statement ") + type);
      return;
    }
    std::string text(as_chars(body));
    std::replace(text.begin(), text.end(), '\0', '|');  // readable in expectations
    add(std::string("statement ") + type + " " + text + (whole ? " whole" : " part"));
  }
  void on_parse() { add("parse"); }
  void on_bind() { add("bind"); }
  void on_ready(TransactionStatus status) {
    add(std::string("ready ") + static_cast<char>(status));
  }
  void on_parameter_status(std::string_view name, std::string_view value) {
    add("parameter " + std::string(name) + "=" + std::string(value));
  }
  void on_server_error(const ErrorFields& fields) {
    add(std::string("error ") + std::string(fields.severity));
  }
  void on_copy_started(CopyMode mode) { add("copy " + std::string(to_string(mode))); }
  void on_copy_ended() { add("copy ended"); }
};

struct Side {
  StreamBuffer buffer;
  std::size_t delivered = 0;  // of the stream given to feed()
};

struct Outcome {
  std::string trace;  // events, and how each feed ended
  int ready_owed = 0;
  bool batch_open = false;
  TransactionStatus status = TransactionStatus::idle;
  CopyMode copy = CopyMode::none;
  bool fatal = false;
  bool terminated = false;
  bool boundary = false;
  bool operator==(const Outcome&) const = default;
  friend void PrintTo(const Outcome& o, std::ostream* os) {
    *os << "{trace \"" << o.trace << "\" owed " << o.ready_owed << " batch " << o.batch_open
        << " status " << static_cast<char>(o.status) << " copy " << to_string(o.copy) << " fatal "
        << o.fatal << " terminated " << o.terminated << " boundary " << o.boundary << "}";
  }
};

class Conversation {
 public:
  explicit Conversation(std::size_t piece) : piece_(piece) {}
  TransactionTracker tracker;
  Recorder events;

  // Feeds `stream` as the client (or server) sent it, `piece` bytes per read; returns the stop
  // of the last scan. Stops early like the relay at anything but Stop::more.
  Stop feed(bool from_client, std::string_view stream) {
    Side& side = from_client ? client_ : server_;
    Stop last = Stop::more;
    std::size_t pos = 0;
    while (pos < stream.size()) {
      auto& buffer = side.buffer;
      // Room for a read of `piece` bytes (a relay reads into its fixed buffer; growing it here
      // lets a large `piece` mean "everything in one read").
      buffer.reserve(buffer.size() + std::min(piece_, stream.size() - pos));
      const auto space = buffer.free_space();
      const std::size_t n = std::min({piece_, space.size(), stream.size() - pos});
      std::memcpy(space.data(), stream.data() + pos, n);
      buffer.added(n);
      pos += n;
      const auto scan = from_client ? tracker.scan_client(buffer.unscanned(), events)
                                    : tracker.scan_server(buffer.unscanned(), events);
      // The scanner never claims more than it was given.
      EXPECT_LE(scan.scanned, buffer.unscanned().size());
      buffer.mark_scanned(scan.scanned);
      if (scan.wanted > 0) {
        EXPECT_LE(scan.wanted, kWholeMessageLimit);
        buffer.reserve(scan.wanted);
      }
      buffer.mark_sent(buffer.unsent().size());  // passed on
      last = scan.stop;
      if (scan.stop != Stop::more) {
        events.add(scan.stop == Stop::terminate           ? "stop terminate"
                   : scan.stop == Stop::transaction_block ? "stop transaction_block"
                                                          : "stop invalid");
        buffer.discard_scanned();
        break;
      }
    }
    return last;
  }
  Outcome outcome() const {
    return Outcome{events.trace,
                   tracker.ready_owed(),
                   tracker.batch_open(),
                   tracker.status(),
                   tracker.copy(),
                   tracker.server_fatal(),
                   tracker.client_terminated(),
                   tracker.at_transaction_boundary()};
  }
  const StreamBuffer& buffer(bool from_client) const {
    return from_client ? client_.buffer : server_.buffer;
  }

 private:
  std::size_t piece_;
  Side client_, server_;
};

// A conversation: which side sent which bytes, in the order the relay saw them.
struct Turn {
  bool from_client;
  std::string bytes;
};
using Script = std::vector<Turn>;

const std::size_t kPieces[] = {1, 2, 3, 5, 7, 16, 64, 1 << 20};

Outcome play(const Script& script, std::size_t piece, bool statement_mode, bool bodies) {
  Conversation c(piece);
  c.events.bodies = bodies;
  c.tracker.set_forbid_transaction_blocks(statement_mode);
  for (const auto& turn : script) {
    if (c.feed(turn.from_client, turn.bytes) != Stop::more) break;
  }
  return c.outcome();
}

// The same outcome at every fragmentation; returns the one of reading everything at once,
// with the statement bodies.
Outcome play_everywhere(const Script& script, bool statement_mode = false) {
  const Outcome whole = play(script, 1 << 20, statement_mode, false);
  for (std::size_t piece : kPieces) {
    EXPECT_EQ(play(script, piece, statement_mode, false), whole) << "in pieces of " << piece;
  }
  return play(script, 1 << 20, statement_mode, true);
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(MessageTypes, EveryTypeTheCodecAcceptsHasAName) {
  const std::set<char> client{fc::kBind,         fc::kClose,    fc::kCopyData, fc::kCopyDone,
                              fc::kCopyFail,     fc::kDescribe, fc::kExecute,  fc::kFlush,
                              fc::kFunctionCall, fc::kParse,    fc::kPassword, fc::kQuery,
                              fc::kSync,         fc::kTerminate};
  const std::set<char> server{fs::kAuthentication,
                              fs::kBackendKeyData,
                              fs::kBindComplete,
                              fs::kCloseComplete,
                              fs::kCommandComplete,
                              fs::kCopyBothResponse,
                              fs::kCopyData,
                              fs::kCopyDone,
                              fs::kCopyInResponse,
                              fs::kCopyOutResponse,
                              fs::kDataRow,
                              fs::kEmptyQueryResponse,
                              fs::kErrorResponse,
                              fs::kFunctionCallResponse,
                              fs::kNegotiateProtocolVersion,
                              fs::kNoData,
                              fs::kNoticeResponse,
                              fs::kNotificationResponse,
                              fs::kParameterDescription,
                              fs::kParameterStatus,
                              fs::kParseComplete,
                              fs::kPortalSuspended,
                              fs::kReadyForQuery,
                              fs::kRowDescription};
  EXPECT_EQ(client.size(), 14u);  // no two names share a byte
  EXPECT_EQ(server.size(), 24u);
  for (int b = 0; b < 256; ++b) {
    const auto type = static_cast<char>(b);
    const std::string header = msg(type);
    const bool client_ok =
        std::holds_alternative<Header>(parse_header(bytes_of(header), Direction::frontend));
    const bool server_ok =
        std::holds_alternative<Header>(parse_header(bytes_of(header), Direction::backend));
    EXPECT_EQ(client_ok, client.contains(type)) << "client type " << b;
    EXPECT_EQ(server_ok, server.contains(type)) << "server type " << b;
  }
}

// ---------------------------------------------------------------------------------------------
// Client messages, one type at a time

struct ClientCase {
  const char* name;
  std::string bytes;
  std::string trace;
  int owed;
  bool batch_open;
};

TEST(TransactionTrackerClient, EveryMessageType) {
  const std::vector<ClientCase> cases{
      {"Query", query("SELECT 1"), "statement Q SELECT 1| whole;request;", 1, false},
      {"Parse", parse("s1", "SELECT $1"), "statement P s1|SELECT $1||| whole;parse;", 0, true},
      {"Bind", msg(fc::kBind, cstr("") + cstr("s1") + std::string(6, '\0')), "bind;", 0, true},
      {"Describe", msg(fc::kDescribe, "S" + cstr("s1")), "", 0, true},
      {"Execute", msg(fc::kExecute, cstr("") + be32(0)), "statement E ||||| whole;", 0, true},
      {"Close", msg(fc::kClose, "S" + cstr("s1")), "", 0, true},
      {"Sync", msg(fc::kSync), "request;", 1, false},
      {"Flush", msg(fc::kFlush), "", 0, false},
      {"FunctionCall", msg(fc::kFunctionCall, be32(1234) + std::string(6, '\0')), "request;", 1,
       false},
      {"CopyData", msg(fc::kCopyData, "1\t2\n"), "", 0, false},
      {"CopyDone", msg(fc::kCopyDone), "", 0, false},
      {"CopyFail", msg(fc::kCopyFail, cstr("no")), "", 0, false},
      {"Password", msg(fc::kPassword, cstr("secret")), "", 0, true},
      {"Terminate", msg(fc::kTerminate), "stop terminate;", 0, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto out = play_everywhere({{true, c.bytes}});
    EXPECT_EQ(out.trace, c.trace);
    EXPECT_EQ(out.ready_owed, c.owed);
    EXPECT_EQ(out.batch_open, c.batch_open);
    EXPECT_EQ(out.terminated, std::string_view(c.name) == "Terminate");
    // Nothing the client sends alone changes what the server reported.
    EXPECT_EQ(out.status, TransactionStatus::idle);
    EXPECT_EQ(out.copy, CopyMode::none);
    EXPECT_FALSE(out.fatal);
    EXPECT_EQ(out.boundary, c.owed == 0 && !c.batch_open);
  }
}

TEST(TransactionTrackerClient, ASyncEndsTheBatchAndOwesOneReady) {
  const std::string batch = parse("", "SELECT 1") +
                            msg(fc::kBind, cstr("") + cstr("") + std::string(6, '\0')) +
                            msg(fc::kExecute, cstr("") + be32(0));
  auto out = play_everywhere({{true, batch}});
  EXPECT_TRUE(out.batch_open);
  EXPECT_EQ(out.ready_owed, 0);
  EXPECT_FALSE(out.boundary);  // a batch without its Sync is never a boundary
  out = play_everywhere({{true, batch + msg(fc::kSync)}});
  EXPECT_FALSE(out.batch_open);
  EXPECT_EQ(out.ready_owed, 1);
  out = play_everywhere({{true, batch + msg(fc::kSync) + batch + msg(fc::kSync)},
                         {false, msg(fs::kParseComplete) + msg(fs::kBindComplete) +
                                     msg(fs::kDataRow, std::string(2, '\0')) +
                                     msg(fs::kCommandComplete, cstr("SELECT 1")) + ready('I')}});
  EXPECT_EQ(out.ready_owed, 1);  // the pipeline's second Sync is still owed
  EXPECT_FALSE(out.boundary);
}

TEST(TransactionTrackerClient, TerminateIsNotScannedAndNothingAfterIt) {
  TransactionTracker tracker;
  Recorder events;
  const std::string stream = query("SELECT 1") + msg(fc::kTerminate) + query("SELECT 2");
  const auto scan = tracker.scan_client(bytes_of(stream), events);
  EXPECT_EQ(scan.stop, Stop::terminate);
  EXPECT_EQ(scan.scanned, query("SELECT 1").size());  // the Terminate stays behind
  EXPECT_TRUE(tracker.client_terminated());
  const auto again = tracker.scan_client(bytes_of(stream).subspan(scan.scanned), events);
  EXPECT_EQ(again.stop, Stop::terminate);
  EXPECT_EQ(again.scanned, 0u);
  EXPECT_EQ(tracker.ready_owed(), 1);
}

TEST(TransactionTrackerClient, MalformedMessagesAreInvalid) {
  const std::vector<std::pair<std::string, CodecError>> bad{
      {std::string("Z") + be32(5) + "I", CodecError::unknown_message_type},  // a server type
      {std::string("Q") + be32(3), CodecError::invalid_length},
      {std::string("S") + be32(20000), CodecError::message_too_large},  // over the small limit
  };
  for (const auto& [bytes, expected] : bad) {
    TransactionTracker tracker;
    Recorder events;
    const std::string stream = query("SELECT 1") + bytes;
    const auto scan = tracker.scan_client(bytes_of(stream), events);
    EXPECT_EQ(scan.stop, Stop::invalid);
    EXPECT_EQ(scan.error, expected);
    EXPECT_EQ(scan.scanned, query("SELECT 1").size());  // everything before it is fine
  }
}

TEST(TransactionTrackerClient, ALargeQueryStreamsThroughWithItsPrefixSeen) {
  const std::string sql = "SELECT '" + std::string(100000, 'x') + "'";
  Conversation c(4096);
  c.feed(true, query(sql));
  const auto& trace = c.events.trace;
  // One statement event, at the header, with what had arrived of the body: not whole.
  EXPECT_EQ(trace.rfind("statement Q SELECT 'xxx", 0), 0u) << trace.substr(0, 40);
  EXPECT_NE(trace.find(" part;request;"), std::string::npos);
  // The body was never buffered whole: the buffer stayed at the read size.
  EXPECT_LE(c.buffer(true).capacity(), 4096u * 2);
  EXPECT_FALSE(c.tracker.client_mid_message());
  EXPECT_EQ(c.tracker.ready_owed(), 1);
}

TEST(TransactionTrackerClient, ABodyPartwayIsReportedUntilItEnds) {
  TransactionTracker tracker;
  Recorder events;
  const std::string whole = msg(fc::kCopyData, std::string(1000, 'd'));
  auto scan = tracker.scan_client(bytes_of(whole).subspan(0, 100), events);
  EXPECT_EQ(scan.scanned, 100u);  // the header and the body bytes so far go on at once
  EXPECT_TRUE(tracker.client_mid_message());
  scan = tracker.scan_client(bytes_of(whole).subspan(100), events);
  EXPECT_EQ(scan.scanned, whole.size() - 100);
  EXPECT_FALSE(tracker.client_mid_message());
}

// ---------------------------------------------------------------------------------------------
// Server messages, one type at a time

TEST(TransactionTrackerServer, ReadyForQueryCarriesTheStatusAndPaysWhatIsOwed) {
  for (const char status : {'I', 'T', 'E'}) {
    const auto out = play_everywhere({{true, query("BEGIN")}, {false, ready(status)}});
    EXPECT_EQ(out.ready_owed, 0);
    EXPECT_EQ(static_cast<char>(out.status), status);
    EXPECT_EQ(out.boundary, status == 'I');
    EXPECT_NE(out.trace.find(std::string("ready ") + status), std::string::npos);
  }
}

TEST(TransactionTrackerServer, AnUnaskedReadyForQueryOwesNothingNegative) {
  const auto out = play_everywhere({{false, ready('I') + ready('I')}});
  EXPECT_EQ(out.ready_owed, 0);
  EXPECT_TRUE(out.boundary);
  // A malformed status keeps the last one but still pays a ReadyForQuery.
  const auto odd = play_everywhere(
      {{true, query("x") + query("y")}, {false, ready('T') + msg(fs::kReadyForQuery)}});
  EXPECT_EQ(odd.ready_owed, 0);
  EXPECT_EQ(odd.status, TransactionStatus::in_transaction);
}

TEST(TransactionTrackerServer, ParameterStatusAndErrors) {
  const auto out = play_everywhere({{true, query("SET x")},
                                    {false, parameter("TimeZone", "UTC") + error("ERROR") +
                                                error("FATAL", "terminating") + ready('I')}});
  EXPECT_EQ(out.trace,
            "statement Q SET x| whole;request;parameter TimeZone=UTC;error ERROR;error "
            "FATAL;ready I;");
  EXPECT_TRUE(out.fatal);
  EXPECT_FALSE(out.boundary);  // a server that said FATAL is never given back
  const auto panic = play_everywhere({{false, error("PANIC")}});
  EXPECT_TRUE(panic.fatal);
}

TEST(TransactionTrackerServer, EveryOtherTypeStreamsWithoutChangingTheState) {
  const std::vector<std::string> others{
      msg(fs::kAuthentication, be32(0)),
      msg(fs::kBackendKeyData, be32(1) + be32(2)),
      msg(fs::kBindComplete),
      msg(fs::kCloseComplete),
      msg(fs::kCommandComplete, cstr("SELECT 1")),
      msg(fs::kDataRow, std::string(2, '\0')),
      msg(fs::kEmptyQueryResponse),
      msg(fs::kFunctionCallResponse, be32(0xffffffff)),
      msg(fs::kNegotiateProtocolVersion, be32(0) + be32(0)),
      msg(fs::kNoData),
      msg(fs::kNoticeResponse, "SNOTICE" + std::string(1, '\0') + std::string(1, '\0')),
      msg(fs::kNotificationResponse, be32(1) + cstr("chan") + cstr("payload")),
      msg(fs::kParameterDescription, std::string(2, '\0')),
      msg(fs::kParseComplete),
      msg(fs::kPortalSuspended),
      msg(fs::kRowDescription, std::string(2, '\0')),
  };
  for (const auto& m : others) {
    SCOPED_TRACE(std::string(1, m[0]));
    const auto out = play_everywhere({{true, query("SELECT 1")}, {false, m}});
    EXPECT_EQ(out.trace, "statement Q SELECT 1| whole;request;");
    EXPECT_EQ(out.ready_owed, 1);
    EXPECT_EQ(out.copy, CopyMode::none);
    EXPECT_FALSE(out.fatal);
  }
}

TEST(TransactionTrackerServer, WholeMessagesAreWantedWholeAndCapped) {
  TransactionTracker tracker;
  Recorder events;
  const std::string z = ready('I');
  auto scan = tracker.scan_server(bytes_of(z).subspan(0, 5), events);
  EXPECT_EQ(scan.stop, Stop::more);
  EXPECT_EQ(scan.scanned, 0u);       // not passed on before it is whole
  EXPECT_EQ(scan.wanted, z.size());  // the caller makes room for all of it
  EXPECT_EQ(events.trace, "");
  // A ParameterStatus claiming more than the cap is a broken server, not an allocation.
  const std::string huge = std::string(1, fs::kParameterStatus) + be32(kWholeMessageLimit);
  scan = tracker.scan_server(bytes_of(huge), events);
  EXPECT_EQ(scan.stop, Stop::invalid);
  EXPECT_EQ(scan.error, CodecError::message_too_large);
  // A DataRow of the same size streams.
  const std::string row = std::string(1, fs::kDataRow) + be32(kWholeMessageLimit) + "ab";
  TransactionTracker other;
  scan = other.scan_server(bytes_of(row), events);
  EXPECT_EQ(scan.stop, Stop::more);
  EXPECT_EQ(scan.scanned, row.size());
  EXPECT_TRUE(other.server_mid_message());
  EXPECT_FALSE(other.server_owes_nothing());
}

TEST(TransactionTrackerServer, MalformedMessagesAreInvalid) {
  TransactionTracker tracker;
  Recorder events;
  const std::string stream = ready('I') + std::string("Q") + be32(4);  // a client type
  const auto scan = tracker.scan_server(bytes_of(stream), events);
  EXPECT_EQ(scan.stop, Stop::invalid);
  EXPECT_EQ(scan.error, CodecError::unknown_message_type);
  EXPECT_EQ(scan.scanned, ready('I').size());
}

// ---------------------------------------------------------------------------------------------
// COPY

TEST(TransactionTrackerCopy, CopyInEndsWithTheClientsCopyDoneOrFail) {
  const std::string copy_in = msg(fs::kCopyInResponse, std::string(3, '\0'));
  for (char end : {fc::kCopyDone, fc::kCopyFail}) {
    const std::string end_message = end == fc::kCopyFail ? msg(end, cstr("no")) : msg(end);
    const auto out = play_everywhere({{true, query("COPY t FROM STDIN")},
                                      {false, copy_in},
                                      {true, msg(fc::kCopyData, "1\n") + end_message}});
    EXPECT_EQ(out.copy, CopyMode::none);
    EXPECT_EQ(out.ready_owed, 1);  // CommandComplete (or the error) and ReadyForQuery to come
    EXPECT_EQ(out.trace, "statement Q COPY t FROM STDIN| whole;request;copy in;copy ended;");
  }
  const auto during = play_everywhere({{true, query("COPY t FROM STDIN")}, {false, copy_in}});
  EXPECT_EQ(during.copy, CopyMode::in);
  EXPECT_FALSE(during.boundary);
}

TEST(TransactionTrackerCopy, CopyOutEndsWithTheServersCopyDone) {
  const auto out = play_everywhere(
      {{true, query("COPY t TO STDOUT")},
       {false, msg(fs::kCopyOutResponse, std::string(3, '\0')) + msg(fs::kCopyData, "1\n") +
                   msg(fs::kCopyDone) + msg(fs::kCommandComplete, cstr("COPY 1")) + ready('I')}});
  EXPECT_EQ(out.trace, "statement Q COPY t TO STDOUT| whole;request;copy out;copy ended;ready I;");
  EXPECT_EQ(out.copy, CopyMode::none);
  EXPECT_TRUE(out.boundary);
}

TEST(TransactionTrackerCopy, AnErrorOrReadyForQueryEndsAnyCopy) {
  auto out = play_everywhere(
      {{true, query("COPY t FROM STDIN")},
       {false, msg(fs::kCopyInResponse, std::string(3, '\0')) + error("ERROR") + ready('I')}});
  EXPECT_EQ(out.trace,
            "statement Q COPY t FROM STDIN| whole;request;copy in;error ERROR;copy ended;ready "
            "I;");
  // A client that sent its data before the CopyInResponse arrived: the copy still ends.
  out = play_everywhere({{true, query("COPY t FROM STDIN") + msg(fc::kCopyDone)},
                         {false, msg(fs::kCopyInResponse, std::string(3, '\0')) +
                                     msg(fs::kCommandComplete, cstr("COPY 0")) + ready('I')}});
  EXPECT_EQ(out.copy, CopyMode::none);
  EXPECT_TRUE(out.boundary);
  out = play_everywhere(
      {{false, msg(fs::kCopyBothResponse, std::string(3, '\0')) + msg(fs::kCopyDone)}});
  EXPECT_EQ(out.trace, "copy both;copy ended;");
}

TEST(TransactionTrackerCopy, ExtendedCopyInOwesNoReadyForTheSyncTheServerIgnores) {
  // libpq's PQexecParams("COPY ... FROM STDIN"): Parse, Bind, Describe, Execute and Sync go
  // together; the server answers the Execute with CopyInResponse and reads the Sync in COPY
  // mode, where it is ignored; libpq ends with CopyDone and a Sync of its own. One
  // ReadyForQuery in all.
  const std::string bind = msg(fc::kBind, cstr("") + cstr("") + std::string(6, '\0'));
  const std::string execute = msg(fc::kExecute, cstr("") + be32(0));
  const std::string start = parse("", "COPY t FROM STDIN") + bind +
                            msg(fc::kDescribe, "P" + cstr("")) + execute + msg(fc::kSync);
  const std::string copy_in = msg(fs::kParseComplete) + msg(fs::kBindComplete) + msg(fs::kNoData) +
                              msg(fs::kCopyInResponse, std::string(3, '\0'));
  const std::string end = msg(fc::kCopyData, "1\n") + msg(fc::kCopyDone) + msg(fc::kSync);
  auto out = play_everywhere({{true, start}, {false, copy_in}});
  EXPECT_EQ(out.ready_owed, 0);  // the Sync sent with the Execute is ignored in COPY mode
  EXPECT_EQ(out.copy, CopyMode::in);
  EXPECT_FALSE(out.boundary);  // but the copy is under way
  out = play_everywhere({{true, start},
                         {false, copy_in},
                         {true, end},
                         {false, msg(fs::kCommandComplete, cstr("COPY 1")) + ready('I')}});
  EXPECT_EQ(out.ready_owed, 0);
  EXPECT_TRUE(out.boundary);  // the server can go back to the pool
  // A client that sends everything before the server has answered: only the Sync between the
  // Execute and the CopyDone is ignored.
  out =
      play_everywhere({{true, start + end},
                       {false, copy_in + msg(fs::kCommandComplete, cstr("COPY 1")) + ready('I')}});
  EXPECT_EQ(out.ready_owed, 0);
  EXPECT_TRUE(out.boundary);
  // An error in the data: the server leaves COPY mode, skips to the client's last Sync and
  // answers it. Still one ReadyForQuery.
  out = play_everywhere({{true, start},
                         {false, copy_in},
                         {true, end},
                         {false, error("ERROR", "invalid input syntax") + ready('I')}});
  EXPECT_EQ(out.ready_owed, 0);
  EXPECT_TRUE(out.boundary);
}

TEST(TransactionTrackerCopy, ASyncAfterTheCopyStartedStillCounts) {
  // Owing one too many keeps the server; owing one too few would give it away while a reply
  // is on its way. A Sync the tracker sees after the CopyInResponse is counted.
  const auto out =
      play_everywhere({{true, query("COPY t FROM STDIN")},
                       {false, msg(fs::kCopyInResponse, std::string(3, '\0'))},
                       {true, msg(fc::kSync) + msg(fc::kCopyDone)},
                       {false, msg(fs::kCommandComplete, cstr("COPY 0")) + ready('I')}});
  EXPECT_EQ(out.ready_owed, 1);
  EXPECT_FALSE(out.boundary);
  // Syncs of earlier statements, answered long ago, are not taken back by a later COPY.
  const auto later =
      play_everywhere({{true, query("SELECT 1") + msg(fc::kSync)},
                       {false, ready('I') + ready('I')},
                       {true, query("COPY t FROM STDIN")},
                       {false, msg(fs::kCopyInResponse, std::string(3, '\0'))},
                       {true, msg(fc::kCopyDone)},
                       {false, msg(fs::kCommandComplete, cstr("COPY 0")) + ready('I')}});
  EXPECT_EQ(later.ready_owed, 0);
  EXPECT_TRUE(later.boundary);
}

// ---------------------------------------------------------------------------------------------
// Statement mode, servers changing hands

TEST(TransactionTrackerStatementMode, ATransactionBlockStopsBehindItsReadyForQuery) {
  const auto out = play_everywhere(
      {{true, query("BEGIN")},
       {false, msg(fs::kCommandComplete, cstr("BEGIN")) + ready('T') + parameter("a", "b")}},
      true);
  EXPECT_EQ(out.trace, "statement Q BEGIN| whole;request;ready T;stop transaction_block;");
  EXPECT_EQ(out.status, TransactionStatus::in_transaction);
  TransactionTracker tracker;
  tracker.set_forbid_transaction_blocks(true);
  Recorder events;
  const std::string stream = ready('T') + parameter("a", "b");
  const auto scan = tracker.scan_server(bytes_of(stream), events);
  EXPECT_EQ(scan.stop, Stop::transaction_block);
  EXPECT_EQ(scan.scanned, ready('T').size());  // the ReadyForQuery is scanned, the rest not
  // 'I' passes.
  const auto idle = play_everywhere({{true, query("SELECT 1")}, {false, ready('I')}}, true);
  EXPECT_TRUE(idle.boundary);
}

TEST(TransactionTrackerServerChange, AttachingAServerStartsItsSideAfresh) {
  TransactionTracker tracker;
  Recorder events;
  const std::string row = std::string(1, fs::kDataRow) + be32(100);  // body never comes
  tracker.scan_client(bytes_of(query("SELECT 1")), events);
  tracker.scan_server(bytes_of(error("FATAL") + ready('E') + row), events);
  EXPECT_TRUE(tracker.server_fatal());
  EXPECT_TRUE(tracker.server_mid_message());
  tracker.server_attached(TransactionStatus::idle);
  EXPECT_FALSE(tracker.server_fatal());
  EXPECT_FALSE(tracker.server_mid_message());
  EXPECT_EQ(tracker.status(), TransactionStatus::idle);
  // What the client sent while it had no server stays owed.
  tracker.scan_client(bytes_of(query("SELECT 2")), events);
  EXPECT_EQ(tracker.ready_owed(), 1);
}

// ---------------------------------------------------------------------------------------------
// Whole conversations at every fragmentation

// The session-state guard (set_guard_statements): each Query and Parse reaches
// on_client_statement_message() whole, however the bytes arrive; no other client message does.
struct GuardRecorder {
  std::vector<std::string> seen;  // type, then the body
  bool on_client_statement_message(const Header& header, Bytes body) {
    EXPECT_EQ(body.size(), header.body_size());  // whole
    seen.push_back(std::string(1, header.type) + std::string(as_chars(body)));
    return false;
  }
};

TEST(TransactionTrackerGuard, QueryAndParseTextsAreSeenWholeAtEveryFragmentation) {
  const std::string long_set = "SET search_path TO " + std::string(20000, 'x');
  const std::string stream = query(long_set) + parse("s1", "SELECT pg_advisory_lock($1)") +
                             msg(fc::kBind, std::string(8, '\0')) + msg(fc::kSync) +
                             query("SELECT 1");
  for (std::size_t piece : kPieces) {
    TransactionTracker tracker;
    tracker.set_guard_statements(true);
    GuardRecorder events;
    StreamBuffer buffer;
    for (std::size_t pos = 0; pos < stream.size();) {
      buffer.reserve(buffer.size() + std::min(piece, stream.size() - pos));
      const auto space = buffer.free_space();
      const std::size_t n = std::min({piece, space.size(), stream.size() - pos});
      std::memcpy(space.data(), stream.data() + pos, n);
      buffer.added(n);
      pos += n;
      const auto scan = tracker.scan_client(buffer.unscanned(), events);
      ASSERT_EQ(scan.stop, Stop::more);
      buffer.mark_scanned(scan.scanned);
      if (scan.wanted > 0) buffer.reserve(scan.wanted);
      buffer.mark_sent(buffer.unsent().size());
    }
    ASSERT_EQ(events.seen.size(), 3u) << piece;
    EXPECT_EQ(events.seen[0], "Q" + long_set + '\0') << piece;
    EXPECT_EQ(events.seen[1].substr(0, 4), std::string("Ps1") + '\0') << piece;
    EXPECT_EQ(events.seen[2], std::string("QSELECT 1") + '\0') << piece;
    EXPECT_EQ(tracker.ready_owed(), 3) << piece;
  }
  // Without the guard (and without statement tracking) the consumer is never asked.
  TransactionTracker tracker;
  GuardRecorder events;
  const auto scan = tracker.scan_client(bytes_of(stream), events);
  EXPECT_EQ(scan.scanned, stream.size());
  EXPECT_TRUE(events.seen.empty());
}

TEST(TransactionTrackerConversation, RealisticScriptsAgreeAtEveryFragmentation) {
  const std::string bind = msg(fc::kBind, cstr("") + cstr("") + std::string(6, '\0'));
  const std::string execute = msg(fc::kExecute, cstr("") + be32(0));
  const std::string results = msg(fs::kRowDescription, std::string(2, '\0')) +
                              msg(fs::kDataRow, std::string(2, '\0')) +
                              msg(fs::kCommandComplete, cstr("SELECT 1"));
  const std::vector<Script> scripts{
      // Simple queries in a transaction.
      {{true, query("BEGIN")},
       {false, msg(fs::kCommandComplete, cstr("BEGIN")) + ready('T')},
       {true, query("/* route='x' */ SELECT 1")},
       {false, results + ready('T')},
       {true, query("COMMIT")},
       {false, msg(fs::kCommandComplete, cstr("COMMIT")) + parameter("a", "1") + ready('I')}},
      // An extended-protocol pipeline with an error in the middle.
      {{true,
        parse("s", "SELECT 1") + bind + execute + msg(fc::kSync) + bind + execute + msg(fc::kSync)},
       {false, msg(fs::kParseComplete) + msg(fs::kBindComplete) + results + ready('I') +
                   error("ERROR") + ready('I')}},
      // A large result.
      {{true, query("SELECT big")},
       {false, msg(fs::kRowDescription, std::string(2, '\0')) +
                   msg(fs::kDataRow, std::string(70000, 'r')) +
                   msg(fs::kCommandComplete, cstr("SELECT 1")) + ready('I')}},
  };
  for (const auto& script : scripts) {
    const auto out = play_everywhere(script);
    EXPECT_EQ(out.ready_owed, 0);
    EXPECT_TRUE(out.boundary);
  }
}

TEST(TransactionTrackerConversation, NeverABoundaryWhileAReplyIsOwed) {
  // Feed a pipeline byte by byte and check at every step against a count kept by hand.
  const std::string client = query("SELECT 1") + query("SELECT 2") + msg(fc::kSync);
  const std::string server = ready('I') + ready('I') + ready('I');
  TransactionTracker tracker;
  Recorder events;
  const auto sent = tracker.scan_client(bytes_of(client), events);
  ASSERT_EQ(sent.scanned, client.size());
  std::size_t scanned = 0;
  int readies_seen = 0;
  for (std::size_t end = 1; end <= server.size(); ++end) {
    const auto scan = tracker.scan_server(bytes_of(server).subspan(scanned, end - scanned), events);
    scanned += scan.scanned;
    readies_seen = static_cast<int>(scanned / ready('I').size());
    EXPECT_EQ(tracker.ready_owed(), 3 - readies_seen);
    EXPECT_EQ(tracker.at_transaction_boundary(), readies_seen == 3) << "at byte " << end;
  }
}

// ---------------------------------------------------------------------------------------------
// StreamBuffer: the regions both directions share

TEST(StreamBuffer, RegionsAndCompaction) {
  StreamBuffer buffer;
  EXPECT_FALSE(buffer.has_storage());
  buffer.reserve(16);
  const std::string data = "0123456789";
  std::memcpy(buffer.free_space().data(), data.data(), data.size());
  buffer.added(data.size());
  EXPECT_EQ(buffer.unscanned().size(), 10u);
  EXPECT_FALSE(buffer.has_unsent());
  buffer.mark_scanned(7);
  EXPECT_EQ(as_chars(buffer.unsent()), "0123456");
  EXPECT_EQ(as_chars(buffer.unscanned()), "789");
  buffer.mark_sent(3);
  EXPECT_EQ(as_chars(buffer.unsent()), "3456");
  EXPECT_EQ(buffer.size(), 10u);  // nothing moves while scanned bytes wait
  buffer.mark_sent(4);
  // Everything scanned is out: the unscanned rest moved to the front.
  EXPECT_EQ(buffer.size(), 3u);
  EXPECT_EQ(as_chars(buffer.unscanned()), "789");
  EXPECT_FALSE(buffer.has_unsent());
}

TEST(StreamBuffer, DiscardScannedDropsWrittenAndUnwrittenAlike) {
  StreamBuffer buffer;
  buffer.append(as_bytes("abcdefgh"));
  buffer.mark_scanned(5);
  buffer.mark_sent(2);
  buffer.discard_scanned();
  EXPECT_EQ(as_chars(buffer.unscanned()), "fgh");
  EXPECT_FALSE(buffer.has_unsent());
  buffer.clear();
  EXPECT_TRUE(buffer.empty());
}

TEST(StreamBuffer, StorageComesAndGoes) {
  StreamBuffer buffer;
  buffer.adopt(std::vector<std::byte>(32));
  EXPECT_EQ(buffer.capacity(), 32u);
  EXPECT_EQ(buffer.free_space().size(), 32u);
  buffer.append(as_bytes(std::string(40, 'x')));  // grows to fit
  EXPECT_GE(buffer.capacity(), 40u);
  EXPECT_TRUE(buffer.full() || buffer.capacity() > 40u);
  buffer.grow();
  EXPECT_GE(buffer.capacity(), 80u);
  buffer.clear();
  const auto storage = buffer.release_storage();
  EXPECT_GE(storage.size(), 80u);
  EXPECT_FALSE(buffer.has_storage());
}

}  // namespace
}  // namespace pgw::proto
