// pg_hba.conf parsing and matching (hba.hpp). The tokenizer follows PostgreSQL's next_token():
// blanks separate fields, commas separate the items of a list field, double quotes protect
// blanks, commas and "#", "" inside quotes is a quote, and a token that starts with a quote
// is "quoted" (never a keyword, never an @file).
#include "config/hba.hpp"

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace pgw::config {

namespace {

constexpr int kMaxIncludeDepth = 10;

struct Token {
  std::string text;
  bool quoted = false;
};
using Field = std::vector<Token>;  // the comma-separated items of one field

// A problem found while tokenizing (the caller adds the place).
struct TokenError {
  std::string message;
};

struct LogicalLine {
  std::string text;
  int line = 0;  // the first physical line
};

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

// Splits text into lines, joining those that end in a backslash with the next one.
std::vector<LogicalLine> logical_lines(std::string_view text) {
  std::vector<LogicalLine> out;
  std::string pending;
  int pending_line = 0;
  bool continuing = false;
  int number = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto nl = text.find('\n', pos);
    std::string_view physical =
        nl == std::string_view::npos ? text.substr(pos) : text.substr(pos, nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++number;
    if (!physical.empty() && physical.back() == '\r') physical.remove_suffix(1);
    if (!continuing) {
      pending.clear();
      pending_line = number;
    }
    if (!physical.empty() && physical.back() == '\\') {
      physical.remove_suffix(1);
      pending.append(physical);
      continuing = true;
      continue;
    }
    pending.append(physical);
    continuing = false;
    out.push_back({pending, pending_line});
  }
  if (continuing) out.push_back({pending, pending_line});
  return out;
}

// The fields of one logical line (no @file expansion yet).
std::vector<Field> tokenize(std::string_view line) {
  for (char c : line) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      throw TokenError{"control character (byte " + std::to_string(u) + ") in line"};
    }
  }
  std::vector<Field> fields;
  std::size_t pos = 0;
  const auto at_end = [&] { return pos >= line.size() || line[pos] == '#'; };
  for (;;) {
    while (pos < line.size() && is_blank(line[pos])) ++pos;
    if (at_end()) break;
    Field field;
    for (;;) {
      Token token;
      bool in_quote = false, was_quote = false, saw_quote = false, comma = false;
      while (pos < line.size()) {
        const char c = line[pos];
        if (!in_quote && is_blank(c)) break;
        if (!in_quote && c == '#') {
          pos = line.size();  // a comment to the end of the line
          break;
        }
        ++pos;
        if (!in_quote && c == ',') {
          comma = true;
          break;
        }
        if (c != '"' || was_quote) token.text += c;
        was_quote = in_quote && c == '"' ? !was_quote : false;
        if (c == '"') {
          in_quote = !in_quote;
          saw_quote = true;
          if (token.text.empty()) token.quoted = true;
        }
      }
      if (in_quote) throw TokenError{"unterminated quoted string"};
      if (!comma) {
        // PgBouncer also reads "a , b" as one list: blanks before a comma do not end it.
        std::size_t look = pos;
        while (look < line.size() && is_blank(line[look])) ++look;
        if (look < line.size() && line[look] == ',') {
          pos = look + 1;
          comma = true;
        }
      }
      if (token.text.empty() && !saw_quote)
        throw TokenError{"empty item in a comma-separated list"};
      field.push_back(std::move(token));
      if (!comma) break;
      while (pos < line.size() && is_blank(line[pos])) ++pos;
      if (at_end()) throw TokenError{"list ends with a comma"};
    }
    fields.push_back(std::move(field));
  }
  return fields;
}

std::string quote_for_message(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

class Parser {
 public:
  Parser(const std::string& path,
         const std::function<std::string(const std::string&)>& read_include)
      : path_(path), read_include_(read_include) {}

  std::vector<HbaRule> parse(std::string_view text) {
    std::vector<HbaRule> rules;
    for (auto& logical : logical_lines(text)) {
      line_ = logical.line;
      std::vector<Field> fields;
      try {
        fields = tokenize(logical.text);
      } catch (const TokenError& e) {
        fail(ConfigError::Kind::syntax, e.message);
      }
      if (fields.empty()) continue;
      rules.push_back(parse_rule(fields));
    }
    return rules;
  }

 private:
  [[noreturn]] void fail(ConfigError::Kind kind, const std::string& message) const {
    throw ConfigError(kind, path_ + ":" + std::to_string(line_), message);
  }

  const Token& single(const Field& field, const char* what) const {
    if (field.size() != 1)
      fail(ConfigError::Kind::syntax, std::string("multiple values specified for ") + what);
    return field.front();
  }

  // Appends the items of `field`, replacing @file items by the file's words.
  void expand(const Field& field, std::vector<Token>& out, int depth) const {
    for (const auto& token : field) {
      if (token.quoted || token.text.size() < 2 || token.text[0] != '@') {
        out.push_back(token);
        continue;
      }
      const std::string name = token.text.substr(1);
      if (depth >= kMaxIncludeDepth) {
        fail(ConfigError::Kind::file,
             "@" + name + ": @file nested more than " + std::to_string(kMaxIncludeDepth) + " deep");
      }
      std::string text;
      try {
        text = read_include_(name);
      } catch (const ConfigError& e) {
        fail(ConfigError::Kind::file, "cannot read @" + name + ": " + e.what());
      }
      for (const auto& logical : logical_lines(text)) {
        std::vector<Field> fields;
        try {
          fields = tokenize(logical.text);
        } catch (const TokenError& e) {
          fail(ConfigError::Kind::syntax,
               "in @" + name + " line " + std::to_string(logical.line) + ": " + e.message);
        }
        for (const auto& inner : fields) expand(inner, out, depth + 1);
      }
    }
  }

  std::vector<std::string> databases(const Field& field) const {
    std::vector<Token> tokens;
    expand(field, tokens, 0);
    std::vector<std::string> out;
    for (auto& token : tokens) {
      if (!token.quoted) {
        if (token.text == "all") {
          out.emplace_back(kHbaAll);
          continue;
        }
        if (token.text == "sameuser") {
          out.emplace_back(kHbaSameUser);
          continue;
        }
        if (token.text == "replication") {
          out.emplace_back(kHbaReplication);
          continue;
        }
        if (token.text == "samerole" || token.text == "samegroup") {
          fail(ConfigError::Kind::invalid_value,
               "database keyword \"" + token.text + "\" is not supported (group membership)");
        }
      }
      out.push_back(std::move(token.text));
    }
    return out;
  }

  std::vector<std::string> users(const Field& field) const {
    std::vector<Token> tokens;
    expand(field, tokens, 0);
    std::vector<std::string> out;
    for (auto& token : tokens) {
      if (!token.quoted) {
        if (token.text == "all") {
          out.emplace_back(kHbaAll);
          continue;
        }
        if (!token.text.empty() && token.text[0] == '+') {
          fail(ConfigError::Kind::invalid_value, "user " + quote_for_message(token.text) +
                                                     ": +role is not supported (group membership)");
        }
      }
      out.push_back(std::move(token.text));
    }
    return out;
  }

  void address(HbaRule& rule, const std::vector<Field>& fields, std::size_t& next) const;
  HbaMethod method(const Token& token, const HbaRule& rule) const;
  void options(HbaRule& rule) const;
  // ldap* options (the name is one of them) into rule.ldap; the combination is checked after
  // all of them (ldap_combination).
  void ldap_option(HbaLdap& ldap, const std::string& name, const std::string& value) const;
  void ldap_url(HbaLdap& ldap, const std::string& url) const;
  void ldap_combination(const HbaLdap& ldap) const;
  HbaRule parse_rule(const std::vector<Field>& fields) const;

  const std::string& path_;
  const std::function<std::string(const std::string&)>& read_include_;
  int line_ = 0;
};

// ---- addresses ----

std::optional<int> parse_decimal(std::string_view s, int max) {
  if (s.empty() || s.size() > 3) return std::nullopt;
  int value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > max) return std::nullopt;
  return value;
}

bool parse_ipv4(std::string_view s, std::uint8_t* out) {
  for (int i = 0; i < 4; ++i) {
    const auto dot = s.find('.');
    if ((i < 3) != (dot != std::string_view::npos)) return false;
    const auto part = i < 3 ? s.substr(0, dot) : s;
    if (part.size() > 1 && part[0] == '0') return false;  // no octal ambiguity
    const auto value = parse_decimal(part, 255);
    if (!value) return false;
    out[i] = static_cast<std::uint8_t>(*value);
    if (i < 3) s.remove_prefix(dot + 1);
  }
  return true;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 4291 text: eight groups, "::" once, an IPv4 address in the last 32 bits.
bool parse_ipv6(std::string_view s, std::uint8_t* out) {
  std::array<std::uint16_t, 8> groups{};
  int count = 0;
  int gap = -1;  // where "::" stands
  if (s.size() >= 2 && s.substr(0, 2) == "::") {
    gap = 0;
    s.remove_prefix(2);
    if (s.empty()) {
      std::fill(out, out + 16, 0);
      return true;
    }
  } else if (!s.empty() && s[0] == ':') {
    return false;
  }
  std::array<std::uint8_t, 4> v4{};
  bool has_v4 = false;
  for (;;) {
    if (count >= 8) return false;
    const auto colon = s.find(':');
    const auto part = s.substr(0, colon);
    if (colon == std::string_view::npos && part.find('.') != std::string_view::npos) {
      if (count > 6 || !parse_ipv4(part, v4.data())) return false;
      has_v4 = true;
      break;
    }
    if (part.empty() || part.size() > 4) return false;
    std::uint16_t value = 0;
    for (char c : part) {
      const int d = hex_digit(c);
      if (d < 0) return false;
      value = static_cast<std::uint16_t>(value * 16 + d);
    }
    groups[count++] = value;
    if (colon == std::string_view::npos) break;
    s.remove_prefix(colon + 1);
    if (!s.empty() && s[0] == ':') {
      if (gap >= 0) return false;
      gap = count;
      s.remove_prefix(1);
      if (s.empty()) break;
    } else if (s.empty()) {
      return false;  // a trailing single ':'
    }
  }
  const int total = count + (has_v4 ? 2 : 0);
  if (gap < 0 ? total != 8 : total > 7) return false;
  std::array<std::uint16_t, 8> full{};
  std::array<std::uint16_t, 8> tail{};
  for (int i = 0; i < count; ++i) tail[i] = groups[i];
  if (has_v4) {
    tail[count] = static_cast<std::uint16_t>(v4[0] << 8 | v4[1]);
    tail[count + 1] = static_cast<std::uint16_t>(v4[2] << 8 | v4[3]);
  }
  if (gap < 0) {
    full = tail;
  } else {
    for (int i = 0; i < gap; ++i) full[i] = tail[i];
    const int after = total - gap;
    for (int i = 0; i < after; ++i) full[8 - after + i] = tail[gap + i];
  }
  for (int i = 0; i < 8; ++i) {
    out[2 * i] = static_cast<std::uint8_t>(full[i] >> 8);
    out[2 * i + 1] = static_cast<std::uint8_t>(full[i] & 0xff);
  }
  return true;
}

// 4, 6, or 0 when `s` is not an IP address.
std::uint8_t parse_ip(std::string_view s, std::array<std::uint8_t, 16>& out) {
  out.fill(0);
  if (s.find(':') != std::string_view::npos) return parse_ipv6(s, out.data()) ? 6 : 0;
  return parse_ipv4(s, out.data()) ? 4 : 0;
}

void Parser::address(HbaRule& rule, const std::vector<Field>& fields, std::size_t& next) const {
  if (next >= fields.size())
    fail(ConfigError::Kind::syntax, "end-of-line before IP address specification");
  const Token& token = single(fields[next++], "host address");
  const std::string& text = token.text;
  if (text == "all") {
    rule.any_address = true;
    return;
  }
  if (text == "samehost" || text == "samenet") {
    fail(ConfigError::Kind::invalid_value, "address \"" + text + "\" is not supported");
  }
  const auto slash = text.find('/');
  const std::string_view addr_text = std::string_view(text).substr(0, slash);
  rule.family = parse_ip(addr_text, rule.address);
  if (rule.family == 0) {
    const bool hostname_like =
        !addr_text.empty() &&
        std::all_of(addr_text.begin(), addr_text.end(),
                    [](char c) {
                      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                             (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
                    }) &&
        addr_text.find_first_not_of("0123456789.") != std::string_view::npos;
    if (hostname_like) {
      fail(ConfigError::Kind::invalid_value,
           "host names are not supported: " + quote_for_message(text) +
               " (use an IP address with /mask, or all)");
    }
    fail(ConfigError::Kind::invalid_value, "invalid IP address " + quote_for_message(text));
  }
  const int bits = rule.family == 4 ? 32 : 128;
  if (slash != std::string::npos) {
    const auto length = parse_decimal(std::string_view(text).substr(slash + 1), bits);
    if (!length)
      fail(ConfigError::Kind::invalid_value,
           "invalid CIDR mask in address " + quote_for_message(text));
    for (int i = 0; i < *length; ++i)
      rule.mask[i / 8] |= static_cast<std::uint8_t>(0x80 >> (i % 8));
    return;
  }
  if (next >= fields.size()) {
    fail(ConfigError::Kind::syntax,
         "end-of-line before netmask specification (use CIDR notation "
         "or give the mask in a separate field)");
  }
  const Token& mask = single(fields[next++], "netmask");
  const auto mask_family = parse_ip(mask.text, rule.mask);
  if (mask_family == 0)
    fail(ConfigError::Kind::invalid_value, "invalid IP mask " + quote_for_message(mask.text));
  if (mask_family != rule.family) {
    fail(ConfigError::Kind::invalid_value,
         "IP address and mask do not match: " + quote_for_message(text) + " " +
             quote_for_message(mask.text));
  }
}

// ---- methods and options ----

HbaMethod Parser::method(const Token& token, const HbaRule& rule) const {
  const std::string& m = token.text;
  HbaMethod method{};
  if (m == "trust") {
    method = HbaMethod::trust;
  } else if (m == "reject") {
    method = HbaMethod::reject;
  } else if (m == "password") {
    method = HbaMethod::password;
  } else if (m == "md5") {
    method = HbaMethod::md5;
  } else if (m == "scram-sha-256") {
    method = HbaMethod::scram_sha_256;
  } else if (m == "cert") {
    method = HbaMethod::cert;
  } else if (m == "peer") {
    method = HbaMethod::peer;
  } else if (m == "ldap") {
    method = HbaMethod::ldap;
  } else if (m == "ident" || m == "gss" || m == "sspi" || m == "pam" || m == "radius" ||
             m == "bsd" || m == "crypt") {
    fail(ConfigError::Kind::invalid_value,
         "authentication method " + quote_for_message(m) + " is not supported");
  } else {
    fail(ConfigError::Kind::invalid_value, "invalid authentication method " + quote_for_message(m));
  }
  if (method == HbaMethod::peer && rule.connection != HbaConnection::local) {
    fail(ConfigError::Kind::invalid_value,
         "peer authentication is only supported on local sockets");
  }
  // PostgreSQL allows cert on hostssl lines only; PgBouncer on any TCP line, where a client
  // without a certificate then fails to log in. pgwarden reads PgBouncer's files.
  if (method == HbaMethod::cert && rule.connection == HbaConnection::local) {
    fail(ConfigError::Kind::invalid_value,
         "cert authentication is only supported on TCP (host, hostssl) connections");
  }
  return method;
}

void Parser::options(HbaRule& rule) const {
  for (const auto& [name, value] : rule.options) {
    if (name == "map") {
      if (rule.method != HbaMethod::peer && rule.method != HbaMethod::cert) {
        fail(ConfigError::Kind::invalid_value,
             "authentication option \"map\" is only valid for authentication methods peer, cert");
      }
    } else if (name == "clientcert") {
      if (rule.connection != HbaConnection::hostssl) {
        fail(ConfigError::Kind::invalid_value,
             "clientcert can only be configured for \"hostssl\" rows");
      }
      if (value != "verify-ca" && value != "verify-full") {
        fail(ConfigError::Kind::invalid_value,
             "invalid value for clientcert: " + quote_for_message(value) +
                 " (verify-ca or verify-full)");
      }
      if (rule.method == HbaMethod::cert && value != "verify-full") {
        fail(ConfigError::Kind::invalid_value,
             "clientcert only accepts \"verify-full\" when using \"cert\" authentication");
      }
    } else if (name == "clientname") {
      if (rule.connection != HbaConnection::hostssl) {
        fail(ConfigError::Kind::invalid_value,
             "clientname can only be configured for \"hostssl\" rows");
      }
      if (value != "CN" && value != "DN") {
        fail(ConfigError::Kind::invalid_value,
             "invalid value for clientname: " + quote_for_message(value) + " (CN or DN)");
      }
    } else if (name == "ldapurl" || name == "ldaptls" || name == "ldapscheme" ||
               name == "ldapserver" || name == "ldapport" || name == "ldapbinddn" ||
               name == "ldapbindpasswd" || name == "ldapsearchattribute" ||
               name == "ldapsearchfilter" || name == "ldapbasedn" || name == "ldapprefix" ||
               name == "ldapsuffix") {
      if (rule.method != HbaMethod::ldap) {
        fail(ConfigError::Kind::invalid_value, "authentication option " + quote_for_message(name) +
                                                   " is only valid for authentication method ldap");
      }
      ldap_option(rule.ldap, name, value);
    } else {
      fail(ConfigError::Kind::invalid_value,
           "unrecognized authentication option name: " + quote_for_message(name));
    }
  }
  if (rule.method == HbaMethod::ldap) ldap_combination(rule.ldap);
}

// ---- ldap ----

void Parser::ldap_option(HbaLdap& ldap, const std::string& name, const std::string& value) const {
  if (name == "ldapurl") {
    ldap_url(ldap, value);
  } else if (name == "ldaptls") {
    ldap.start_tls = value == "1";  // PostgreSQL: "1" turns it on, anything else off
  } else if (name == "ldapscheme") {
    if (value != "ldap" && value != "ldaps") {
      fail(ConfigError::Kind::invalid_value,
           "invalid ldapscheme value: " + quote_for_message(value) + " (ldap or ldaps)");
    }
    ldap.scheme = value;
  } else if (name == "ldapserver") {
    ldap.server = value;
  } else if (name == "ldapport") {
    const bool digits =
        !value.empty() && value.size() <= 5 &&
        std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
    const int port = digits ? std::stoi(value) : 0;
    if (port < 1 || port > 65535)
      fail(ConfigError::Kind::invalid_value,
           "invalid LDAP port number: " + quote_for_message(value));
    ldap.port = port;
  } else if (name == "ldapbinddn") {
    ldap.binddn = value;
  } else if (name == "ldapbindpasswd") {
    ldap.bindpasswd = value;
  } else if (name == "ldapsearchattribute") {
    ldap.search_attribute = value;
  } else if (name == "ldapsearchfilter") {
    ldap.search_filter = value;
  } else if (name == "ldapbasedn") {
    ldap.basedn = value;
  } else if (name == "ldapprefix") {
    ldap.prefix = value;
  } else if (name == "ldapsuffix") {
    ldap.suffix = value;
  }
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 percent-decoding of one part of an LDAP URL; nullopt for a broken %XX.
std::optional<std::string> percent_decoded(std::string_view part) {
  std::string out;
  for (std::size_t i = 0; i < part.size(); ++i) {
    if (part[i] != '%') {
      out += part[i];
      continue;
    }
    if (i + 2 >= part.size()) return std::nullopt;
    const int high = hex_digit(part[i + 1]), low = hex_digit(part[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

}  // namespace

// RFC 4516: scheme://[host[:port]][/dn[?attributes[?scope[?filter[?extensions]]]]]. PostgreSQL
// hands the URL to OpenLDAP's ldap_url_parse(); pgwarden reads it itself, so that the file is
// checked where it is read, without the LDAP library, with the same result: the host, the
// port, the base DN, the first attribute, the scope (base if none) and the filter.
void Parser::ldap_url(HbaLdap& ldap, const std::string& url) const {
  const auto bad = [&](const std::string& why) {
    fail(ConfigError::Kind::invalid_value,
         "could not parse LDAP URL " + quote_for_message(url) + ": " + why);
  };
  const auto separator = url.find("://");
  if (separator == std::string::npos) bad("no scheme:// at the start");
  std::string scheme = url.substr(0, separator);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  if (scheme != "ldap" && scheme != "ldaps") {
    fail(ConfigError::Kind::invalid_value, "unsupported LDAP URL scheme: " + scheme);
  }
  std::string_view rest = std::string_view(url).substr(separator + 3);
  const auto slash = rest.find('/');
  const std::string_view hostport = rest.substr(0, slash);
  std::string_view host = hostport, port;
  if (!hostport.empty() && hostport[0] == '[') {  // [IPv6]:port
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) bad("unterminated [ in the host");
    host = hostport.substr(1, close - 1);
    const auto after = hostport.substr(close + 1);
    if (!after.empty() && after[0] != ':') bad("junk after the ] of the host");
    if (!after.empty()) port = after.substr(1);
  } else if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  const auto decoded_host = percent_decoded(host);
  if (!decoded_host) bad("bad %-escape in the host");
  int port_number = 0;
  if (!port.empty()) {
    if (port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      bad("invalid port");
    port_number = std::stoi(std::string(port));
    if (port_number < 1 || port_number > 65535) bad("invalid port");
  }
  ldap.scheme = scheme;
  if (!decoded_host->empty()) ldap.server = *decoded_host;
  ldap.port = port_number;
  ldap.scope = HbaLdap::Scope::base;
  if (slash == std::string_view::npos) return;
  // dn ? attributes ? scope ? filter ? extensions
  std::vector<std::string_view> parts;
  std::string_view tail = rest.substr(slash + 1);
  for (;;) {
    const auto question = tail.find('?');
    parts.push_back(tail.substr(0, question));
    if (question == std::string_view::npos) break;
    tail = tail.substr(question + 1);
  }
  if (parts.size() > 5) bad("too many ? separated parts");
  std::vector<std::string> decoded;
  for (const auto part : parts) {
    auto text = percent_decoded(part);
    if (!text) bad("bad %-escape");
    decoded.push_back(std::move(*text));
  }
  ldap.basedn = decoded[0];
  if (decoded.size() > 1 && !decoded[1].empty()) {
    ldap.search_attribute = decoded[1].substr(0, decoded[1].find(','));  // the first one only
  }
  if (decoded.size() > 2 && !decoded[2].empty()) {
    const std::string& scope = decoded[2];
    if (scope == "base") {
      ldap.scope = HbaLdap::Scope::base;
    } else if (scope == "one" || scope == "onelevel") {
      ldap.scope = HbaLdap::Scope::one;
    } else if (scope == "sub" || scope == "subtree") {
      ldap.scope = HbaLdap::Scope::subtree;
    } else {
      bad("invalid scope " + quote_for_message(scope) + " (base, one or sub)");
    }
  }
  if (decoded.size() > 3 && !decoded[3].empty()) ldap.search_filter = decoded[3];
  if (decoded.size() > 4) {
    // No extension is supported; a critical one ("!name") must not be ignored (RFC 4516).
    for (std::string_view extensions = parts[4]; !extensions.empty();) {
      const auto comma = extensions.find(',');
      if (extensions[0] == '!') bad("unsupported critical extension");
      if (comma == std::string_view::npos) break;
      extensions = extensions.substr(comma + 1);
    }
  }
}

void Parser::ldap_combination(const HbaLdap& ldap) const {
  // PostgreSQL built with OpenLDAP would look the servers up in DNS SRV records of the base
  // DN's domain; pgwarden needs them named.
  if (ldap.server.find_first_not_of(" \t") == std::string::npos) {
    fail(ConfigError::Kind::invalid_value,
         "authentication method \"ldap\" requires argument \"ldapserver\" (or a host in "
         "\"ldapurl\") to be set: pgwarden does not look LDAP servers up in DNS SRV records");
  }
  // PostgreSQL's checks (hba.c), in its words: the two modes do not mix, search+bind needs a
  // base DN, and it searches by attribute or by filter, not both.
  if (ldap.prefix || ldap.suffix) {
    if (ldap.basedn || ldap.binddn || ldap.bindpasswd || ldap.search_attribute ||
        ldap.search_filter) {
      fail(ConfigError::Kind::invalid_value,
           "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, "
           "ldapsearchfilter, or ldapurl together with ldapprefix or ldapsuffix");
    }
  } else if (!ldap.basedn) {
    fail(ConfigError::Kind::invalid_value,
         "authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or "
         "\"ldapsuffix\" to be set");
  }
  if (ldap.search_attribute && ldap.search_filter) {
    fail(ConfigError::Kind::invalid_value,
         "cannot use ldapsearchattribute together with ldapsearchfilter");
  }
}

HbaRule Parser::parse_rule(const std::vector<Field>& fields) const {
  HbaRule rule;
  rule.line = line_;
  const std::string& type = single(fields[0], "connection type").text;
  if (type == "local") {
    rule.connection = HbaConnection::local;
  } else if (type == "host") {
    rule.connection = HbaConnection::host;
  } else if (type == "hostssl") {
    rule.connection = HbaConnection::hostssl;
  } else if (type == "hostnossl") {
    rule.connection = HbaConnection::hostnossl;
  } else if (type == "hostgssenc" || type == "hostnogssenc") {
    fail(ConfigError::Kind::invalid_value,
         "connection type " + quote_for_message(type) + " is not supported");
  } else {
    fail(ConfigError::Kind::invalid_value, "invalid connection type " + quote_for_message(type));
  }
  std::size_t next = 1;
  if (next >= fields.size())
    fail(ConfigError::Kind::syntax, "end-of-line before database specification");
  rule.databases = databases(fields[next++]);
  if (next >= fields.size())
    fail(ConfigError::Kind::syntax, "end-of-line before role specification");
  rule.users = users(fields[next++]);
  if (rule.connection != HbaConnection::local) address(rule, fields, next);
  if (next >= fields.size())
    fail(ConfigError::Kind::syntax, "end-of-line before authentication method");
  rule.method = method(single(fields[next++], "authentication type"), rule);
  for (; next < fields.size(); ++next) {
    for (const auto& token : fields[next]) {
      const auto eq = token.text.find('=');
      if (eq == std::string::npos || eq == 0) {
        fail(ConfigError::Kind::syntax,
             "authentication option not in name=value format: " + quote_for_message(token.text));
      }
      rule.options.emplace_back(token.text.substr(0, eq), token.text.substr(eq + 1));
    }
  }
  options(rule);
  return rule;
}

// Writes a name for the hba file: quoted ("" for a quote) unless it is a plain word that is
// no keyword, @file or +role.
std::string quoted(std::string_view s) {
  static constexpr std::string_view kKeywords[] = {"all", "sameuser", "samerole", "samegroup",
                                                   "replication"};
  bool plain = !s.empty() && s[0] != '@' && s[0] != '+' &&
               std::find(std::begin(kKeywords), std::end(kKeywords), s) == std::end(kKeywords);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == ',' || c == '"' || c == '#' || c == '\\') plain = false;
  }
  if (plain) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// The prefix length of a contiguous mask, or -1.
int prefix_length(const std::uint8_t* mask, int bytes) {
  int length = 0;
  bool ended = false;
  for (int i = 0; i < bytes * 8; ++i) {
    const bool bit = (mask[i / 8] & (0x80 >> (i % 8))) != 0;
    if (bit && ended) return -1;
    if (bit) ++length;
    ended = ended || !bit;
  }
  return length;
}

std::string list_text(const std::vector<std::string>& items) {
  if (items.empty()) return "\"\"";
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ',';
    out += hba_is_keyword(item) ? item.substr(1) : quoted(item);
  }
  return out;
}

std::string ip_text(std::uint8_t family, const std::uint8_t* a) {
  if (family == 4) {
    return std::to_string(a[0]) + "." + std::to_string(a[1]) + "." + std::to_string(a[2]) + "." +
           std::to_string(a[3]);
  }
  std::array<unsigned, 8> groups{};
  for (int i = 0; i < 8; ++i) groups[i] = static_cast<unsigned>(a[2 * i] << 8 | a[2 * i + 1]);
  // RFC 5952: the longest run (first if tied) of two or more zero groups becomes "::".
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  const bool mapped = best == 0 && best_len == 5 && groups[5] == 0xffff;
  static constexpr char kHex[] = "0123456789abcdef";
  const auto hex = [&](unsigned g) {
    std::string s;
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned d = (g >> shift) & 0xf;
      if (d != 0 || started || shift == 0) {
        s += kHex[d];
        started = true;
      }
    }
    return s;
  };
  if (mapped) return "::ffff:" + ip_text(4, a + 12);
  std::string out;
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    out += hex(groups[i]);
  }
  return out;
}

}  // namespace

std::string_view to_string(HbaMethod method) {
  switch (method) {
    case HbaMethod::trust:
      return "trust";
    case HbaMethod::reject:
      return "reject";
    case HbaMethod::password:
      return "password";
    case HbaMethod::md5:
      return "md5";
    case HbaMethod::scram_sha_256:
      return "scram-sha-256";
    case HbaMethod::cert:
      return "cert";
    case HbaMethod::peer:
      return "peer";
    case HbaMethod::ldap:
      return "ldap";
  }
  return "?";
}

std::string_view to_string(HbaConnection connection) {
  switch (connection) {
    case HbaConnection::local:
      return "local";
    case HbaConnection::host:
      return "host";
    case HbaConnection::hostssl:
      return "hostssl";
    case HbaConnection::hostnossl:
      return "hostnossl";
  }
  return "?";
}

bool hba_rule_matches(const HbaRule& rule, const HbaClient& client) {
  switch (rule.connection) {
    case HbaConnection::local:
      if (!client.unix_socket) return false;
      break;
    case HbaConnection::host:
      if (client.unix_socket) return false;
      break;
    case HbaConnection::hostssl:
      if (client.unix_socket || !client.tls) return false;
      break;
    case HbaConnection::hostnossl:
      if (client.unix_socket || client.tls) return false;
      break;
  }
  if (rule.connection != HbaConnection::local && !rule.any_address) {
    std::uint8_t family = client.family;
    const std::uint8_t* address = client.address.data();
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == 6 && std::equal(kMapped, kMapped + 12, address)) {
      family = 4;
      address += 12;
    }
    if (family != rule.family || (family != 4 && family != 6)) return false;
    const int bytes = family == 4 ? 4 : 16;
    for (int i = 0; i < bytes; ++i) {
      if (((address[i] ^ rule.address[i]) & rule.mask[i]) != 0) return false;
    }
  }
  bool database_ok = false;
  for (const auto& item : rule.databases) {
    if (item == kHbaAll || (item == kHbaSameUser && client.database == client.user) ||
        (!hba_is_keyword(item) && item == client.database)) {
      database_ok = true;
      break;
    }
    // kHbaReplication: never, pgwarden takes no replication connections.
  }
  if (!database_ok) return false;
  for (const auto& item : rule.users) {
    if (item == kHbaAll || (!hba_is_keyword(item) && item == client.user)) return true;
  }
  return false;
}

const HbaRule* HbaFile::match(const HbaClient& client) const {
  for (const auto& rule : rules_) {
    if (hba_rule_matches(rule, client)) return &rule;
  }
  return nullptr;
}

HbaFile parse_hba(std::string_view text, const std::string& path,
                  const std::function<std::string(const std::string&)>& read_include) {
  HbaFile file;
  file.rules_ = Parser(path, read_include).parse(text);
  return file;
}

std::string address_text(const HbaClient& client) {
  if (client.unix_socket) return "[local]";
  if (client.family != 4 && client.family != 6) return "[unknown]";
  return ip_text(client.family, client.address.data());
}

std::string format_hba_rule(const HbaRule& rule) {
  std::string out(to_string(rule.connection));
  out += ' ';
  out += list_text(rule.databases);
  out += ' ';
  out += list_text(rule.users);
  if (rule.connection != HbaConnection::local) {
    out += ' ';
    if (rule.any_address || (rule.family != 4 && rule.family != 6)) {
      out += "all";
    } else {
      out += ip_text(rule.family, rule.address.data());
      const int length = prefix_length(rule.mask.data(), rule.family == 4 ? 4 : 16);
      if (length >= 0) {
        out += '/';
        out += std::to_string(length);
      } else {
        out += ' ';
        out += ip_text(rule.family, rule.mask.data());
      }
    }
  }
  out += ' ';
  out += to_string(rule.method);
  for (const auto& [name, value] : rule.options) {
    out += ' ';
    out += name;
    out += '=';
    out += quoted(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// auth_ident_file

namespace {

// Expressions are the operator's, but a match runs at every login of a mapped user: long ones
// (and long names to match) are refused rather than trusted to std::regex's recursion.
constexpr std::size_t kMaxIdentExpression = 256;
constexpr std::size_t kMaxIdentName = 256;

}  // namespace

IdentFile parse_ident(std::string_view text, const std::string& path) {
  IdentFile file;
  for (const auto& logical : logical_lines(text)) {
    auto fail = [&](const std::string& message) -> void {
      throw ConfigError(ConfigError::Kind::syntax, path + ":" + std::to_string(logical.line),
                        message);
    };
    std::vector<Field> fields;
    try {
      fields = tokenize(logical.text);
    } catch (const TokenError& e) {
      fail(e.message);
    }
    if (fields.empty()) continue;
    if (fields.size() != 3) {
      fail("expected MAP SYSTEM-USER DATABASE-USER, got " + std::to_string(fields.size()) +
           " fields");
    }
    for (const auto& field : fields) {
      if (field.size() != 1) fail("a list where one name is expected");
    }
    IdentRule rule;
    rule.line = logical.line;
    rule.map = fields[0].front().text;
    const Token& system = fields[1].front();
    const Token& database = fields[2].front();
    rule.all_users = !database.quoted && database.text == "all";
    rule.database_user = database.text;
    if (!database.quoted && !database.text.empty() && database.text.front() == '+') {
      fail("group membership (+" + database.text.substr(1) + ") is not supported");
    }
    if (!system.quoted && !system.text.empty() && system.text.front() == '/') {
      rule.expression = true;
      rule.system_user = system.text.substr(1);
      if (rule.system_user.size() > kMaxIdentExpression) {
        fail("regular expression longer than " + std::to_string(kMaxIdentExpression) + " bytes");
      }
      try {
        rule.pattern = std::make_shared<const std::regex>(rule.system_user, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        fail("invalid regular expression \"" + rule.system_user + "\": " + e.what());
      }
    } else {
      rule.system_user = system.text;
    }
    file.rules_.push_back(std::move(rule));
  }
  return file;
}

bool IdentFile::allows(std::string_view map, std::string_view system_user,
                       std::string_view database_user) const {
  if (system_user.size() > kMaxIdentName) return false;
  for (const auto& rule : rules_) {
    if (rule.map != map) continue;
    std::string wanted = rule.database_user;
    if (rule.expression) {
      std::match_results<std::string_view::const_iterator> groups;
      if (!std::regex_search(system_user.begin(), system_user.end(), groups, *rule.pattern))
        continue;
      // \1 in the database user is the first group (PostgreSQL's one substitution).
      if (const auto at = wanted.find("\\1"); at != std::string::npos && groups.size() > 1) {
        wanted.replace(at, 2, groups[1].str());
      }
    } else if (rule.system_user != system_user) {
      continue;
    }
    if (rule.all_users || wanted == database_user) return true;
  }
  return false;
}

}  // namespace pgw::config
