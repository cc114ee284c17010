// Log setup: PgBouncer-like lines ("<time> [pid] LOG ...") to stderr and/or logfile.
#pragma once

#include <string>

namespace pgw {

struct LogOptions {
  bool quiet = false;         // -q: nothing on stderr
  int verbosity = 0;          // -v (repeatable): debug output
  std::string logfile;        // also write here when set
  bool config_debug = false;  // the configuration's `verbose` key
};
void setup_logging(const LogOptions& options);
// A new value of the `verbose` key (SET, RELOAD): debug output with it or with -v.
void set_config_debug(bool on);

}  // namespace pgw
