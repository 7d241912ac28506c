#include "common/log/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace derpd::log {

namespace {
std::mutex g_mu;
std::string g_role;
std::string g_file;
std::string g_level;
Format g_format = Format::Plain;
std::shared_ptr<spdlog::logger> g_raw;  // same destination as the default logger, "%v" only

// %* : sd-daemon(3)'s "<N>" priority prefix, which journald strips and keeps
// as the line's priority (journalctl -p err shows the errors).
class PriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char* p = "<6>";
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: p = "<7>"; break;
      case spdlog::level::info: p = "<6>"; break;
      case spdlog::level::warn: p = "<4>"; break;
      case spdlog::level::err: p = "<3>"; break;
      case spdlog::level::critical: p = "<2>"; break;
      default: break;
    }
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

// Said once until a file works again: the log file could not be opened or
// written, and lines go to stderr instead.
std::atomic<bool> g_fellBack{false};

// log-file: appends whole lines; when the file cannot be opened (a reopen
// after the directory went away) or written (a full disk: ENOSPC), this line
// and every later one go to stderr, with one line saying so. A log fault
// never stops a process or blocks it: relaying goes on.
class FileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  FileSink(std::string path, std::string role) : path_(std::move(path)), role_(std::move(role)) {
    f_ = std::fopen(path_.c_str(), "ae");  // append, O_CLOEXEC
    if (!f_) {
      fallBack(errno, "cannot open it");
    } else {
      g_fellBack.store(false);
    }
  }
  ~FileSink() override {
    if (f_) std::fclose(f_);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    if (f_) {
      if (std::fwrite(buf.data(), 1, buf.size(), f_) == buf.size() && std::fflush(f_) == 0) return;
      const int e = errno;
      std::fclose(f_);
      f_ = nullptr;
      fallBack(e, "cannot write to it");
    }
    std::fwrite(buf.data(), 1, buf.size(), stderr);
    std::fflush(stderr);
  }
  void flush_() override {
    if (f_) std::fflush(f_);
  }

 private:
  void fallBack(int e, const char* what) {
    if (g_fellBack.exchange(true)) return;
    // As the other lines look: "<3>" under the journal, else a UTC timestamp.
    char prefix[64] = "<3>";
    if (g_format != Format::Journal) {
      timespec ts{};
      ::clock_gettime(CLOCK_REALTIME, &ts);
      std::tm tm{};
      gmtime_r(&ts.tv_sec, &tm);
      char t[32];
      std::strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
      std::snprintf(prefix, sizeof prefix, "%s.%03ldZ ", t, long(ts.tv_nsec / 1000000));
    }
    std::fprintf(stderr, "%s%s[%d] error: log file %s: %s (%s); logging to stderr until it is reopened (SIGUSR1)\n",
                 prefix, role_.c_str(), int(::getpid()), path_.c_str(), what, std::strerror(e));
    std::fflush(stderr);
  }
  const std::string path_;
  const std::string role_;
  std::FILE* f_ = nullptr;
};

std::unique_ptr<spdlog::formatter> makeFormatter(const std::string& role) {
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  const std::string who = role + "[" + std::to_string(::getpid()) + "] %l: %v";
  if (g_format == Format::Journal) {
    // journald stamps each line itself.
    f->add_flag<PriorityFlag>('*').set_pattern("%*" + who);
  } else {
    // ISO-8601 UTC with milliseconds, role[pid], level.
    f->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ " + who);
  }
  return f;
}

void install() {
  // A sink owns its formatter, so the raw logger gets a sink of its own on
  // the same destination (both append whole lines).
  auto makeSink = []() -> spdlog::sink_ptr {
    if (g_file.empty()) return std::make_shared<spdlog::sinks::stderr_sink_mt>();
    return std::make_shared<FileSink>(g_file, g_role);
  };
  auto lg = std::make_shared<spdlog::logger>(g_role, makeSink());
  lg->set_formatter(makeFormatter(g_role));
  lg->set_level(spdlog::level::from_str(g_level));
  lg->flush_on(spdlog::level::trace);
  g_raw = std::make_shared<spdlog::logger>(g_role + "-raw", makeSink());
  g_raw->set_pattern("%v");
  g_raw->set_level(spdlog::level::trace);
  g_raw->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(lg);
}

// JOURNAL_STREAM is "<dev>:<inode>" of the stream systemd connected stdout
// and stderr to; it counts only while stderr is still that stream (a child
// whose stderr was redirected inherits the variable but not the journal).
bool stderrIsJournal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}
}  // namespace

Format resolveFormat(std::string_view setting, bool toFile) {
  if (setting == "journal") return Format::Journal;
  if (setting == "plain") return Format::Plain;
  if (const char* env = std::getenv(kFormatEnv)) {
    std::string_view e(env);
    if (e == "journal") return Format::Journal;
    if (e == "plain") return Format::Plain;
  }
  return !toFile && stderrIsJournal() ? Format::Journal : Format::Plain;
}

void init(const std::string& role, const std::string& level, const std::string& file, Format format) {
  std::lock_guard lk(g_mu);
  g_role = role;
  g_level = level;
  g_file = file;
  g_format = format;
  install();
}

void init(const std::string& role, const std::string& level, const std::string& file) {
  init(role, level, file, resolveFormat("auto", !file.empty()));
}

Format format() {
  std::lock_guard lk(g_mu);
  return g_format;
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

std::optional<uint64_t> Repeats::admit(std::chrono::steady_clock::time_point now) {
  std::lock_guard lk(mu_);
  if (any_ && now - last_ < interval_) {
    ++skipped_;
    return std::nullopt;
  }
  any_ = true;
  last_ = now;
  const uint64_t n = skipped_;
  skipped_ = 0;
  return n;
}

uint64_t Repeats::leftOut() const {
  std::lock_guard lk(mu_);
  return skipped_;
}

}  // namespace derpd::log
