// Unit tests for src/config/hba: pg_hba.conf parsing (fields, quoting, lists, @file, comments,
// continuation, addresses, methods, options, every error) and matching (first rule wins).
#include "config/hba.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace {

using pgw::config::ConfigError;
using pgw::config::HbaClient;
using pgw::config::HbaConnection;
using pgw::config::HbaFile;
using pgw::config::HbaLdap;
using pgw::config::HbaMethod;
using pgw::config::HbaRule;
using pgw::config::kHbaAll;
using pgw::config::kHbaReplication;
using pgw::config::kHbaSameUser;

const std::map<std::string, std::string> kIncludes = {
    {"admins", "alice, bob\n# a comment\n\"all\" carol\n"},
    {"dbs", "app1 app2,app3"},
    {"nested", "dave @admins"},
    {"loop", "@loop"},
    {"groups", "+staff"},
    {"bad", "\"unterminated\n"},
    {"empty", "# nobody\n"},
    {"keywords", "all sameuser"},
};

std::string fake_read(const std::string& name) {
  const auto it = kIncludes.find(name);
  if (it == kIncludes.end()) {
    throw ConfigError(ConfigError::Kind::file, "/etc/hba/" + name, "No such file or directory");
  }
  return it->second;
}

HbaFile parse(std::string_view text) {
  return pgw::config::parse_hba(text, "hba.conf", fake_read);
}

// The ConfigError text for `text`, or "" (and a failure) when it parses.
std::string error_of(std::string_view text, ConfigError::Kind* kind = nullptr) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    if (kind != nullptr) *kind = e.kind();
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << text;
  return {};
}

HbaClient tcp4(std::array<std::uint8_t, 4> a, std::string_view db = "db",
               std::string_view user = "u", bool tls = false) {
  HbaClient c;
  c.family = 4;
  std::copy(a.begin(), a.end(), c.address.begin());
  c.database = db;
  c.user = user;
  c.tls = tls;
  return c;
}

HbaClient tcp6(std::array<std::uint8_t, 16> a, std::string_view db = "db",
               std::string_view user = "u", bool tls = false) {
  HbaClient c;
  c.family = 6;
  c.address = a;
  c.database = db;
  c.user = user;
  c.tls = tls;
  return c;
}

HbaClient unix_client(std::string_view db = "db", std::string_view user = "u") {
  HbaClient c;
  c.unix_socket = true;
  c.database = db;
  c.user = user;
  return c;
}

constexpr std::array<std::uint8_t, 16> kLoopback6 = {0, 0, 0, 0, 0, 0, 0, 0,
                                                     0, 0, 0, 0, 0, 0, 0, 1};
constexpr std::array<std::uint8_t, 16> kDoc6 = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                                0,    0,    0,    0,    0, 0, 0, 5};

// The line of the matching rule, 0 for none.
int matched_line(const HbaFile& file, const HbaClient& client) {
  const HbaRule* rule = file.match(client);
  return rule == nullptr ? 0 : rule->line;
}

// ---- parsing ----

TEST(Hba, ParsesLocalAndHostLines) {
  const auto file = parse(
      "# TYPE DATABASE USER ADDRESS METHOD\n"
      "\n"
      "local   all       all                 peer map=ops\n"
      "host    app       alice  10.0.0.0/8   scram-sha-256   # trailing comment\n"
      "hostssl all       all    ::1/128      cert clientcert=verify-full\n"
      "hostnossl db1,db2 u1,u2  192.168.1.7 255.255.255.255  md5\n"
      "host    all       all    all          reject\n"
      "\t host\tx\ty\t0.0.0.0/0\tpassword\r\n");
  const auto& rules = file.rules();
  ASSERT_EQ(rules.size(), 6u);

  EXPECT_EQ(rules[0].connection, HbaConnection::local);
  EXPECT_EQ(rules[0].databases, std::vector<std::string>{std::string(kHbaAll)});
  EXPECT_EQ(rules[0].users, std::vector<std::string>{std::string(kHbaAll)});
  EXPECT_EQ(rules[0].method, HbaMethod::peer);
  EXPECT_EQ(rules[0].family, 0);
  EXPECT_EQ(rules[0].line, 3);
  ASSERT_EQ(rules[0].options.size(), 1u);
  EXPECT_EQ(rules[0].options[0], (std::pair<std::string, std::string>{"map", "ops"}));

  EXPECT_EQ(rules[1].connection, HbaConnection::host);
  EXPECT_EQ(rules[1].databases, std::vector<std::string>{"app"});
  EXPECT_EQ(rules[1].users, std::vector<std::string>{"alice"});
  EXPECT_EQ(rules[1].family, 4);
  EXPECT_FALSE(rules[1].any_address);
  EXPECT_EQ(rules[1].address[0], 10);
  EXPECT_EQ(rules[1].mask[0], 0xff);
  EXPECT_EQ(rules[1].mask[1], 0);
  EXPECT_EQ(rules[1].method, HbaMethod::scram_sha_256);
  EXPECT_TRUE(rules[1].options.empty());

  EXPECT_EQ(rules[2].connection, HbaConnection::hostssl);
  EXPECT_EQ(rules[2].family, 6);
  EXPECT_EQ(rules[2].address, kLoopback6);
  for (auto b : rules[2].mask) EXPECT_EQ(b, 0xff);
  EXPECT_EQ(rules[2].method, HbaMethod::cert);

  EXPECT_EQ(rules[3].connection, HbaConnection::hostnossl);
  EXPECT_EQ(rules[3].databases, (std::vector<std::string>{"db1", "db2"}));
  EXPECT_EQ(rules[3].users, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(rules[3].address[3], 7);
  EXPECT_EQ(rules[3].mask[3], 0xff);
  EXPECT_EQ(rules[3].method, HbaMethod::md5);

  EXPECT_TRUE(rules[4].any_address);
  EXPECT_EQ(rules[4].family, 0);
  EXPECT_EQ(rules[4].method, HbaMethod::reject);

  EXPECT_EQ(rules[5].method, HbaMethod::password);
  EXPECT_EQ(rules[5].family, 4);
  EXPECT_EQ(rules[5].line, 8);
}

TEST(Hba, EmptyAndCommentOnlyFiles) {
  EXPECT_TRUE(parse("").rules().empty());
  EXPECT_TRUE(parse("# nothing\n   \n\t# more\n").rules().empty());
  EXPECT_EQ(parse("local all all trust").rules().size(), 1u);  // no final newline
}

TEST(Hba, QuotingAndKeywords) {
  const auto file = parse(
      "local \"all\",all \"all\",all trust\n"
      "local \"my db\",\"a\"\"b\",sameuser,\"sameuser\",replication,\"replication\" "
      "\"x,y#z\" trust\n"
      "local \"+staff\" \"+staff\" trust\n"
      "local \"\" \"\" trust\n"
      "local d\"e f\"g all trust\n");
  const auto& rules = file.rules();
  ASSERT_EQ(rules.size(), 5u);
  EXPECT_EQ(rules[0].databases, (std::vector<std::string>{"all", std::string(kHbaAll)}));
  EXPECT_EQ(rules[0].users, (std::vector<std::string>{"all", std::string(kHbaAll)}));
  EXPECT_EQ(rules[1].databases,
            (std::vector<std::string>{"my db", "a\"b", std::string(kHbaSameUser), "sameuser",
                                      std::string(kHbaReplication), "replication"}));
  EXPECT_EQ(rules[1].users, std::vector<std::string>{"x,y#z"});
  EXPECT_EQ(rules[2].databases, std::vector<std::string>{"+staff"});
  EXPECT_EQ(rules[2].users, std::vector<std::string>{"+staff"});
  EXPECT_EQ(rules[3].databases, std::vector<std::string>{""});
  EXPECT_EQ(rules[4].databases, std::vector<std::string>{"de fg"});  // quotes mid-token
  EXPECT_TRUE(pgw::config::hba_is_keyword(kHbaAll));
  EXPECT_FALSE(pgw::config::hba_is_keyword("all"));
}

TEST(Hba, ListsContinueAfterCommaAndBlanks) {
  const auto file = parse("local a, b u1,  u2 md5\n");
  ASSERT_EQ(file.rules().size(), 1u);
  EXPECT_EQ(file.rules()[0].databases, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(file.rules()[0].users, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(file.rules()[0].method, HbaMethod::md5);
  // Blanks before a comma too, as PgBouncer reads its own test rules ("user1,user2 , user3").
  const auto spaced = parse("host all user1,user2 , user3 16.0.0.0/8 md5\n");
  ASSERT_EQ(spaced.rules().size(), 1u);
  EXPECT_EQ(spaced.rules()[0].users, (std::vector<std::string>{"user1", "user2", "user3"}));
  EXPECT_EQ(spaced.rules()[0].family, 4);
  // A quoted item keeps its blanks and commas.
  EXPECT_EQ(parse("host all \"a , b\" 19.0.0.0/8 md5\n").rules()[0].users,
            (std::vector<std::string>{"a , b"}));
}

TEST(Hba, CertOnAnyTcpLineAsPgBouncer) {
  EXPECT_EQ(parse("host all all 19.0.0.0/8 cert\n").rules()[0].method, HbaMethod::cert);
  EXPECT_EQ(parse("hostnossl all all all cert\n").rules()[0].method, HbaMethod::cert);
  EXPECT_EQ(parse("hostssl all all all cert\n").rules()[0].method, HbaMethod::cert);
}

TEST(Hba, Includes) {
  const auto file = parse(
      "local @dbs @admins md5\n"
      "local \"@dbs\" @nested trust\n"
      "local all @empty trust\n"
      "local @keywords @ trust\n");
  const auto& rules = file.rules();
  ASSERT_EQ(rules.size(), 4u);
  EXPECT_EQ(rules[0].databases, (std::vector<std::string>{"app1", "app2", "app3"}));
  EXPECT_EQ(rules[0].users, (std::vector<std::string>{"alice", "bob", "all", "carol"}));
  EXPECT_EQ(rules[1].databases, std::vector<std::string>{"@dbs"});  // quoted: a name
  EXPECT_EQ(rules[1].users, (std::vector<std::string>{"dave", "alice", "bob", "all", "carol"}));
  EXPECT_TRUE(rules[2].users.empty());  // matches nobody
  EXPECT_EQ(rules[3].databases,
            (std::vector<std::string>{std::string(kHbaAll), std::string(kHbaSameUser)}));
  EXPECT_EQ(rules[3].users, std::vector<std::string>{"@"});  // a lone @ is a name
}

TEST(Hba, LineContinuation) {
  const auto file = parse(
      "local all \\\n"
      "      all trust\n"
      "host all all 127.0.0.1/32 \\\r\n"
      "  md5 # comment\n"
      "# a comment \\\n"
      "local this line is swallowed by the comment\n"
      "local a\\\n"
      "b all trust\n"
      "local all all peer \\");
  const auto& rules = file.rules();
  ASSERT_EQ(rules.size(), 4u);
  EXPECT_EQ(rules[0].line, 1);
  EXPECT_EQ(rules[0].method, HbaMethod::trust);
  EXPECT_EQ(rules[1].line, 3);
  EXPECT_EQ(rules[1].method, HbaMethod::md5);
  EXPECT_EQ(rules[2].line, 7);
  EXPECT_EQ(rules[2].databases, std::vector<std::string>{"ab"});
  EXPECT_EQ(rules[3].line, 9);
  EXPECT_EQ(rules[3].method, HbaMethod::peer);
}

TEST(Hba, Addresses) {
  struct Case {
    const char* address;
    std::uint8_t family;
    std::vector<std::uint8_t> address_bytes;
    std::vector<std::uint8_t> mask_bytes;
  };
  const std::vector<Case> cases = {
      {"0.0.0.0/0", 4, {0, 0, 0, 0}, {0, 0, 0, 0}},
      {"10.1.2.3/8", 4, {10, 1, 2, 3}, {255, 0, 0, 0}},
      {"192.168.0.0/20", 4, {192, 168, 0, 0}, {255, 255, 240, 0}},
      {"127.0.0.1/32", 4, {127, 0, 0, 1}, {255, 255, 255, 255}},
      {"127.0.0.1 255.0.0.0", 4, {127, 0, 0, 1}, {255, 0, 0, 0}},
      {"::/0", 6, std::vector<std::uint8_t>(16, 0), std::vector<std::uint8_t>(16, 0)},
      {"::1/128",
       6,
       {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
       std::vector<std::uint8_t>(16, 0xff)},
      {"2001:DB8::/33",
       6,
       {0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
       {0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
      {"1:2:3:4:5:6:7:8/64",
       6,
       {0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8},
       {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}},
      {"fe80::1:2/10",
       6,
       {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2},
       {0xff, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
      {"1:2:3:4:5:6:7::/128",
       6,
       {0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0},
       std::vector<std::uint8_t>(16, 0xff)},
      {"::ffff:10.0.0.1/128",
       6,
       {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1},
       std::vector<std::uint8_t>(16, 0xff)},
      {"::1 ffff:ffff::",
       6,
       {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
       {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.address);
    const auto file = parse(std::string("host all all ") + c.address + " md5\n");
    ASSERT_EQ(file.rules().size(), 1u);
    const auto& rule = file.rules()[0];
    EXPECT_EQ(rule.family, c.family);
    EXPECT_FALSE(rule.any_address);
    const std::size_t n = c.family == 4 ? 4 : 16;
    EXPECT_EQ(std::vector<std::uint8_t>(rule.address.begin(), rule.address.begin() + n),
              c.address_bytes);
    EXPECT_EQ(std::vector<std::uint8_t>(rule.mask.begin(), rule.mask.begin() + n), c.mask_bytes);
    EXPECT_EQ(rule.method, HbaMethod::md5);
  }
}

TEST(Hba, MethodsAndOptions) {
  const auto file = parse(
      "host all all all ldap ldapserver=ldap.example.com ldapport=389 ldapprefix=\"cn=\" "
      "ldapsuffix=\", dc=example, dc=net\"\n"
      "host all all all ldap ldapurl=\"ldap://ldap.example.net/dc=example,dc=net?uid?sub\"\n"
      "hostssl all all all scram-sha-256 clientcert=verify-ca clientname=DN\n"
      "hostssl all all all cert map=certmap clientname=CN\n");
  const auto& rules = file.rules();
  ASSERT_EQ(rules.size(), 4u);
  EXPECT_EQ(rules[0].method, HbaMethod::ldap);
  EXPECT_EQ(rules[0].options, (std::vector<std::pair<std::string, std::string>>{
                                  {"ldapserver", "ldap.example.com"},
                                  {"ldapport", "389"},
                                  {"ldapprefix", "cn="},
                                  {"ldapsuffix", ", dc=example, dc=net"}}));
  EXPECT_EQ(rules[1].options[0].second, "ldap://ldap.example.net/dc=example,dc=net?uid?sub");
  EXPECT_EQ(rules[2].options.size(), 2u);
  EXPECT_EQ(rules[3].options[0], (std::pair<std::string, std::string>{"map", "certmap"}));
  for (auto m : {HbaMethod::trust, HbaMethod::reject, HbaMethod::password, HbaMethod::md5,
                 HbaMethod::scram_sha_256, HbaMethod::cert, HbaMethod::peer, HbaMethod::ldap}) {
    EXPECT_FALSE(pgw::config::to_string(m).empty());
  }
  EXPECT_EQ(pgw::config::to_string(HbaMethod::scram_sha_256), "scram-sha-256");
  EXPECT_EQ(pgw::config::to_string(HbaConnection::hostnossl), "hostnossl");
}

// ---- ldap ----

TEST(Hba, LdapSimpleBindOptions) {
  const auto file = parse(
      "host all all all ldap ldapserver=\"ldap1 ldap2\" ldapport=1389 ldaptls=1 ldapprefix=\"cn=\" "
      "ldapsuffix=\", dc=example, dc=net\"\n"
      "host all all all ldap ldapserver=h ldapscheme=ldaps ldaptls=0 ldapprefix=\"EXAMPLE\\\"\n");
  const auto& simple = file.rules()[0].ldap;
  EXPECT_EQ(simple.server, "ldap1 ldap2");
  EXPECT_EQ(simple.port, 1389);
  EXPECT_TRUE(simple.start_tls);
  EXPECT_EQ(simple.scheme, "");
  EXPECT_EQ(simple.prefix, "cn=");
  EXPECT_EQ(simple.suffix, ", dc=example, dc=net");
  EXPECT_FALSE(simple.search_bind());
  EXPECT_FALSE(simple.basedn || simple.binddn || simple.search_attribute || simple.search_filter);
  const auto& domain = file.rules()[1].ldap;
  EXPECT_EQ(domain.scheme, "ldaps");
  EXPECT_FALSE(domain.start_tls);         // PostgreSQL: only "1" turns it on
  EXPECT_EQ(domain.prefix, "EXAMPLE\\");  // Active Directory's DOMAIN\user
  EXPECT_FALSE(domain.suffix);
  // Options of other lines stay empty.
  EXPECT_EQ(parse("host all all all md5\n").rules()[0].ldap, HbaLdap{});
}

TEST(Hba, LdapSearchBindOptions) {
  const auto file = parse(
      "host all all all ldap ldapserver=h ldapbasedn=\"ou=people, dc=x\" ldapbinddn=\"cn=admin\" "
      "ldapbindpasswd=secret ldapsearchattribute=cn\n"
      "host all all all ldap ldapserver=h ldapbasedn=\"\" "
      "ldapsearchfilter=\"(|(uid=$username)(mail=$username))\"\n");
  const auto& attribute = file.rules()[0].ldap;
  EXPECT_TRUE(attribute.search_bind());
  EXPECT_EQ(attribute.basedn, "ou=people, dc=x");
  EXPECT_EQ(attribute.binddn, "cn=admin");
  EXPECT_EQ(attribute.bindpasswd, "secret");
  EXPECT_EQ(attribute.search_attribute, "cn");
  EXPECT_FALSE(attribute.search_filter);
  EXPECT_EQ(attribute.scope, HbaLdap::Scope::subtree);
  // An empty base DN is given (the root), not missing.
  const auto& filter = file.rules()[1].ldap;
  EXPECT_TRUE(filter.search_bind());
  EXPECT_EQ(filter.basedn, "");
  EXPECT_EQ(filter.search_filter, "(|(uid=$username)(mail=$username))");
  EXPECT_FALSE(filter.binddn);
}

TEST(Hba, LdapUrl) {
  const auto ldap_of = [](const std::string& options) {
    return parse("host all all all ldap " + options + "\n").rules()[0].ldap;
  };
  // PostgreSQL's documentation example.
  auto ldap = ldap_of("ldapurl=\"ldap://ldap.example.net/dc=example,dc=net?uid?sub\"");
  EXPECT_EQ(ldap.scheme, "ldap");
  EXPECT_EQ(ldap.server, "ldap.example.net");
  EXPECT_EQ(ldap.port, 0);
  EXPECT_EQ(ldap.basedn, "dc=example,dc=net");
  EXPECT_EQ(ldap.search_attribute, "uid");
  EXPECT_FALSE(ldap.search_filter);
  EXPECT_EQ(ldap.scope, HbaLdap::Scope::subtree);
  // Port, percent-escapes, the first attribute only, scope one; no scope is base (RFC 4516).
  ldap = ldap_of("ldapurl=\"LDAPS://h.example:1636/ou=a%20b,dc=x?cn,mail?one\"");
  EXPECT_EQ(ldap.scheme, "ldaps");
  EXPECT_EQ(ldap.port, 1636);
  EXPECT_EQ(ldap.basedn, "ou=a b,dc=x");
  EXPECT_EQ(ldap.search_attribute, "cn");
  EXPECT_EQ(ldap.scope, HbaLdap::Scope::one);
  ldap = ldap_of("ldapurl=ldap://[::1]:389/dc=x");
  EXPECT_EQ(ldap.server, "::1");
  EXPECT_EQ(ldap.port, 389);
  EXPECT_EQ(ldap.scope, HbaLdap::Scope::base);
  EXPECT_FALSE(ldap.search_attribute);
  // A filter, and a non-critical extension (ignored).
  ldap = ldap_of("ldapurl=\"ldap://h/dc=x??sub?(%7C(uid=$username)(mail=$username))?e-x=1\"");
  EXPECT_EQ(ldap.search_filter, "(|(uid=$username)(mail=$username))");
  EXPECT_FALSE(ldap.search_attribute);
  // Options after the URL override what it set, as in PostgreSQL.
  ldap = ldap_of("ldapurl=ldap://h:1/dc=x ldapserver=other ldapport=2");
  EXPECT_EQ(ldap.server, "other");
  EXPECT_EQ(ldap.port, 2);
  EXPECT_EQ(ldap.basedn, "dc=x");
}

TEST(Hba, LdapErrors) {
  struct Case {
    const char* options;
    const char* fragment;
  };
  const std::vector<Case> cases = {
      {"ldapserver=h ldapprefix=a ldapscheme=http", "invalid ldapscheme value: \"http\""},
      {"ldapserver=h ldapprefix=a ldapport=0", "invalid LDAP port number: \"0\""},
      {"ldapserver=h ldapprefix=a ldapport=70000", "invalid LDAP port number"},
      {"ldapserver=h ldapprefix=a ldapport=389x", "invalid LDAP port number"},
      {"ldapurl=http://h/dc=x", "unsupported LDAP URL scheme: http"},
      {"ldapurl=ldap:/h/dc=x", "could not parse LDAP URL \"ldap:/h/dc=x\": no scheme://"},
      {"ldapurl=ldap://h:x/dc=x", "invalid port"},
      {"ldapurl=ldap://h:0/dc=x", "invalid port"},
      {"ldapurl=ldap://[::1/dc=x", "unterminated ["},
      {"ldapurl=ldap://h/dc=%zz", "bad %-escape"},
      {"ldapurl=ldap://h/dc=x%2", "bad %-escape"},
      {"ldapurl=ldap://h/dc=x??tree", "invalid scope \"tree\""},
      {"ldapurl=ldap://h/dc=x?\?\?\?!critical", "unsupported critical extension"},
      {"ldapurl=ldap://h/dc=x?????", "too many"},
      // The combinations, in PostgreSQL's words.
      {"ldapserver=h ldapprefix=a ldapbasedn=b", "cannot use ldapbasedn, ldapbinddn, "},
      {"ldapserver=h ldapsuffix=a ldapbinddn=b", "together with ldapprefix or ldapsuffix"},
      {"ldapserver=h ldapsuffix=a ldapbindpasswd=b", "together with ldapprefix"},
      {"ldapurl=ldap://h/dc=x ldapprefix=a", "or ldapurl together with ldapprefix"},
      {"ldapserver=h ldapbinddn=x", "requires argument \"ldapbasedn\", \"ldapprefix\", or"},
      {"ldapserver=h ldapbasedn=b ldapsearchattribute=a ldapsearchfilter=f",
       "cannot use ldapsearchattribute together with ldapsearchfilter"},
      {"ldapurl=ldap://h/dc=x?uid?sub?(uid=$username)", "together with ldapsearchfilter"},
      // No DNS SRV look-up: a server must be named.
      {"ldapbasedn=dc=x", "requires argument \"ldapserver\" (or a host in \"ldapurl\")"},
      {"ldapurl=ldap:///dc=x", "DNS SRV"},
      {"ldapserver=\" \" ldapbasedn=dc=x", "requires argument \"ldapserver\""},
  };
  for (const auto& c : cases) {
    const std::string line = std::string("host all all all ldap ") + c.options;
    SCOPED_TRACE(line);
    const std::string message = error_of(line);
    EXPECT_NE(message.find(c.fragment), std::string::npos) << message;
    EXPECT_EQ(message.rfind("hba.conf:1: ", 0), 0u) << message;
  }
}

TEST(Hba, LdapLinesFormatBack) {
  const auto file = parse(
      "host all all all ldap ldapurl=\"ldaps://h:1636/dc=x?cn?one\" ldapbinddn=\"cn=a, dc=x\" "
      "ldapbindpasswd=\"p w\"\n"
      "host all all all ldap ldapserver=h ldapbasedn=\"\" ldapsearchfilter=\"(uid=$username)\"\n"
      "host all all all ldap ldapserver=\"a b\" ldaptls=1 ldapprefix=\"cn=\" "
      "ldapsuffix=\",dc=x\"\n");
  for (const auto& rule : file.rules()) {
    const std::string line = pgw::config::format_hba_rule(rule);
    SCOPED_TRACE(line);
    const auto again = parse(line);
    ASSERT_EQ(again.rules().size(), 1u);
    EXPECT_EQ(again.rules()[0].options, rule.options);
    EXPECT_EQ(again.rules()[0].ldap, rule.ldap);
  }
}

// ---- errors ----

TEST(Hba, Errors) {
  struct Case {
    const char* text;
    const char* fragment;
  };
  const std::vector<Case> cases = {
      {"foo all all trust", "invalid connection type \"foo\""},
      {"hostgssenc all all all trust", "not supported"},
      {"local,host all all trust", "multiple values specified for connection type"},
      {"local", "end-of-line before database specification"},
      {"local all", "end-of-line before role specification"},
      {"local all all", "end-of-line before authentication method"},
      {"host all all", "end-of-line before IP address specification"},
      {"host all all 10.0.0.0/8", "end-of-line before authentication method"},
      {"host all all 10.0.0.1", "end-of-line before netmask"},
      {"host all all 10.0.0.1 md5", "invalid IP mask \"md5\""},
      {"host all all 10.0.0.1 ffff:: md5", "IP address and mask do not match"},
      {"host all all ::1 255.0.0.0 md5", "IP address and mask do not match"},
      {"host all all 10.0.0.1/33 md5", "invalid CIDR mask"},
      {"host all all ::1/129 md5", "invalid CIDR mask"},
      {"host all all 10.0.0.1/ md5", "invalid CIDR mask"},
      {"host all all 10.0.0.1/8x md5", "invalid CIDR mask"},
      {"host all all 256.0.0.1/32 md5", "invalid IP address"},
      {"host all all 1.2.3/24 md5", "invalid IP address"},
      {"host all all 010.0.0.1/32 md5", "invalid IP address"},
      {"host all all 1::2::3/64 md5", "invalid IP address"},
      {"host all all 1:2:3:4:5:6:7:8:9/64 md5", "invalid IP address"},
      {"host all all 12345::/64 md5", "invalid IP address"},
      {"host all all fe80::1%eth0/64 md5", "invalid IP address"},
      {"host all all db.example.com md5", "host names are not supported"},
      {"host all all localhost md5", "host names are not supported"},
      {"host all all .example.com md5", "host names are not supported"},
      {"host all all samehost md5", "\"samehost\" is not supported"},
      {"host all all samenet md5", "\"samenet\" is not supported"},
      {"host all all 10.0.0.0/8,::1/128 md5", "multiple values specified for host address"},
      {"local all all trust,md5", "multiple values specified for authentication type"},
      {"local all all ident", "authentication method \"ident\" is not supported"},
      {"host all all all gss", "\"gss\" is not supported"},
      {"host all all all sspi", "\"sspi\" is not supported"},
      {"host all all all pam", "\"pam\" is not supported"},
      {"host all all all radius", "\"radius\" is not supported"},
      {"host all all all bsd", "\"bsd\" is not supported"},
      {"host all all all md6", "invalid authentication method \"md6\""},
      {"host all all all peer", "peer authentication is only supported on local sockets"},
      {"local all all cert", "cert authentication is only supported on TCP"},
      {"local samerole all trust", "\"samerole\" is not supported"},
      {"local samegroup all trust", "\"samegroup\" is not supported"},
      {"local all +staff trust", "+role is not supported (group membership)"},
      {"local all @groups trust", "+role is not supported"},
      {"local all all trust foo", "authentication option not in name=value format: \"foo\""},
      {"local all all trust =x", "not in name=value format"},
      {"local all all trust foo=bar", "unrecognized authentication option name: \"foo\""},
      {"local all all trust map=x", "\"map\" is only valid for authentication methods peer, cert"},
      {"host all all all md5 clientcert=verify-full", "clientcert can only be configured"},
      {"hostssl all all all md5 clientcert=1", "invalid value for clientcert"},
      {"hostssl all all all cert clientcert=verify-ca", "only accepts \"verify-full\""},
      {"host all all all md5 clientname=CN", "clientname can only be configured"},
      {"hostssl all all all md5 clientname=XX", "invalid value for clientname"},
      {"host all all all md5 ldapserver=x", "only valid for authentication method ldap"},
      {"host all all all ldap", "requires argument \"ldapserver\""},
      {"host all all all ldap ldapserver=x", "requires argument \"ldapbasedn\""},
      {"host all all all ldap ldapserver=x ldapprefix=a ldapbasedn=b", "together with ldapprefix"},
      {"local \"all all trust", "unterminated quoted string"},
      {"local a,,b all trust", "empty item in a comma-separated list"},
      {"local ,a all trust", "multiple values specified for connection type"},
      {"local a, all trust", "end-of-line before authentication method"},  // a list "a,all"
      {"local all a,", "list ends with a comma"},
      {"local a,\nlocal all all trust", "list ends with a comma"},
      {"local a, # c\n", "list ends with a comma"},
      {"local all all\x01 trust", "control character (byte 1)"},
      {"local all \"a\x01\" trust", "control character"},
      {"local @missing all trust", "cannot read @missing"},
      {"local @loop all trust", "nested more than 10 deep"},
      {"local @bad all trust", "in @bad line 1: unterminated quoted string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const std::string message = error_of(c.text);
    EXPECT_NE(message.find(c.fragment), std::string::npos) << message;
    EXPECT_EQ(message.rfind("hba.conf:1: ", 0), 0u) << message;
  }
}

TEST(Hba, ErrorsNameTheLineAndKind) {
  ConfigError::Kind kind{};
  EXPECT_EQ(
      error_of("# ok\nlocal all all trust\n\nlocal all all md6\n", &kind).rfind("hba.conf:4: ", 0),
      0u);
  EXPECT_EQ(kind, ConfigError::Kind::invalid_value);
  EXPECT_EQ(error_of("local all all \\\n\"x", &kind).rfind("hba.conf:1: ", 0), 0u);
  EXPECT_EQ(kind, ConfigError::Kind::syntax);
  const std::string missing = error_of("\nlocal all @missing trust", &kind);
  EXPECT_EQ(kind, ConfigError::Kind::file);
  EXPECT_NE(missing.find("/etc/hba/missing: No such file or directory"), std::string::npos)
      << missing;
  // A NUL byte anywhere is an error, not the end of the text.
  constexpr char kWithNul[] = "local all all trust\nlocal all\0 all trust\n";
  const std::string with_nul(kWithNul, sizeof kWithNul - 1);
  EXPECT_NE(error_of(with_nul).find("hba.conf:2: control character"), std::string::npos);
}

// ---- matching ----

TEST(Hba, MatchConnectionTypes) {
  const auto file = parse(
      "local     all all peer\n"               // 1
      "hostssl   all all all scram-sha-256\n"  // 2
      "hostnossl all all all md5\n");          // 3
  EXPECT_EQ(matched_line(file, unix_client()), 1);
  EXPECT_EQ(matched_line(file, tcp4({127, 0, 0, 1}, "db", "u", true)), 2);
  EXPECT_EQ(matched_line(file, tcp4({127, 0, 0, 1}, "db", "u", false)), 3);
  EXPECT_EQ(matched_line(file, tcp6(kLoopback6, "db", "u", true)), 2);

  const auto host_only = parse("host all all all trust\n");
  EXPECT_EQ(matched_line(host_only, unix_client()), 0);
  EXPECT_EQ(matched_line(host_only, tcp4({1, 2, 3, 4})), 1);
  EXPECT_EQ(matched_line(host_only, tcp4({1, 2, 3, 4}, "db", "u", true)), 1);
  HbaClient unknown;  // TCP without a known address still matches "all"
  unknown.database = "db";
  unknown.user = "u";
  EXPECT_EQ(matched_line(host_only, unknown), 1);
  EXPECT_EQ(matched_line(parse("host all all 0.0.0.0/0 trust"), unknown), 0);

  const auto local_only = parse("local all all trust\n");
  EXPECT_EQ(matched_line(local_only, tcp4({127, 0, 0, 1})), 0);
  EXPECT_EQ(matched_line(parse(""), unix_client()), 0);
}

TEST(Hba, MatchAddresses) {
  const auto file = parse(
      "host all all 127.0.0.1/32 trust\n"                  // 1
      "host all all 10.0.0.0/8 md5\n"                      // 2
      "host all all 192.168.1.0 255.255.255.0 password\n"  // 3
      "host all all ::1/128 trust\n"                       // 4
      "host all all 2001:db8::/32 md5\n"                   // 5
      "host all all 0.0.0.0/0 reject\n"                    // 6
      "host all all ::/0 reject\n");                       // 7
  struct Case {
    HbaClient client;
    int line;
  };
  const std::vector<Case> cases = {
      {tcp4({127, 0, 0, 1}), 1},
      {tcp4({127, 0, 0, 2}), 6},
      {tcp4({10, 255, 1, 2}), 2},
      {tcp4({11, 0, 0, 0}), 6},
      {tcp4({192, 168, 1, 200}), 3},
      {tcp4({192, 168, 2, 1}), 6},
      {tcp6(kLoopback6), 4},
      {tcp6(kDoc6), 5},
      {tcp6({0x20, 0x01, 0x0d, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}), 7},
      // IPv4-mapped IPv6 clients count as IPv4.
      {tcp6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}), 1},
      {tcp6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 9, 8, 7}), 2},
      // ...but not the IPv4-compatible form ::a.b.c.d.
      {tcp6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1}), 7},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(pgw::config::address_text(c.client));
    EXPECT_EQ(matched_line(file, c.client), c.line);
  }
  // Families never cross: an IPv6-only file does not match IPv4 clients and vice versa.
  EXPECT_EQ(matched_line(parse("host all all ::/0 trust"), tcp4({1, 2, 3, 4})), 0);
  EXPECT_EQ(matched_line(parse("host all all 0.0.0.0/0 trust"), tcp6(kDoc6)), 0);
  // A rule written for the mapped form matches only IPv6 clients (the mapped client is IPv4).
  EXPECT_EQ(matched_line(parse("host all all ::ffff:0:0/96 trust"),
                         tcp6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4})),
            0);
  // Address bits outside the mask are ignored, as PostgreSQL does.
  EXPECT_EQ(matched_line(parse("host all all 10.1.2.3/8 trust"), tcp4({10, 200, 0, 1})), 1);
  // A non-contiguous separate mask is applied as it is.
  EXPECT_EQ(matched_line(parse("host all all 10.0.0.5 255.0.0.255 trust"), tcp4({10, 7, 7, 5})), 1);
}

TEST(Hba, MatchDatabasesAndUsers) {
  const auto file = parse(
      "local replication all trust\n"           // 1: never for pgwarden
      "local sameuser all trust\n"              // 2
      "local \"all\" all md5\n"                 // 3: the database called all
      "local db1,db2 \"all\",alice password\n"  // 4
      "local @dbs @admins scram-sha-256\n"      // 5
      "local \"sameuser\" all peer\n"           // 6
      "local Db1 all reject\n");                // 7
  struct Case {
    std::string_view db, user;
    int line;
  };
  const std::vector<Case> cases = {
      {"replication", "bob", 0}, {"bob", "bob", 2},    {"all", "bob", 3},    {"db1", "alice", 4},
      {"db2", "all", 4},         {"db2", "bob", 0},    {"app2", "carol", 5}, {"app1", "all", 5},
      {"app3", "dave", 0},       {"sameuser", "x", 6}, {"Db1", "x", 7},      {"DB1", "x", 0},
      {"db1", "Alice", 0},       {"", "", 2},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.db) + "/" + std::string(c.user));
    EXPECT_EQ(matched_line(file, unix_client(c.db, c.user)), c.line);
  }
}

TEST(Hba, FirstMatchWins) {
  const auto file = parse(
      "host all all 10.0.0.0/8 reject\n"
      "host all all 10.1.0.0/16 trust\n"
      "host all all all md5\n");
  const HbaRule* rule = file.match(tcp4({10, 1, 0, 1}));
  ASSERT_NE(rule, nullptr);
  EXPECT_EQ(rule->method, HbaMethod::reject);
  EXPECT_EQ(rule, &file.rules()[0]);
  EXPECT_EQ(file.match(tcp4({11, 0, 0, 1}))->method, HbaMethod::md5);
}

TEST(Hba, AddressText) {
  EXPECT_EQ(pgw::config::address_text(tcp4({127, 0, 0, 1})), "127.0.0.1");
  EXPECT_EQ(pgw::config::address_text(tcp6(kLoopback6)), "::1");
  EXPECT_EQ(pgw::config::address_text(tcp6(kDoc6)), "2001:db8::5");
  EXPECT_EQ(pgw::config::address_text(tcp6({})), "::");
  EXPECT_EQ(pgw::config::address_text(tcp6({0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3})),
            "1:0:2::3");
  EXPECT_EQ(pgw::config::address_text(tcp6({0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0})),
            "1:2:3:4:5:6:7:0");
  EXPECT_EQ(
      pgw::config::address_text(tcp6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1})),
      "::ffff:192.0.2.1");
  EXPECT_EQ(pgw::config::address_text(unix_client()), "[local]");
  EXPECT_EQ(pgw::config::address_text(HbaClient{}), "[unknown]");
}

TEST(Hba, FormatRoundTrip) {
  const auto file = parse(
      "local \"all\",all,sameuser,replication \"a\"\"b\",all peer map=\"m x\"\n"
      "host @dbs \"+x\" 10.0.0.0/8 md5\n"
      "hostssl all all 2001:db8::/32 cert clientcert=verify-full\n"
      "hostnossl all all all reject\n"
      "host all all 1.2.3.4 255.0.255.0 ldap ldapserver=h ldapbasedn=\"dc=a, dc=b\"\n");
  for (const auto& rule : file.rules()) {
    const std::string line = pgw::config::format_hba_rule(rule);
    SCOPED_TRACE(line);
    const auto again = parse(line);
    ASSERT_EQ(again.rules().size(), 1u);
    const auto& r = again.rules()[0];
    EXPECT_EQ(r.connection, rule.connection);
    EXPECT_EQ(r.databases, rule.databases);
    EXPECT_EQ(r.users, rule.users);
    EXPECT_EQ(r.any_address, rule.any_address);
    EXPECT_EQ(r.family, rule.family);
    EXPECT_EQ(r.address, rule.address);
    EXPECT_EQ(r.mask, rule.mask);
    EXPECT_EQ(r.method, rule.method);
    EXPECT_EQ(r.options, rule.options);
  }
  EXPECT_EQ(pgw::config::format_hba_rule(file.rules()[1]),
            "host app1,app2,app3 \"+x\" 10.0.0.0/8 md5");
  EXPECT_EQ(pgw::config::format_hba_rule(file.rules()[0]),
            "local \"all\",all,sameuser,replication \"a\"\"b\",all peer map=\"m x\"");
  EXPECT_EQ(pgw::config::format_hba_rule(file.rules()[2]),
            "hostssl all all 2001:db8::/32 cert clientcert=verify-full");
  EXPECT_EQ(pgw::config::format_hba_rule(file.rules()[4]),
            "host all all 1.2.3.4 255.0.255.0 ldap ldapserver=h ldapbasedn=\"dc=a, dc=b\"");
}

}  // namespace

// --- auth_ident_file

TEST(IdentFileTest, NamesExpressionsAndAll) {
  const auto ident = pgw::config::parse_ident(
      "# MAP  SYSTEM-USER  DATABASE-USER\n"
      "test   pgbouncer.acme.org   someuser\n"
      "test   pgbouncer.acme.org   \"anotheruser\"\n"
      "test2  \"bouncer\"   all\n"
      "emails /^(.*)@example\\.com$   \\1\n",
      "ident.conf");
  ASSERT_EQ(ident.rules().size(), 4u);
  EXPECT_TRUE(ident.allows("test", "pgbouncer.acme.org", "someuser"));
  EXPECT_TRUE(ident.allows("test", "pgbouncer.acme.org", "anotheruser"));
  EXPECT_FALSE(ident.allows("test", "pgbouncer.acme.org", "bouncer"));
  EXPECT_FALSE(ident.allows("test", "other.acme.org", "someuser"));
  EXPECT_FALSE(ident.allows("nomap", "pgbouncer.acme.org", "someuser"));
  EXPECT_TRUE(ident.allows("test2", "bouncer", "anyone"));
  EXPECT_TRUE(ident.allows("emails", "alice@example.com", "alice"));
  EXPECT_FALSE(ident.allows("emails", "alice@example.com", "bob"));
  EXPECT_FALSE(ident.allows("emails", "alice@example.org", "alice"));
}

TEST(IdentFileTest, BadLinesNameTheirPlace) {
  auto error_of = [](const char* text) {
    try {
      pgw::config::parse_ident(text, "ident.conf");
      return std::string();
    } catch (const pgw::config::ConfigError& e) {
      return std::string(e.what());
    }
  };
  EXPECT_NE(error_of("\nm user\n").find("ident.conf:2"), std::string::npos);
  EXPECT_NE(error_of("m a,b c\n").find("a list"), std::string::npos);
  EXPECT_NE(error_of("m /(unclosed c\n").find("invalid regular expression"), std::string::npos);
  EXPECT_NE(error_of("m user +group\n").find("group membership"), std::string::npos);
  EXPECT_NE(error_of(("m /" + std::string(300, 'a') + " c\n").c_str()).find("longer than"),
            std::string::npos);
  EXPECT_EQ(error_of("# only a comment\n\n"), "");
}
