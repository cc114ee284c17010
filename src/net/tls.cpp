#include "net/tls.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "config/parse.hpp"
#include "net/reactor.hpp"

namespace pgw::net {

namespace {

using config::SslMode;

std::atomic<std::uint64_t> next_generation{1};

// The reason of OpenSSL's most recent error on this thread, or `fallback`.
std::string openssl_reason(std::string_view fallback) {
  unsigned long last = 0;
  unsigned long system = 0;
  while (const unsigned long code = ERR_get_error()) {
    if (ERR_SYSTEM_ERROR(code)) system = code;
    last = code;
  }
  if (last == 0) return std::string(fallback);
  // A file that cannot be opened ends the queue with OpenSSL's "system lib": the errno
  // behind it says what is wrong ("No such file or directory", "Permission denied").
  if (system != 0) return std::strerror(ERR_GET_REASON(system));
  char text[256];
  ERR_error_string_n(last, text, sizeof text);
  // "error:0A000086:SSL routines::certificate verify failed": the part after the last ':'.
  std::string_view all(text);
  const auto colon = all.rfind(':');
  return std::string(colon == std::string_view::npos ? all : all.substr(colon + 1));
}

[[noreturn]] void fail(const std::string& what) {
  ERR_clear_error();
  throw std::runtime_error(what);
}

// client_tls_protocols / server_tls_protocols: PgBouncer's words ("secure", "all", "legacy",
// "default") or a list of versions, separated by commas, colons or blanks.
std::pair<int, int> protocol_range(const std::string& key, const std::string& value) {
  static constexpr std::pair<std::string_view, int> kVersions[] = {{"tlsv1", TLS1_VERSION},
                                                                   {"tlsv1.0", TLS1_VERSION},
                                                                   {"tlsv1.1", TLS1_1_VERSION},
                                                                   {"tlsv1.2", TLS1_2_VERSION},
                                                                   {"tlsv1.3", TLS1_3_VERSION}};
  int low = 0, high = 0;
  std::string word;
  auto take = [&](const std::string& item) {
    if (item.empty()) return;
    if (item == "secure" || item == "default") {
      low = low ? std::min(low, TLS1_2_VERSION) : TLS1_2_VERSION;
      high = TLS1_3_VERSION;
      return;
    }
    if (item == "all" || item == "legacy") {
      low = TLS1_VERSION;
      high = TLS1_3_VERSION;
      return;
    }
    for (const auto& [name, version] : kVersions) {
      if (item == name) {
        low = low ? std::min(low, version) : version;
        high = std::max(high, version);
        return;
      }
    }
    fail(key + ": unknown protocol \"" + item +
         "\" (expected secure, all, legacy, or tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3)");
  };
  for (char c : config::parse::lower(value)) {
    if (c == ',' || c == ':' || c == ' ' || c == '\t') {
      take(word);
      word.clear();
    } else {
      word += c;
    }
  }
  take(word);
  if (low == 0) return {TLS1_2_VERSION, TLS1_3_VERSION};
  return {low, high};
}

// PgBouncer's cipher words, else an OpenSSL cipher list as given.
std::string cipher_list(const std::string& value) {
  const auto v = config::parse::lower(value);
  if (v.empty() || v == "default" || v == "secure" || v == "fast" || v == "normal")
    return "HIGH:!aNULL:!MD5:!3DES:!RC4";
  if (v == "all" || v == "legacy" || v == "compat") return "ALL:!aNULL";
  return value;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "<unreadable>";
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// What a context is made of: its settings and the contents of the files they name. A reload
// that changes neither keeps the context (and the servers made with it).
std::string source_of(TlsRole role, const config::TlsSettings& s) {
  std::string source = role == TlsRole::accept ? "accept" : "connect";
  for (const auto* part : {&s.key_file, &s.cert_file, &s.ca_file, &s.protocols, &s.ciphers,
                           &s.tls13_ciphers, &s.ecdhcurve, &s.dheparams}) {
    source += '\x1f';
    source += *part;
  }
  source += '\x1f';
  source += config::to_string(s.sslmode);
  for (const auto* file : {&s.key_file, &s.cert_file, &s.ca_file}) {
    if (!file->empty()) source += '\x1e' + read_file(*file);
  }
  return source;
}

std::string key_name(TlsRole role, std::string_view suffix) {
  return std::string(role == TlsRole::accept ? "client_tls" : "server_tls") + std::string(suffix);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TlsContext

std::shared_ptr<const TlsContext> TlsContext::build(TlsRole role,
                                                    const config::TlsSettings& settings) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(role == TlsRole::accept ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) fail("SSL_CTX_new: " + openssl_reason("out of memory"));
  // Owned by the result from here on, so that every failure below frees it.
  std::shared_ptr<const TlsContext> context(
      new TlsContext(role, settings.sslmode, ctx, next_generation.fetch_add(1)));

  // A peer that closes without close_notify (most drivers on exit) is an end of stream, not an
  // error; renegotiation is refused (PostgreSQL has not allowed it since 9.5); no compression.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_NO_COMPRESSION |
                               (role == TlsRole::accept ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
  // One read from the socket takes as many records as have arrived (not one 5-byte header
  // and then the body): a system call per arrival, as for plain connections.
  SSL_CTX_set_read_ahead(ctx, 1);

  const auto [low, high] = protocol_range(key_name(role, "_protocols"), settings.protocols);
  if (!SSL_CTX_set_min_proto_version(ctx, low) || !SSL_CTX_set_max_proto_version(ctx, high))
    fail(key_name(role, "_protocols") + ": " + openssl_reason("not supported"));
  if (!SSL_CTX_set_cipher_list(ctx, cipher_list(settings.ciphers).c_str()))
    fail(key_name(role, "_ciphers") + " \"" + settings.ciphers +
         "\": " + openssl_reason("no usable cipher"));
  if (!settings.tls13_ciphers.empty() &&
      config::parse::lower(settings.tls13_ciphers) != "default" &&
      !SSL_CTX_set_ciphersuites(ctx, settings.tls13_ciphers.c_str())) {
    const std::string key =
        role == TlsRole::accept ? "client_tls13_ciphers" : "server_tls13_ciphers";
    fail(key + " \"" + settings.tls13_ciphers + "\": failed to set the TLSv1.3 cipher suites (" +
         openssl_reason("no usable suite") + ")");
  }
  if (role == TlsRole::accept) {
    const auto curve = config::parse::lower(settings.ecdhcurve);
    if (!curve.empty() && curve != "auto" && curve != "none" &&
        !SSL_CTX_set1_groups_list(ctx, settings.ecdhcurve.c_str())) {
      fail("client_tls_ecdhcurve \"" + settings.ecdhcurve + "\": " + openssl_reason("unknown"));
    }
    const auto dh = config::parse::lower(settings.dheparams);
    if (dh == "auto" || dh == "legacy" || dh.empty()) {
      SSL_CTX_set_dh_auto(ctx, 1);  // OpenSSL picks a group matching the key's strength
    } else if (dh != "none") {
      fail("client_tls_dheparams \"" + settings.dheparams + "\": expected auto, none or legacy");
    }
  }

  // pgwarden's own certificate: required toward clients, optional toward servers (a client
  // certificate for PostgreSQL's cert authentication).
  if (role == TlsRole::accept && (settings.key_file.empty() || settings.cert_file.empty()))
    fail("client_tls_sslmode = " + std::string(config::to_string(settings.sslmode)) +
         " needs client_tls_key_file and client_tls_cert_file");
  if (!settings.cert_file.empty() &&
      SSL_CTX_use_certificate_chain_file(ctx, settings.cert_file.c_str()) != 1)
    fail(key_name(role, "_cert_file") + " " + settings.cert_file + ": " +
         openssl_reason("cannot load"));
  if (!settings.key_file.empty()) {
    if (SSL_CTX_use_PrivateKey_file(ctx, settings.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      fail(key_name(role, "_key_file") + " " + settings.key_file + ": " +
           openssl_reason("cannot load"));
    if (!settings.cert_file.empty() && SSL_CTX_check_private_key(ctx) != 1)
      fail(key_name(role, "_key_file") + " " + settings.key_file + " does not match " +
           key_name(role, "_cert_file") + " " + settings.cert_file);
  }

  // Whom pgwarden trusts.
  const bool verify = settings.sslmode >= SslMode::verify_ca;
  if (!settings.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr) != 1)
      fail(key_name(role, "_ca_file") + " " + settings.ca_file + ": " +
           openssl_reason("cannot load"));
  } else if (verify) {
    if (role == TlsRole::accept)
      fail("client_tls_sslmode = " + std::string(config::to_string(settings.sslmode)) +
           " needs client_tls_ca_file");
    SSL_CTX_set_default_verify_paths(ctx);  // the system's CAs, as libpq with sslrootcert=system
  }
  if (role == TlsRole::accept) {
    if (!settings.ca_file.empty()) {
      // Clients are asked for a certificate (cert authentication, verify-ca): one signed by
      // these CAs. Below verify-ca a client without one still gets in.
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(settings.ca_file.c_str()))
        SSL_CTX_set_client_CA_list(ctx, names);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (verify ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                         nullptr);
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    }
    // No session resumption, as in PostgreSQL (which clients already expect): libpq and most
    // drivers never resume, so TLS 1.3's two session tickets per handshake and the server's
    // session cache would cost every login CPU for nothing (some 30 µs of pgwarden's per
    // TLS login on the bench machine). The session id context stays set as before: it names
    // this context's sessions to OpenSSL's checks on clients with certificates.
    static constexpr unsigned char kSessionContext[] = "pgwarden";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  }
  ERR_clear_error();
  return context;
}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

// ---------------------------------------------------------------------------------------------
// TlsStore

std::string TlsStore::update(const config::Config& config) {
  std::lock_guard lock(mutex_);
  std::string errors = update_side(TlsRole::accept, config.client_tls(), client_, client_source_);
  const auto server_error =
      update_side(TlsRole::connect, config.server_tls(), server_, server_source_);
  if (!errors.empty() && !server_error.empty()) errors += '\n';
  return errors + server_error;
}

std::string TlsStore::update_side(TlsRole role, const config::TlsSettings& settings,
                                  std::atomic<std::shared_ptr<const TlsContext>>& slot,
                                  std::string& source) {
  if (settings.sslmode == SslMode::disable) {
    slot.store(nullptr);
    source.clear();
    return {};
  }
  auto next_source = source_of(role, settings);
  if (next_source == source && slot.load()) return {};
  try {
    slot.store(TlsContext::build(role, settings));
    source = std::move(next_source);
    return {};
  } catch (const std::exception& e) {
    std::string error = e.what();
    if (slot.load()) error += " (the previous TLS settings stay in use)";
    return error;
  }
}

// ---------------------------------------------------------------------------------------------
// The BIO between OpenSSL and a Connection

struct TlsBio {
  static BIO_METHOD* method() {
    static BIO_METHOD* const made = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pgwarden");
      BIO_meth_set_write_ex(m, &write);
      BIO_meth_set_read_ex(m, &read);
      BIO_meth_set_ctrl(m, &control);
      BIO_meth_set_create(m, [](BIO* bio) {
        BIO_set_init(bio, 1);
        return 1;
      });
      return m;
    }();
    return made;
  }
  static int write(BIO* bio, const char* data, std::size_t size, std::size_t* written) {
    auto* stream = static_cast<TlsStream*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    stream->connection_.write_all_or_keep(data, size);
    *written = size;
    return 1;
  }
  static int read(BIO* bio, char* data, std::size_t size, std::size_t* got) {
    auto* stream = static_cast<TlsStream*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    const auto result = stream->connection_.raw_read_some(data, size);
    if (result.bytes > 0) {
      *got = result.bytes;
      return 1;
    }
    if (result.would_block()) {
      BIO_set_retry_read(bio);
    } else if (result.error) {
      stream->io_error_ = result.error;
    }
    *got = 0;
    return 0;  // no retry flag: the end of the stream, or the error noted above
  }
  static long control(BIO*, int command, long, void*) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;  // writes are never held back by the BIO
  }
};

// ---------------------------------------------------------------------------------------------
// TlsStream

TlsStream::TlsStream(std::shared_ptr<const TlsContext> context, Connection& connection,
                     const std::string& peer_name)
    : context_(std::move(context)), connection_(connection) {
  ssl_ = SSL_new(context_->native());
  if (ssl_ == nullptr) throw std::runtime_error("SSL_new: " + openssl_reason("out of memory"));
  BIO* bio = BIO_new(TlsBio::method());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);
  if (context_->role() == TlsRole::accept) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  if (peer_name.empty()) return;
  in6_addr address6{};
  in_addr address4{};
  const bool literal = inet_pton(AF_INET, peer_name.c_str(), &address4) == 1 ||
                       inet_pton(AF_INET6, peer_name.c_str(), &address6) == 1;
  if (!literal) {  // SNI takes names only (SSL_set_tlsext_host_name, without its C cast)
    SSL_ctrl(ssl_, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(peer_name.c_str()));
  }
  if (context_->mode() == SslMode::verify_full) {
    // The certificate must name the host pgwarden connected to (libpq's verify-full).
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    if (literal) {
      X509_VERIFY_PARAM_set1_ip_asc(param, peer_name.c_str());
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl_, peer_name.c_str());
    }
  }
}

TlsStream::~TlsStream() {
  SSL_free(ssl_);
}

void TlsStream::note_failure(const char* what, int ssl_error) {
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    ERR_clear_error();
  } else if (io_error_) {
    error_ = std::string(what) + ": " + io_error_.message();
    ERR_clear_error();
  } else if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    error_ = std::string(what) + ": connection closed by the peer";
    ERR_clear_error();
  } else {
    error_ = std::string(what) + ": " + openssl_reason("protocol error");
  }
}

TlsStream::Step TlsStream::handshake() {
  ERR_clear_error();
  const int result = SSL_do_handshake(ssl_);
  if (result == 1) {
    established_ = true;
    return Step::done;
  }
  const int error = SSL_get_error(ssl_, result);
  // WANT_WRITE cannot happen: the BIO takes every write.
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return Step::want_read;
  note_failure("TLS handshake", error);
  return Step::failed;
}

IoResult TlsStream::read(void* data, std::size_t size) {
  ERR_clear_error();
  const int n = SSL_read(ssl_, data, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
  if (n > 0) return {static_cast<std::size_t>(n), {}};
  const int error = SSL_get_error(ssl_, n);
  switch (error) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return {0, std::make_error_code(std::errc::operation_would_block)};
    case SSL_ERROR_ZERO_RETURN:
      return {};  // close_notify, or the end of the stream: EOF
    case SSL_ERROR_SYSCALL:
      if (io_error_) return {0, io_error_};
      return {};
    default:
      note_failure("TLS", error);
      return {0, std::make_error_code(std::errc::protocol_error)};
  }
}

IoResult TlsStream::write(const void* data, std::size_t size) {
  ERR_clear_error();
  const int n = SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
  if (n > 0) return {static_cast<std::size_t>(n), {}};
  const int error = SSL_get_error(ssl_, n);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE)
    return {0, std::make_error_code(std::errc::operation_would_block)};
  if (io_error_) return {0, io_error_};
  note_failure("TLS", error);
  return {0, std::make_error_code(std::errc::protocol_error)};
}

bool TlsStream::has_pending() const {
  return SSL_has_pending(ssl_) == 1;
}

void TlsStream::close_notify() {
  if (!established_ || closed_) return;
  closed_ = true;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // writes close_notify; the peer's is not waited for
  ERR_clear_error();
}

std::string TlsStream::describe() const {
  if (!established_) return {};
  return std::string(SSL_get_version(ssl_)) + "/" + SSL_get_cipher_name(ssl_);
}

bool TlsStream::peer_certificate_verified() const {
  return established_ && SSL_get0_peer_certificate(ssl_) != nullptr &&
         (SSL_get_verify_mode(ssl_) & SSL_VERIFY_PEER) != 0 &&
         SSL_get_verify_result(ssl_) == X509_V_OK;
}

std::string TlsStream::peer_common_name() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  X509_NAME* subject = X509_get_subject_name(cert);
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return {};
  ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, value);
  if (length < 0) return {};
  std::string name(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  // A name with an embedded NUL could pass for another user: no name at all.
  if (name.find('\0') != std::string::npos) return {};
  return name;
}

}  // namespace pgw::net
