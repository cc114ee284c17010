// pg_hba.conf: the subset of PostgreSQL's host-based authentication file that PgBouncer reads
// (auth_type = hba), with PostgreSQL 15's syntax and matching rules where PgBouncer follows
// them, plus PostgreSQL 16's backslash line continuation.
//
//   local      DATABASE USER         METHOD [OPTIONS]
//   host       DATABASE USER ADDRESS METHOD [OPTIONS]   (TCP, with or without TLS)
//   hostssl    DATABASE USER ADDRESS METHOD [OPTIONS]   (TCP with TLS only)
//   hostnossl  DATABASE USER ADDRESS METHOD [OPTIONS]   (TCP without TLS only)
//
// * Fields are separated by spaces or tabs; "#" starts a comment (not inside double quotes);
//   a line ending in a backslash continues on the next one (checked before comments are
//   removed, as PostgreSQL 16 does, so a comment ending in "\" swallows the next line).
// * DATABASE and USER are comma-separated lists (blanks around a comma allowed, as PgBouncer
//   reads them). A double-quoted item is a name even when it
//   is spelled like a keyword ("all" is the database called all); "" inside quotes is a quote.
//   An unquoted @file item is replaced by the words of that file (whitespace or comma
//   separated, "#" comments, quotes as above, nested @file allowed up to 10 deep). Names
//   compare exactly (case-sensitive).
// * DATABASE keywords: all; sameuser (the database named like the user); replication, which
//   matches no connection here (pgwarden does not pool replication connections, and PostgreSQL
//   never matches it for a normal connection either). samerole / samegroup are refused.
// * USER keywords: all. +group (role membership) is refused.
// * ADDRESS: a.b.c.d/len, an IPv6 address /len, "all", or an address followed by a separate
//   mask field ("127.0.0.1 255.255.255.255"). Host names, samehost and samenet are refused.
//   An IPv4 client matches only IPv4 rules and an IPv6 client only IPv6 rules; an IPv4-mapped
//   IPv6 client (::ffff:a.b.c.d) counts as the IPv4 client a.b.c.d.
// * METHOD: trust, reject, password, md5, scram-sha-256, cert (TCP lines, as PgBouncer), peer
//   (local only), ldap. ident, gss, sspi, pam, radius, bsd are refused as unsupported.
// * OPTIONS: name=value words (the value may be quoted): map=, clientcert=, clientname= and the
//   ldap* options, checked the way PostgreSQL checks them (HbaLdap below).
// Keyword items are stored with a leading '\x01' (kHbaAll, kHbaSameUser, kHbaReplication),
// names as they are; a name cannot start with '\x01' (control characters are refused).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgw::config {

enum class HbaConnection : std::uint8_t { local, host, hostssl, hostnossl };
enum class HbaMethod : std::uint8_t {
  trust,
  reject,
  password,
  md5,
  scram_sha_256,
  cert,
  peer,
  ldap
};
// "trust", "reject", "password", "md5", "scram-sha-256", "cert", "peer", "ldap"
std::string_view to_string(HbaMethod method);
// "local", "host", "hostssl", "hostnossl"
std::string_view to_string(HbaConnection connection);

// Keyword items of HbaRule::databases / users.
inline constexpr std::string_view kHbaAll =
    "\x01"
    "all";
inline constexpr std::string_view kHbaSameUser =
    "\x01"
    "sameuser";
inline constexpr std::string_view kHbaReplication =
    "\x01"
    "replication";
// Whether a databases / users item is a keyword (rather than a name).
inline bool hba_is_keyword(std::string_view item) {
  return !item.empty() && item[0] == '\x01';
}

// The options of an ldap line, as PostgreSQL reads them (hba.c): each option sets its field,
// an ldapurl sets the fields its parts give (later options override earlier ones). An option
// that is present counts even when empty (ldapbasedn="" searches from the root), so the
// optional fields keep "not given" apart from "".
struct HbaLdap {
  enum class Scope : std::uint8_t { base, one, subtree };
  std::string scheme;      // "ldap" or "ldaps" ("" = ldap)
  std::string server;      // one or more host names or addresses, separated by blanks
  int port = 0;            // 0: the scheme's (389, ldaps 636)
  bool start_tls = false;  // ldaptls=1: StartTLS before anything else
  // Simple bind: the bind DN is prefix + user name + suffix.
  std::optional<std::string> prefix, suffix;
  // Search+bind: bind as binddn (anonymously without it), find the one entry under basedn whose
  // search attribute (default uid) is the user name, or that the search filter ("$username"
  // standing for the user name) selects, then bind as that entry with the password.
  std::optional<std::string> basedn, binddn, bindpasswd, search_attribute, search_filter;
  // subtree, unless an ldapurl says otherwise (a URL that names no scope means base, RFC 4516)
  Scope scope = Scope::subtree;

  bool search_bind() const { return basedn.has_value(); }
  bool operator==(const HbaLdap&) const = default;
};

struct HbaRule {
  HbaConnection connection = HbaConnection::host;
  std::vector<std::string> databases;  // names; keywords kHbaAll, kHbaSameUser, kHbaReplication
  std::vector<std::string> users;      // names; keyword kHbaAll
  // host* lines: the address and mask, IPv4 (4 bytes) or IPv6 (16 bytes); `any_address` for "all"
  bool any_address = false;
  std::uint8_t family = 0;  // 4 or 6 (0 for local / any_address)
  std::array<std::uint8_t, 16> address{}, mask{};
  HbaMethod method = HbaMethod::trust;
  std::vector<std::pair<std::string, std::string>> options;  // name=value after the method
  HbaLdap ldap;  // method ldap: what the ldap* options say
  int line = 0;  // the (first) line of the rule in the file
};

// Who is connecting.
struct HbaClient {
  bool unix_socket = false;
  bool tls = false;
  std::uint8_t family = 0;                 // 4 or 6 for TCP
  std::array<std::uint8_t, 16> address{};  // network order; for 4 the first 4 bytes
  std::string_view database, user;
};

class HbaFile;
HbaFile parse_hba(std::string_view text, const std::string& path,
                  const std::function<std::string(const std::string&)>& read_include);

class HbaFile {
 public:
  // The first rule that matches (PostgreSQL's order), or null: no entry.
  const HbaRule* match(const HbaClient& client) const;
  const std::vector<HbaRule>& rules() const { return rules_; }

 private:
  std::vector<HbaRule> rules_;
  friend HbaFile parse_hba(std::string_view text, const std::string& path,
                           const std::function<std::string(const std::string&)>& read_include);
};

// Whether `rule` matches `client` (HbaFile::match takes the first rule for which this holds).
bool hba_rule_matches(const HbaRule& rule, const HbaClient& client);

// Parses an hba file's text. `path` names it in errors; `read_include` returns the text of an
// @file referenced in a database or user field (resolved by the caller relative to the hba
// file's directory; it throws ConfigError if unreadable). Throws ConfigError (Kind::syntax for
// malformed text, Kind::invalid_value for a value not accepted, Kind::file when an @file
// cannot be read; where() is "<path>:<line>") on the first malformed line, naming what is
// wrong.
HbaFile parse_hba(std::string_view text, const std::string& path,
                  const std::function<std::string(const std::string&)>& read_include);

// auth_ident_file: PostgreSQL's pg_ident.conf, the user name maps of `map=` on cert and peer
// lines. Each line is MAP SYSTEM-USER DATABASE-USER (names quoted as in pg_hba.conf). A
// SYSTEM-USER that starts with '/' is a regular expression (ECMAScript syntax, anchored as
// written) whose first group may appear as \1 in DATABASE-USER; DATABASE-USER "all" (bare)
// admits any user. The system user is the certificate's CN (cert) or the OS user (peer).
struct IdentRule {
  std::string map;
  std::string system_user;    // a name, or the expression without its '/'
  std::string database_user;  // a name, possibly with \1
  bool expression = false;
  bool all_users = false;
  int line = 0;
  std::shared_ptr<const std::regex> pattern;  // when `expression`
};

class IdentFile {
 public:
  // Whether map `map` lets `system_user` log in as `database_user`.
  bool allows(std::string_view map, std::string_view system_user,
              std::string_view database_user) const;
  const std::vector<IdentRule>& rules() const { return rules_; }

 private:
  friend IdentFile parse_ident(std::string_view text, const std::string& path);
  std::vector<IdentRule> rules_;
};

// Parses an ident file; throws ConfigError ("<path>:<line>", what is wrong) on the first bad
// line: not three fields, a list where one name is needed, an expression that does not compile
// or is longer than 256 bytes.
IdentFile parse_ident(std::string_view text, const std::string& path);

// An address as text for messages ("127.0.0.1", "::1"; "[local]" for a unix socket client).
std::string address_text(const HbaClient& client);

// One rule written back as an hba line (names quoted where needed, keywords bare, the address
// as addr/len, or with a separate mask field when the mask is not contiguous): parse_hba of it
// gives the same rule (line aside). A rule whose database or user list is empty (an empty
// @file) has no such line; the list is written "".
std::string format_hba_rule(const HbaRule& rule);

}  // namespace pgw::config
