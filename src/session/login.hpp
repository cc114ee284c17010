// The login of a client session: startup (SSL/GSS negotiation, CancelRequest, StartupMessage),
// authentication against auth_file, the route to a pool (or the admin console), and the
// welcome (server parameters, cancel key, ReadyForQuery). A coroutine that reads whole
// messages (net::MessageReader) and exists only while the client logs in; it fills in the
// session's identity, parameters and pool, and refuses a client through the session's error
// writer.
#pragma once

#include <asio.hpp>

#include <optional>
#include <string>

#include "config/hba.hpp"
#include "protocol/codec.hpp"
#include "util/errors.hpp"

namespace pgw::config {
struct HbaRule;
}

namespace pgw::session {

class ClientSession;

class LoginFlow {
 public:
  explicit LoginFlow(ClientSession& session) : session_(session) {}

  // Startup, authentication, route and welcome in turn; false when the session must end (the
  // client has been told why, or is gone).
  asio::awaitable<bool> run();

 private:
  asio::awaitable<bool> startup();
  // The answer to an SSLRequest: 'S' and the handshake where client_tls_sslmode offers TLS,
  // else 'N'. False when the session must end.
  asio::awaitable<bool> start_tls();
  // authenticate() and welcome() append their last messages to `greeting`, which welcome()
  // writes: AuthenticationOk, the parameters and ReadyForQuery leave in one send.
  asio::awaitable<bool> authenticate(std::string& greeting);
  // The user "pgbouncer", asking for the console over the Unix socket from a process of
  // pgwarden's own OS user: no password, full console access (PgBouncer's rule).
  bool is_local_console_superuser() const;
  asio::awaitable<bool> route();
  asio::awaitable<bool> welcome(std::string& greeting);
  // The admin console (database "pgbouncer"/"pgwarden"): what PgBouncer's console reports.
  asio::awaitable<bool> welcome_console(std::string& greeting);
  // The first client of a pool: one server login tells the welcome the server's parameters
  // (and reports a server-side login problem now, not at the first query).
  asio::awaitable<bool> first_server();

  asio::awaitable<bool> auth_cleartext(const std::string* secret);
  asio::awaitable<bool> auth_md5(const std::string* secret);
  asio::awaitable<bool> auth_scram(const std::string* secret, std::string& greeting);
  // auth_type = hba: the first auth_hba_file line that matches the client picks the method.
  asio::awaitable<bool> auth_hba(const std::string* secret, std::string& greeting);
  // auth_type = md5 (and hba's md5): SCRAM for a user whose secret is a SCRAM verifier.
  asio::awaitable<bool> auth_md5_or_scram(const std::string* secret, std::string& greeting);
  // peer: the Unix socket's OS user is the user; cert: the verified client certificate's CN.
  // `map`: an hba line's map= (auth_ident_file), empty: the names must be the same.
  asio::awaitable<bool> auth_peer(std::string_view map = {});
  asio::awaitable<bool> auth_cert(std::string_view map = {});
  static std::string_view ident_map_of(const config::HbaRule& rule);
  bool system_user_maps(std::string_view map, std::string_view system_user) const;
  // ldap: the password in cleartext (as PostgreSQL asks for it), checked by the LDAP server the
  // rule names, on the LDAP threads; the client's worker goes on with its other clients.
  asio::awaitable<bool> auth_ldap(const config::HbaRule& rule);
  asio::awaitable<std::optional<proto::Message>> read_auth_reply();
  // auth_query (docs/configuration.md#auth_query): what PostgreSQL says of the client's user,
  // asked as auth_user. `found`: a row came back (trust needs no more); `secret`: its password
  // (none for an expired role or one without a password). `refused`: the client has been
  // refused (no auth_user is not a refusal; the query failing is).
  struct LookedUp {
    bool asked = false;  // auth_query ran (an auth_user applies to the database)
    bool found = false;
    std::optional<std::string> secret;
    bool refused = false;
  };
  asio::awaitable<LookedUp> look_up_secret();

  // Refuses the client: the error, a half-close, a brief drain, the close.
  asio::awaitable<void> refuse(const ErrorReport& report);

  ClientSession& session_;
  bool found_by_query_ = false;  // auth_query returned a row for the user (trust accepts it)
  bool looked_up_ = false;       // auth_query ran for the user
  // The DETAIL of trust's refusal: where the user was looked for.
  std::string trust_refusal_detail() const;
};

}  // namespace pgw::session
