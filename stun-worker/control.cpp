#include "control.hpp"

#include <unistd.h>

#include <array>

#include "common/ipc/child.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"

namespace derpd::stun_worker {

namespace {
constexpr std::array kHandlers = {
    ipc::handlerFor<&Control::onReload>(),
    ipc::handlerFor<&Control::onShutdown>(),
    ipc::handlerFor<&Control::onLogReopen>(),
};
static_assert(ipc::uniqueTypes(kHandlers));
}  // namespace

Result<void> Control::attach() {
  if (auto r = server_.addFd(ch_.fd(), [this](uint32_t) { poll(); }); !r) return r;
  server_.setTick(kReportInterval, [this] { report(); });
  if (auto r = ch_.send(ipc::Role::Supervisor, ipc::Ready{::getpid()}); !r.ok()) {
    return makeError("control: Ready: " + r.error);
  }
  report();
  return okResult();
}

void Control::poll() {
  ipc::pollChildOrExit(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); },
      "stun-worker");
}

void Control::report() {
  ipc::SendResult r = ch_.send(ipc::Role::Supervisor, ipc::MetricsReport{server_.metrics()});
  // A full queue: derpd is busy; the next report supersedes this one.
  if (!r.ok()) LOG_DEBUG("metrics report: {}", r.error);
  poll();  // a send may consume the fd's wake-up
}

Result<void> Control::onReload(ipc::Role, const ipc::Reload& msg) {
  if (!msg.logLevel.empty() && !log::setLevel(msg.logLevel)) {
    return makeError("Reload with unknown log level '" + msg.logLevel + "'");
  }
  LOG_INFO("reload: log level {}", msg.logLevel.empty() ? "unchanged" : msg.logLevel);
  return okResult();
}

Result<void> Control::onShutdown(ipc::Role, const ipc::Shutdown&) {
  // Nothing to drain: STUN is one datagram each way.
  LOG_INFO("Shutdown from derpd: stopping");
  server_.stop();
  return okResult();
}

Result<void> Control::onLogReopen(ipc::Role, const ipc::LogReopen&) {
  log::reopen();  // stderr, which derpd copies into its log file: a no-op
  return okResult();
}

}  // namespace derpd::stun_worker
