// Fuzz target "stream": arbitrary bytes arriving in arbitrary pieces at the receiver loops
// that use the codec, re-enacted without sockets:
//   mode 0  the client->server relay scan of ClientSession::serve (accumulate, parse_header,
//           skip bodies, keep an incomplete header at the front of the buffer),
//   mode 1  the server->client relay of ClientSession (bodies skipped except 'Z', 'S', 'E',
//           which are waited for whole and parsed),
//   mode 2  net::MessageReader on a client connection: first packet, then whole messages,
//   mode 3  net::MessageReader on a server connection (whole backend messages).
// Input: byte 0 seeds the read sizes, byte 1 picks the mode, the rest is the byte stream.
// Invariants: no loop ever consumes more than it received, NeedMore always asks for more than
// what is buffered, and what is seen (headers, parsed bodies, outcome) does not depend on how
// the stream was split into reads: every run is compared with a run that reads it all at once.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "protocol_checks.hpp"

namespace {

namespace proto = pgw::proto;

// The peer: hands out the stream in reads whose sizes come from a xorshift generator
// (seed 0 = everything in one read, as far as the buffer allows).
class Source {
 public:
  Source(proto::Bytes data, std::uint64_t seed) : data_(data), state_(seed) {}
  // Copies the next read into dst (at most `room` bytes); 0 once the stream is exhausted.
  std::size_t read(std::byte* dst, std::size_t room) {
    FUZZ_CHECK(room > 0);  // every loop makes room before reading
    std::size_t n = data_.size() - pos_;
    if (state_ != 0) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      switch (state_ & 3) {
        case 0: n = 1; break;
        case 1: n = 1 + (state_ >> 8) % 8; break;
        case 2: n = 1 + (state_ >> 8) % 64; break;
        default: n = 1 + (state_ >> 8) % 1024; break;
      }
    }
    n = std::min({n, room, data_.size() - pos_});
    if (n > 0) std::memcpy(dst, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  std::size_t delivered() const { return pos_; }

 private:
  proto::Bytes data_;
  std::uint64_t state_;
  std::size_t pos_ = 0;
};

struct Trace {
  std::string events;  // what the loop saw, in order
  void header(const proto::Header& h) {
    events += h.type;
    events += std::to_string(h.length);
    events += ';';
  }
  void note(std::string_view what) {
    events += what;
    events += ';';
  }
};

std::string_view error_name(proto::CodecError e) { return proto::describe(e); }

// ClientSession::serve's scan of client bytes.
Trace frontend_relay(proto::Bytes data, std::uint64_t seed) {
  Source source(data, seed);
  Trace trace;
  std::vector<std::byte> in(seed == 0 ? std::max<std::size_t>(data.size(), 1) : 8);
  std::size_t in_len = 0;
  std::uint32_t in_remaining = 0;
  std::size_t forwarded = 0;
  for (;;) {
    if (in_len == in.size()) in.resize(in.size() * 2);
    const std::size_t n = source.read(in.data() + in_len, in.size() - in_len);
    if (n == 0) {
      trace.note("eof");
      break;
    }
    in_len += n;
    std::size_t pos = 0;
    bool stop = false;
    while (pos < in_len) {
      if (in_remaining > 0) {
        const auto take = std::min<std::size_t>(in_remaining, in_len - pos);
        pos += take;
        in_remaining -= static_cast<std::uint32_t>(take);
        continue;
      }
      const auto rest = std::span<const std::byte>(in.data() + pos, in_len - pos);
      const auto parsed = pgw::fuzz::check_header(rest, proto::Direction::frontend);
      if (std::holds_alternative<proto::NeedMore>(parsed)) break;
      if (const auto* error = std::get_if<proto::CodecError>(&parsed)) {
        trace.note(error_name(*error));
        stop = true;
        break;
      }
      const auto header = std::get<proto::Header>(parsed);
      trace.header(header);
      if (header.type == 'X') {
        trace.note("terminate");
        stop = true;
        break;
      }
      pos += proto::kHeaderSize;
      in_remaining = header.body_size();
    }
    FUZZ_CHECK(pos <= in_len);
    if (stop) {
      // serve() forwards nothing more; bytes before the stop were forwarded (or not, on an
      // error) depending on the reads, so they are not part of the trace.
      return trace;
    }
    forwarded += pos;
    const std::size_t rest = in_len - pos;
    FUZZ_CHECK(rest < proto::kHeaderSize);  // only an incomplete header stays behind
    if (rest > 0 && pos > 0) std::memmove(in.data(), in.data() + pos, rest);
    in_len = rest;
    FUZZ_CHECK(forwarded + in_len == source.delivered());
  }
  FUZZ_CHECK(forwarded <= data.size());
  FUZZ_CHECK(source.delivered() == data.size());
  trace.note("forwarded " + std::to_string(forwarded) + " pending " + std::to_string(in_remaining));
  return trace;
}

// ClientSession's relay of server bytes to the client.
Trace backend_relay(proto::Bytes data, std::uint64_t seed) {
  Source source(data, seed);
  Trace trace;
  std::vector<std::byte> buffer(seed == 0 ? std::max<std::size_t>(data.size(), 1) : 16);
  std::size_t have = 0;
  std::uint32_t remaining = 0;
  std::size_t forwarded = 0;
  for (;;) {
    if (have == buffer.size()) buffer.resize(buffer.size() * 2);
    const std::size_t n = source.read(buffer.data() + have, buffer.size() - have);
    if (n == 0) {
      trace.note("eof");
      break;
    }
    have += n;
    std::size_t pos = 0;
    while (pos < have) {
      if (remaining > 0) {
        const auto take = std::min<std::size_t>(remaining, have - pos);
        pos += take;
        remaining -= static_cast<std::uint32_t>(take);
        continue;
      }
      const auto rest = std::span<const std::byte>(buffer.data() + pos, have - pos);
      const auto parsed = pgw::fuzz::check_header(rest, proto::Direction::backend);
      if (std::holds_alternative<proto::NeedMore>(parsed)) break;
      if (const auto* error = std::get_if<proto::CodecError>(&parsed)) {
        trace.note(error_name(*error));
        return trace;  // the session drops the server connection
      }
      const auto header = std::get<proto::Header>(parsed);
      if (header.type == 'Z' || header.type == 'S' || header.type == 'E') {
        if (have - pos < header.total_size()) {
          // The session grows its buffer to total_size() here (up to 1 GB). Growing it beyond
          // what the stream holds changes nothing observable, so the re-enactment stops there.
          const std::size_t want = std::min(header.total_size(), data.size() + 1);
          if (want > buffer.size()) buffer.resize(want);
          break;
        }
        trace.header(header);
        const std::span<const std::byte> body(buffer.data() + pos + proto::kHeaderSize,
                                              header.body_size());
        if (header.type == 'Z') {
          const auto status = proto::parse_ready_for_query(body);
          trace.note(status ? std::string(1, static_cast<char>(*status)) : "bad Z");
        } else if (header.type == 'S') {
          const auto status = proto::parse_parameter_status(body);
          trace.note(status ? std::string(status->name) + "=" + std::string(status->value) : "bad S");
        } else {
          const auto fields = proto::parse_error_fields(body);
          trace.note(!fields ? "bad E" : fields->is_fatal() ? "fatal" : "error");
        }
        pos += header.total_size();
        continue;
      }
      trace.header(header);
      pos += proto::kHeaderSize;
      remaining = header.body_size();
    }
    FUZZ_CHECK(pos <= have);
    forwarded += pos;
    const std::size_t rest = have - pos;
    if (rest > 0 && pos > 0) std::memmove(buffer.data(), buffer.data() + pos, rest);
    have = rest;
    FUZZ_CHECK(forwarded + have == source.delivered());
  }
  FUZZ_CHECK(forwarded <= data.size());
  trace.note("forwarded " + std::to_string(forwarded) + " pending " + std::to_string(remaining));
  return trace;
}

// net::MessageReader: whole messages, consumed lazily; the first packet optionally first.
class Reader {
 public:
  Reader(proto::Bytes data, std::uint64_t seed, std::size_t limit)
      : source_(data, seed), limit_(limit), buffer_(seed == 0 ? std::max<std::size_t>(data.size(), 1) : 4) {}

  // False at the end of the stream.
  bool fill(std::size_t want) {
    FUZZ_CHECK(want > end_ - begin_);  // NeedMore asks for more than is buffered
    if (begin_ > 0) {
      const std::size_t live = end_ - begin_;
      if (live > 0) std::memmove(buffer_.data(), buffer_.data() + begin_, live);
      begin_ = 0;
      end_ = live;
    }
    // MessageReader grows the buffer to `want` (up to 1 GB); beyond the stream's size that
    // only costs memory, so the re-enactment caps it there.
    want = std::min(want, limit_ + 1);
    if (buffer_.size() < want) buffer_.resize(want);
    if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
    const std::size_t n = source_.read(buffer_.data() + end_, buffer_.size() - end_);
    end_ += n;
    return n > 0;
  }
  proto::Bytes unread() const { return {buffer_.data() + begin_, end_ - begin_}; }
  void consume(std::size_t n) {
    FUZZ_CHECK(n <= end_ - begin_);
    begin_ += n;
    consumed_ += n;
    FUZZ_CHECK(consumed_ <= source_.delivered());
  }

 private:
  Source source_;
  std::size_t limit_;
  std::vector<std::byte> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t consumed_ = 0;
};

Trace message_reader(proto::Bytes data, std::uint64_t seed, bool client) {
  Reader reader(data, seed, data.size());
  Trace trace;
  if (client) {
    for (;;) {
      std::size_t consumed = 0;
      const auto parsed = proto::parse_first_packet(reader.unread(), &consumed);
      if (const auto* packet = std::get_if<proto::FirstPacket>(&parsed)) {
        FUZZ_CHECK(consumed >= 8 && consumed <= reader.unread().size());
        reader.consume(consumed);
        trace.note("first " + std::to_string(packet->index()) + " " + std::to_string(consumed));
        break;
      }
      if (const auto* error = std::get_if<proto::CodecError>(&parsed)) {
        trace.note(error_name(*error));
        return trace;
      }
      const auto need = std::get<proto::NeedMore>(parsed).at_least;
      FUZZ_CHECK(need <= proto::kStartupPacketLimit);
      if (!reader.fill(need)) {
        trace.note("eof");
        return trace;
      }
    }
  }
  const auto direction = client ? proto::Direction::frontend : proto::Direction::backend;
  for (;;) {
    const auto parsed = pgw::fuzz::check_message(reader.unread(), direction);
    if (const auto* message = std::get_if<proto::Message>(&parsed)) {
      trace.header(message->header);
      reader.consume(message->header.total_size());
      continue;
    }
    if (const auto* error = std::get_if<proto::CodecError>(&parsed)) {
      trace.note(error_name(*error));
      return trace;
    }
    const auto need = std::get<proto::NeedMore>(parsed).at_least;
    FUZZ_CHECK(need <= std::size_t{proto::kLargeMessageLimit} + proto::kHeaderSize);
    if (!reader.fill(need)) {
      trace.note("eof");
      return trace;
    }
  }
}

Trace run(int mode, proto::Bytes data, std::uint64_t seed) {
  switch (mode) {
    case 0: return frontend_relay(data, seed);
    case 1: return backend_relay(data, seed);
    case 2: return message_reader(data, seed, true);
    default: return message_reader(data, seed, false);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (std::uint64_t{data[0]} << 32) ^ size;
  const int mode = data[1] & 3;
  const auto stream = pgw::fuzz::as_byte_span(data + 2, size - 2);
  const Trace whole = run(mode, stream, 0);
  const Trace pieces = run(mode, stream, seed);
  if (whole.events != pieces.events) {
    std::fprintf(stderr, "mode %d\nall at once: %s\nin pieces:   %s\n", mode, whole.events.c_str(),
                 pieces.events.c_str());
  }
  FUZZ_CHECK(whole.events == pieces.events);
  return 0;
}
