// The generic prober under derpd-probe and the monitor role: named probes,
// each run on its own thread every interval (or continuously), with
// derpprobe's result bookkeeping (last start/end/latency/error, attempts and
// seconds by status, the last 10 results) and its Prometheus metrics
// (prober.go at the reference commit: interval_secs, start_secs, end_secs,
// latency_millis, result, attempts_total, seconds_total, plus a class's own).
// Runs unprivileged (derpd-probe, or the monitor child of derpd).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::probe {

using Clock = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;
using Labels = std::map<std::string, std::string>;

// What a probe function is given: when it must be done and whether it is
// being stopped. Probe functions poll stopping() between blocking steps,
// each bounded by left().
class ProbeContext {
 public:
  ProbeContext(Clock::time_point deadline, const std::atomic<bool>* stop) : deadline_(deadline), stop_(stop) {}
  Clock::time_point deadline() const { return deadline_; }
  bool stopping() const { return stop_ && stop_->load(std::memory_order_relaxed); }
  bool expired() const { return Clock::now() >= deadline_ || stopping(); }
  // Time left, at most `cap` (0 when expired).
  std::chrono::milliseconds left(std::chrono::milliseconds cap = std::chrono::hours(24)) const;

 private:
  Clock::time_point deadline_;
  const std::atomic<bool>* stop_;
};

// One sample of a probe class's own metrics (derp_bw_*, derp_qd_*).
struct MetricSample {
  enum class Kind { Counter, Gauge, Histogram };
  std::string name;  // without the namespace, e.g. "derp_bw_probe_size_bytes"
  std::string help;
  Kind kind = Kind::Gauge;
  double value = 0;                     // Counter, Gauge
  std::vector<double> bounds;           // Histogram: upper bounds, ascending
  std::vector<uint64_t> bucketCounts;   // Histogram: cumulative, one per bound
  uint64_t count = 0;                   // Histogram
  double sum = 0;                       // Histogram
};

struct ProbeClass {
  std::function<Result<void>(const ProbeContext&)> probe;
  std::string cls;     // the "class" label
  Labels labels;       // added to every metric of the probe
  std::function<std::vector<MetricSample>()> metrics;  // may be empty
};

enum class ProbeStatus { Unknown, Running, Failed, Succeeded };
const char* statusName(ProbeStatus s);

// A snapshot of one probe (prober.ProbeInfo).
struct ProbeInfo {
  std::string name;
  std::string cls;
  std::chrono::milliseconds interval{0};  // negative: continuous
  Labels labels;                          // every label, name and class included
  SysClock::time_point start{}, end{};    // epoch = never
  std::chrono::nanoseconds latency{0};    // of the last success; 0 after a failure
  ProbeStatus status = ProbeStatus::Unknown;
  std::string error;
  std::vector<bool> recentResults;                     // oldest first, at most 10
  std::vector<std::chrono::nanoseconds> recentLatencies;
  bool finished() const { return end.time_since_epoch().count() != 0; }
  // Succeeded, or a continuous probe running without an error (it only
  // ends when something fails).
  bool healthy() const {
    return status == ProbeStatus::Succeeded || (interval.count() < 0 && status == ProbeStatus::Running && error.empty());
  }
  double recentSuccessRatio() const;
  std::chrono::nanoseconds recentMedianLatency() const;
};

// One line of metrics for export: the Prometheus family (namespace applied),
// its label body and value. Histograms come expanded (_bucket, _sum, _count).
struct FlatMetric {
  std::string family;  // e.g. "derpprobe_result"
  std::string name;    // family, or family + "_bucket" / "_sum" / "_count"
  std::string help;
  std::string type;    // "counter", "gauge" or "histogram"
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by name (le last)
  double value = 0;
};

// Go strconv.FormatFloat(v, 'g', -1, 64), as Prometheus' text format prints
// sample values ("15", "0.018684773000000002", "1e+06", "1.795558282e+09").
std::string formatGoFloat(double v);
// Prometheus text exposition of flat metrics, families sorted by name and
// samples as client_golang orders them (fewer labels first, then by label
// values in label-name order).
std::string renderPrometheus(std::vector<FlatMetric> metrics);
// The label body `a="x",b="y"` with Prometheus escaping.
std::string labelBody(const std::vector<std::pair<std::string, std::string>>& labels);

class Prober;

class Probe {
 public:
  Probe(Prober& owner, std::string name, std::chrono::milliseconds interval, Labels labels, ProbeClass pc);
  ~Probe();
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  const std::string& name() const { return name_; }
  bool continuous() const { return interval_.count() < 0; }
  // Runs the probe now on the caller's thread (waits while another run of
  // it is in progress); returns the snapshot after it.
  ProbeInfo runNow();
  ProbeInfo info() const;
  void metrics(const std::string& ns, std::vector<FlatMetric>& out) const;

  // The thread: first run after the spread delay, then every interval
  // (continuous: again at once, or after -interval when a run failed).
  void start();
  // Asks the thread to stop and joins it (a running probe sees stopping()).
  void stop();
  bool done() const { return done_.load(); }

 private:
  void loop();
  ProbeInfo infoLocked() const;
  bool sleepFor(std::chrono::nanoseconds d);  // false when stopped

  Prober& owner_;
  const std::string name_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  const ProbeClass class_;
  const Labels labels_;  // every label: name, class, class labels, probe labels

  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;
  std::mutex runMu_;  // one run at a time (the loop or /debug/probe-run)

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  SysClock::time_point start_{}, end_{};
  Clock::time_point startMono_{};
  std::chrono::nanoseconds latency_{0};
  bool succeeded_ = false;
  std::string lastErr_;
  bool failedOnce_ = false;  // lastErr_ is meaningful
  uint64_t attemptsOk_ = 0, attemptsFail_ = 0;
  double secondsOk_ = 0, secondsFail_ = 0;
  bool attempted_ = false;
  std::deque<bool> recentResults_;
  std::deque<std::chrono::nanoseconds> recentLatencies_;
};

class Prober {
 public:
  struct Settings {
    bool spread = true;          // first run after a per-name delay in [0, interval)
    bool once = false;           // every probe runs once, then its thread ends
    std::string ns = "derpprobe";
  };
  explicit Prober(Settings s) : settings_(std::move(s)) {}
  ~Prober();  // stops every probe

  const Settings& settings() const { return settings_; }

  // Registers and starts a probe. An existing name is an error.
  Result<void> run(const std::string& name, std::chrono::milliseconds interval, const Labels& labels,
                   ProbeClass pc);
  // Stops (joins) and forgets a probe; false when it was not there.
  bool remove(const std::string& name);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  std::shared_ptr<Probe> find(const std::string& name) const;

  // Once mode: returns when every probe (including ones added meanwhile)
  // has finished its run.
  void wait();
  // Stops every probe; run() refuses new ones from then on (a probe that
  // adds probes may be running while this stops it).
  void stopAll();

  std::vector<ProbeInfo> infos() const;  // sorted by name
  std::vector<FlatMetric> flatMetrics() const;
  std::string prometheusText() const { return renderPrometheus(flatMetrics()); }

  // The first-run delay of a probe: FNV-1a of its name, in [0, interval).
  static std::chrono::milliseconds initialDelay(const std::string& name, std::chrono::milliseconds interval);

 private:
  Settings settings_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Probe>> probes_;  // guarded by mu_
  bool closed_ = false;                                   // guarded by mu_
};

}  // namespace derpd::probe
