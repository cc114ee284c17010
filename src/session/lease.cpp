#include "session/lease.hpp"

#include <cctype>
#include <string>

#include "net/turn_clock.hpp"
#include "protocol/message_types.hpp"

namespace pgw::session {
namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// Case-insensitive: does `sql` start with the keyword `word` (upper case), followed by a
// non-identifier character or the end?
bool starts_with_keyword(std::string_view sql, std::string_view word) {
  if (sql.size() < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(sql[i])) != word[i]) return false;
  }
  return sql.size() == word.size() || !is_word_char(sql[word.size()]);
}

std::string_view trim_right(std::string_view s, std::string_view chars) {
  const auto end = s.find_last_not_of(chars);
  return end == std::string_view::npos ? std::string_view{} : s.substr(0, end + 1);
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view blanks = " \t\r\n\f\v";
  const auto begin = s.find_first_not_of(blanks);
  if (begin == std::string_view::npos) return {};
  return trim_right(s.substr(begin), blanks);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; false on a malformed escape.
bool url_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

// The content of a comment: key='value',key2='value2'. Empty on anything else.
Tags parse_tag_list(std::string_view content) {
  Tags tags;
  std::size_t i = 0;
  auto skip = [&] {
    while (i < content.size() && is_blank(content[i])) ++i;
  };
  skip();
  if (i == content.size()) return {};
  for (;;) {
    skip();
    const auto key_start = i;
    while (i < content.size() && content[i] != '=' && content[i] != ',' && content[i] != '\'' &&
           !is_blank(content[i])) {
      ++i;
    }
    const auto raw_key = content.substr(key_start, i - key_start);
    skip();
    if (raw_key.empty() || i >= content.size() || content[i] != '=') return {};
    ++i;
    skip();
    if (i >= content.size() || content[i] != '\'') return {};
    ++i;
    std::string raw_value;
    bool closed = false;
    while (i < content.size()) {
      if (content[i] == '\\' && i + 1 < content.size()) {
        raw_value += content[i + 1];  // meta-escaped quote (\') or backslash
        i += 2;
      } else if (content[i] == '\'') {
        ++i;
        closed = true;
        break;
      } else {
        raw_value += content[i++];
      }
    }
    if (!closed) return {};
    std::string key, value;
    if (!url_decode(raw_key, key) || !url_decode(raw_value, value)) return {};
    tags.emplace_back(std::move(key), std::move(value));
    skip();
    if (i == content.size()) return tags;
    if (content[i] != ',') return {};
    ++i;
  }
}

// The text between /* and */ of a comment starting at `sql` (which starts with "/*"); false if
// it does not end.
bool comment_body(std::string_view sql, std::string_view& body, std::size_t& end) {
  const auto close = sql.find("*/", 2);
  if (close == std::string_view::npos) return false;
  body = sql.substr(2, close - 2);
  end = close + 2;
  return true;
}

}  // namespace

std::string_view to_string(LeaseState state) {
  switch (state) {
    case LeaseState::active:
      return "active";
    case LeaseState::idle_in_transaction:
      return "idle_in_transaction";
    case LeaseState::idle_pinned:
      return "idle_pinned";
  }
  return "?";
}

LeaseState lease_state(bool in_flight, bool in_transaction) {
  if (in_flight) return LeaseState::active;
  return in_transaction ? LeaseState::idle_in_transaction : LeaseState::idle_pinned;
}

std::size_t utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text.size();
  std::size_t n = max;
  // A continuation byte (10xxxxxx) at the cut means the cut is inside a character: back up
  // to that character's first byte.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n;
}

std::string_view skip_blanks_and_comments(std::string_view sql) {
  std::size_t i = 0;
  while (i < sql.size()) {
    if (is_blank(sql[i])) {
      ++i;
    } else if (sql.compare(i, 2, "--") == 0) {
      const auto nl = sql.find('\n', i);
      i = nl == std::string_view::npos ? sql.size() : nl + 1;
    } else if (sql.compare(i, 2, "/*") == 0) {
      // PostgreSQL's block comments nest.
      int depth = 1;
      i += 2;
      while (i < sql.size() && depth > 0) {
        if (sql.compare(i, 2, "/*") == 0) {
          ++depth;
          i += 2;
        } else if (sql.compare(i, 2, "*/") == 0) {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return sql.substr(i);
}

bool is_control_statement(std::string_view sql) {
  sql = skip_blanks_and_comments(sql);
  if (sql.empty()) return false;
  switch (std::toupper(static_cast<unsigned char>(sql[0]))) {
    case 'A':
      return starts_with_keyword(sql, "ABORT");
    case 'B':
      return starts_with_keyword(sql, "BEGIN");
    case 'C':
      return starts_with_keyword(sql, "COMMIT");
    case 'E':
      return starts_with_keyword(sql, "END");
    case 'P':
      return starts_with_keyword(sql, "PREPARE") &&
             starts_with_keyword(skip_blanks_and_comments(sql.substr(7)), "TRANSACTION");
    case 'R':
      return starts_with_keyword(sql, "ROLLBACK") || starts_with_keyword(sql, "RELEASE") ||
             starts_with_keyword(sql, "RESET");
    case 'S':
      return starts_with_keyword(sql, "SET") || starts_with_keyword(sql, "START") ||
             starts_with_keyword(sql, "SAVEPOINT");
    default:
      return false;
  }
}

std::string_view first_significant_statement(std::string_view sql) {
  for (;;) {
    const auto start = skip_blanks_and_comments(sql);
    if (!is_control_statement(start)) {
      // Keep a leading comment with the statement: it may carry the sqlcommenter tags.
      return trim(sql).empty() ? std::string_view{}
                               : sql.substr(sql.find_first_not_of(" \t\r\n\f\v"));
    }
    // Skip to after the next ';' outside quotes.
    std::size_t i = static_cast<std::size_t>(start.data() - sql.data());
    char quote = 0;
    for (; i < sql.size(); ++i) {
      const char c = sql[i];
      if (quote) {
        if (c == quote) quote = 0;
      } else if (c == '\'' || c == '"') {
        quote = c;
      } else if (c == ';') {
        break;
      }
    }
    if (i >= sql.size()) return {};
    sql = sql.substr(i + 1);
  }
}

std::string_view statement_text(char type, std::string_view body) {
  using namespace proto::from_client;
  if (type == kParse) {
    const auto nul = body.find('\0');
    if (nul == std::string_view::npos) return {};  // the name is not even complete
    body = body.substr(nul + 1);
  } else if (type != kQuery) {
    return {};
  }
  const auto nul = body.find('\0');
  return nul == std::string_view::npos ? body : body.substr(0, nul);
}

Tags parse_sqlcomment_tags(std::string_view sql) {
  // Leading: the first comment before the statement.
  std::string_view text = sql.substr(std::min(sql.size(), sql.find_first_not_of(" \t\r\n\f\v")));
  std::string_view body;
  std::size_t end = 0;
  if (text.substr(0, 2) == "/*" && comment_body(text, body, end)) {
    auto tags = parse_tag_list(body);
    if (!tags.empty()) return tags;
  }
  // Trailing: the statement ends with a comment (before an optional ';').
  text = trim_right(sql, " \t\r\n\f\v;");
  if (text.size() >= 4 && text.substr(text.size() - 2) == "*/") {
    const auto open = text.rfind("/*", text.size() - 3);
    if (open != std::string_view::npos) {
      auto tags = parse_tag_list(text.substr(open + 2, text.size() - 2 - (open + 2)));
      if (!tags.empty()) return tags;
    }
  }
  return {};
}

std::string format_tags(const Tags& tags) {
  std::string out;
  for (const auto& [key, value] : tags) {
    if (!out.empty()) out += ',';
    out += key;
    out += '=';
    out += value;
  }
  return out;
}

LeasePolicy resolve_policy(const config::Config& config, std::string_view application_name) {
  LeasePolicy policy{config.leak_warn_after, config.idle_transaction_timeout,
                     config.idle_pinned_timeout, config.query_timeout};
  if (const auto* app = config.find_app(application_name)) {
    policy.leak_warn_after = app->leak_warn_after.value_or(policy.leak_warn_after);
    policy.idle_transaction_timeout =
        app->idle_transaction_timeout.value_or(policy.idle_transaction_timeout);
    policy.idle_pinned_timeout = app->idle_pinned_timeout.value_or(policy.idle_pinned_timeout);
    policy.query_timeout = app->query_timeout.value_or(policy.query_timeout);
  }
  return policy;
}

std::string_view describe(LadderAction action) {
  switch (action) {
    case LadderAction::warn:
      return "warn (leak_warn_after)";
    case LadderAction::cancel_query:
      return "cancel (query_timeout)";
    case LadderAction::disconnect_ignored_cancel:
      return "disconnect (query_timeout)";
    case LadderAction::disconnect_idle_transaction:
      return "disconnect (idle_transaction_timeout)";
    case LadderAction::disconnect_idle_pinned:
      return "disconnect (idle_pinned_timeout)";
  }
  return "?";
}

LadderSteps ladder_steps(const LeaseFacts& lease, const LeasePolicy& policy) {
  LadderSteps out;
  auto add = [&out](LadderAction action, Lease::Clock::time_point at) {
    out.steps[out.count++] = LadderStep{action, at};
  };
  // The states exclude each other, so at most one timeout applies; the warning may come
  // before or after it.
  switch (lease.state) {
    case LeaseState::active:
      if (policy.query_timeout.count() > 0 && lease.query_start != Lease::Clock::time_point{}) {
        // Once the cancel went out for this query, the next step is giving up on it.
        if (lease.query_cancel_sent != Lease::Clock::time_point{}) {
          add(LadderAction::disconnect_ignored_cancel, lease.query_cancel_sent + kCancelGrace);
        } else {
          add(LadderAction::cancel_query, lease.query_start + policy.query_timeout);
        }
      }
      return out;  // an active lease is never a leak
    case LeaseState::idle_in_transaction:
      if (policy.idle_transaction_timeout.count() > 0) {
        add(LadderAction::disconnect_idle_transaction,
            lease.idle_since + policy.idle_transaction_timeout);
      }
      break;
    case LeaseState::idle_pinned:
      if (lease.session_mode && policy.idle_pinned_timeout.count() > 0) {
        add(LadderAction::disconnect_idle_pinned, lease.idle_since + policy.idle_pinned_timeout);
      }
      break;
  }
  if (!lease.warned && policy.leak_warn_after.count() > 0) {
    add(LadderAction::warn, lease.idle_since + policy.leak_warn_after);
    if (out.count == 2 && out.steps[1].at < out.steps[0].at) std::swap(out.steps[0], out.steps[1]);
  }
  return out;
}

bool is_suspected_leak(const LeaseFacts& lease, const LeasePolicy& policy,
                       Lease::Clock::time_point now) {
  return lease.state != LeaseState::active && policy.leak_warn_after.count() > 0 &&
         now - lease.idle_since > policy.leak_warn_after;
}

LeaseFacts facts_of(const LeaseInfo& lease) {
  return LeaseFacts{lease.state,       lease.session_mode, lease.warned,
                    lease.query_start, lease.idle_since,   lease.query_cancel_sent};
}

std::string printable(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

void Lease::on_message(char type, std::string_view body, bool whole) {
  using namespace proto::from_client;
  if (type == kExecute || type == kQuery) {
    ++statements;
    if (xact_start == Clock::time_point{}) xact_start = net::turn_now();
    if (type == kExecute) return;
  }
  if (have_first) {
    // The common case: only the last statement's prefix is needed, so look at no more than
    // that (a Parse starts with the statement name).
    const auto text =
        statement_text(type, body.substr(0, kStatementCapture + (type == kParse ? 256 : 0)));
    if (!text.empty()) last.assign(text);
    return;
  }
  const auto text = statement_text(type, body);
  if (text.empty()) return;
  last.assign(text);
  const auto significant = first_significant_statement(text);
  if (significant.empty()) return;
  have_first = true;
  first.assign(significant);
  first_tail.clear();
  if (whole && significant.size() > kStatementCapture) {
    // A trailing sqlcommenter comment beyond the kept prefix: keep it separately.
    const auto trimmed = trim_right(significant, " \t\r\n\f\v;");
    if (trimmed.size() >= 4 && trimmed.substr(trimmed.size() - 2) == "*/") {
      const auto open = trimmed.rfind("/*", trimmed.size() - 3);
      if (open != std::string_view::npos && trimmed.size() - open <= kStatementCapture) {
        first_tail.assign(trimmed.substr(open));
      }
    }
  }
}

namespace {
// Free statement blocks of this thread. A block given back on another thread than the one
// it came from (a session destroyed elsewhere) simply joins that thread's list.
std::vector<std::unique_ptr<char[]>>& free_statement_blocks() {
  thread_local std::vector<std::unique_ptr<char[]>> blocks;
  return blocks;
}
constexpr std::size_t kMaxFreeStatementBlocks = 1024;
}  // namespace

std::unique_ptr<char[]> StatementText::take_block() {
  auto& blocks = free_statement_blocks();
  if (blocks.empty()) return std::make_unique_for_overwrite<char[]>(kStatementCapture);
  auto block = std::move(blocks.back());
  blocks.pop_back();
  return block;
}

void StatementText::give_block(std::unique_ptr<char[]> block) {
  auto& blocks = free_statement_blocks();
  if (blocks.size() < kMaxFreeStatementBlocks) blocks.push_back(std::move(block));
}

void Lease::reset() {
  held = false;
  start = xact_start = idle_since = warned_at = Clock::time_point{};
  backend_pid = 0;
  statements = 0;
  have_first = false;
  first.clear();
  last.clear();
  first_tail.clear();
  warned = false;
}

void EventRing::push(LeakEvent event) {
  std::lock_guard lock(mutex_);
  if (capacity_ == 0) return;
  if (events_.size() == capacity_) events_.pop_front();
  events_.push_back(std::move(event));
}

std::vector<LeakEvent> EventRing::newest_first() const {
  std::lock_guard lock(mutex_);
  return std::vector<LeakEvent>(events_.rbegin(), events_.rend());
}

std::uint64_t LeakBook::note_suspected(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  return ++apps_[application_name].suspected;
}

void LeakBook::note_resolved(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  ++apps_[application_name].resolved;
}

void LeakBook::note_action(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  ++apps_[application_name].actions;
}

std::map<std::string, LeakBook::AppCounters> LeakBook::counters() const {
  std::lock_guard lock(mutex_);
  return apps_;
}

}  // namespace pgw::session
