// Fuzz target "stream": the relay's own protocol tracking, proto::TransactionTracker with
// proto::StreamBuffer, fed a conversation in both directions in arbitrary pieces.
//
// Input: byte 0 seeds the read sizes, byte 1 holds options (bit 0: statement pooling), then
// turns: a 2-byte header (bit 15: 1 = the client speaks, 0 = the server; bits 0-14: length) and
// that many bytes of the speaker's stream. A turn may end inside a message; the next turn of
// the same side continues it.
//
// Each turn's bytes arrive in reads whose sizes come from the seed, into a StreamBuffer the
// way the relay reads (scan what is new, pass on what is scanned, make room for a message the
// tracker wants whole). Invariants, after every read:
//  * the tracker's state (ReadyForQuery owed, batch open, transaction status, FATAL, COPY) is
//    what a reference model computes from the whole messages of the same conversation, so it
//    never reports a server clean (at_transaction_boundary) while a reply is owed;
//  * it never reads past a message: between messages the scanned position is a message
//    boundary of the stream, inside one it is past that message's header, and a stop leaves
//    the stream where the reference says it must;
//  * memory stays bounded: no buffer grows past the cap on messages read whole;
//  * the events (without statement bodies, which are what had arrived) and the final state do
//    not depend on the read sizes: every run is compared with a run that reads each turn whole.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "protocol/message_types.hpp"
#include "protocol/stream_buffer.hpp"
#include "protocol/transaction_tracker.hpp"
#include "protocol_checks.hpp"

namespace {

namespace proto = pgw::proto;
namespace fc = proto::from_client;
namespace fs = proto::from_server;
using Stop = proto::TransactionTracker::Stop;

constexpr std::size_t kInitialBuffer = 64;

struct Turn {
  bool from_client;
  proto::Bytes bytes;
};

std::vector<Turn> split_turns(proto::Bytes data) {
  std::vector<Turn> turns;
  std::size_t pos = 0;
  while (pos + 2 <= data.size()) {
    const unsigned header =
        (std::to_integer<unsigned>(data[pos]) << 8) | std::to_integer<unsigned>(data[pos + 1]);
    pos += 2;
    const std::size_t length = std::min<std::size_t>(header & 0x7fff, data.size() - pos);
    turns.push_back({(header & 0x8000) != 0, data.subspan(pos, length)});
    pos += length;
  }
  return turns;
}

class ReadSizes {
 public:
  explicit ReadSizes(std::uint64_t seed) : state_(seed) {}
  // 0: the whole turn in one read.
  std::size_t next() {
    if (state_ == 0) return 0;
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    switch (state_ & 3) {
      case 0:
        return 1;
      case 1:
        return 1 + (state_ >> 8) % 8;
      case 2:
        return 1 + (state_ >> 8) % 64;
      default:
        return 1 + (state_ >> 8) % 1024;
    }
  }

 private:
  std::uint64_t state_;
};

// The events, without statement bodies.
struct Events {
  std::string trace;
  void add(char what, char detail = ' ') {
    trace += what;
    trace += detail;
  }
  void on_request() { add('r'); }
  void on_statement(char type, proto::Bytes body, bool whole) {
    FUZZ_CHECK(type == fc::kQuery || type == fc::kParse || type == fc::kExecute);
    (void)body;
    (void)whole;
    add('s', type);
  }
  void on_parse() { add('p'); }
  void on_bind() { add('b'); }
  void on_ready(proto::TransactionStatus status) { add('z', static_cast<char>(status)); }
  void on_parameter_status(std::string_view, std::string_view) { add('S'); }
  void on_server_error(const proto::ErrorFields& fields) {
    add('e', fields.is_fatal() ? 'F' : 'E');
  }
  void on_copy_started(proto::CopyMode mode) {
    add('c', static_cast<char>('0' + static_cast<int>(mode)));
  }
  void on_copy_ended() { add('C'); }
};

// The reference: what the protocol says the tracker must know, from whole messages of the
// whole stream of each side, advanced as far as the bytes delivered so far allow (a client
// message counts once its header is there, as does a server message the relay streams; a
// ReadyForQuery, ParameterStatus or ErrorResponse once it is whole).
struct Reference {
  bool statement_mode = false;
  int owed = 0;
  bool batch = false;
  proto::TransactionStatus status = proto::TransactionStatus::idle;
  proto::CopyMode copy = proto::CopyMode::none;
  bool fatal = false;
  // Syncs since the last Query/Execute and before CopyDone/CopyFail: a server that answers
  // that statement with CopyInResponse reads them in COPY mode and ignores them.
  int window_syncs = 0;
  bool window_open = false;
  bool stopped = false;  // a stop the relay acts on: nothing after it is scanned
  Stop stop = Stop::more;

  // Per side: the full stream delivered so far, and how far the reference has taken it.
  struct Side {
    std::string stream;
    std::size_t next = 0;        // the next message starts here (maybe beyond what arrived)
    std::size_t last_start = 0;  // where the last message taken starts
  } client, server;

  void advance(bool from_client) {
    auto& side = from_client ? client : server;
    const auto direction = from_client ? proto::Direction::frontend : proto::Direction::backend;
    while (!stopped && side.next < side.stream.size()) {
      const auto rest = proto::as_bytes(side.stream).subspan(side.next);
      const auto parsed = proto::parse_header(rest, direction);
      if (std::holds_alternative<proto::NeedMore>(parsed)) return;
      if (std::holds_alternative<proto::CodecError>(parsed)) {
        stopped = true;
        stop = Stop::invalid;
        return;
      }
      const auto header = std::get<proto::Header>(parsed);
      const bool whole = !from_client &&
                         (header.type == fs::kReadyForQuery ||
                          header.type == fs::kParameterStatus || header.type == fs::kErrorResponse);
      if (whole) {
        if (header.total_size() > proto::kWholeMessageLimit) {
          stopped = true;
          stop = Stop::invalid;
          return;
        }
        if (rest.size() < header.total_size()) return;
      }
      const auto body =
          rest.subspan(proto::kHeaderSize,
                       std::min<std::size_t>(header.body_size(), rest.size() - proto::kHeaderSize));
      if (from_client) {
        if (header.type == fc::kTerminate) {
          stopped = true;
          stop = Stop::terminate;
          return;
        }
        client_message(header.type);
      } else if (!server_message(header.type, body)) {
        side.last_start = side.next;
        side.next += header.total_size();
        stopped = true;
        stop = Stop::transaction_block;
        return;
      }
      side.last_start = side.next;
      side.next += header.total_size();
    }
  }

  void client_message(char type) {
    switch (type) {
      case fc::kQuery:
      case fc::kSync:
      case fc::kFunctionCall:
        ++owed;
        batch = false;
        if (type == fc::kQuery) {
          window_syncs = 0;
          window_open = true;
        }
        if (type == fc::kSync && window_open) ++window_syncs;
        break;
      case fc::kFlush:
      case fc::kCopyData:
        break;
      case fc::kCopyDone:
      case fc::kCopyFail:
        if (copy == proto::CopyMode::in || copy == proto::CopyMode::both)
          copy = proto::CopyMode::none;
        window_open = false;
        break;
      case fc::kExecute:
        batch = true;
        window_syncs = 0;
        window_open = true;
        break;
      default:
        batch = true;
    }
  }

  // False: statement mode stops here.
  bool server_message(char type, proto::Bytes body) {
    switch (type) {
      case fs::kReadyForQuery:
        if (body.size() == 1) {
          const char s = static_cast<char>(body[0]);
          if (s == 'I' || s == 'T' || s == 'E') status = static_cast<proto::TransactionStatus>(s);
        }
        if (owed > 0) --owed;
        copy = proto::CopyMode::none;
        return !(statement_mode && status != proto::TransactionStatus::idle);
      case fs::kErrorResponse:
        if (auto fields = proto::parse_error_fields(body); fields && fields->is_fatal())
          fatal = true;
        copy = proto::CopyMode::none;
        return true;
      case fs::kCopyInResponse:
        owed -= std::min(owed, window_syncs);
        window_syncs = 0;
        window_open = false;
        copy = proto::CopyMode::in;
        return true;
      case fs::kCopyOutResponse:
        copy = proto::CopyMode::out;
        return true;
      case fs::kCopyBothResponse:
        copy = proto::CopyMode::both;
        return true;
      case fs::kCopyDone:
        if (copy == proto::CopyMode::out || copy == proto::CopyMode::both)
          copy = proto::CopyMode::none;
        return true;
      default:
        return true;
    }
  }
};

struct Result {
  std::string events;
  int owed;
  bool batch;
  char status;
  int copy;
  bool fatal;
  int stop;
  bool operator==(const Result&) const = default;
};

// One relay direction: its buffer and how much of the side's stream it has scanned.
struct Direction {
  proto::StreamBuffer buffer;
  std::size_t scanned_total = 0;
};

Result run(const std::vector<Turn>& turns, bool statement_mode, std::uint64_t seed) {
  proto::TransactionTracker tracker;
  tracker.set_forbid_transaction_blocks(statement_mode);
  Events events;
  Reference reference;
  reference.statement_mode = statement_mode;
  Direction client, server;
  ReadSizes sizes(seed);
  Stop stop = Stop::more;
  for (const auto& turn : turns) {
    auto& side = turn.from_client ? client : server;
    auto& ref_side = turn.from_client ? reference.client : reference.server;
    std::size_t pos = 0;
    while (pos < turn.bytes.size() && stop == Stop::more) {
      auto& buffer = side.buffer;
      if (!buffer.has_storage()) buffer.reserve(kInitialBuffer);
      if (buffer.full()) buffer.grow();  // the relay's client side: a header split at the end
      const std::size_t want = sizes.next();
      const auto space = buffer.free_space();
      const std::size_t n = std::min(want == 0 ? turn.bytes.size() - pos : want,
                                     std::min(space.size(), turn.bytes.size() - pos));
      FUZZ_CHECK(n > 0);
      std::memcpy(space.data(), turn.bytes.data() + pos, n);
      buffer.added(n);
      ref_side.stream.append(reinterpret_cast<const char*>(turn.bytes.data() + pos), n);
      pos += n;

      const auto unscanned = buffer.unscanned();
      const auto scan = turn.from_client ? tracker.scan_client(unscanned, events)
                                         : tracker.scan_server(unscanned, events);
      FUZZ_CHECK(scan.scanned <= unscanned.size());
      buffer.mark_scanned(scan.scanned);
      side.scanned_total += scan.scanned;
      if (scan.wanted > 0) {
        FUZZ_CHECK(scan.stop == Stop::more);
        FUZZ_CHECK(scan.wanted <= proto::kWholeMessageLimit);
        FUZZ_CHECK(scan.wanted > buffer.unscanned().size());  // it is not there yet
        buffer.reserve(scan.wanted);
      }
      buffer.mark_sent(buffer.unsent().size());  // passed on
      FUZZ_CHECK(!buffer.has_unsent());
      // Bounded memory: the buffer holds at most a partial header beyond what a whole message
      // needs, and never grows beyond the cap.
      FUZZ_CHECK(buffer.capacity() <= std::max(kInitialBuffer, proto::kWholeMessageLimit));

      reference.advance(turn.from_client);
      stop = scan.stop;
      if (stop != Stop::more) {
        FUZZ_CHECK(reference.stopped && reference.stop == stop);
      } else {
        FUZZ_CHECK(!reference.stopped);
      }
      // The state matches the reference.
      FUZZ_CHECK(tracker.ready_owed() == reference.owed);
      FUZZ_CHECK(tracker.batch_open() == reference.batch);
      FUZZ_CHECK(tracker.status() == reference.status);
      FUZZ_CHECK(tracker.server_fatal() == reference.fatal);
      FUZZ_CHECK(tracker.copy() == reference.copy);
      if (tracker.at_transaction_boundary()) {
        FUZZ_CHECK(reference.owed == 0 && !reference.batch && !reference.fatal);
        FUZZ_CHECK(reference.copy == proto::CopyMode::none);
        FUZZ_CHECK(reference.status == proto::TransactionStatus::idle);
      }
      // Never past a message: between messages the tracker stands where the next one starts;
      // inside one, past its header.
      const bool mid =
          turn.from_client ? tracker.client_mid_message() : tracker.server_mid_message();
      if (!mid) {
        if (stop != Stop::invalid) FUZZ_CHECK(side.scanned_total == ref_side.next);
      } else {
        // Inside a streamed message: past its header, before its end, and all of what arrived
        // of it is scanned (passed on without being held back).
        FUZZ_CHECK(side.scanned_total >= ref_side.last_start + proto::kHeaderSize);
        FUZZ_CHECK(side.scanned_total < ref_side.next);
        FUZZ_CHECK(side.scanned_total == ref_side.stream.size());
      }
      if (stop != Stop::more) {
        if (stop == Stop::terminate) FUZZ_CHECK(tracker.client_terminated());
        buffer.discard_scanned();
      }
    }
    if (stop != Stop::more) break;
  }
  return Result{events.trace,
                tracker.ready_owed(),
                tracker.batch_open(),
                static_cast<char>(tracker.status()),
                static_cast<int>(tracker.copy()),
                tracker.server_fatal(),
                static_cast<int>(stop)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (std::uint64_t{data[0]} << 32) ^ size;
  const bool statement_mode = (data[1] & 1) != 0;
  const auto turns = split_turns(pgw::fuzz::as_byte_span(data + 2, size - 2));
  const Result whole = run(turns, statement_mode, 0);
  const Result pieces = run(turns, statement_mode, seed);
  if (!(whole == pieces)) {
    std::fprintf(stderr, "each turn at once: %s\nin pieces:         %s\n", whole.events.c_str(),
                 pieces.events.c_str());
  }
  FUZZ_CHECK(whole == pieces);
  return 0;
}
