// The monitor role: derpd-probe run by derpd (--control). Its end of the
// control plane: Ready, a MetricsReport of the probes' derpprobe_* metrics
// every 2 s (derpd shows them in /debug/varz), Reload (log level), Shutdown
// and LogReopen. Everything runs on main's thread. Included by derpd-probe's
// main only.
#pragma once

#include <chrono>

#include "common/ipc/channel.hpp"
#include "common/ipc/messages.hpp"
#include "probe/prober.hpp"

namespace derpd::probe {

class Monitor {
 public:
  static constexpr std::chrono::milliseconds kReportInterval{2000};
  // A report larger than this many metrics is cut (the policy caps a report
  // at 256 KiB); the cut is logged once.
  static constexpr size_t kMaxReportMetrics = 1000;

  Monitor(ipc::Channel& ch, Prober& prober) : ch_(ch), prober_(prober) {}

  Result<void> sendReady();
  // Reads what derpd sent; a peer fault logs and exits 1.
  void poll();
  void report();
  bool stopRequested() const { return stop_; }

  Result<void> onReload(ipc::Role from, const ipc::Reload& msg);
  Result<void> onShutdown(ipc::Role from, const ipc::Shutdown& msg);
  Result<void> onLogReopen(ipc::Role from, const ipc::LogReopen& msg);

  // The probes' metrics as control-plane metrics (histogram parts are
  // reported as counters; samples that break ipc::isValidMetric dropped).
  static std::vector<ipc::Metric> toIpc(const std::vector<FlatMetric>& metrics, size_t max, bool* cut);

 private:
  ipc::Channel& ch_;
  Prober& prober_;
  bool stop_ = false;
  bool cutLogged_ = false;
};

}  // namespace derpd::probe
