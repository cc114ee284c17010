// Writes the seed corpora of the fuzz targets: fuzz_make_corpus DIR (normally fuzz/corpus).
// Real messages built with the codec's MessageWriter, real SCRAM exchanges run with the
// fixture of scram_fixture.hpp, and sample pgbouncer.ini / userlist.txt texts. The output is
// committed; rerun this after changing it (files of other names in DIR are left alone).
//
//   cmake --build build --target fuzz_make_corpus && build/fuzz/fuzz_make_corpus fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/auth.hpp"
#include "protocol/codec.hpp"
#include "scram_fixture.hpp"

namespace {

namespace proto = pgw::proto;
namespace auth = pgw::auth;
namespace fx = pgw::fuzz::scram;

std::filesystem::path g_root;
int g_written = 0;

void write(const std::string& target, const std::string& name, std::string_view content) {
  const auto dir = g_root / target;
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).string().c_str());
    std::exit(1);
  }
  ++g_written;
}

template <typename Build>
std::string build(Build&& fn) {
  std::string out;
  proto::MessageWriter writer(out);
  fn(writer);
  return out;
}

// Frontend messages the writer has no helper for.
std::string parse_message(std::string_view name, std::string_view sql,
                          std::vector<std::int32_t> types) {
  return build([&](proto::MessageWriter& w) {
    w.begin('P').cstring(name).cstring(sql).int16(static_cast<std::int16_t>(types.size()));
    for (auto t : types) w.int32(t);
    w.finish();
  });
}
std::string bind_message(std::string_view portal, std::string_view statement,
                         std::string_view value) {
  return build([&](proto::MessageWriter& w) {
    w.begin('B').cstring(portal).cstring(statement);
    w.int16(1).int16(0);                                                   // parameter formats
    w.int16(1).int32(static_cast<std::int32_t>(value.size())).raw(value);  // parameter values
    w.int16(1).int16(0);                                                   // result formats
    w.finish();
  });
}
std::string describe_portal(std::string_view portal) {
  return build([&](proto::MessageWriter& w) { w.begin('D').int8('P').cstring(portal).finish(); });
}
std::string execute_message(std::string_view portal) {
  return build([&](proto::MessageWriter& w) { w.begin('E').cstring(portal).int32(0).finish(); });
}
std::string close_statement(std::string_view name) {
  return build([&](proto::MessageWriter& w) { w.begin('C').int8('S').cstring(name).finish(); });
}
std::string copy_data(std::string_view data) {
  return build([&](proto::MessageWriter& w) { w.begin('d').raw(data).finish(); });
}
std::string simple(char type) {
  return build([&](proto::MessageWriter& w) { w.begin(type).finish(); });
}

std::string startup(std::vector<std::pair<std::string, std::string>> params) {
  return build([&](proto::MessageWriter& w) { w.startup_message(params); });
}
std::string code_packet(std::uint32_t code) {
  return build([&](proto::MessageWriter& w) { w.int32(8).int32(static_cast<std::int32_t>(code)); });
}

std::string body_of(const std::string& message) {
  return message.substr(proto::kHeaderSize);
}

struct Scram {
  std::string client_first, server_first, client_final, server_final;
};

Scram exchange(std::string_view gs2 = "n,,", std::string_view user = "") {
  const auto secret = auth::make_scram_secret(fx::kPassword, fx::kSalt, fx::kIterations);
  auth::ScramServer server(secret, std::string(fx::kServerNonceRaw));
  auto client = auth::ScramClient::with_password("", std::string(fx::kPassword),
                                                 std::string(fx::kClientNonceRaw));
  Scram s;
  s.client_first = user.empty() ? client.client_first() : client.client_first_with_user(user);
  if (gs2 != "n,,") s.client_first = std::string(gs2) + s.client_first.substr(3);
  s.server_first = server.handle_client_first(s.client_first).value();
  s.client_final = client.handle_server_first(s.server_first).value();
  // With another gs2 header the client's c=biws ("n,,") does not match: a negative seed.
  const auto server_final = server.handle_client_final(s.client_final);
  s.server_final = server_final ? *server_final : "e=invalid-proof";
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  g_root = argv[1];

  const Scram scram = exchange();
  const std::string_view mechanisms[] = {"SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"};
  const std::byte salt[4] = {std::byte{0x12}, std::byte{0x34}, std::byte{0x56}, std::byte{0x78}};
  const std::string_view columns[] = {"id", "name"};
  const std::optional<std::string_view> row[] = {"1", std::nullopt};
  const std::string unrecognized[] = {"_pq_.compression"};

  // --- single messages, frontend and backend ---
  const std::vector<std::pair<std::string, std::string>> messages{
      {"fe_query", build([](auto& w) { w.query("SELECT 1"); })},
      {"fe_query_empty", build([](auto& w) { w.query(""); })},
      {"fe_parse", parse_message("s1", "SELECT $1::int", {23})},
      {"fe_parse_unnamed", parse_message("", "SELECT now()", {})},
      {"fe_bind", bind_message("", "s1", "42")},
      {"fe_describe", describe_portal("")},
      {"fe_execute", execute_message("")},
      {"fe_close", close_statement("s1")},
      {"fe_sync", build([](auto& w) { w.sync(); })},
      {"fe_flush", simple('H')},
      {"fe_terminate", build([](auto& w) { w.terminate(); })},
      {"fe_copy_data", copy_data("1\tone\n")},
      {"fe_copy_done", simple('c')},
      {"fe_password", build([](auto& w) { w.password_message("md5" + std::string(32, 'a')); })},
      {"fe_sasl_initial",
       build([&](auto& w) { w.sasl_initial_response("SCRAM-SHA-256", scram.client_first); })},
      {"fe_sasl_response", build([&](auto& w) { w.sasl_response(scram.client_final); })},
      {"be_auth_ok", build([](auto& w) { w.authentication_ok(); })},
      {"be_auth_cleartext", build([](auto& w) { w.authentication_cleartext(); })},
      {"be_auth_md5",
       build([&](auto& w) { w.authentication_md5(std::span<const std::byte, 4>(salt)); })},
      {"be_auth_sasl", build([&](auto& w) { w.authentication_sasl(mechanisms); })},
      {"be_auth_sasl_continue",
       build([&](auto& w) { w.authentication_sasl_continue(scram.server_first); })},
      {"be_auth_sasl_final",
       build([&](auto& w) { w.authentication_sasl_final(scram.server_final); })},
      {"be_parameter_status",
       build([](auto& w) { w.parameter_status("client_encoding", "UTF8"); })},
      {"be_backend_key_data", build([](auto& w) { w.backend_key_data(4242, -123456789); })},
      {"be_ready_idle", build([](auto& w) { w.ready_for_query(proto::TransactionStatus::idle); })},
      {"be_ready_failed",
       build([](auto& w) { w.ready_for_query(proto::TransactionStatus::failed); })},
      {"be_error", build([](auto& w) {
         w.error_response("ERROR", "42P01", "relation \"t\" does not exist", "some detail",
                          "a hint");
       })},
      {"be_error_fatal", build([](auto& w) {
         w.error_response("FATAL", "28P01", "password authentication failed for user \"u\"");
       })},
      {"be_notice", build([](auto& w) { w.notice_response("NOTICE", "00000", "hello"); })},
      {"be_row_description", build([&](auto& w) { w.row_description(columns); })},
      {"be_data_row", build([&](auto& w) { w.data_row(row); })},
      {"be_command_complete", build([](auto& w) { w.command_complete("SELECT 1"); })},
      {"be_empty_query", build([](auto& w) { w.empty_query_response(); })},
      {"be_negotiate_protocol",
       build([&](auto& w) { w.negotiate_protocol_version(0, unrecognized); })},
  };
  std::string extended;
  for (const auto& name : {"fe_parse", "fe_bind", "fe_describe", "fe_execute", "fe_sync"}) {
    for (const auto& [n, m] : messages) {
      if (n == name) extended += m;
    }
  }
  auto find = [&](std::string_view name) {
    for (const auto& [n, m] : messages) {
      if (n == name) return m;
    }
    std::fprintf(stderr, "no message %s\n", std::string(name).c_str());
    std::exit(1);
  };
  const std::string login = find("be_auth_ok") + find("be_parameter_status") +
                            build([](auto& w) { w.parameter_status("server_version", "15.6"); }) +
                            find("be_backend_key_data") + find("be_ready_idle");
  const std::string sasl_login =
      find("be_auth_sasl") + find("be_auth_sasl_continue") + find("be_auth_sasl_final") + login;
  const std::string result =
      find("be_row_description") + find("be_data_row") + find("be_command_complete") +
      build([](auto& w) { w.ready_for_query(proto::TransactionStatus::in_transaction); });
  const std::string errors =
      find("be_notice") + find("be_error") + find("be_ready_failed") + find("be_error_fatal");
  const std::string client_session = find("fe_query") + extended + find("fe_copy_data") +
                                     find("fe_copy_done") + find("fe_flush") + find("fe_terminate");

  // protocol: single messages and sequences.
  for (const auto& [name, message] : messages) write("protocol", name, message);
  write("protocol", "fe_extended", extended);
  write("protocol", "fe_session", client_session);
  write("protocol", "be_login", login);
  write("protocol", "be_sasl_login", sasl_login);
  write("protocol", "be_result", result);
  write("protocol", "be_errors", errors);

  // protocol_bodies: the bodies alone.
  for (const auto& [name, message] : messages) write("protocol_bodies", name, body_of(message));

  // first_packet: what a connection starts with, optionally with pipelined messages.
  const std::string startup_basic = startup({{"user", "alice"}, {"database", "app"}});
  write("first_packet", "startup", startup_basic);
  write("first_packet", "startup_full",
        startup({{"user", "alice"},
                 {"database", "app"},
                 {"application_name", "psql"},
                 {"client_encoding", "UTF8"},
                 {"options", "-c search_path=public --work-mem=4MB"}}));
  std::string startup_32 = startup_basic;
  startup_32[7] = 2;  // protocol 3.2
  write("first_packet", "startup_3_2", startup_32);
  write("first_packet", "ssl_request", code_packet(proto::kSslRequestCode));
  write("first_packet", "gssenc_request", code_packet(proto::kGssEncRequestCode));
  write("first_packet", "cancel_request",
        build([](auto& w) { w.cancel_request(4242, -123456789); }));
  write("first_packet", "startup_then_password", startup_basic + find("fe_password"));
  write("first_packet", "startup_then_query",
        startup_basic + find("fe_query") + find("fe_terminate"));

  // stream: byte 0 seeds the read sizes, byte 1 holds options (bit 0: statement pooling),
  // then turns of a conversation: a 2-byte header (bit 15: the client speaks; bits 0-14: the
  // length) and the bytes.
  struct Turn {
    bool from_client;
    std::string bytes;
  };
  auto stream = [&](const std::string& name, char seed, char options,
                    const std::vector<Turn>& turns) {
    std::string out{seed, options};
    for (const auto& turn : turns) {
      const auto length =
          static_cast<unsigned>(turn.bytes.size()) | (turn.from_client ? 0x8000u : 0u);
      out += static_cast<char>(length >> 8);
      out += static_cast<char>(length & 0xff);
      out += turn.bytes;
    }
    write("stream", name, out);
  };
  const std::string ready_idle = find("be_ready_idle");
  const std::string ready_in_transaction =
      build([](auto& w) { w.ready_for_query(proto::TransactionStatus::in_transaction); });
  const std::string complete = find("be_command_complete");
  stream("simple_queries", 1, 0,
         {{true, find("fe_query")},
          {false, result},
          {true, find("fe_query")},
          {false, complete + ready_idle},
          {true, find("fe_terminate")}});
  stream("extended_pipeline", 2, 0,
         {{true, extended + extended},
          {false, build([](auto& w) { w.begin('1').finish(); }) +
                      build([](auto& w) { w.begin('2').finish(); }) + find("be_data_row") +
                      complete + ready_idle},
          {false, find("be_error") + ready_idle}});
  // A prepared statement reused: Bind, Execute, Sync without a Parse (pgbench -M prepared).
  const std::string reuse = bind_message("", "s1", "7") + find("fe_execute") + find("fe_sync");
  stream("prepared_reuse", 8, 0,
         {{true, parse_message("s1", "SELECT $1::int", {23}) + find("fe_sync")},
          {false, build([](auto& w) { w.begin('1').finish(); }) + ready_idle},
          {true, reuse + reuse},
          {false, build([](auto& w) { w.begin('2').finish(); }) + find("be_data_row") + complete +
                      ready_idle + build([](auto& w) { w.begin('2').finish(); }) + complete +
                      ready_idle}});
  stream("copy_in", 3, 0,
         {{true, build([](auto& w) { w.query("COPY t FROM STDIN"); })},
          {false, build([](auto& w) { w.begin('G').int8(0).int16(0).finish(); })},
          {true, find("fe_copy_data") + find("fe_copy_data") + find("fe_copy_done")},
          {false, complete + ready_idle}});
  // COPY FROM STDIN over the extended protocol, as libpq's PQexecParams sends it: Execute and
  // Sync together, the data, CopyDone and another Sync; the server ignores the first Sync.
  stream("copy_in_extended", 9, 0,
         {{true, parse_message("", "COPY t FROM STDIN", {}) + bind_message("", "", "x") +
                     find("fe_execute") + find("fe_sync")},
          {false, build([](auto& w) { w.begin('1').finish(); }) + build([](auto& w) {
                    w.begin('2').finish();
                  }) + build([](auto& w) { w.begin('G').int8(0).int16(0).finish(); })},
          {true, find("fe_copy_data") + find("fe_copy_done") + find("fe_sync")},
          {false, complete + ready_idle}});
  stream("copy_out", 4, 0,
         {{true, build([](auto& w) { w.query("COPY t TO STDOUT"); })},
          {false, build([](auto& w) { w.begin('H').int8(0).int16(0).finish(); }) +
                      build([](auto& w) { w.begin('d').raw("1\tone\n").finish(); }) +
                      build([](auto& w) { w.begin('c').finish(); }) + complete + ready_idle}});
  stream("transaction_with_errors", 5, 0,
         {{true, build([](auto& w) { w.query("BEGIN"); })},
          {false, complete + ready_in_transaction},
          {true, find("fe_query")},
          {false, find("be_notice") + find("be_error") + find("be_ready_failed")},
          {true, build([](auto& w) { w.query("ROLLBACK"); })},
          {false, find("be_parameter_status") + complete + ready_idle + find("be_error_fatal")}});
  stream(
      "statement_mode_begin", 6, 1,
      {{true, build([](auto& w) { w.query("BEGIN"); })}, {false, complete + ready_in_transaction}});
  const std::string big_query =
      build([](auto& w) { w.query("SELECT '" + std::string(3000, 'x') + "'"); });
  stream("split_messages", 7, 0,
         {{true, big_query.substr(0, 3)},
          {true, big_query.substr(3, 1000)},
          {true, big_query.substr(1003)},
          {false, result.substr(0, 7)},
          {false, result.substr(7)},
          {true, find("fe_sync")},
          {false, ready_idle}});

  // config: pgbouncer.ini texts.
  write("config", "pgbouncer.ini", R"ini(;; sample pgbouncer.ini
[databases]
app = host=127.0.0.1 port=5432 dbname=appdb pool_size=20 pool_mode=transaction
"odd name" = host=/var/run/postgresql user=forced password='p a s s' connect_query='SELECT 1'
reporting = host=db2 port=6543 max_db_connections=10 server_lifetime=30min application_name=rep
* = host=localhost client_encoding=UTF8 datestyle=ISO timezone=UTC

[users]
alice = pool_mode=session max_user_connections=5 query_timeout=10
bob = pool_size=3 reserve_pool=1 idle_transaction_timeout=250ms client_idle_timeout=1h

[pgbouncer]
listen_addr = *
listen_port = 6432
unix_socket_dir = /tmp
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin, alice
stats_users = stats
pool_mode = transaction
default_pool_size = 20
min_pool_size = 2
reserve_pool_size = 5
reserve_pool_timeout = 0.5
max_client_conn = 1000
server_reset_query = DISCARD ALL
server_check_delay = 30
server_lifetime = 3600
server_idle_timeout = 600
query_wait_timeout = 2min
client_login_timeout = 60s
ignore_startup_parameters = extra_float_digits, search_path
log_connections = 1
log_disconnections = no
verbose = 2
tcp_keepalive = on
workers = 2
client_tls_sslmode = disable
unknown_key = 1

[apps]
psql* = pool_mode=session
)ini");
  write("config", "minimal.ini", "[pgbouncer]\nlisten_port = 6000\n[databases]\ndb = host=h\n");
  write("config", "durations.ini",
        "[pgbouncer]\nquery_timeout = 1.5\nserver_lifetime = 2h\nclient_idle_timeout = 1d\n"
        "server_connect_timeout = 1500ms\nidle_transaction_timeout = 10us\nstats_period = 0\n"
        "server_check_delay = 2.5e1\n[databases]\nd = host=h server_lifetime=1e4ms\n");
  write("config", "errors.ini", "[pgbouncer]\nlisten_port = 70000\n");
  write("config", "quotes.ini",
        "[databases]\nq = host='a\\'b' dbname=x\\ y user = 'u'\n[users]\n\"we\"\"ird\" = "
        "pool_size=1\n");

  // auth_file: userlist.txt texts.
  write("auth_file", "userlist.txt",
        "\"alice\" \"secret\"\n"
        "\"bob\" \"md5" +
            auth::md5_password_hash("bob", "pw").substr(3) +
            "\"\n"
            "\"carol\" \"" +
            auth::format_scram_secret(auth::make_scram_secret("pw", "0123456789abcdef", 4096)) +
            "\"\n"
            "; comment\n# another\n\n"
            "\"we\"\"ird\" \"pass \"\"word\"\"\"\n");
  write("auth_file", "unterminated.txt", "\"alice\" \"secret\n");

  // base64
  write("base64", "empty", "");
  write("base64", "one", "QQ==");
  write("base64", "two", "QUI=");
  write("base64", "three", "QUJD");
  write("base64", "salt", auth::base64_encode(fx::kSalt));
  write("base64", "binary", std::string("\x00\xff\x10=\n+/", 7));

  // scram_secret
  write("scram_secret", "generated",
        auth::format_scram_secret(auth::make_scram_secret("pencil", "0123456789abcdef", 4096)));
  write("scram_secret", "fixture",
        auth::format_scram_secret(
            auth::make_scram_secret(fx::kPassword, fx::kSalt, fx::kIterations)));
  write("scram_secret", "md5", auth::md5_password_hash("alice", "secret"));
  write("scram_secret", "short_key", "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy");

  // scram_server: client-first-message, newline, client-final-message.
  write("scram_server", "exchange", scram.client_first + "\n" + scram.client_final);
  const Scram with_user = exchange("n,,", "alice");
  write("scram_server", "exchange_user", with_user.client_first + "\n" + with_user.client_final);
  const Scram y_header = exchange("y,,");
  write("scram_server", "exchange_y", y_header.client_first + "\n" + y_header.client_final);
  write("scram_server", "channel_binding", "p=tls-server-end-point,,n=,r=abc\nc=biws,r=abc,p=AAAA");

  // scram_client: server-first-message, newline, server-final-message.
  write("scram_client", "exchange", scram.server_first + "\n" + scram.server_final);
  write("scram_client", "error_final", scram.server_first + "\ne=invalid-proof");

  // admin_command: console queries.
  const std::pair<const char*, const char*> commands[] = {
      {"show_pools", "SHOW POOLS;"},
      {"show_help", "show help"},
      {"set_eq", "SET default_pool_size = 30"},
      {"set_to", "set query_timeout to '1.5'"},
      {"set_quoted", "SET server_reset_query = 'DISCARD ALL; SELECT ''x'''"},
      {"set_bad", "SET listen_port = 0"},
      {"pause_db", "PAUSE \"my db\";"},
      {"resume", "RESUME"},
      {"kill", "KILL app"},
      {"kill_client", "KILL_CLIENT 12345"},
      {"reconnect", "RECONNECT"},
      {"wait_close", "WAIT_CLOSE app"},
      {"reload", "RELOAD;"},
      {"shutdown", "SHUTDOWN WAIT_FOR_CLIENTS"},
      {"empty", " ; ;"},
  };
  for (const auto& [name, sql] : commands) write("admin_command", name, sql);

  // prepared: scripts of prepared_fuzz.cpp's steps. Byte 0: the mode (bits 0-3 == 15:
  // prepared statements disabled; bit 4: three clients; bits 6-7: max_prepared_statements - 1),
  // then steps: a step byte (low 3 bits: the step; the high 5: its argument) and, for a send,
  // the message kind and a byte choosing the name (bits 0-2) and the text / query (bits 3-5).
  // The encoding here mirrors prepared_fuzz.cpp's LLVMFuzzerTestOneInput.
  {
    enum Kind : std::uint8_t {
      kParse = 0,
      kBind,
      kDescribeStatement,
      kDescribePortal,
      kCloseStatement,
      kExecute,
      kSync,
      kQuery,
      kFlush = kExecute | 0x80
    };
    // Names: s1 s2 s3 a pgwarden_x pgwarden_missing <server name of "SELECT 1"> S1.
    // Texts: "SELECT 1", "SELECT 2", "SELECT $1"(int4), "SELECT $1"(text), "FAIL",
    // "EXECFAIL", "SELECT 3", "SELECT $1, $2". Queries: SELECT 1, DISCARD ALL,
    // DEALLOCATE ALL, FAIL.
    struct Script {
      std::string bytes;
      explicit Script(std::uint8_t mode) : bytes(1, static_cast<char>(mode)) {}
      Script& send(int client, Kind kind, int name = 0, int text = 0) {
        bytes += static_cast<char>(client << 3);
        bytes += static_cast<char>(kind);
        bytes += static_cast<char>(name | (text << 3));
        return *this;
      }
      Script& run(int server, int count = 8) {
        bytes += static_cast<char>(((server | ((count - 1) << 1)) << 3) | 4);
        return *this;
      }
      Script& deliver(int server, int count = 8) {
        bytes += static_cast<char>(((server | ((count - 1) << 1)) << 3) | 5);
        return *this;
      }
      Script& release(int client, int prefer) {
        bytes += static_cast<char>(((client | (prefer << 2)) << 3) | 6);
        return *this;
      }
      Script& capacity(int n) {
        bytes += static_cast<char>(0x80 | ((n - 1) << 3) | 6);
        return *this;
      }
      Script& drain(int client) {
        bytes += static_cast<char>((client << 3) | 7);
        return *this;
      }
      // Parse, Bind, Execute, Sync of `name` with `text`.
      Script& prepare_and_run(int client, int name, int text) {
        return send(client, kParse, name, text)
            .send(client, kBind, name)
            .send(client, kExecute)
            .send(client, kSync);
      }
    };
    const std::uint8_t capacity_2 = 0x40, capacity_1 = 0x00, three_clients = 0x10;
    write("prepared", "one_client", Script(capacity_2).prepare_and_run(0, 0, 0).drain(0).bytes);
    // The second client prepares the same text on the same server: the server is not asked.
    write("prepared", "shared_statement",
          Script(capacity_2)
              .prepare_and_run(0, 0, 0)
              .drain(0)
              .release(0, 1)
              .release(1, 0)
              .prepare_and_run(1, 3, 0)
              .drain(1)
              .bytes);
    // The next transaction on the other server: the Parse is put in front of the Bind.
    write("prepared", "switch_server",
          Script(capacity_2)
              .send(0, kParse, 0, 2)
              .send(0, kSync)
              .drain(0)
              .release(0, 1)
              .send(0, kBind, 0)
              .send(0, kExecute)
              .send(0, kDescribeStatement, 0)
              .send(0, kSync)
              .drain(0)
              .bytes);
    write("prepared", "eviction",
          Script(capacity_1)
              .send(0, kParse, 0, 0)
              .send(0, kParse, 1, 1)
              .send(0, kParse, 2, 6)
              .send(0, kSync)
              .send(0, kBind, 0)
              .send(0, kExecute)
              .send(0, kBind, 1)
              .send(0, kExecute)
              .send(0, kSync)
              .drain(0)
              .capacity(3)
              .release(0, 1)
              .prepare_and_run(0, 3, 7)
              .drain(0)
              .bytes);
    write("prepared", "pipeline_error",
          Script(capacity_2)
              .send(0, kParse, 0, 0)
              .send(0, kParse, 1, 4)
              .send(0, kBind, 1)
              .send(0, kExecute)
              .send(0, kSync)
              .send(0, kBind, 0)
              .send(0, kExecute)
              .send(0, kSync)
              .run(0, 3)
              .deliver(0, 2)
              .run(0)
              .deliver(0)
              .drain(0)
              .bytes);
    // The error is back before the rest of the batch is sent: it is skipped up to the Sync.
    write("prepared", "error_before_sync",
          Script(capacity_2)
              .send(0, kParse, 0, 4)
              .drain(0)
              .send(0, kBind, 0)
              .send(0, kQuery, 0, 0)
              .send(0, kParse, 1, 0)
              .send(0, kSync)
              .drain(0)
              .prepare_and_run(0, 0, 5)
              .drain(0)
              .bytes);
    write("prepared", "duplicate_and_close",
          Script(capacity_2)
              .send(0, kParse, 0, 0)
              .send(0, kSync)
              .drain(0)
              .send(0, kParse, 0, 1)
              .send(0, kBind, 0)
              .send(0, kSync)
              .drain(0)
              .send(0, kCloseStatement, 0)
              .send(0, kBind, 0)
              .send(0, kSync)
              .send(0, kBind, 4)
              .send(0, kDescribeStatement, 6)
              .send(0, kSync)
              .send(0, kCloseStatement, 5)
              .send(0, kDescribePortal)
              .send(0, kFlush)
              .send(0, kSync)
              .drain(0)
              .bytes);
    // Statements prepared behind a DISCARD ALL, then used by another client.
    write("prepared", "discard_pipelined",
          Script(capacity_2)
              .prepare_and_run(0, 0, 1)
              .drain(0)
              .send(0, kQuery, 0, 1)
              .prepare_and_run(0, 1, 0)
              .drain(0)
              .release(0, 1)
              .release(1, 0)
              .prepare_and_run(1, 0, 0)
              .prepare_and_run(1, 1, 1)
              .drain(1)
              .bytes);
    // A batch fails after the next one was sent, rewritten for the failed one's eviction.
    write("prepared", "failing_batch_behind",
          Script(capacity_1)
              .send(0, kParse, 3, 0)
              .send(0, kSync)
              .drain(0)
              .send(0, kBind, 1)
              .send(0, kParse, 2, 1)
              .send(0, kSync)
              .send(0, kBind, 3)
              .send(0, kExecute)
              .send(0, kSync)
              .drain(0)
              .release(0, 1)
              .release(1, 0)
              .prepare_and_run(1, 0, 0)
              .prepare_and_run(1, 1, 1)
              .drain(1)
              .bytes);
    write("prepared", "three_clients",
          Script(three_clients | capacity_2)
              .prepare_and_run(0, 0, 0)
              .prepare_and_run(1, 0, 1)
              .send(2, kParse, 0, 0)
              .run(0, 4)
              .deliver(0, 3)
              .run(1, 8)
              .drain(0)
              .release(0, 1)
              .drain(1)
              .release(1, 0)
              .prepare_and_run(2, 1, 0)
              .drain(2)
              .send(0, kBind, 0)
              .send(0, kExecute)
              .send(0, kQuery, 0, 2)
              .send(0, kSync)
              .drain(0)
              .bytes);
    write("prepared", "disabled",
          Script(0x0f)
              .prepare_and_run(0, 0, 0)
              .drain(0)
              .release(0, 1)
              .release(1, 0)
              .send(1, kBind, 0)
              .send(1, kExecute)
              .send(1, kSync)
              .drain(1)
              .bytes);
  }

  std::printf("wrote %d seed files under %s\n", g_written, g_root.string().c_str());
  return 0;
}
