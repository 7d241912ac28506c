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
std::shared_ptr<spdlog::logger> g_raw;  // same destination as the default logger, "%v" only

std::string pattern(const std::string& role) {
  // ISO-8601 UTC with milliseconds, role[pid], level.
  return "%Y-%m-%dT%H:%M:%S.%eZ " + role + "[" + std::to_string(::getpid()) + "] %l: %v";
}

void install() {
  // A sink owns its formatter, so the raw logger gets a sink of its own on
  // the same destination (both append whole lines).
  auto makeSink = []() -> spdlog::sink_ptr {
    if (g_file.empty()) return std::make_shared<spdlog::sinks::stderr_sink_mt>();
    return std::make_shared<spdlog::sinks::basic_file_sink_mt>(g_file, false);
  };
  auto lg = std::make_shared<spdlog::logger>(g_role, makeSink());
  lg->set_pattern(pattern(g_role), spdlog::pattern_time_type::utc);
  lg->set_level(spdlog::level::from_str(g_level));
  lg->flush_on(spdlog::level::trace);
  g_raw = std::make_shared<spdlog::logger>(g_role + "-raw", makeSink());
  g_raw->set_pattern("%v");
  g_raw->set_level(spdlog::level::trace);
  g_raw->flush_on(spdlog::level::trace);
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

void writeRaw(std::string_view line) {
  std::lock_guard lk(g_mu);
  if (g_raw) g_raw->info("{}", line);
}

bool setLevel(const std::string& level) {
  auto lv = spdlog::level::from_str(level);
  // from_str maps unknown names to "off"; only accept a real name.
  if (lv == spdlog::level::off && level != "off") return false;
  std::lock_guard lk(g_mu);
  g_level = level;
  spdlog::default_logger()->set_level(lv);
  return true;
}

}  // namespace derpd::log
