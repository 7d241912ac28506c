// Logging: spdlog, one line per event, role and pid on each line:
//   2026-11-24T22:07:27.123Z derp-worker[1234] info: message
// Under systemd's journal (JOURNAL_STREAM names stderr, or log-format =
// journal) a line carries sd-daemon(3)'s priority prefix and no timestamp of
// its own, as journald stamps it:
//   <3>derp-worker[1234] error: message
// Lines at error level and above contain "] error: " / "] critical: ";
// integration tests fail on any such line they did not provoke.
// Included by every process.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace derpd::log {

enum class Format { Plain, Journal };

// What derpd sets for its children, whose stderr is a pipe to derpd: the
// format derpd chose ("plain" or "journal"), so every line matches.
inline constexpr const char* kFormatEnv = "DERPD_LOG_FORMAT";

// The format for a log-format setting ("auto", "plain", "journal"): auto is
// $DERPD_LOG_FORMAT when set, else journal when stderr is the journal's
// stream (and `toFile` is false), else plain.
Format resolveFormat(std::string_view setting, bool toFile);

// Sets up the default logger for `role`, writing to stderr, or appending to
// `file` when non-empty. level: trace|debug|info|warn|error. Without a
// format: resolveFormat("auto", ...).
void init(const std::string& role, const std::string& level, const std::string& file, Format format);
void init(const std::string& role, const std::string& level = "info",
          const std::string& file = "");
Format format();
// Reopens the log file (SIGUSR1); no-op when logging to stderr.
void reopen();
// Appends an already formatted line (a child's, read from its stderr pipe)
// to the same destination, without adding a prefix. `line` has no newline.
void writeRaw(std::string_view line);
// Changes the level of the default logger (a Reload). False for a bad name.
bool setLevel(const std::string& level);

// A bound on a log line that can repeat per connection, per datagram or per
// retry: the first one is logged at once, then at most one per `interval`,
// which says how many were left out in between. Thread-safe; one per call
// site (usually a function-local static).
//
//   static log::Repeats repeats(std::chrono::seconds(1));
//   if (auto skipped = repeats.admit()) LOG_WARN("... ({} more)", *skipped);
class Repeats {
 public:
  explicit Repeats(std::chrono::steady_clock::duration interval) : interval_(interval) {}
  // The count left out since the last admitted line when this one may be
  // logged now; nullopt when it must be left out.
  std::optional<uint64_t> admit(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  uint64_t leftOut() const;  // left out since the last admitted line

 private:
  const std::chrono::steady_clock::duration interval_;
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};  // guarded by mu_
  bool any_ = false;                               // guarded by mu_
  uint64_t skipped_ = 0;                           // guarded by mu_
};

}  // namespace derpd::log

#define LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LOG_ERR(...) ::spdlog::error(__VA_ARGS__)
// With the function name, as OpenSSH's fatal_f/error_f.
#define LOG_WARN_F(fmt, ...) ::spdlog::warn("{}: " fmt, __func__ __VA_OPT__(, ) __VA_ARGS__)
#define LOG_ERR_F(fmt, ...) ::spdlog::error("{}: " fmt, __func__ __VA_OPT__(, ) __VA_ARGS__)
