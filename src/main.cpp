// pgwarden entry point: command line (PgBouncer's flags), configuration, logging, daemon mode.
// Everything else lives in the core library.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "app/runtime.hpp"
#include "config/config.hpp"
#include "util/logging.hpp"

namespace {

// The parents exit with _Exit: they share the child's stdio buffers and atexit handlers, which
// only the process that goes on may run.
void daemonize() {
  if (pid_t pid = ::fork(); pid < 0) {
    throw std::runtime_error("fork failed");
  } else if (pid > 0) {
    std::_Exit(0);
  }
  ::setsid();
  if (pid_t pid = ::fork(); pid < 0) {
    throw std::runtime_error("fork failed");
  } else if (pid > 0) {
    std::_Exit(0);
  }
  const int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    if (null_fd > 2) ::close(null_fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pgwarden: PostgreSQL connection pooler and leak guard"};
  bool daemon = false, quiet = false, version = false;
  int verbose = 0;
  std::string config_path;
  app.add_flag("-d,--daemon", daemon, "Run in the background (needs logfile; pidfile advised)");
  app.add_flag("-q,--quiet", quiet, "Do not log to stderr");
  app.add_flag("-v,--verbose", verbose, "More logging (repeatable)");
  app.add_flag("-V,--version", version, "Print the version and exit");
  app.add_option("config", config_path, "Configuration file in pgbouncer.ini format");
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::cout << "pgwarden " << PGWARDEN_VERSION << "\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "pgwarden: a configuration file is required\n" << app.help();
    return 1;
  }

  std::vector<pgw::config::Warning> warnings;
  pgw::config::Config config;
  pgw::config::Secrets secrets;
  try {
    config = pgw::config::load_file(config_path, warnings);
    if (!config.auth_file.empty()) secrets = pgw::config::load_auth_file(config.auth_file);
  } catch (const std::exception& e) {
    std::cerr << "pgwarden: " << e.what() << "\n";
    return 1;
  }
  if (daemon && config.logfile.empty()) {
    std::cerr
        << "pgwarden: -d needs logfile set in the configuration, or nothing would be logged\n";
    return 1;
  }
  if (daemon) daemonize();
  pgw::setup_logging({quiet || daemon, verbose, config.logfile, config.verbose});
  for (const auto& warning : warnings) spdlog::warn("{}", warning.text);
  if (!config.pidfile.empty()) std::ofstream(config.pidfile) << ::getpid() << "\n";

  int code = 1;
  const std::string pidfile = config.pidfile;
  try {
    // Torn down before main returns: the workers end what is left on them, then the Runtime
    // destroys its services, pools and loops in order (app/runtime.cpp).
    pgw::app::Runtime runtime(std::move(config), std::move(secrets));
    code = runtime.run();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    code = 1;
  }
  if (!pidfile.empty()) std::remove(pidfile.c_str());
  spdlog::shutdown();
  return code;
}
