#include "monitor.hpp"

#include <unistd.h>

#include <array>

#include "common/ipc/child.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"

namespace derpd::probe {

namespace {
constexpr std::array kHandlers = {
    ipc::handlerFor<&Monitor::onReload>(),
    ipc::handlerFor<&Monitor::onShutdown>(),
    ipc::handlerFor<&Monitor::onLogReopen>(),
};
static_assert(ipc::uniqueTypes(kHandlers));
}  // namespace

Result<void> Monitor::sendReady() {
  if (auto r = ch_.send(ipc::Role::Supervisor, ipc::Ready{::getpid()}); !r.ok()) {
    return makeError("control: Ready: " + r.error);
  }
  return okResult();
}

void Monitor::poll() {
  ipc::pollChildOrExit(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); },
      "monitor");
}

std::vector<ipc::Metric> Monitor::toIpc(const std::vector<FlatMetric>& metrics, size_t max, bool* cut) {
  std::vector<ipc::Metric> out;
  if (cut) *cut = false;
  for (const FlatMetric& f : metrics) {
    ipc::Metric m{f.name, labelBody(f.labels), f.value,
                  f.type == "gauge" ? ipc::MetricType::Gauge : ipc::MetricType::Counter};
    if (!ipc::isValidMetric(m)) continue;  // e.g. a hostname too long for a 200-byte label body
    if (out.size() >= max) {
      if (cut) *cut = true;
      break;
    }
    out.push_back(std::move(m));
  }
  return out;
}

void Monitor::report() {
  bool cut = false;
  ipc::MetricsReport rep{toIpc(prober_.flatMetrics(), kMaxReportMetrics, &cut)};
  if (cut && !cutLogged_) {
    LOG_WARN("more than {} probe metrics: derpd's /debug/varz shows the first {}", kMaxReportMetrics,
             kMaxReportMetrics);
    cutLogged_ = true;
  }
  ipc::SendResult r = ch_.send(ipc::Role::Supervisor, rep);
  if (!r.ok()) LOG_DEBUG("metrics report: {}", r.error);  // derpd busy: the next one supersedes it
  poll();  // a send may consume the fd's wake-up
}

Result<void> Monitor::onReload(ipc::Role, const ipc::Reload& msg) {
  if (!msg.logLevel.empty() && !log::setLevel(msg.logLevel)) {
    return makeError("Reload with unknown log level '" + msg.logLevel + "'");
  }
  LOG_INFO("reload: log level {}", msg.logLevel.empty() ? "unchanged" : msg.logLevel);
  return okResult();
}

Result<void> Monitor::onShutdown(ipc::Role, const ipc::Shutdown&) {
  LOG_INFO("Shutdown from derpd: stopping");
  stop_ = true;
  return okResult();
}

Result<void> Monitor::onLogReopen(ipc::Role, const ipc::LogReopen&) {
  log::reopen();
  return okResult();
}

}  // namespace derpd::probe
