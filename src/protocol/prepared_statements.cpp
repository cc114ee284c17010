#include "protocol/prepared_statements.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>

#include "protocol/message_types.hpp"

namespace pgw::proto {
namespace {

// The bytes of `body` up to its first NUL, and where the rest starts; nullopt without a NUL.
std::optional<std::string_view> cstring_at(Bytes body, std::size_t from) {
  if (from > body.size()) return std::nullopt;
  const auto* start = reinterpret_cast<const char*>(body.data()) + from;
  const auto* nul = static_cast<const char*>(std::memchr(start, 0, body.size() - from));
  if (!nul) return std::nullopt;
  return std::string_view(start, static_cast<std::size_t>(nul - start));
}

void append_int32(std::string& out, std::uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(bytes, 4);
}

void append_header(std::string& out, char type, std::size_t body_size) {
  out += type;
  append_int32(out, static_cast<std::uint32_t>(body_size + 4));
}

bool has_server_prefix(std::string_view name) {
  return name.substr(0, kServerNamePrefix.size()) == kServerNamePrefix;
}

// A CommandComplete's tag, without its NUL.
std::string_view command_tag(Bytes body) {
  auto tag = as_chars(body);
  if (!tag.empty() && tag.back() == '\0') tag.remove_suffix(1);
  return tag;
}

}  // namespace

StatementPtr make_statement(std::string_view content, std::uint64_t key) {
  auto statement = std::make_shared<PreparedStatement>();
  statement->key = key != 0 ? key : std::hash<std::string_view>{}(content);
  char name[kServerNamePrefix.size() + 16];
  std::memcpy(name, kServerNamePrefix.data(), kServerNamePrefix.size());
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    name[kServerNamePrefix.size() + i] = kHex[(statement->key >> (60 - 4 * i)) & 0xf];
  }
  statement->name_size = sizeof(name);
  statement->parse_body.reserve(sizeof(name) + 1 + content.size());
  statement->parse_body.append(name, sizeof(name));
  statement->parse_body += '\0';
  statement->parse_body.append(content);
  return statement;
}

// ---------------------------------------------------------------------------------------------
// ServerStatements, ClientStatements

ServerStatements::Lookup ServerStatements::touch(const PreparedStatement& statement) {
  const auto found = index_.find(statement.key);
  if (found == index_.end()) return Lookup::missing;
  const auto& held = *found->second;
  if (held.get() != &statement && held->content() != statement.content()) {
    return Lookup::conflict;
  }
  order_.splice(order_.begin(), order_, found->second);
  return Lookup::present;
}

void ServerStatements::add(StatementPtr statement) {
  const auto key = statement->key;
  remove(key);
  order_.push_front(std::move(statement));
  index_.emplace(key, order_.begin());
}

StatementPtr ServerStatements::remove(std::uint64_t key) {
  const auto found = index_.find(key);
  if (found == index_.end()) return nullptr;
  StatementPtr statement = std::move(*found->second);
  order_.erase(found->second);
  index_.erase(found);
  return statement;
}

void ServerStatements::clear() {
  order_.clear();
  index_.clear();
}

const StatementPtr* ClientStatements::find(std::string_view name) const {
  const auto found = names_.find(name);
  return found == names_.end() ? nullptr : &found->second;
}

void ClientStatements::set(std::string_view name, StatementPtr statement) {
  const auto found = names_.find(name);
  if (found != names_.end()) {
    found->second = std::move(statement);
  } else {
    names_.emplace(std::string(name), std::move(statement));
  }
}

void ClientStatements::erase(std::string_view name) {
  const auto found = names_.find(name);
  if (found != names_.end()) names_.erase(found);
}

// ---------------------------------------------------------------------------------------------
// Client -> server

StatementTracker::ClientEdit StatementTracker::on_any_client_message(char type,
                                                                     std::uint32_t body_size,
                                                                     Bytes body,
                                                                     ServerStatements& server,
                                                                     std::size_t capacity) {
  using namespace from_client;
  const bool whole = body.size() >= body_size;
  ClientEdit edit;
  switch (type) {
    case kParse:
      edit = capacity > 0 ? parse(body, whole, server, capacity) : ClientEdit{};
      if (capacity == 0) push(Reply::parse);
      break;
    case kBind:
      edit = capacity > 0 ? bind(body_size, body, server, capacity) : ClientEdit{};
      if (capacity == 0) push(Reply::bind);
      break;
    case kDescribe:
    case kClose:
      if (capacity > 0) {
        edit = describe_or_close(type, body, whole, server, capacity);
      } else if (type == kClose) {
        push(Reply::close);
      } else {
        const bool statement = !body.empty() && static_cast<char>(body[0]) == 'S';
        push(statement ? Reply::describe_statement : Reply::describe_portal);
      }
      break;
    case kExecute:
      push(Reply::execute);
      break;
    case kSync:
      skipping_ = false;  // PostgreSQL reads messages again from here
      push(Reply::sync);
      break;
    case kQuery:
      push(Reply::query);
      break;
    case kFunctionCall:
      push(Reply::function_call);
      break;
    default:
      break;  // Flush, COPY data: no reply of their own
  }
  collect_synthesised(due_);
  return edit;
}

StatementTracker::ClientEdit StatementTracker::parse(Bytes body, bool whole,
                                                     ServerStatements& server,
                                                     std::size_t capacity) {
  const auto name = cstring_at(body, 0);
  if (!name) {
    // No NUL in what is buffered: a name beyond the read-whole limit, or a malformed message
    // the server will reject (then it is not a named Parse anyone can use).
    if (!whole) return too_large();
    push(Reply::parse);
    return {};
  }
  if (name->empty() || skipping_) {
    push(Reply::parse);  // the unnamed statement stays the server's business
    return {};
  }
  if (!whole) return too_large();
  ++counts_.client_parses;
  scratch_.clear();
  if (client_.find(*name)) {
    // PostgreSQL refuses a second Parse of a name (42P05): a Describe of a statement no
    // server has makes the server fail this batch, and the client gets its own error.
    scratch_ += 'D';
    append_int32(scratch_, static_cast<std::uint32_t>(4 + 1 + kMissingStatementName.size() + 1));
    scratch_ += 'S';
    scratch_.append(kMissingStatementName);
    scratch_ += '\0';
    push(Reply::describe_statement, Action::replace_error);
    pending_.back().error = StatementError::exists;
    pending_.back().name.assign(*name);
    return edit_whole(body);
  }
  const auto content = as_chars(body.subspan(name->size() + 1));
  auto statement = make_statement(content);
  client_.set(*name, statement);
  if (server.touch(*statement) == ServerStatements::Lookup::present) {
    push(Reply::parse, Action::synthesise);
  } else {
    ensure_on_server(statement, server, capacity, false);
  }
  auto& entry = pending_.back();
  entry.effects |= kClientAdded;
  entry.name.assign(*name);
  entry.statement = std::move(statement);
  return edit_whole(body);
}

StatementTracker::ClientEdit StatementTracker::bind(std::uint32_t body_size, Bytes body,
                                                    ServerStatements& server,
                                                    std::size_t capacity) {
  const bool whole = body.size() >= body_size;
  const auto portal = cstring_at(body, 0);
  const auto name = portal ? cstring_at(body, portal->size() + 1) : std::nullopt;
  if (!name) {
    if (!whole) return too_large();
    push(Reply::bind);
    return {};
  }
  if (name->empty() || skipping_) {
    push(Reply::bind);
    return {};
  }
  ++counts_.binds;
  scratch_.clear();
  std::string_view server_name;
  if (const auto* known = client_.find(*name)) {
    StatementPtr statement = *known;
    ensure_on_server(statement, server, capacity, true);
    push(Reply::bind);
    server_name = statement->server_name();
    pending_.back().statement = std::move(statement);  // keeps server_name alive
  } else if (has_server_prefix(*name)) {
    push(Reply::bind, Action::replace_error);
    pending_.back().error = StatementError::missing;
    pending_.back().name.assign(*name);
    server_name = kMissingStatementName;
  } else {
    // Not the client's (or a statement of its own SQL PREPARE): the server answers.
    push(Reply::bind);
    return {};
  }
  const std::size_t old_prefix = portal->size() + 1 + name->size() + 1;
  const std::size_t new_body = body_size - name->size() + server_name.size();
  append_header(scratch_, from_client::kBind, new_body);
  scratch_.append(*portal);
  scratch_ += '\0';
  scratch_.append(server_name);
  scratch_ += '\0';
  return {ClientEdit::Outcome::edit, kHeaderSize + old_prefix, scratch_};
}

StatementTracker::ClientEdit StatementTracker::describe_or_close(char type, Bytes body, bool whole,
                                                                 ServerStatements& server,
                                                                 std::size_t capacity) {
  const bool close = type == from_client::kClose;
  const bool statement_target = !body.empty() && static_cast<char>(body[0]) == 'S';
  const Reply reply = close              ? Reply::close
                      : statement_target ? Reply::describe_statement
                                         : Reply::describe_portal;
  const auto name = cstring_at(body, 1);
  if (!name) {
    if (!whole) return too_large();
    push(reply);
    return {};
  }
  if (!statement_target || name->empty() || skipping_) {
    push(reply);
    return {};
  }
  if (!whole) return too_large();
  scratch_.clear();
  const auto* known = client_.find(*name);
  if (close) {
    if (!known && !has_server_prefix(*name)) {
      push(reply);  // perhaps the client's own SQL PREPARE: the server closes it
      return {};
    }
    // The server's copy may serve other clients: it stays. PostgreSQL answers a Close of an
    // unknown name with CloseComplete too.
    push(Reply::close, Action::synthesise);
    if (known) {
      auto& entry = pending_.back();
      entry.effects = kClientRemoved;
      entry.name.assign(*name);
      entry.statement = *known;
      client_.erase(*name);
    }
    return edit_whole(body);
  }
  std::string_view server_name;
  StatementPtr statement;
  if (known) {
    statement = *known;
    ensure_on_server(statement, server, capacity, true);
    server_name = statement->server_name();
  } else if (has_server_prefix(*name)) {
    server_name = kMissingStatementName;
  } else {
    push(reply);
    return {};
  }
  append_header(scratch_, from_client::kDescribe, 1 + server_name.size() + 1);
  scratch_ += 'S';
  scratch_.append(server_name);
  scratch_ += '\0';
  push(reply, known ? Action::forward : Action::replace_error);
  auto& entry = pending_.back();
  entry.statement = std::move(statement);
  if (!known) {
    entry.error = StatementError::missing;
    entry.name.assign(*name);
  }
  return edit_whole(body);
}

void StatementTracker::ensure_on_server(const StatementPtr& statement, ServerStatements& server,
                                        std::size_t capacity, bool drop_reply) {
  const auto lookup = server.touch(*statement);
  if (lookup == ServerStatements::Lookup::present) return;
  auto evict = [&](StatementPtr old) {
    append_close(old->server_name());
    push(Reply::close, Action::drop);
    pending_.back().effects = kServerRemoved;
    pending_.back().statement = std::move(old);
  };
  if (lookup == ServerStatements::Lookup::conflict) {
    // Another statement with the same hash holds the name on this server (rare): it goes.
    evict(server.remove(statement->key));
  }
  while (!server.empty() && server.size() >= capacity) {
    evict(server.remove(server.least_recent()->key));
  }
  append_parse(*statement);
  server.add(statement);
  ++counts_.server_parses;
  push(Reply::parse, drop_reply ? Action::drop : Action::forward);
  pending_.back().effects = kServerAdded;
  pending_.back().statement = statement;
}

void StatementTracker::append_close(std::string_view server_name) {
  append_header(scratch_, from_client::kClose, 1 + server_name.size() + 1);
  scratch_ += 'S';
  scratch_.append(server_name);
  scratch_ += '\0';
}

void StatementTracker::append_parse(const PreparedStatement& statement) {
  append_header(scratch_, from_client::kParse, statement.parse_body.size());
  scratch_.append(statement.parse_body);
}

// ---------------------------------------------------------------------------------------------
// Server -> client

bool StatementTracker::reply_type(char type) {
  using namespace from_server;
  switch (type) {
    case kParseComplete:
    case kBindComplete:
    case kCloseComplete:
    case kParameterDescription:
    case kNoData:
    case kRowDescription:
    case kCommandComplete:
    case kEmptyQueryResponse:
    case kPortalSuspended:
    case kReadyForQuery:
    case kErrorResponse:
    case kCopyInResponse:
      return true;
    default:
      return false;
  }
}

bool StatementTracker::completes(const Pending& head, char type) {
  using namespace from_server;
  switch (head.reply) {
    case Reply::parse:
      return type == kParseComplete;
    case Reply::bind:
      return type == kBindComplete;
    case Reply::close:
      return type == kCloseComplete;
    case Reply::describe_statement:
      return head.described && (type == kRowDescription || type == kNoData);
    case Reply::describe_portal:
      return type == kRowDescription || type == kNoData;
    case Reply::execute:
      return type == kCommandComplete || type == kEmptyQueryResponse || type == kPortalSuspended;
    case Reply::sync:
    case Reply::query:
    case Reply::function_call:
      return type == kReadyForQuery;
  }
  return false;
}

StatementTracker::ServerEdit StatementTracker::on_any_server_message(char type, Bytes body,
                                                                     ServerStatements& server) {
  using namespace from_server;
  ServerEdit out;
  after_.clear();
  if (type == kCommandComplete) {
    // SQL that drops prepared statements: all of them (the client's too, as in PostgreSQL),
    // or one by name, which may be a server name another client relies on.
    const auto tag = command_tag(body);
    if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
      forget_all(server);
    } else if (tag == "DEALLOCATE") {
      server_unknown_ = true;
    }
  }
  if (type == kCopyInResponse && (plain_groups_ > 0 || open_plain_ > 0)) {
    // A COPY FROM STDIN among the counted messages: the server ignores the Syncs the client
    // sent with its statement (it ends the copy with a Sync of its own).
    plain_groups_ -= std::min(plain_groups_, window_syncs_);
    window_syncs_ = 0;
    if (plain_groups_ == 0 && open_plain_ == 0) due_after_counted(out);
    return out;
  }
  if (plain_groups_ > 0) {
    // A reply to a simple query (or a Sync) sent when nothing was pending: it comes before
    // everything pending_ holds. Its ReadyForQuery may make synthesised replies due.
    if (type == kReadyForQuery && --plain_groups_ == 0 && open_plain_ == 0) {
      due_after_counted(out);
    }
    return out;
  }
  if (open_plain_ > 0) {
    // A reply to an unnamed message of the open batch (counted, not queued).
    switch (type) {
      case kErrorResponse:
        // PostgreSQL skips the rest of the batch up to Sync, pending_'s part of it too.
        open_plain_ = 0;
        skip_batch(server);
        return out;
      case kParseComplete:
      case kBindComplete:
      case kCloseComplete:
      case kRowDescription:
      case kNoData:
      case kCommandComplete:
      case kEmptyQueryResponse:
      case kPortalSuspended:
        if (--open_plain_ == 0) due_after_counted(out);
        return out;
      case kReadyForQuery:
        out.desync = true;  // the batch has no Sync yet
        return out;
      default:
        return out;  // a ParameterDescription of the unnamed statement
    }
  }
  if (pending_.empty()) return out;  // asynchronous (a NOTICE, a FATAL) or a reply to COPY
  Pending& head = pending_.front();
  const bool ends_simple =
      head.reply == Reply::query || head.reply == Reply::function_call || head.reply == Reply::sync;
  if (type == kErrorResponse) {
    if (ends_simple) return out;  // its ReadyForQuery follows; nothing is skipped
    // A FATAL (the server going away) is the server's to tell, whatever was expected.
    const auto fields = parse_error_fields(body);
    if (head.action == Action::replace_error && !(fields && fields->is_fatal())) {
      out.edit = out.drop = true;
      out.error = head.error;
      error_name_ = head.name;
      out.error_name = error_name_;
    }
    skip_batch(server);
    return out;
  }
  if (type == kCopyInResponse && head.reply == Reply::execute) {
    // The server reads COPY data from here and ignores the Syncs the client sent with the
    // Execute (it ends the copy with a Sync of its own).
    pending_.remove_if([first = &pending_.front()](const Pending& p) {
      return &p != first && p.reply == Reply::sync;
    });
    return out;
  }
  if (head.reply == Reply::describe_statement && type == kParameterDescription) {
    head.described = true;
    return out;
  }
  if (!completes(head, type)) {
    // Rows, descriptions and completions inside a simple query; anything else is out of step.
    const bool inside_query = head.reply == Reply::query || head.reply == Reply::function_call;
    if (!inside_query && type != kCopyInResponse) out.desync = true;
    return out;
  }
  if (head.action == Action::drop) out.edit = out.drop = true;
  pending_.pop_front();
  collect_synthesised(after_);
  if (!after_.empty()) {
    out.edit = true;
    out.after = after_;
  }
  return out;
}

void StatementTracker::skip_batch(ServerStatements& server) {
  auto sync = std::find_if(pending_.begin(), pending_.end(),
                           [](const Pending& p) { return p.reply == Reply::sync; });
  skipping_ = sync == pending_.end();
  const bool changed =
      std::any_of(pending_.begin(), sync, [](const Pending& p) { return p.effects != kNone; });
  if (!changed) {
    pending_.pop_until(sync);
    return;
  }
  // The batches the client sent after the Sync were rewritten for the maps with the skipped
  // messages' effects: undo everything sent, newest first, then do the later batches' effects
  // again on the maps without the skipped ones (what the server will actually hold).
  for (auto it = pending_.end(); it != pending_.begin();) {
    --it;
    undo(*it, server);
  }
  pending_.pop_until(sync);
  for (auto& entry : pending_) redo(entry, server);
}

void StatementTracker::forget_all(ServerStatements& server) {
  server.clear();
  client_.clear();
  // The messages the client sent behind the one that dropped the statements run after it:
  // all of pending_ when that was a simple query sent while nothing was pending (a plain
  // group), else those behind the head.
  if (pending_.empty()) return;
  auto behind =
      plain_groups_ > 0 || open_plain_ > 0 ? pending_.begin() : std::next(pending_.begin());
  for (; behind != pending_.end(); ++behind) redo(*behind, server);
}

void StatementTracker::undo(Pending& entry, ServerStatements& server) {
  const auto done = entry.effects & ~entry.unchanged;
  if (done & kServerAdded) server.remove(entry.statement->key);
  if (done & kServerRemoved) server.add(entry.statement);
  if (done & kClientAdded) {
    if (entry.replaced) {
      client_.set(entry.name, entry.replaced);
    } else {
      client_.erase(entry.name);
    }
  }
  if (done & kClientRemoved) client_.set(entry.name, entry.statement);
}

void StatementTracker::redo(Pending& entry, ServerStatements& server) {
  entry.unchanged = kNone;
  if (entry.effects & kServerRemoved) {
    // The server closes whatever it holds under the name, or nothing.
    if (auto removed = server.remove(entry.statement->key)) {
      entry.statement = std::move(removed);
    } else {
      entry.unchanged |= kServerRemoved;
    }
  }
  if (entry.effects & kServerAdded) {
    // When the server holds the name already, the Parse fails there (and its error undoes the
    // rest of its batch): it adds nothing.
    if (server.touch(*entry.statement) == ServerStatements::Lookup::missing) {
      server.add(entry.statement);
    } else {
      entry.unchanged |= kServerAdded;
    }
  }
  if (entry.effects & kClientRemoved) {
    if (const auto* known = client_.find(entry.name)) {
      entry.statement = *known;
      client_.erase(entry.name);
    } else {
      entry.unchanged |= kClientRemoved;
    }
  }
  if (entry.effects & kClientAdded) {
    const auto* known = client_.find(entry.name);
    entry.replaced = known ? *known : nullptr;
    client_.set(entry.name, entry.statement);
  }
}

void StatementTracker::due_after_counted(ServerEdit& out) {
  collect_synthesised(after_);
  if (!after_.empty()) {
    out.edit = true;
    out.after = after_;
  }
}

void StatementTracker::collect_synthesised(std::string& out) {
  while (plain_groups_ == 0 && open_plain_ == 0 && !pending_.empty() &&
         pending_.front().action == Action::synthesise) {
    const char type = pending_.front().reply == Reply::parse ? from_server::kParseComplete
                                                             : from_server::kCloseComplete;
    append_header(out, type, 0);
    pending_.pop_front();
  }
}

std::string_view StatementTracker::take_due_replies() {
  taken_.swap(due_);
  due_.clear();
  return taken_;
}

}  // namespace pgw::proto
