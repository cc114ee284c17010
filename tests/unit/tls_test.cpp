// TLS (src/net/tls.hpp): contexts from the client_tls_*/server_tls_* settings and what a bad one
// says, the store's keep-the-old-one rule, and TLS streams over a real socket pair on a real
// loop: the handshake as coroutines, host name checks, and a megabyte read in small pieces by a
// data-path handler (which relies on the connection staying readable while OpenSSL holds
// decrypted bytes: if it did not, the transfer would stall and the test time out).
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "net/tls.hpp"
#include "test_loop.hpp"

namespace {

using pgw::config::SslMode;
using pgw::config::TlsSettings;
using pgw::net::Connection;
using pgw::net::TlsContext;
using pgw::net::TlsRole;
using pgw::net::TlsStore;
using pgw::net::TlsStream;
using pgw::test::Loop;

struct Pem {
  std::string cert, key;
};

// A self-signed certificate (its own CA) for `cn`, with `dns` as its one subjectAltName.
Pem make_certificate(const std::string& dir, const std::string& cn, const std::string& dns) {
  static long serial = 1;
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  const std::string san = "DNS:" + dns;
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, san.c_str()},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(x, key, EVP_sha256());
  Pem pem{dir + "/" + cn + ".crt", dir + "/" + cn + ".key"};
  FILE* f = std::fopen(pem.cert.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(pem.key.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
  return pem;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (std::filesystem::temp_directory_path() / "pgw-tls-test").string();
    std::filesystem::create_directories(dir_);
    server_ = make_certificate(dir_, "pgwarden-server", "localhost");
    other_ = make_certificate(dir_, "someone-else", "elsewhere.example");
  }
  static TlsSettings accepting(const Pem& pem) {
    TlsSettings s;
    s.sslmode = SslMode::require;
    s.cert_file = pem.cert;
    s.key_file = pem.key;
    return s;
  }
  static TlsSettings connecting(SslMode mode, const std::string& ca) {
    TlsSettings s;
    s.sslmode = mode;
    s.ca_file = ca;
    return s;
  }
  static std::string dir_;
  static Pem server_, other_;
};
std::string TlsTest::dir_;
Pem TlsTest::server_, TlsTest::other_;

std::pair<int, int> socket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {fds[0], fds[1]};
}

// Both ends of a handshake on one loop; the errors ("" = done) of each end.
struct Handshake {
  std::string server_error = "not run", client_error = "not run";
  bool run(Loop& loop, Connection& server, Connection& client) {
    std::atomic<bool> done{false};
    int finished = 0;
    auto end = [&](Connection& c, std::string& error) -> asio::awaitable<void> {
      error = co_await c.async_tls_handshake();
      if (++finished == 2) done = true;
      // A failed end closes, as the login does, so the other end sees it and stops waiting.
      if (!error.empty()) c.close();
    };
    asio::co_spawn(loop.io, end(server, server_error), asio::detached);
    asio::co_spawn(loop.io, end(client, client_error), asio::detached);
    return loop.run_until(done);
  }
};

TEST_F(TlsTest, BadSettingsSayWhichKeyOrFile) {
  auto error_of = [](TlsRole role, const TlsSettings& s) {
    try {
      TlsContext::build(role, s);
      return std::string();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  TlsSettings no_files;
  no_files.sslmode = SslMode::require;
  EXPECT_NE(error_of(TlsRole::accept, no_files).find("needs client_tls_key_file"),
            std::string::npos);
  auto s = accepting(server_);
  s.key_file = other_.key;  // not the certificate's key ("key values mismatch")
  EXPECT_NE(error_of(TlsRole::accept, s).find("client_tls_key_file " + other_.key),
            std::string::npos)
      << error_of(TlsRole::accept, s);
  s = accepting(server_);
  s.protocols = "tlsv1.2,sslv3";
  EXPECT_NE(error_of(TlsRole::accept, s).find("unknown protocol \"sslv3\""), std::string::npos);
  s = accepting(server_);
  s.ciphers = "NO-SUCH-CIPHER";
  EXPECT_NE(error_of(TlsRole::accept, s).find("client_tls_ciphers"), std::string::npos);
  s = accepting(server_);
  s.sslmode = SslMode::verify_ca;  // without client_tls_ca_file
  EXPECT_NE(error_of(TlsRole::accept, s).find("needs client_tls_ca_file"), std::string::npos);
  s = connecting(SslMode::verify_full, dir_ + "/missing.crt");
  EXPECT_NE(error_of(TlsRole::connect, s).find("server_tls_ca_file"), std::string::npos);
  EXPECT_EQ(error_of(TlsRole::accept, accepting(server_)), "");
  EXPECT_EQ(error_of(TlsRole::connect, connecting(SslMode::prefer, "")), "");
}

TEST_F(TlsTest, TheStoreKeepsAWorkingContextAndRebuildsOnlyWhatChanged) {
  TlsStore store;
  pgw::config::Config config;
  EXPECT_EQ(store.update(config), "");
  EXPECT_EQ(store.client_side(), nullptr);  // client_tls_sslmode = disable
  ASSERT_NE(store.server_side(), nullptr);  // server_tls_sslmode = prefer
  const auto server_generation = store.server_side()->generation();
  config.client_tls_sslmode = SslMode::require;
  config.client_tls_cert_file = server_.cert;
  config.client_tls_key_file = server_.key;
  EXPECT_EQ(store.update(config), "");
  auto first = store.client_side();
  ASSERT_NE(first, nullptr);
  // Nothing changed: the same contexts (servers made with them stay).
  EXPECT_EQ(store.update(config), "");
  EXPECT_EQ(store.client_side(), first);
  EXPECT_EQ(store.server_side()->generation(), server_generation);
  // A file that cannot be read: the error, and the context in use stays.
  config.client_tls_key_file = dir_ + "/missing.key";
  const auto error = store.update(config);
  EXPECT_NE(error.find("client_tls_key_file"), std::string::npos) << error;
  // The errno behind OpenSSL's "system lib", which says nothing of what is wrong.
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
  EXPECT_EQ(error.find("system lib"), std::string::npos) << error;
  EXPECT_NE(error.find("previous TLS settings stay in use"), std::string::npos) << error;
  EXPECT_EQ(store.client_side(), first);
  // The same file names with new contents (a renewed certificate): a new context.
  const auto renewed = make_certificate(dir_, "renewed", "localhost");
  std::filesystem::copy_file(renewed.cert, dir_ + "/live.crt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(renewed.key, dir_ + "/live.key",
                             std::filesystem::copy_options::overwrite_existing);
  config.client_tls_cert_file = dir_ + "/live.crt";
  config.client_tls_key_file = dir_ + "/live.key";
  EXPECT_EQ(store.update(config), "");
  auto second = store.client_side();
  EXPECT_NE(second, first);
  const auto again = make_certificate(dir_, "renewed-again", "localhost");
  std::filesystem::copy_file(again.cert, dir_ + "/live.crt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(again.key, dir_ + "/live.key",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(store.update(config), "");
  EXPECT_NE(store.client_side(), second);
  config.server_tls_sslmode = SslMode::require;
  EXPECT_EQ(store.update(config), "");
  EXPECT_NE(store.server_side()->generation(), server_generation);
}

TEST_F(TlsTest, VerifyFullChecksTheHostName) {
  const auto accept = TlsContext::build(TlsRole::accept, accepting(server_));
  for (auto [mode, name, ok] : {std::tuple{SslMode::verify_full, "localhost", true},
                                std::tuple{SslMode::verify_full, "db.example.com", false},
                                std::tuple{SslMode::verify_ca, "db.example.com", true}}) {
    Loop loop;
    auto [a, b] = socket_pair();
    Connection server, client;
    server.open(loop.reactor, a);
    client.open(loop.reactor, b);
    server.start_tls(std::make_unique<TlsStream>(accept, server));
    client.start_tls(std::make_unique<TlsStream>(
        TlsContext::build(TlsRole::connect, connecting(mode, server_.cert)), client, name));
    Handshake handshake;
    ASSERT_TRUE(handshake.run(loop, server, client)) << name;
    if (ok) {
      EXPECT_EQ(handshake.client_error, "") << name;
      EXPECT_EQ(handshake.server_error, "") << name;
      EXPECT_NE(client.tls()->describe().find("TLSv1.3/"), std::string::npos);
    } else {
      EXPECT_NE(handshake.client_error.find("certificate verify failed"), std::string::npos)
          << handshake.client_error;
      EXPECT_NE(handshake.server_error, "");
    }
  }
  // A CA that did not sign it.
  Loop loop;
  auto [a, b] = socket_pair();
  Connection server, client;
  server.open(loop.reactor, a);
  client.open(loop.reactor, b);
  server.start_tls(std::make_unique<TlsStream>(accept, server));
  client.start_tls(std::make_unique<TlsStream>(
      TlsContext::build(TlsRole::connect, connecting(SslMode::verify_ca, other_.cert)), client,
      "localhost"));
  Handshake handshake;
  ASSERT_TRUE(handshake.run(loop, server, client));
  EXPECT_NE(handshake.client_error.find("certificate verify failed"), std::string::npos)
      << handshake.client_error;
}

// Reads whatever arrives, 61 bytes at a time, while the connection says it is readable: the
// relay's loop.
struct SmallReads final : pgw::net::ReadyHandler {
  void on_ready(Connection& c) override {
    char buffer[61];
    while (c.readable()) {
      const auto r = c.read_some(buffer, sizeof buffer);
      if (r.would_block()) break;
      if (r.error || r.bytes == 0) {
        ended = !r.error;
        done->store(true);
        break;
      }
      received.append(buffer, r.bytes);
    }
  }
  std::string received;
  bool ended = false;  // the end of the stream (not an error)
  std::atomic<bool>* done = nullptr;
};

TEST_F(TlsTest, AMegabyteArrivesWholeThroughSmallReadsAndBackPressure) {
  Loop loop;
  auto [a, b] = socket_pair();
  // Small socket buffers: the writer meets back-pressure many times.
  const int small = 16 * 1024;
  ::setsockopt(a, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ::setsockopt(b, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  Connection server, client;
  server.open(loop.reactor, a);
  client.open(loop.reactor, b);
  server.start_tls(
      std::make_unique<TlsStream>(TlsContext::build(TlsRole::accept, accepting(server_)), server));
  client.start_tls(std::make_unique<TlsStream>(
      TlsContext::build(TlsRole::connect, connecting(SslMode::verify_full, server_.cert)), client,
      "localhost"));

  std::string payload(1 << 20, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7 % 251);
  std::atomic<bool> done{false};
  SmallReads reader;
  reader.done = &done;
  std::string server_error = "not run", client_error = "not run";
  bool complete_before_the_end = false;
  // The server end: the handshake, then the data path's handler reads.
  auto serve = [&]() -> asio::awaitable<void> {
    server_error = co_await server.async_tls_handshake();
    if (!server_error.empty()) {
      done = true;
      co_return;
    }
    server.set_handler(&reader);
    reader.on_ready(server);  // what arrived with the end of the handshake
  };
  // The client end: the handshake, then pieces of up to 5000 bytes through write_some
  // (batched), waiting for writability when refused, as the relay does; then the half-close.
  auto write = [&]() -> asio::awaitable<void> {
    client_error = co_await client.async_tls_handshake();
    if (!client_error.empty()) co_return;
    std::size_t sent = 0;
    while (sent < payload.size()) {
      const auto r = client.write_some(payload.data() + sent,
                                       std::min<std::size_t>(5000, payload.size() - sent));
      if (r.error && !r.would_block()) co_return;
      sent += r.bytes;
      if (r.would_block()) {
        co_await client.async_wait_writable(asio::experimental::as_tuple(asio::use_awaitable));
      }
    }
    // Nothing more comes for a while: everything must have been read by now, without a new
    // epoll edge (the last records sit decrypted in OpenSSL, not in the socket).
    pgw::net::Timer pause(loop.reactor);
    co_await pause.async_wait_for(std::chrono::milliseconds(300),
                                  asio::experimental::as_tuple(asio::use_awaitable));
    complete_before_the_end = reader.received.size() == payload.size();
    // close_notify, then the FIN once every record has gone: the reader ends with the end of
    // the stream.
    client.shutdown_send();
  };
  asio::co_spawn(loop.io, serve(), asio::detached);
  asio::co_spawn(loop.io, write(), asio::detached);
  ASSERT_TRUE(loop.run_until(done, std::chrono::milliseconds(10000)))
      << "received " << reader.received.size();
  EXPECT_EQ(server_error, "");
  EXPECT_EQ(client_error, "");
  EXPECT_TRUE(reader.ended);
  EXPECT_TRUE(complete_before_the_end);
  EXPECT_EQ(reader.received.size(), payload.size());
  EXPECT_TRUE(reader.received == payload);
  if (loop.reactor.batches_io()) {
    EXPECT_GT(loop.reactor.batch_counters().batched_writes, 0u);
  }
}

}  // namespace
