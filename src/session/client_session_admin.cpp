// The parts of ClientSession that serve the admin console and describe the session to it.
// The console itself (commands, result sets) lives in src/admin/.
#include <spdlog/spdlog.h>

#include "admin/console.hpp"
#include "session/client_session.hpp"

namespace pgw::session {

asio::awaitable<bool> ClientSession::welcome_admin(std::string& greeting) {
  // What PgBouncer's console reports: enough for psql, psycopg and JDBC to get going.
  std::string& out = greeting;
  proto::MessageWriter writer(out);
  const std::string* encoding = params_.find("client_encoding");
  writer.parameter_status("server_version", "1.25.0/bouncer");
  writer.parameter_status("server_encoding", "UTF8");
  writer.parameter_status("client_encoding", encoding ? *encoding : "UTF8");
  writer.parameter_status("DateStyle", "ISO");
  writer.parameter_status("TimeZone", "UTC");
  writer.parameter_status("integer_datetimes", "on");
  writer.parameter_status("standard_conforming_strings", "on");
  writer.parameter_status("application_name", application_name_);
  shared_.cancels.add(this);  // sets cancel_key_
  registered_ = true;
  writer.backend_key_data(cancel_key_.pid, cancel_key_.secret);
  writer.ready_for_query(proto::TransactionStatus::idle);
  if (!co_await write_client(out)) co_return false;
  state_ = ClientState::active;
  state_since_ = Clock::now();
  if (config_->log_connections) {
    spdlog::info("C-{}: {}/{}@{}:{} login attempt: db={} user={} (admin console, {})", id_,
                 database_, user_, peer_addr_, peer_port_, database_, user_,
                 admin_full_access_ ? "admin" : "stats");
  }
  co_return true;
}

asio::awaitable<void> ClientSession::serve_admin() {
  // The login reader keeps whatever the client pipelined after its password.
  admin::Console console(shared_, client_, *login_reader_, {id_, user_, admin_full_access_});
  auto reason = co_await console.run();
  end_texts().disconnect_reason = std::move(reason);
  client_gone_ = true;
}

SessionInfo ClientSession::info() const {
  SessionInfo info;
  info.id = id_;
  info.state = state_;
  info.admin = admin_;
  info.user = user_;
  info.database = database_;
  info.application_name = application_name_;
  info.addr = peer_addr_;
  info.port = peer_port_;
  std::tie(info.local_addr, info.local_port) = net::local_of(client_.fd());
  info.connect_time = connect_time_;
  info.request_time = request_time_;
  info.state_since = state_since_;
  info.pool = pool_;
  info.ptr = reinterpret_cast<std::uintptr_t>(this);
  if (server_ && pool_) {
    // Leased: "active" while it carries client traffic; "tested" while the session runs a
    // check, reset or ROLLBACK on it.
    info.server = pool::describe_server(
        *server_, state_ == ClientState::active ? "active" : "tested", pool_->fingerprint());
    info.server->link = info.ptr;
  }
  if (lease_.held && server_) info.lease = lease_info();
  info.unreported = lease_.tally - reported_;
  return info;
}

}  // namespace pgw::session
