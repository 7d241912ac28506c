#include "common/log/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <unistd.h>

#include <mutex>

namespace derpd::log {

namespace {
std::mutex g_mu;
std::string g_role;
std::string g_file;
std::string g_level;

std::string pattern(const std::string& role) {
  // ISO-8601 UTC with milliseconds, role[pid], level.
  return "%Y-%m-%dT%H:%M:%S.%eZ " + role + "[" + std::to_string(::getpid()) + "] %l: %v";
}

void install() {
  std::shared_ptr<spdlog::logger> lg;
  if (g_file.empty()) {
    lg = std::make_shared<spdlog::logger>(g_role, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  } else {
    lg = std::make_shared<spdlog::logger>(
        g_role, std::make_shared<spdlog::sinks::basic_file_sink_mt>(g_file, false));
  }
  lg->set_pattern(pattern(g_role), spdlog::pattern_time_type::utc);
  lg->set_level(spdlog::level::from_str(g_level));
  lg->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(lg);
}
}  // namespace

void init(const std::string& role, const std::string& level, const std::string& file) {
  std::lock_guard lk(g_mu);
  g_role = role;
  g_level = level;
  g_file = file;
  install();
}

void reopen() {
  std::lock_guard lk(g_mu);
  if (!g_file.empty()) install();
}

}  // namespace derpd::log
