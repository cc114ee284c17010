// Log setup: PgBouncer-like lines ("<time> [pid] LOG ...") to stderr and/or logfile.
#pragma once

#include <string>

namespace pgw {

struct LogOptions {
  bool quiet = false;    // -q: nothing on stderr
  int verbosity = 0;     // -v (repeatable): debug output
  std::string logfile;   // also write here when set
};
void setup_logging(const LogOptions& options);

}  // namespace pgw
