// TLS on both sides, with OpenSSL 3: the contexts built from the client_tls_* and server_tls_*
// keys, and the TLS stream of one connection.
//
// A TLS connection stays a Connection of its worker's loop: OpenSSL reads and writes the
// socket through a BIO whose callbacks are the Connection's own raw read and write, so the
// ciphertext goes through the same io_uring batches and read-ahead slots as plain bytes do,
// and a handshake that waits for the peer suspends its coroutine instead of blocking the
// worker. The BIO takes every byte OpenSSL writes (what the socket cannot take waits in the
// connection, as a queued write does), so SSL_write never asks to be retried with the same
// buffer and back-pressure stays the Connection's: a write is refused while earlier bytes wait.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include "config/config.hpp"

namespace pgw::net {

class Connection;
struct IoResult;

// Which end of the handshake pgwarden is.
enum class TlsRole : std::uint8_t {
  accept,   // toward a client: pgwarden is the TLS server
  connect,  // toward PostgreSQL: pgwarden is the TLS client
};

// One side's OpenSSL context, immutable once built; connections hold it while they live.
class TlsContext {
 public:
  // Builds the context `settings` describe; throws std::runtime_error naming the key or file
  // at fault. An `accept` context needs a key and a certificate.
  static std::shared_ptr<const TlsContext> build(TlsRole role, const config::TlsSettings& settings);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const { return role_; }
  config::SslMode mode() const { return mode_; }
  SSL_CTX* native() const { return ctx_; }
  // Bumped when the settings or the files they name change: server connections made with an
  // older one are closed on release (PgBouncer reconnects on any TLS change too).
  std::uint64_t generation() const { return generation_; }

 private:
  TlsContext(TlsRole role, config::SslMode mode, SSL_CTX* ctx, std::uint64_t generation)
      : role_(role), mode_(mode), ctx_(ctx), generation_(generation) {}
  TlsRole role_;
  config::SslMode mode_;
  SSL_CTX* ctx_;
  std::uint64_t generation_;
  friend class TlsStore;
};

// The process's two contexts. Built at start (a failure there stops the start), and again at
// every RELOAD, SIGHUP and SET of a TLS key, for the connections that start after it; a
// context that fails to build keeps the one before and says why. Any thread.
class TlsStore {
 public:
  // Rebuilds both sides from `config`; "" or the errors (one line per side). A side whose
  // settings and files are unchanged keeps its context and generation.
  std::string update(const config::Config& config);
  // Null when the side's sslmode is disable (or before the first update()).
  std::shared_ptr<const TlsContext> client_side() const { return client_.load(); }
  std::shared_ptr<const TlsContext> server_side() const { return server_.load(); }

 private:
  std::string update_side(TlsRole role, const config::TlsSettings& settings,
                          std::atomic<std::shared_ptr<const TlsContext>>& slot,
                          std::string& source);
  std::mutex mutex_;  // update() is called from the main thread and the console's workers
  std::atomic<std::shared_ptr<const TlsContext>> client_, server_;
  std::string client_source_, server_source_;  // settings + file contents of the current ones
};

// The TLS stream of one connection, installed with Connection::start_tls().
class TlsStream {
 public:
  // `peer_name`: toward a server, the host name (SNI, and the name verify-full checks).
  TlsStream(std::shared_ptr<const TlsContext> context, Connection& connection,
            const std::string& peer_name = {});
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  enum class Step : std::uint8_t { done, want_read, failed };
  // One step of the handshake; on `failed`, error() says why.
  Step handshake();
  bool established() const { return established_; }
  IoResult read(void* data, std::size_t size);
  // Encrypts all of `data` (the connection keeps what the socket cannot take yet).
  IoResult write(const void* data, std::size_t size);
  // Bytes decrypted or received and not read yet: the connection stays readable.
  bool has_pending() const;
  // Sends close_notify (once, if the handshake finished).
  void close_notify();

  const std::string& error() const { return error_; }
  // "TLSv1.3/TLS_AES_256_GCM_SHA384", as SHOW CLIENTS' tls column shows it.
  std::string describe() const;
  // The peer's certificate: presented and verified against the CA file; its subject's CN.
  bool peer_certificate_verified() const;
  std::string peer_common_name() const;

 private:
  friend struct TlsBio;
  void note_failure(const char* what, int ssl_error);
  std::shared_ptr<const TlsContext> context_;
  Connection& connection_;
  SSL* ssl_ = nullptr;
  std::error_code io_error_;  // of the socket, seen by the BIO
  std::string error_;
  bool established_ = false;
  bool closed_ = false;
};

}  // namespace pgw::net
