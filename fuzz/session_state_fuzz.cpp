// Fuzz target "session_state": the session state scanner (proto::scan_session_state) and
// proto::SessionState (src/protocol/session_state.hpp).
//
// Input: SQL text. The whole input is scanned as one Query text, with complete = true and
// false, and a prefix of it with complete = false. Invariants of the scan:
//  * at most kMaxEffects effects (overflow only when full); every name, statement and value
//    lies inside the statement it belongs to, inside the input (but for the parameter names of
//    SET's special forms), and a statement is trimmed and not empty;
//  * the ops fit the kinds (rollback and discard_all are `parameter` effects without a name,
//    a value only for a parameter/role create, replayable only for a parameter/role create);
//  * complete = false differs from complete = true only in the replayable flag of the last
//    statement's effects; a prefix gives the same effects for every statement but its last;
//  * any_state() / creates_state() agree with the list; normalize_parameter_name() gives no
//    upper-case ASCII.
//
// Then byte 0 drives a SessionState with the input's lines (after byte 0) as requests:
// bits 0-1: the mode; bit 2: pipelined (up to 4 requests sent before their replies); bit 3:
// transaction statuses from the bytes instead of a model of BEGIN/COMMIT/ROLLBACK; bit 4:
// lines scanned with complete = false. A line starting with '!' fails (ErrorResponse before its
// ReadyForQuery); a line starting with '~' is a lost server. Invariants after every event:
//  * parameters(): kinds parameter/role, unique names, a replay that scans back as a
//    replayable create of the same parameter; the fingerprint is 0 exactly when there are none,
//    and equal parameters give equal fingerprints;
//  * held() covers the parameters; advisory_locks() >= 0; pinned() is what the mode says of
//    held(); allow holds nothing; since()/first_statement() are set exactly while something is
//    held; on_ready() returns only kinds held now that were not held at the previous one;
//  * a request that succeeded and ended with 'I' leaves held what its effects (all creates)
//    created, and without what its effects (all RESET ALL / UNLISTEN * ... / DISCARD ALL)
//    cleared when no request is outstanding;
//  * after a ReadyForQuery 'I' with no request outstanding nothing is pending: more
//    ReadyForQuery messages and errors change nothing;
//  * after a lost server only the replayable parameters remain.
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_common.hpp"
#include "protocol/session_state.hpp"

namespace {

namespace proto = pgw::proto;
using pgw::fuzz::within;
using proto::SessionState;
using proto::SessionStateEffect;
using proto::SessionStateKind;
using proto::SessionStateMask;
using proto::SessionStateMode;
using proto::SessionStateOp;
using proto::SessionStateScan;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool special_name(std::string_view name) {
  static constexpr std::string_view kNames[] = {"timezone",
                                                "client_encoding",
                                                "search_path",
                                                "xmloption",
                                                "role",
                                                "session_authorization",
                                                "transaction_characteristics"};
  for (const auto n : kNames) {
    if (name == n) return true;
  }
  return false;
}

bool is_parameter_kind(SessionStateKind kind) {
  return kind == SessionStateKind::parameter || kind == SessionStateKind::role;
}

// The same view: same bytes at the same place.
bool same_view(std::string_view a, std::string_view b) {
  return a.size() == b.size() && (a.empty() || a.data() == b.data());
}

bool same_effect(const SessionStateEffect& a, const SessionStateEffect& b, bool replayable) {
  return a.kind == b.kind && a.op == b.op && (!replayable || a.replayable == b.replayable) &&
         (same_view(a.name, b.name) || (special_name(a.name) && a.name == b.name)) &&
         same_view(a.statement, b.statement) && same_view(a.value, b.value);
}

void check_scan(const SessionStateScan& scan, std::string_view sql) {
  FUZZ_CHECK(scan.count <= SessionStateScan::kMaxEffects);
  FUZZ_CHECK(!scan.overflow || scan.count == SessionStateScan::kMaxEffects);
  bool any = scan.overflow;
  bool creates = scan.overflow;
  for (const auto& e : scan.list()) {
    FUZZ_CHECK(!e.statement.empty());
    FUZZ_CHECK(within(e.statement, sql));
    // Trimmed (an unterminated string or comment at the end runs to the end of the text).
    FUZZ_CHECK(!is_space(e.statement.front()));
    FUZZ_CHECK(!is_space(e.statement.back()) ||
               e.statement.data() + e.statement.size() == sql.data() + sql.size());
    if (!special_name(e.name)) FUZZ_CHECK(within(e.name, e.statement));
    FUZZ_CHECK(within(e.value, e.statement));
    FUZZ_CHECK(static_cast<int>(e.kind) < proto::kSessionStateKinds);
    if (e.op == SessionStateOp::rollback || e.op == SessionStateOp::discard_all) {
      FUZZ_CHECK(e.kind == SessionStateKind::parameter);
    }
    if (e.op == SessionStateOp::rollback || e.op == SessionStateOp::discard_all ||
        e.op == SessionStateOp::release_all || e.kind == SessionStateKind::advisory_lock) {
      FUZZ_CHECK(e.name.empty());
    }
    if (!e.value.empty()) {
      FUZZ_CHECK(is_parameter_kind(e.kind) && e.op == SessionStateOp::create);
      FUZZ_CHECK(!e.name.empty());
    }
    if (e.replayable) {
      FUZZ_CHECK(is_parameter_kind(e.kind) && e.op == SessionStateOp::create);
    }
    if (e.kind == SessionStateKind::listen || e.kind == SessionStateKind::temp_table ||
        e.kind == SessionStateKind::sql_prepare || e.kind == SessionStateKind::hold_cursor) {
      FUZZ_CHECK((e.op == SessionStateOp::release_all) == e.name.empty());
    }
    for (const char c : proto::normalize_parameter_name(e.name))
      FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    (void)proto::normalize_identifier(e.name);
    any = any || e.op != SessionStateOp::rollback;
    creates = creates || e.op == SessionStateOp::create;
  }
  FUZZ_CHECK(scan.any_state() == any);
  FUZZ_CHECK(scan.creates_state() == creates);
}

void check_scans(std::string_view sql, std::size_t cut) {
  const auto whole = proto::scan_session_state(sql, true);
  const auto open = proto::scan_session_state(sql, false);
  check_scan(whole, sql);
  check_scan(open, sql);
  // The relay's shortcut never skips a text with effects.
  if (!proto::may_change_session_state(sql)) FUZZ_CHECK(whole.count == 0 && !whole.overflow);
  // complete only touches the replayable flag, and only of the last statement.
  FUZZ_CHECK(whole.count == open.count && whole.overflow == open.overflow);
  for (std::size_t i = 0; i < whole.count; ++i) {
    const auto& w = whole.effects[i];
    const auto& o = open.effects[i];
    FUZZ_CHECK(same_effect(w, o, false));
    FUZZ_CHECK(!o.replayable || w.replayable);
    if (w.replayable != o.replayable) {
      FUZZ_CHECK(w.statement.data() == whole.effects[whole.count - 1].statement.data());
    }
  }
  // A prefix: the statements before its last one are the same statements.
  const std::string_view prefix = sql.substr(0, cut);
  const auto part = proto::scan_session_state(prefix, false);
  check_scan(part, prefix);
  if (part.count > 0) {
    const char* last = part.effects[part.count - 1].statement.data();
    for (std::size_t i = 0; i < part.count; ++i) {
      if (part.effects[i].statement.data() == last) break;
      FUZZ_CHECK(i < whole.count);
      FUZZ_CHECK(same_effect(part.effects[i], whole.effects[i], true));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SessionState.

struct Request {
  std::string_view sql;
  bool fails = false;
  char status = 'I';
  // Its effects when they are all creates: the kinds it creates. When they are all
  // release_all / discard_all: the kinds it clears.
  SessionStateMask creates = 0;
  SessionStateMask clears = 0;
};

class Driver {
 public:
  Driver(SessionStateMode mode, bool random_status, bool cut)
      : state_(mode), random_status_(random_status), cut_(cut) {}

  // Sends the request's statement with `owed` replies ahead of it.
  void send(Request& r, int owed) {
    now_ += std::chrono::milliseconds(1);
    const auto scan = proto::scan_session_state(r.sql, !cut_);
    check_scan(scan, r.sql);
    bool all_create = scan.count > 0;
    bool all_clear = scan.count > 0;
    SessionStateMask kinds = 0;
    for (const auto& e : scan.list()) {
      all_create = all_create && e.op == SessionStateOp::create;
      all_clear =
          all_clear && (e.op == SessionStateOp::release_all || e.op == SessionStateOp::discard_all);
      kinds |= e.op == SessionStateOp::discard_all
                   ? static_cast<SessionStateMask>(~proto::mask_of(SessionStateKind::load))
                   : proto::mask_of(e.kind);
    }
    if (all_create) r.creates = kinds;
    if (all_clear) r.clears = kinds;
    state_.on_statement(scan, owed, now_);
    check();
  }

  // The replies of one request.
  void reply(const Request& r, bool last_outstanding) {
    if (r.fails) {
      state_.on_error();
      check();
    }
    const SessionStateMask before = reported_;
    const SessionStateMask added = state_.on_ready(r.status, now_);
    FUZZ_CHECK((added & ~state_.held()) == 0);
    FUZZ_CHECK((added & before) == 0);
    reported_ = state_.held();
    check();
    if (r.status == 'I' && !r.fails && state_.mode() != SessionStateMode::allow) {
      // A request that succeeded and ended its transaction: what it created is held, and what
      // it cleared is gone unless a request sent after it (pipelined) took a lock already.
      FUZZ_CHECK((state_.held() & r.creates) == r.creates);
      if (last_outstanding) FUZZ_CHECK((state_.held() & r.clears) == 0);
    }
    if (r.status == 'I' && last_outstanding) check_settled();
  }

  void lost() {
    const auto parameters = state_.parameters();
    const auto fingerprint = state_.parameters_fingerprint();
    state_.on_server_lost();
    FUZZ_CHECK(same_parameters(parameters, state_.parameters()));
    FUZZ_CHECK(state_.parameters_fingerprint() == fingerprint);
    FUZZ_CHECK(state_.advisory_locks() == 0);
    const auto replayable = static_cast<SessionStateMask>(
        proto::mask_of(SessionStateKind::parameter) | proto::mask_of(SessionStateKind::role));
    FUZZ_CHECK((state_.held() & ~replayable) == 0);
    if (state_.mode() == SessionStateMode::track) FUZZ_CHECK(!state_.pinned());
    reported_ = state_.held();
    check();
  }

  // The transaction status after a request: the model of BEGIN / COMMIT / ROLLBACK, or bytes.
  char status_after(std::string_view sql, bool fails) {
    if (random_status_) {
      unsigned sum = 0;
      for (const char c : sql) sum += static_cast<unsigned char>(c);
      return "ITEI"[sum % 4];
    }
    std::string lower;
    for (const char c : sql.substr(0, 16)) {
      lower += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    const auto starts = [&](std::string_view word) { return lower.starts_with(word); };
    if (starts("begin") || starts("start")) {
      in_transaction_ = true;
    } else if (starts("commit") || starts("end") || starts("rollback") || starts("abort")) {
      in_transaction_ = false;
      failed_ = false;
    }
    if (fails && in_transaction_) failed_ = true;
    if (!in_transaction_) return 'I';
    return failed_ ? 'E' : 'T';
  }

 private:
  static bool same_parameters(const std::vector<SessionState::Parameter>& a,
                              const std::vector<SessionState::Parameter>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (a[i].name != b[i].name || a[i].replay != b[i].replay || a[i].kind != b[i].kind) {
        return false;
      }
    }
    return true;
  }

  void check() {
    const SessionStateMask held = state_.held();
    const auto& parameters = state_.parameters();
    FUZZ_CHECK(state_.advisory_locks() >= 0);
    FUZZ_CHECK((state_.advisory_locks() > 0) ==
               ((held & proto::mask_of(SessionStateKind::advisory_lock)) != 0));
    FUZZ_CHECK((state_.parameters_fingerprint() == 0) == parameters.empty());
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = parameters[i];
      FUZZ_CHECK(is_parameter_kind(p.kind));
      FUZZ_CHECK((held & proto::mask_of(p.kind)) != 0);
      FUZZ_CHECK(!p.replay.empty());
      for (std::size_t j = 0; j < i; ++j) FUZZ_CHECK(parameters[j].name != p.name);
      check_replay(p);
    }
    // Equal parameters, equal fingerprints.
    if (same_parameters(parameters, last_parameters_)) {
      FUZZ_CHECK(state_.parameters_fingerprint() == last_fingerprint_);
    }
    last_parameters_ = parameters;
    last_fingerprint_ = state_.parameters_fingerprint();

    const auto replayable = static_cast<SessionStateMask>(
        proto::mask_of(SessionStateKind::parameter) | proto::mask_of(SessionStateKind::role));
    switch (state_.mode()) {
      case SessionStateMode::pin:
        FUZZ_CHECK(state_.pinned() == (held != 0));
        break;
      case SessionStateMode::track:
        if (state_.pinned()) FUZZ_CHECK(held != 0);
        if ((held & ~replayable) != 0) FUZZ_CHECK(state_.pinned());
        break;
      case SessionStateMode::reject:
        FUZZ_CHECK(!state_.pinned());
        break;
      case SessionStateMode::allow:
        FUZZ_CHECK(!state_.pinned());
        FUZZ_CHECK(held == 0);
        break;
    }
    FUZZ_CHECK(state_.holds_anything() == (held != 0));
    if (held == 0) {
      FUZZ_CHECK(state_.since() == SessionState::Clock::time_point{});
      FUZZ_CHECK(state_.first_statement().empty());
    } else {
      FUZZ_CHECK(state_.since() != SessionState::Clock::time_point{});
      FUZZ_CHECK(!state_.first_statement().empty());
    }
    FUZZ_CHECK(state_.first_statement().size() <= 200);
    // The kinds the reset removes: all of them but load.
    const std::string reset = SessionState::reset_sql(held);
    FUZZ_CHECK(reset.empty() == ((held & ~proto::mask_of(SessionStateKind::load)) == 0));
  }

  // A parameter's replay re-creates it: scanned, it sets the same parameter, replayably.
  static void check_replay(const SessionState::Parameter& p) {
    const auto scan = proto::scan_session_state(p.replay, true);
    bool found = false;
    for (const auto& e : scan.list()) {
      if (e.op == SessionStateOp::create && e.replayable && e.kind == p.kind &&
          proto::normalize_parameter_name(e.name) == p.name) {
        found = true;
      }
    }
    FUZZ_CHECK(found);
  }

  // Nothing is pending: further replies change nothing (a ReadyForQuery 'I' first, which
  // would commit what is left, then the rest).
  void check_settled() {
    SessionState copy = state_;
    const auto unchanged = [&] {
      FUZZ_CHECK(copy.held() == state_.held());
      FUZZ_CHECK(same_parameters(copy.parameters(), state_.parameters()));
      FUZZ_CHECK(copy.parameters_fingerprint() == state_.parameters_fingerprint());
      FUZZ_CHECK(copy.advisory_locks() == state_.advisory_locks());
      FUZZ_CHECK(copy.pinned() == state_.pinned());
      FUZZ_CHECK(copy.since() == state_.since());
      FUZZ_CHECK(copy.first_statement() == state_.first_statement());
    };
    FUZZ_CHECK(copy.on_ready('I', now_) == 0);
    unchanged();
    FUZZ_CHECK(copy.on_ready('T', now_) == 0);
    unchanged();
    copy.on_error();
    FUZZ_CHECK(copy.on_ready('E', now_) == 0);
    FUZZ_CHECK(copy.on_ready('I', now_) == 0);
    unchanged();
  }

  SessionState state_;
  bool random_status_;
  bool cut_;
  bool in_transaction_ = false;
  bool failed_ = false;
  SessionStateMask reported_ = 0;
  std::vector<SessionState::Parameter> last_parameters_;
  std::uint64_t last_fingerprint_ = 0;
  SessionState::Clock::time_point now_ = SessionState::Clock::time_point{} + std::chrono::hours(1);
};

void run_state(std::uint8_t options, std::string_view text) {
  const auto mode = static_cast<SessionStateMode>(options & 3);
  const bool pipelined = (options & 4) != 0;
  Driver driver(mode, (options & 8) != 0, (options & 16) != 0);
  std::deque<Request> outstanding;
  const auto drain = [&] {
    while (!outstanding.empty()) {
      const Request r = outstanding.front();
      outstanding.pop_front();
      driver.reply(r, outstanding.empty());
    }
  };
  const std::size_t batch = pipelined ? 4 : 1;
  std::size_t lines = 0;
  while (!text.empty() && lines++ < 256) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.front() == '~') {
      drain();
      driver.lost();
      continue;
    }
    Request r;
    r.fails = !line.empty() && line.front() == '!';
    r.sql = r.fails ? line.substr(1) : line;
    r.status = driver.status_after(r.sql, r.fails);
    driver.send(r, static_cast<int>(outstanding.size()));
    outstanding.push_back(r);
    if (outstanding.size() >= batch) drain();
  }
  drain();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view sql = pgw::fuzz::as_text(data, size);
  const std::size_t cut = size == 0 ? 0 : (std::size_t{data[0]} * 131 + size) % (size + 1);
  check_scans(sql, cut);
  if (size == 0) return 0;
  run_state(data[0], sql.substr(1));
  return 0;
}
