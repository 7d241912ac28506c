#include "service.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "common/ipc/child.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"

namespace derpd::mesh {

namespace {

constexpr std::array kHandlers = {
    ipc::handlerFor<&Service::onReload>(),
    ipc::handlerFor<&Service::onShutdown>(),
    ipc::handlerFor<&Service::onLogReopen>(),
    ipc::handlerFor<&Service::onVerifyRequest>(),
};
static_assert(ipc::uniqueTypes(kHandlers));

constexpr auto kReportInterval = std::chrono::seconds(2);

VerifierOptions verifierOptions(const Options& o) {
  VerifierOptions v;
  v.localApi = o.verifyClients;
  v.localApiSocket = o.verifyClientsSocket;
  v.url = o.verifyClientUrl;
  v.failOpen = o.verifyClientUrlFailOpen;
  return v;
}

}  // namespace

Service::Service(const Options& opts, ipc::Channel& ch)
    : opts_(opts), ch_(ch), verifier_(verifierOptions(opts)) {}

Service::~Service() {
  {
    std::lock_guard g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  resolver_.reset();
}

Result<void> Service::start() {
  if (posted_.fd() < 0) return makeError(std::string("eventfd: ") + std::strerror(errno));
  if (verifier_.enabled()) {
    for (int i = 0; i < opts_.workers; ++i) workers_.emplace_back([this] { worker(); });
    LOG_INFO("verifying clients:{}{} ({} workers)",
             opts_.verifyClients ? " tailscaled at " + opts_.verifyClientsSocket : "",
             opts_.verifyClientUrl.empty()
                 ? std::string()
                 : std::string(opts_.verifyClients ? "," : "") + " admission URL " + opts_.verifyClientUrl +
                       (opts_.verifyClientUrlFailOpen ? " (fail-open)" : " (fail-closed)"),
             opts_.workers);
  }
  auto hosts = net::parseMeshWith(opts_.meshWith);
  if (!hosts) return std::move(hosts).takeError();
  if (!hosts->empty()) {
    resolver_ = std::make_unique<net::MeshResolver>(std::move(*hosts), kResolveInterval,
                                                    [this](const ipc::MeshPeers& peers) {
      for (const ipc::MeshPeer& p : peers.peers) {
        if (!p.error.empty()) LOG_WARN("mesh peer {}: {}", p.host, p.error);
      }
      posted_.post([this, peers] {
        ipc::SendResult r = ch_.send(ipc::Role::Supervisor, peers);
        if (!r.ok()) LOG_WARN("MeshPeers: {}", r.error);
      });
    });
    resolver_->start();
  }
  return okResult();
}

void Service::worker() {
  for (;;) {
    Job job;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    Verdict v = verifier_.check(job.key, job.req.source);
    (v.allow ? allowed_ : denied_).fetch_add(1, std::memory_order_relaxed);
    LOG_DEBUG("{} from {}: {}{}{}", job.req.nodeKey, job.req.source, v.allow ? "allowed" : "denied",
              v.reason.empty() ? "" : ": ", v.reason);
    posted_.post([this, reply = ipc::VerifyReply{job.req.id, v.allow ? "allow" : "deny", v.reason}] {
      ipc::SendResult r = ch_.send(ipc::Role::Supervisor, reply);
      if (!r.ok()) LOG_WARN("VerifyReply: {}", r.error);
    });
  }
}

Result<void> Service::onVerifyRequest(ipc::Role, const ipc::VerifyRequest& msg) {
  auto key = crypto::NodePublic::parseText(msg.nodeKey);
  if (!key) return makeError("VerifyRequest with a bad node key: " + key.error());
  std::string why;
  if (!verifier_.enabled()) {
    why = "mesh-helper verifies no clients in this configuration";
  } else {
    std::lock_guard g(mu_);
    if (jobs_.size() < kMaxQueued) {
      jobs_.push_back(Job{msg, *key});
      cv_.notify_one();
      return okResult();
    }
    why = "mesh-helper has " + std::to_string(kMaxQueued) + " questions queued";
  }
  overloaded_.fetch_add(1, std::memory_order_relaxed);
  ipc::SendResult r = ch_.send(ipc::Role::Supervisor, ipc::VerifyReply{msg.id, "unavailable", why});
  if (!r.ok()) LOG_WARN("VerifyReply: {}", r.error);
  return okResult();
}

Result<void> Service::onReload(ipc::Role, const ipc::Reload& msg) {
  if (!msg.logLevel.empty() && !log::setLevel(msg.logLevel)) {
    return makeError("Reload with unknown log level '" + msg.logLevel + "'");
  }
  if (resolver_) resolver_->refresh();
  LOG_INFO("reload: log level {}; mesh hosts resolved again (verification settings need a restart)",
           msg.logLevel.empty() ? "unchanged" : msg.logLevel);
  return okResult();
}

Result<void> Service::onShutdown(ipc::Role, const ipc::Shutdown&) {
  LOG_INFO("Shutdown from derpd: stopping");
  stop_ = true;
  return okResult();
}

Result<void> Service::onLogReopen(ipc::Role, const ipc::LogReopen&) {
  log::reopen();  // stderr, which derpd copies into its log file: a no-op
  return okResult();
}

void Service::report() {
  ipc::MetricsReport r;
  if (verifier_.enabled()) {
    size_t queued;
    {
      std::lock_guard g(mu_);
      queued = jobs_.size();
    }
    r.metrics.push_back({"derpd_verify_answers", "verdict=\"allow\"", double(allowed_.load()), ipc::MetricType::Counter});
    r.metrics.push_back({"derpd_verify_answers", "verdict=\"deny\"", double(denied_.load()), ipc::MetricType::Counter});
    r.metrics.push_back(
        {"derpd_verify_answers", "verdict=\"unavailable\"", double(overloaded_.load()), ipc::MetricType::Counter});
    r.metrics.push_back({"derpd_verify_queued", "", double(queued), ipc::MetricType::Gauge});
  }
  ipc::SendResult s = ch_.send(ipc::Role::Supervisor, r);
  if (!s.ok()) LOG_DEBUG("metrics report: {}", s.error);
}

void Service::pollControl() {
  ipc::pollChildOrExit(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); },
      "mesh-helper");
}

int Service::run(int sigFd) {
  using Clock = std::chrono::steady_clock;
  auto nextReport = Clock::now();
  while (!stop_) {
    posted_.drain();
    pollControl();
    auto now = Clock::now();
    if (now >= nextReport) {
      report();
      nextReport = now + kReportInterval;
    }
    pollControl();  // a send may consume the fd's wake-up
    if (const char* sig = ipc::readStopSignal(sigFd)) {
      LOG_INFO("signal {}: stopping", sig);
      stop_ = true;
    }
    if (stop_) break;
    int timeout = int(std::clamp<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(nextReport - Clock::now()).count(), 0, 1000));
    std::array<pollfd, 3> pfds = {{{sigFd, POLLIN, 0}, {ch_.fd(), POLLIN, 0}, {posted_.fd(), POLLIN, 0}}};
    if (::poll(pfds.data(), pfds.size(), timeout) < 0 && errno != EINTR) {
      LOG_ERR("poll: {}", std::strerror(errno));
      return 1;
    }
  }
  LOG_INFO("stopped");
  return 0;
}

}  // namespace derpd::mesh
