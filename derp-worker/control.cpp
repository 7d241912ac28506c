#include "control.hpp"

#include <array>

#include "common/ipc/child.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"

namespace derpd::worker {

namespace {
constexpr std::array kHandlers = {
    ipc::handlerFor<&Control::onReload>(),
    ipc::handlerFor<&Control::onShutdown>(),
    ipc::handlerFor<&Control::onLogReopen>(),
    ipc::handlerFor<&Control::onSnapshot>(),
};
static_assert(ipc::uniqueTypes(kHandlers));
}  // namespace

Result<void> Control::poll() {
  return ipc::pollChild(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); });
}

void Control::requestSnapshot() {
  ipc::SendResult r = ch_.send(ipc::Role::Supervisor, ipc::MetricsSnapshotRequest{}, nextRequestId_++);
  // A full queue means derpd is busy: the next request supersedes this one.
  if (!r.ok()) LOG_DEBUG("metrics snapshot request: {}", r.error);
}

Result<void> Control::onReload(ipc::Role, const ipc::Reload& msg) {
  if (!msg.logLevel.empty() && !log::setLevel(msg.logLevel)) {
    return makeError("Reload with unknown log level '" + msg.logLevel + "'");
  }
  if (!msg.meshKey.empty()) {
    if (auto k = crypto::parseMeshKey(msg.meshKey); !k) return makeError("Reload mesh key: " + k.error());
  }
  server_.setMeshKey(msg.meshKey);
  LOG_INFO("reload: log level {}, mesh key {}", msg.logLevel.empty() ? "unchanged" : msg.logLevel,
           msg.meshKey.empty() ? "none" : "set");
  return okResult();
}

Result<void> Control::onShutdown(ipc::Role, const ipc::Shutdown& msg) {
  shutdown_ = std::chrono::milliseconds(msg.drainDeadlineMs);
  return okResult();
}

Result<void> Control::onLogReopen(ipc::Role, const ipc::LogReopen&) {
  // derp-worker logs to stderr, which derpd reads and writes to its log file;
  // this is for a log file of our own, if one is ever configured.
  log::reopen();
  return okResult();
}

Result<void> Control::onSnapshot(ipc::Role, const ipc::MetricsSnapshotReply& msg) {
  for (const ipc::RoleMetrics& rm : msg.roles) {
    for (const ipc::Metric& m : rm.metrics) {
      if (!ipc::isValidMetric(m)) return makeError("MetricsSnapshotReply with a bad metric name or labels");
    }
  }
  server_.setPeerMetrics(msg.roles);
  return okResult();
}

}  // namespace derpd::worker
