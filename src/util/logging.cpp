#include "util/logging.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

namespace pgw {

namespace {
int command_line_verbosity = 0;  // -v counts whatever the configuration says
}  // namespace

void set_config_debug(bool on) {
  const bool debug = on || command_line_verbosity > 0;
  spdlog::default_logger()->set_level(debug ? spdlog::level::debug : spdlog::level::info);
}

void setup_logging(const LogOptions& options) {
  std::vector<spdlog::sink_ptr> sinks;
  if (!options.quiet) sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (!options.logfile.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.logfile));
  }
  auto logger = std::make_shared<spdlog::logger>("pgwarden", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%P] %^%l%$ %v");
  command_line_verbosity = options.verbosity;
  logger->set_level(options.verbosity > 0 || options.config_debug ? spdlog::level::debug
                                                                  : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace pgw
