// Header-first scanning of one direction of a protocol v3 stream, the way a relay reads it:
// a message's header is looked at as soon as its 5 bytes are there, and its body passes on as
// it arrives, without being waited for or buffered. Only messages whose content the reader
// must see (a ReadyForQuery's status, a ParameterStatus, an ErrorResponse) are handed over
// whole, and those are capped in size. Pure: byte spans in, the reader's callbacks and a
// count of scanned bytes out; no I/O, no clock, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol/codec.hpp"

namespace pgw::proto {

// How the reader wants to see a message, decided from its header.
enum class Framing : std::uint8_t {
  pass,    // not at all: it passes through (most of what a server sends: rows, completions)
  stream,  // the header and whatever of the body is already buffered; the rest passes unseen
  whole,   // the whole message: the caller buffers it (at most kWholeMessageLimit bytes)
  lead,    // the whole message up to kWholeMessageLimit bytes of body, else that much of it;
           // the rest passes unseen (a Bind's statement name with its large parameters)
};

// What the reader decides after seeing a message.
enum class Verdict : std::uint8_t {
  next,         // the message is scanned; go on
  stop_before,  // stop in front of it: it is not scanned (a Terminate that is not passed on)
  stop_after,   // it is scanned; stop behind it
};

// Largest message a reader may ask to see whole. PostgreSQL's ReadyForQuery, ParameterStatus
// and ErrorResponse are far below it; a peer claiming more is broken, not a reason to allocate.
inline constexpr std::size_t kWholeMessageLimit = std::size_t{1} << 20;

struct ScanResult {
  enum class Stop : std::uint8_t {
    more,     // the input is scanned to its end, or what is left waits for more bytes
    invalid,  // a malformed header, or a whole message over the limit (`error`)
    reader,   // the reader said stop (stop_before or stop_after)
  };
  std::size_t scanned = 0;  // the first `scanned` bytes of the input are scanned
  Stop stop = Stop::more;
  // With `more`: a message the reader wants whole starts at `scanned` and is this long, so
  // the caller must be able to hold that many bytes from there. 0 otherwise.
  std::size_t wanted = 0;
  CodecError error = CodecError::invalid_length;
};

// One direction's scanning position: how much of the body of the message being streamed is
// still to come. Four bytes, so a client that is not sending costs nothing more.
template <Direction kDirection>
class StreamScanner {
 public:
  // Scans `input`, the bytes that follow the last scanned one. Never looks past its end. The
  // reader provides
  //   Framing framing(const Header&)
  //   Verdict on_message(const Header&, Bytes body, bool whole_body)
  // where `body` is the part of the body in `input` (all of it for Framing::whole);
  // on_message() is called once per message it does not pass, when its header is scanned (or
  // when it is whole).
  template <class Reader>
  ScanResult scan(Bytes input, Reader& reader) {
    ScanResult out;
    std::size_t pos = 0;
    while (pos < input.size()) {
      if (body_left_ > 0) {
        const std::size_t take = std::min<std::size_t>(body_left_, input.size() - pos);
        body_left_ -= static_cast<std::uint32_t>(take);
        pos += take;
        continue;
      }
      const auto rest = input.subspan(pos);
      auto parsed = parse_header(rest, kDirection);
      if (std::holds_alternative<NeedMore>(parsed)) break;
      if (const auto* error = std::get_if<CodecError>(&parsed)) {
        out.stop = ScanResult::Stop::invalid;
        out.error = *error;
        break;
      }
      const auto header = std::get<Header>(parsed);
      const auto framing = reader.framing(header);
      if (framing == Framing::pass) {
        pos += kHeaderSize;
        body_left_ = header.body_size();
        continue;
      }
      std::size_t body_available =
          std::min<std::size_t>(header.body_size(), rest.size() - kHeaderSize);
      if (framing == Framing::lead) {
        const std::size_t lead = std::min<std::size_t>(header.body_size(), kWholeMessageLimit);
        if (body_available < lead) {
          out.wanted = kHeaderSize + lead;
          break;
        }
        body_available = lead;
      }
      const auto body = rest.subspan(kHeaderSize, body_available);
      if (framing == Framing::whole) {
        if (header.total_size() > kWholeMessageLimit) {
          out.stop = ScanResult::Stop::invalid;
          out.error = CodecError::message_too_large;
          break;
        }
        if (body_available < header.body_size()) {
          out.wanted = header.total_size();
          break;
        }
        const auto verdict = reader.on_message(header, body, true);
        if (verdict == Verdict::stop_before) {
          out.stop = ScanResult::Stop::reader;
          break;
        }
        pos += header.total_size();
        if (verdict == Verdict::stop_after) {
          out.stop = ScanResult::Stop::reader;
          break;
        }
        continue;
      }
      const auto verdict = reader.on_message(header, body, body_available == header.body_size());
      if (verdict == Verdict::stop_before) {
        out.stop = ScanResult::Stop::reader;
        break;
      }
      pos += kHeaderSize;
      body_left_ = header.body_size();
      if (verdict == Verdict::stop_after) {
        // The body is scanned too, as far as it is here.
        const std::size_t take = std::min<std::size_t>(body_left_, input.size() - pos);
        body_left_ -= static_cast<std::uint32_t>(take);
        pos += take;
        out.stop = ScanResult::Stop::reader;
        break;
      }
    }
    out.scanned = pos;
    return out;
  }

  // Bytes of the streamed message's body still to come (0 between messages).
  std::uint32_t body_left() const { return body_left_; }
  bool between_messages() const { return body_left_ == 0; }
  void reset() { body_left_ = 0; }

 private:
  std::uint32_t body_left_ = 0;
};

}  // namespace pgw::proto
