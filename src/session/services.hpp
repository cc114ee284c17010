// What a client session uses of the rest of the process, each a service of its own, owned by
// the application (src/app) and handed to every session. A session part reaches only what it
// needs through these: the login the configuration, admission, cancels, the pools, the
// SCRAM cache and the LDAP checks; the relay the pools and the leak book; the session's end the
// registry and the application monitor.
#pragma once

#include "auth/ldap.hpp"
#include "auth/secret_cache.hpp"
#include "config/config_store.hpp"
#include "pool/pool.hpp"
#include "session/admission.hpp"
#include "session/apps.hpp"
#include "session/cancel_registry.hpp"
#include "session/console_service.hpp"
#include "session/lease.hpp"
#include "session/session_registry.hpp"

namespace pgw::session {

struct SessionServices {
  config::ConfigStore& config;
  SessionRegistry& sessions;
  ClientAdmission& admission;
  CancelRegistry& cancels;
  pool::PoolManager& pools;
  auth::ScramSecretCache& scram_secrets;
  LeakBook& leaks;                // leak guard: per-application counters and the recent leak events
  AppMonitor& apps;               // per-application totals, growth alarm, pool health rounds
  ConsoleService& console;        // what a console session runs
  net::TlsStore& tls;             // client_tls_* (the login's handshake) and server_tls_*
  auth::LdapAuthenticator& ldap;  // the ldap method's checks, off the workers' threads
};

}  // namespace pgw::session
