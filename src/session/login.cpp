#include "session/login.hpp"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "auth/auth.hpp"
#include "config/hba.hpp"
#include "net/tls.hpp"
#include "protocol/message_types.hpp"
#include "session/client_session.hpp"

namespace pgw::session {

// g++ 12 mishandles temporaries in co_await expressions (PR 99576) and co_await inside
// short-circuit operators: errors are named before they are awaited, one co_await per
// statement.

namespace {

constexpr std::size_t kMinBuffer = 4096;
// What a client may send ahead while its login waits for the LDAP server; beyond it pgwarden
// stops reading (and so stops noticing a hang-up) until the answer comes.
constexpr std::size_t kMaxReadAhead = 64 * 1024;

// Splits a libpq "options" value into "-c name=value" / "--name=value" settings.
std::vector<std::pair<std::string, std::string>> parse_options(std::string_view options, bool& ok) {
  std::vector<std::string> words;
  std::string word;
  bool escaped = false;
  for (char c : options) {
    if (escaped) {
      word += c;
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (c == ' ' || c == '\t') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  std::vector<std::pair<std::string, std::string>> settings;
  ok = true;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].rfind("-c", 0) == 0 && words[i].size() > 2) {
      setting = std::string_view(words[i]).substr(2);
    } else if (words[i].rfind("--", 0) == 0) {
      setting = std::string_view(words[i]).substr(2);
    } else {
      ok = false;
      return settings;
    }
    const auto eq = setting.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      ok = false;
      return settings;
    }
    std::string name(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    settings.emplace_back(std::move(name), std::string(setting.substr(eq + 1)));
  }
  return settings;
}

bool listed(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

asio::awaitable<bool> LoginFlow::run() {
  std::string greeting;  // written by welcome(): one send for the end of the login
  bool ok = co_await startup();
  if (ok) ok = co_await authenticate(greeting);
  if (ok) ok = co_await route();
  if (ok) ok = co_await welcome(greeting);
  co_return ok;
}

asio::awaitable<void> LoginFlow::refuse(const ErrorReport& report) {
  co_await session_.end_with(report, net::AfterError::drain, ClientSession::Log::if_configured);
}

// ---------------------------------------------------------------------------------------------
// startup: SSL/GSS negotiation, CancelRequest, StartupMessage.

asio::awaitable<bool> LoginFlow::startup() {
  auto& s = session_;
  const auto& config = *s.config_;
  for (;;) {
    auto result = co_await s.login_reader_->first_packet(s.client_);
    if (std::holds_alternative<std::error_code>(result)) co_return false;
    if (auto* error = std::get_if<proto::CodecError>(&result)) {
      const auto refusal =
          *error == proto::CodecError::unsupported_protocol
              ? report(Err::unsupported_protocol, "(not 3.x)")
          // PostgreSQL's own words for it.
          : *error == proto::CodecError::invalid_startup_length
              ? report(Err::protocol_violation, std::string(proto::describe(*error)))
              : report(Err::protocol_violation,
                       "invalid startup packet: " + std::string(proto::describe(*error)));
      co_await refuse(refusal);
      co_return false;
    }
    auto& packet = std::get<proto::FirstPacket>(result);
    if (std::holds_alternative<proto::SslRequest>(packet)) {
      if (!co_await start_tls()) co_return false;
      continue;
    }
    if (std::holds_alternative<proto::GssEncRequest>(packet)) {
      // GSS encryption is not offered: 'N' makes the client go on (and maybe ask for TLS).
      const std::string no = "N";
      if (!co_await s.write_client(no)) co_return false;
      continue;
    }
    if (auto* cancel = std::get_if<proto::CancelRequest>(&packet)) {
      auto target = s.services_.cancels.find({cancel->process_id, cancel->secret_key});
      if (target) {
        // The reference moves to the target's worker: the session is only ever destroyed there.
        auto& reactor = s.services_.sessions.reactor(target->worker());
        reactor.post([target = std::move(target)] { target->forward_cancel(); });
      }
      co_return false;  // PostgreSQL closes a cancel connection without a reply
    }
    auto& start = std::get<proto::StartupMessage>(packet);
    std::vector<std::string> unrecognized;
    for (const auto& [name, value] : start.parameters) {
      if (name == "user") {
        s.who_.user = value;
      } else if (name == "database") {
        s.who_.database = value;
      } else if (name.rfind("_pq_.", 0) == 0) {
        unrecognized.push_back(name);
      } else if (name == "replication") {
        const auto refusal = report(Err::unsupported_startup_parameter, name);
        co_await refuse(refusal);
        co_return false;
      } else if (name == "options") {
        bool ok = true;
        auto settings = parse_options(value, ok);
        if (!ok && !listed(config.ignore_startup_parameters, "options")) {
          const auto refusal = report(Err::unsupported_startup_parameter, "options=" + value);
          co_await refuse(refusal);
          co_return false;
        }
        for (auto& [key, setting] : settings) s.params_.set(key, setting);
      } else if (listed(config.ignore_startup_parameters, name)) {
        continue;
      } else {
        s.params_.set(name, value);
      }
    }
    if (config.client_tls_sslmode >= config::SslMode::require && !s.client_.tls() &&
        !s.unix_client_) {
      // Over the Unix socket TLS is neither offered nor required (PostgreSQL and PgBouncer).
      const auto refusal = report(Err::tls_required, config::to_string(config.client_tls_sslmode));
      co_await refuse(refusal);
      co_return false;
    }
    if (s.who_.user.empty()) {
      const auto refusal = report(Err::no_user);
      co_await refuse(refusal);
      co_return false;
    }
    if (s.who_.database.empty()) s.who_.database = s.who_.user;
    if (auto* app = s.params_.find("application_name")) s.who_.application_name = *app;
    s.params_fingerprint_ = s.params_.fingerprint();
    if ((start.protocol & 0xffff) != 0 || !unrecognized.empty()) {
      std::string out;
      proto::MessageWriter(out).negotiate_protocol_version(0, unrecognized);
      if (!co_await s.write_client(out)) co_return false;
    }
    break;
  }
  // max_client_conn, now that the client says who it is (it was counted when it was accepted).
  if (!s.services_.admission.within(config.max_client_conn)) {
    const auto refusal = report(Err::max_client_conn);
    co_await refuse(refusal);
    co_return false;
  }
  if (s.services_.admission.draining()) {
    const auto refusal = report(Err::draining);  // PostgreSQL's 57P03 while it shuts down
    co_await refuse(refusal);
    co_return false;
  }
  // max_db_client_connections and max_user_client_connections, where PgBouncer checks them:
  // once the client has said who it is, before it authenticates. An admin on the console is
  // counted but never refused, as in PgBouncer, so a full database cannot lock the admins out.
  const bool console = config::is_console_database(s.who_.database);
  const bool exempt =
      console && (listed(config.admin_users, s.who_.user) || is_local_console_superuser());
  const auto over = s.services_.admission.admit_client(
      s.who_.database, config.max_db_client_connections_for(s.who_.database), s.who_.user,
      config.max_user_client_connections_for(s.who_.user), exempt);
  if (over != ClientAdmission::Over::none) {
    const auto refusal = over == ClientAdmission::Over::database
                             ? report(Err::max_db_client_connections, s.who_.database,
                                      config.max_db_client_connections_for(s.who_.database))
                             : report(Err::max_user_client_connections, s.who_.user,
                                      config.max_user_client_connections_for(s.who_.user));
    co_await refuse(refusal);
    co_return false;
  }
  s.client_counted_ = true;
  // Per-application cap ([apps] max_client_conn), counted by the startup application_name.
  const auto& app_name = s.who_.application_name;
  if (const auto* app = config.find_app(app_name); app && app->max_client_conn) {
    if (!s.services_.admission.admit_app(app_name, *app->max_client_conn)) {
      const auto refusal = report(Err::app_max_client_conn, app_name, *app->max_client_conn,
                                  app->pattern, app->source);
      co_await refuse(refusal);
      co_return false;
    }
    // Counted under the startup name: a later SET application_name does not move it.
    s.app_counted_as_ = std::make_unique<std::string>(app_name);
  }
  co_return true;
}

asio::awaitable<bool> LoginFlow::start_tls() {
  auto& s = session_;
  // Offered over TCP when client_tls_sslmode is not disable, once per connection.
  auto context = s.services_.tls.client_side();
  if (!context || s.unix_client_ || s.client_.tls()) {
    const std::string no = "N";
    co_return co_await s.write_client(no);
  }
  if (!s.login_reader_->remaining().empty()) {
    // Anything sent behind the SSLRequest was sent in clear and would be taken as if it had
    // come through TLS (CVE-2021-23214): PostgreSQL's answer.
    const auto refusal = report(Err::tls_after_data);
    co_await refuse(refusal);
    co_return false;
  }
  const std::string yes = "S";
  if (!co_await s.write_client(yes)) co_return false;
  s.client_.start_tls(std::make_unique<net::TlsStream>(std::move(context), s.client_));
  const auto why = co_await s.client_.async_tls_handshake();
  if (!why.empty()) {
    // Nothing can be said to a client whose handshake failed: its TLS library reports it.
    spdlog::info("C-{} {}: TLS handshake failed: {}", s.who_.id, s.who_.addr, why);
    s.client_.close();
    co_return false;
  }
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// authenticate: against auth_file, with the method of auth_type.

asio::awaitable<std::optional<proto::Message>> LoginFlow::read_auth_reply() {
  auto& s = session_;
  auto result = co_await s.login_reader_->next(s.client_, proto::Direction::frontend);
  if (auto* message = std::get_if<proto::Message>(&result)) {
    if (message->header.type == proto::from_client::kPassword) co_return *message;
    const auto refusal = report(
        Err::protocol_violation,
        std::string("expected password response, got message type '") + message->header.type + "'");
    co_await refuse(refusal);
    co_return std::nullopt;
  }
  if (auto* error = std::get_if<proto::CodecError>(&result)) {
    const auto refusal = report(Err::protocol_violation, std::string(proto::describe(*error)));
    co_await refuse(refusal);
  }
  co_return std::nullopt;
}

bool LoginFlow::is_local_console_superuser() const {
  const auto& s = session_;
  // The peer's credentials last: one system call, only for this user and these databases.
  return s.unix_client_ && s.who_.user == "pgbouncer" &&
         config::is_console_database(s.who_.database) && net::peer_is_same_user(s.client_.fd());
}

asio::awaitable<bool> LoginFlow::authenticate(std::string& greeting) {
  auto& s = session_;
  const auto& config = *s.config_;
  auto secrets = s.services_.config.secrets();
  const std::string* secret = nullptr;
  if (auto it = secrets->find(s.who_.user); it != secrets->end()) secret = &it->second;
  s.local_console_superuser_ = is_local_console_superuser();
  if (s.local_console_superuser_) {
    // PgBouncer's rule: "pgbouncer" over the Unix socket, from a process of pgwarden's own
    // user, opens the console without a password (whoever runs as that user can read the
    // configuration and the auth_file anyway).
    proto::MessageWriter(greeting).authentication_ok();
    co_return true;
  }
  // auth_query: a user auth_file does not list is looked up in PostgreSQL, for this login
  // (the answer is kept only for pgwarden's own logins as that user: KeyStore).
  std::optional<std::string> fetched;
  const bool checks_secrets = config.auth_type != config::AuthType::any &&
                              config.auth_type != config::AuthType::cert &&
                              config.auth_type != config::AuthType::peer;
  if (secret == nullptr && checks_secrets) {
    auto looked_up = co_await look_up_secret();
    if (looked_up.refused) co_return false;
    found_by_query_ = looked_up.found;  // trust lets in a user auth_query knows
    looked_up_ = looked_up.asked;
    fetched = std::move(looked_up.secret);
    if (fetched) secret = &*fetched;
  }
  bool ok = false;
  switch (config.auth_type) {
    case config::AuthType::any:
      ok = true;
      break;
    case config::AuthType::trust:
      // As in PgBouncer, trust still requires the user to be known when an auth_file is set.
      ok = config.auth_file.empty() || secret != nullptr || found_by_query_;
      if (!ok) {
        const auto refusal = report(Err::trust_failed, s.who_.user, trust_refusal_detail());
        co_await refuse(refusal);
        co_return false;
      }
      break;
    case config::AuthType::plain:
      ok = co_await auth_cleartext(secret);
      break;
    case config::AuthType::md5:
      ok = co_await auth_md5_or_scram(secret, greeting);
      break;
    case config::AuthType::scram_sha_256:
      ok = co_await auth_scram(secret, greeting);
      break;
    case config::AuthType::hba:
      ok = co_await auth_hba(secret, greeting);
      break;
    case config::AuthType::cert:
      ok = co_await auth_cert();
      break;
    case config::AuthType::peer:
      ok = co_await auth_peer();
      break;
  }
  if (!ok) co_return false;
  if (fetched) s.services_.pools.keys().put_secret(s.who_.user, *fetched);
  // Not written yet: a route or welcome failure sends only its FATAL, which every driver
  // reports during authentication as well.
  proto::MessageWriter(greeting).authentication_ok();
  co_return true;
}

asio::awaitable<LoginFlow::LookedUp> LoginFlow::look_up_secret() {
  auto& s = session_;
  const auto& config = *s.config_;
  LookedUp out;
  const auto* entry = config.database_line(s.who_.database);
  if (!entry) co_return out;  // route() refuses it, after the password exchange
  const auto& auth_user = entry->auth_user.empty() ? config.auth_user : entry->auth_user;
  if (auth_user.empty()) co_return out;
  const auto& query = entry->auth_query.empty() ? config.auth_query : entry->auth_query;
  const auto& dbname = entry->auth_dbname.empty() ? config.auth_dbname : entry->auth_dbname;
  // The pool of (auth_dbname or the client's database, auth_user), whose password comes from
  // auth_file like any pool's.
  const std::string& pool_database = dbname.empty() ? s.who_.database : dbname;
  if (config::is_console_database(pool_database)) {
    // The console answers no SQL: a [databases] line naming it (or a console login with no
    // auth_dbname) cannot look users up.
    spdlog::warn("C-{} {}: cannot use the reserved \"{}\" database as an auth_dbname", s.who_.id,
                 s.who_.addr, pool_database);
    const auto refusal =
        report(Err::auth_query_failed,
               "cannot use the reserved \"" + pool_database + "\" database as an auth_dbname");
    co_await refuse(refusal);
    out.refused = true;
    co_return out;
  }
  if (s.services_.pools.database_disabled(pool_database)) {
    const auto refusal = report(Err::auth_database_disabled, pool_database);
    co_await refuse(refusal);
    out.refused = true;
    co_return out;
  }
  if (!config.database_line(pool_database)) {
    spdlog::warn("C-{} {}: authentication database \"{}\" is not configured", s.who_.id,
                 s.who_.addr, dbname);
    const auto refusal = report(Err::auth_query_failed,
                                "authentication database \"" + dbname + "\" is not configured");
    co_await refuse(refusal);
    out.refused = true;
    co_return out;
  }
  auto secrets = s.services_.config.secrets();
  auto& pool = s.services_.pools.get(pool_database, auth_user, [&] {
    return pool::settings_for(config, *config.find_database(pool_database), auth_user, *secrets,
                              s.services_.pools.server_tls(), s.services_.pools.keys());
  });
  const auto wait = config.query_wait_timeout.count() > 0 ? config.query_wait_timeout
                                                          : std::chrono::milliseconds(15000);
  auto acquired = co_await pool.acquire(s.reactor_, s.worker(), Clock::now() + wait);
  if (!acquired.server) {
    const bool timed_out =
        acquired.error == Err::query_wait_timeout || acquired.error == Err::query_wait_unreachable;
    const std::string argument = timed_out ? std::to_string(wait.count() / 1000) : acquired.detail;
    const auto refusal = explain(acquired.error, argument, pool.condition());
    co_await refuse(refusal);
    out.refused = true;
    co_return out;
  }
  auto& server = static_cast<pool::ServerConn&>(*acquired.server);
  auto lookup = co_await pool::run_auth_query(server, query, s.who_.user, wait);
  pool.release(std::move(acquired.server), lookup.reusable);
  if (!lookup.error.empty()) {
    spdlog::warn("C-{} {}: auth_query for user \"{}\" as {} failed: {}", s.who_.id, s.who_.addr,
                 s.who_.user, auth_user, lookup.error);
    const auto refusal = report(Err::auth_query_failed, lookup.error);
    co_await refuse(refusal);
    out.refused = true;
    co_return out;
  }
  // No row (no such role, or it may not log in), or NULL (an expired role, no password): a
  // password exchange goes on against nothing and fails as a wrong password does.
  out.asked = true;
  out.found = lookup.found;
  out.secret = std::move(lookup.secret);
  co_return out;
}

asio::awaitable<bool> LoginFlow::auth_md5_or_scram(const std::string* secret,
                                                   std::string& greeting) {
  // A SCRAM secret cannot answer an md5 challenge: switch to SCRAM, as PostgreSQL does.
  if (secret && auth::is_scram_secret(*secret)) co_return co_await auth_scram(secret, greeting);
  co_return co_await auth_md5(secret);
}

asio::awaitable<bool> LoginFlow::auth_hba(const std::string* secret, std::string& greeting) {
  auto& s = session_;
  const auto& config = *s.config_;
  config::HbaClient client;
  client.unix_socket = s.unix_client_;
  client.tls = s.client_.tls() != nullptr;
  client.database = s.who_.database;
  client.user = s.who_.user;
  if (!client.unix_socket) {
    if (::inet_pton(AF_INET, s.who_.addr.c_str(), client.address.data()) == 1) {
      client.family = 4;
    } else if (::inet_pton(AF_INET6, s.who_.addr.c_str(), client.address.data()) == 1) {
      client.family = 6;
    }
  }
  const config::HbaRule* rule = config.hba ? config.hba->match(client) : nullptr;
  // PostgreSQL's words for who asked.
  const auto who =
      fmt::format("host \"{}\", user \"{}\", database \"{}\", {}", config::address_text(client),
                  s.who_.user, s.who_.database, client.tls ? "SSL encryption" : "no encryption");
  if (rule == nullptr) {
    const auto refusal = report(Err::hba_no_entry, who);
    co_await refuse(refusal);
    co_return false;
  }
  switch (rule->method) {
    case config::HbaMethod::trust:
      // As auth_type = trust: the user must be known when an auth_file is set.
      if (config.auth_file.empty() || secret != nullptr || found_by_query_) co_return true;
      {
        const auto refusal = report(Err::trust_failed, s.who_.user, trust_refusal_detail());
        co_await refuse(refusal);
        co_return false;
      }
    case config::HbaMethod::reject: {
      const auto refusal = report(Err::hba_rejected, who);
      co_await refuse(refusal);
      co_return false;
    }
    case config::HbaMethod::password:
      co_return co_await auth_cleartext(secret);
    case config::HbaMethod::md5:
      co_return co_await auth_md5_or_scram(secret, greeting);
    case config::HbaMethod::scram_sha_256:
      co_return co_await auth_scram(secret, greeting);
    case config::HbaMethod::peer:
      co_return co_await auth_peer(ident_map_of(*rule));
    case config::HbaMethod::cert:
      co_return co_await auth_cert(ident_map_of(*rule));
    case config::HbaMethod::ldap:
      // The LDAP server decides: the user need not be in auth_file (PostgreSQL's ldap neither
      // looks at pg_authid's password).
      co_return co_await auth_ldap(*rule);
  }
  const auto refusal = report(Err::password_failed, s.who_.user);
  co_await refuse(refusal);
  co_return false;
}

std::string LoginFlow::trust_refusal_detail() const {
  // Telling that a user does not exist costs nothing here: trust lets anyone else in.
  return looked_up_ ? "no such user: neither in auth_file nor found by auth_query"
                    : "no such user: trust lets in only the users listed in auth_file";
}

std::string_view LoginFlow::ident_map_of(const config::HbaRule& rule) {
  for (const auto& [name, value] : rule.options) {
    if (name == "map") return value;
  }
  return {};
}

bool LoginFlow::system_user_maps(std::string_view map, std::string_view system_user) const {
  const auto& s = session_;
  if (map.empty()) return system_user == s.who_.user;  // no map: the same name
  const auto& ident = s.config_->ident;
  if (ident && ident->allows(map, system_user, s.who_.user)) return true;
  // PgBouncer's words, so that its users' log searches still find it.
  spdlog::info("C-{}: {}/{}@{}:{} ident map: {} does not have a match{}", s.who_.id,
               s.who_.database, s.who_.user, s.who_.addr, s.who_.port, map,
               ident ? "" : " (no auth_ident_file)");
  return false;
}

asio::awaitable<bool> LoginFlow::auth_peer(std::string_view map) {
  auto& s = session_;
  // The socket's OS user must be the user asked for, or map to it through auth_ident_file. Over
  // TCP there is no peer to ask: refused, as PostgreSQL refuses peer on host lines.
  if (s.unix_client_ && system_user_maps(map, net::peer_user_name(s.client_.fd()))) co_return true;
  const auto refusal = report(Err::peer_failed, s.who_.user);
  co_await refuse(refusal);
  co_return false;
}

asio::awaitable<bool> LoginFlow::auth_cert(std::string_view map) {
  auto& s = session_;
  // A certificate the handshake verified against client_tls_ca_file, whose subject's CN is the
  // user asked for, or maps to it through auth_ident_file.
  const auto* tls = s.client_.tls();
  if (tls && tls->peer_certificate_verified() && system_user_maps(map, tls->peer_common_name()))
    co_return true;
  const auto refusal = report(Err::cert_failed, s.who_.user);
  co_await refuse(refusal);
  co_return false;
}

namespace {

auth::LdapRequest ldap_request(const config::HbaLdap& options) {
  auth::LdapRequest request;
  request.scheme = options.scheme.empty() ? "ldap" : options.scheme;
  request.servers = options.server;
  request.port = options.port;
  request.start_tls = options.start_tls;
  request.search = options.search_bind();
  request.prefix = options.prefix.value_or("");
  request.suffix = options.suffix.value_or("");
  request.basedn = options.basedn.value_or("");
  request.binddn = options.binddn.value_or("");
  request.bindpasswd = options.bindpasswd.value_or("");
  request.search_filter = options.search_filter
                              ? *options.search_filter
                              : "(" + options.search_attribute.value_or("uid") + "=$username)";
  using Scope = config::HbaLdap::Scope;
  request.scope = options.scope == Scope::base  ? auth::LdapScope::base
                  : options.scope == Scope::one ? auth::LdapScope::one
                                                : auth::LdapScope::subtree;
  return request;
}

}  // namespace

asio::awaitable<bool> LoginFlow::auth_ldap(const config::HbaRule& rule) {
  using asio::experimental::awaitable_operators::operator||;
  auto& s = session_;
  std::string out;
  proto::MessageWriter(out).authentication_cleartext();
  if (!co_await s.write_client(out)) co_return false;
  auto reply = co_await read_auth_reply();
  if (!reply) co_return false;
  auto password = proto::parse_password_message(reply->body);
  const auto refuse_because = [&](std::string_view why) {
    spdlog::warn("C-{}: {}/{}@{}:{} LDAP authentication failed ({}:{}): {}", s.who_.id,
                 s.who_.database, s.who_.user, s.who_.addr, s.who_.port, s.config_->auth_hba_file,
                 rule.line, why);
    return report(Err::ldap_failed, s.who_.user);
  };
  if (!password || password->empty()) {
    // An empty password would make the bind an unauthenticated one, which LDAP servers answer
    // with success (RFC 4513): refused here, as PostgreSQL does, without asking the server.
    const auto refusal = refuse_because("empty password returned by client");
    co_await refuse(refusal);
    co_return false;
  }
  auto request = ldap_request(rule.ldap);
  request.user = s.who_.user;
  request.password = std::move(*password);
  // The outcome comes back on an LDAP thread and is posted to this worker, where only this
  // coroutine (or nobody, if it has given up) reads it.
  struct Pending {
    net::Event done;
    auth::LdapOutcome outcome;
  };
  auto pending = std::make_shared<Pending>();
  auto& reactor = s.reactor_;
  s.services_.ldap.submit(
      std::move(request), [pending, &reactor](auth::LdapOutcome outcome) mutable {
        reactor.post([pending = std::move(pending), outcome = std::move(outcome)]() mutable {
          pending->outcome = std::move(outcome);
          pending->done.set();
        });
      });
  // The LDAP threads answer within their limit; the timer is the backstop. The client's socket
  // is read meanwhile (what it sends is kept for later): a client that hangs up, or a session
  // ended under the login (a timeout, KILL, the shutdown drain close the socket), stops the
  // wait at once.
  net::Timer limit(s.reactor_);
  const auto deadline = Clock::now() + s.services_.ldap.limits().total + std::chrono::seconds(1);
  for (;;) {
    if (s.login_reader_->remaining().size() >= kMaxReadAhead) {
      co_await (pending->done.async_wait(net::use_nothrow) ||
                limit.async_wait_until(deadline, net::use_nothrow));
      break;
    }
    auto first = co_await (pending->done.async_wait(net::use_nothrow) ||
                           limit.async_wait_until(deadline, net::use_nothrow) ||
                           s.login_reader_->read_ahead(s.client_));
    if (first.index() != 2 || pending->done.is_set()) break;
    if (std::get<2>(first)) co_return false;  // gone: nobody to answer
  }
  if (s.ending_ || !s.client_.is_open()) co_return false;
  if (!pending->done.is_set()) {
    const auto refusal = refuse_because(
        fmt::format("no answer from the LDAP threads within {} s",
                    std::chrono::duration<double>(s.services_.ldap.limits().total).count() + 1));
    co_await refuse(refusal);
    co_return false;
  }
  if (!pending->outcome.ok) {
    const auto refusal = refuse_because(pending->outcome.detail);
    co_await refuse(refusal);
    co_return false;
  }
  spdlog::debug("C-{}: {}/{}@{}:{} LDAP authentication: {}", s.who_.id, s.who_.database,
                s.who_.user, s.who_.addr, s.who_.port, pending->outcome.detail);
  co_return true;
}

asio::awaitable<bool> LoginFlow::auth_cleartext(const std::string* secret) {
  auto& s = session_;
  std::string out;
  proto::MessageWriter(out).authentication_cleartext();
  if (!co_await s.write_client(out)) co_return false;
  auto reply = co_await read_auth_reply();
  if (!reply) co_return false;
  auto password = proto::parse_password_message(reply->body);
  bool ok = false;
  if (password && secret) {
    if (auth::is_md5_hash(*secret)) {
      ok = auth::md5_password_hash(s.who_.user, *password) == *secret;
    } else if (auth::is_scram_secret(*secret)) {
      auto parsed = auth::parse_scram_secret(*secret);
      ok = parsed &&
           auth::format_scram_secret(auth::make_scram_secret(
               *password, parsed->salt, parsed->iterations)) == auth::format_scram_secret(*parsed);
    } else {
      ok = *password == *secret;
    }
  }
  if (!ok) {
    const auto refusal = report(Err::password_failed, s.who_.user);
    co_await refuse(refusal);
  }
  co_return ok;
}

asio::awaitable<bool> LoginFlow::auth_md5(const std::string* secret) {
  auto& s = session_;
  const std::string salt = auth::random_bytes(4);
  std::string out;
  proto::MessageWriter(out).authentication_md5(
      std::span<const std::byte, 4>(reinterpret_cast<const std::byte*>(salt.data()), 4));
  if (!co_await s.write_client(out)) co_return false;
  auto reply = co_await read_auth_reply();
  if (!reply) co_return false;
  auto response = proto::parse_password_message(reply->body);
  const bool ok = response && secret && !secret->empty() &&
                  *response == auth::md5_response(s.who_.user, *secret, salt);
  if (!ok) {
    const auto refusal = report(Err::password_failed, s.who_.user);
    co_await refuse(refusal);
  }
  co_return ok;
}

asio::awaitable<bool> LoginFlow::auth_scram(const std::string* secret, std::string& greeting) {
  auto& s = session_;
  const auto& config = *s.config_;
  // Unknown users and md5-only secrets go through a full exchange against a stand-in secret,
  // so the reply does not reveal which users exist.
  std::shared_ptr<const auth::ScramVerifier> verifier;
  bool stored_scram = false;
  if (secret && auth::is_scram_secret(*secret)) {
    verifier = auth::scram_verifier_for(*secret);
    stored_scram = verifier != nullptr;
  } else if (secret && !secret->empty() && !auth::is_md5_hash(*secret)) {
    verifier = auth::scram_verifier_for(
        s.services_.scram_secrets.secret_for(s.who_.user, *secret, config.scram_iterations));
  }
  const bool can_succeed = verifier != nullptr;
  if (!verifier) verifier = auth::scram_stand_in_verifier(s.who_.user, config.scram_iterations);

  std::string out;
  const std::string_view mechanisms[] = {"SCRAM-SHA-256"};
  proto::MessageWriter(out).authentication_sasl(mechanisms);
  if (!co_await s.write_client(out)) co_return false;

  auto first = co_await read_auth_reply();
  if (!first) co_return false;
  auto initial = proto::parse_sasl_initial_response(first->body);
  if (!initial || initial->mechanism != "SCRAM-SHA-256") {
    const auto refusal =
        report(Err::sasl_failed, "client selected an invalid SASL authentication mechanism");
    co_await refuse(refusal);
    co_return false;
  }
  auth::ScramServer server(std::move(verifier));
  auto server_first = server.handle_client_first(proto::as_chars(initial->data));
  if (!server_first) {
    const auto refusal = report(Err::sasl_failed, "invalid client-first-message");
    co_await refuse(refusal);
    co_return false;
  }
  out.clear();
  proto::MessageWriter(out).authentication_sasl_continue(*server_first);
  if (!co_await s.write_client(out)) co_return false;

  auto final_message = co_await read_auth_reply();
  if (!final_message) co_return false;
  auto server_final = server.handle_client_final(proto::as_chars(final_message->body));
  if (!server_final || !can_succeed) {
    const auto refusal = report(Err::scram_failed, s.who_.user);
    // The log leads with the mechanism (the table's DETAIL), as PgBouncer's does; the client
    // gets PostgreSQL's words.
    s.disconnect_reason_ = std::make_unique<std::string>(refusal.detail + ": " + refusal.message);
    co_await refuse(refusal);
    co_return false;
  }
  if (stored_scram) s.services_.pools.keys().put(s.who_.user, server.client_key());
  proto::MessageWriter(greeting).authentication_sasl_final(*server_final);
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// route: find the database entry and the pool (or the admin console).

asio::awaitable<bool> LoginFlow::route() {
  auto& s = session_;
  const auto& config = *s.config_;
  if (config::is_console_database(s.who_.database)) {
    // The admin console: no pool, no server; serve_console() answers the commands itself.
    s.console_full_access_ = listed(config.admin_users, s.who_.user) ||
                             config.auth_type == config::AuthType::any ||
                             s.local_console_superuser_;
    if (!s.console_full_access_ && !listed(config.stats_users, s.who_.user)) {
      const auto refusal = report(Err::admin_not_allowed, s.who_.user);
      co_await refuse(refusal);
      co_return false;
    }
    co_return true;
  }
  // The line's keys without a copy; a new pool's settings need the full entry ("*" filled in).
  const auto* entry = config.database_line(s.who_.database);
  if (!entry) {
    const auto refusal = report(Err::no_such_database, s.who_.database);
    co_await refuse(refusal);
    co_return false;
  }
  if (s.services_.pools.database_disabled(s.who_.database)) {
    const auto refusal = report(Err::database_disabled, s.who_.database);
    co_await refuse(refusal);
    co_return false;
  }
  const std::string pool_user = entry->user.empty() ? s.who_.user : entry->user;
  auto secrets = s.services_.config.secrets();
  auto& pool = s.services_.pools.get(s.who_.database, pool_user, [&] {
    return pool::settings_for(config, *config.find_database(s.who_.database), pool_user, *secrets,
                              s.services_.pools.server_tls(), s.services_.pools.keys());
  });
  if (secrets->find(pool_user) == secrets->end()) {
    // A user auth_query found: its pool logs in with the secret found now (a changed password
    // changes the pool's target, and its old servers close as they come back).
    if (auto learned = s.services_.pools.keys().secret(pool_user);
        learned && pool.settings()->password != *learned) {
      pool.update_settings(pool::settings_for(config, *config.find_database(s.who_.database),
                                              pool_user, *secrets, s.services_.pools.server_tls(),
                                              s.services_.pools.keys()));
    }
  }
  // [apps] max_server_conn: this application's share of the pool (by the startup
  // application_name, like max_client_conn; a later SET does not move it).
  pool::AppShare* share = nullptr;
  const auto* app = config.find_app(s.who_.application_name);
  if (app && app->max_server_conn && *app->max_server_conn > 0) {
    share = pool.app_share(s.who_.application_name, *app->max_server_conn);
  }
  // session_state: the [apps] line's, else the database's, else the [pgbouncer] key.
  auto session_state = config.session_state;
  if (entry->session_state) session_state = *entry->session_state;
  if (app && app->session_state) session_state = *app->session_state;
  s.relay_.bind(pool, share, pool.stat_slot(s.worker()), session_state);
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// welcome: server parameters, cancel key, ReadyForQuery.

asio::awaitable<bool> LoginFlow::welcome(std::string& greeting) {
  auto& s = session_;
  if (!s.relay_.pool()) co_return co_await welcome_console(greeting);
  auto& pool = *s.relay_.pool();
  if (pool.refuses_logins()) {
    // The backend's circuit breaker is open: 57P03 now rather than a session that cannot work.
    const auto refusal = explain(Err::backend_unavailable, "", pool.condition());
    co_await refuse(refusal);
    co_return false;
  }
  auto defaults = pool.defaults();
  if (!defaults) {
    if (!co_await first_server()) co_return false;
    defaults = pool.defaults();
    if (!defaults) {
      const auto refusal = report(Err::internal, "no server parameters");
      co_await refuse(refusal);
      co_return false;
    }
  }
  std::string& out = greeting;
  proto::MessageWriter writer(out);
  for (const auto& [name, value] : *defaults) {
    const std::string* own = s.params_.find(name);
    writer.parameter_status(name, own ? *own : value);
  }
  s.services_.cancels.add(&s);  // sets cancel_key_
  s.registered_ = true;
  writer.backend_key_data(s.cancel_key_.pid, s.cancel_key_.secret);
  writer.ready_for_query(proto::TransactionStatus::idle);
  if (!co_await s.write_client(out)) co_return false;

  // Whatever the client pipelined after its last login message is the start of its traffic.
  const auto& config = *s.config_;
  s.relay_.take_pipelined(
      s.login_reader_->remaining(),
      std::max<std::size_t>(kMinBuffer, static_cast<std::size_t>(config.pkt_buf)));
  s.login_reader_.reset();
  s.set_state(ClientState::idle, Clock::now());
  s.relay_.stats().add(pool::Stat::client_login, 1);
  if (config.log_connections) {
    const auto& who = s.who_;
    // PgBouncer's words, with tls= the protocol and cipher (or "no").
    const auto* tls = s.client_.tls();
    spdlog::info("C-{}: {}/{}@{}:{} login attempt: db={} user={} tls={} application_name={}",
                 who.id, who.database, who.user, who.addr, who.port, who.database, who.user,
                 tls ? tls->describe() : std::string("no"), who.application_name);
  }
  co_return true;
}

asio::awaitable<bool> LoginFlow::welcome_console(std::string& greeting) {
  auto& s = session_;
  std::string& out = greeting;
  proto::MessageWriter writer(out);
  const std::string* encoding = s.params_.find("client_encoding");
  writer.parameter_status("server_version", "1.25.0/bouncer");
  writer.parameter_status("server_encoding", "UTF8");
  writer.parameter_status("client_encoding", encoding ? *encoding : "UTF8");
  writer.parameter_status("DateStyle", "ISO");
  writer.parameter_status("TimeZone", "UTC");
  writer.parameter_status("integer_datetimes", "on");
  writer.parameter_status("standard_conforming_strings", "on");
  writer.parameter_status("application_name", s.who_.application_name);
  s.services_.cancels.add(&s);  // sets cancel_key_
  s.registered_ = true;
  writer.backend_key_data(s.cancel_key_.pid, s.cancel_key_.secret);
  writer.ready_for_query(proto::TransactionStatus::idle);
  if (!co_await s.write_client(out)) co_return false;
  s.set_state(ClientState::console, Clock::now());
  if (s.config_->log_connections) {
    const auto& who = s.who_;
    spdlog::info("C-{}: {}/{}@{}:{} login attempt: db={} user={} (admin console, {})", who.id,
                 who.database, who.user, who.addr, who.port, who.database, who.user,
                 s.console_full_access_ ? "admin" : "stats");
  }
  co_return true;
}

asio::awaitable<bool> LoginFlow::first_server() {
  auto& s = session_;
  auto& pool = *s.relay_.pool();
  s.set_state(ClientState::waiting_login, Clock::now());
  // The [users] entry's, else the [databases] entry's, else the key.
  const auto wait = s.config_->query_wait_timeout_for(s.who_.database, s.who_.user);
  const auto deadline =
      wait.count() > 0 ? Clock::now() + wait : Clock::time_point::max() - std::chrono::hours(24);
  auto result = co_await pool.acquire(s.reactor_, s.worker(), deadline);
  if (!result.server) {
    const bool timed_out =
        result.error == Err::query_wait_timeout || result.error == Err::query_wait_unreachable;
    const std::string argument = timed_out ? std::to_string(wait.count() / 1000) : result.detail;
    const auto refusal = explain(result.error, argument, pool.condition());
    co_await refuse(refusal);
    co_return false;
  }
  pool.release(std::move(result.server), true);
  co_return true;
}

}  // namespace pgw::session
