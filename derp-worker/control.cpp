#include "control.hpp"

#include <algorithm>
#include <array>

#include "common/ipc/child.hpp"
#include "admission.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"
#include "common/util/text.hpp"

namespace derpd::worker {

namespace {
constexpr std::array kHandlers = {
    ipc::handlerFor<&Control::onReload>(),
    ipc::handlerFor<&Control::onShutdown>(),
    ipc::handlerFor<&Control::onLogReopen>(),
    ipc::handlerFor<&Control::onSnapshot>(),
    ipc::handlerFor<&Control::onCertUpdate>(),
    ipc::handlerFor<&Control::onAcmeChallenge>(),
    ipc::handlerFor<&Control::onVerifyReply>(),
    ipc::handlerFor<&Control::onMeshPeers>(),
};
static_assert(ipc::uniqueTypes(kHandlers));
}  // namespace

Result<void> Control::poll() {
  return ipc::pollChild(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); });
}

void Control::requestSnapshot() {
  ipc::MetricsSnapshotRequest req;
  req.clients = uint64_t(std::max<int64_t>(0, int64_t(server_.gauges().currentConnections.load())));
  req.loopTicks = server_.loopTicks();
  ipc::SendResult r = ch_.send(ipc::Role::Supervisor, req, nextRequestId_++);
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

Result<void> Control::onCertUpdate(ipc::Role, const ipc::CertUpdate& msg) {
  const auto& store = server_.tls();
  if (!store) return makeError("CertUpdate to a derp-worker that serves plain HTTP");
  if (auto r = store->setCertificate(msg.chainPem, msg.keyPem); !r) {
    LOG_ERR("certificate serial {} ({}) refused: {}; still serving the previous one", msg.serial, msg.source,
            r.error());
    return okResult();
  }
  LOG_INFO("TLS certificate in service for new handshakes: serial {} ({}), valid until {}", msg.serial,
           msg.source, formatUtcSeconds(msg.notAfter));
  return okResult();
}

Result<void> Control::onAcmeChallenge(ipc::Role, const ipc::AcmeChallenge& msg) {
  const auto& store = server_.tls();
  if (!store) return makeError("AcmeChallenge to a derp-worker that serves plain HTTP");
  if (msg.type != "http-01" && msg.type != "tls-alpn-01")
    return makeError("AcmeChallenge of unknown type '" + msg.type + "'");
  if (!msg.present) {
    if (msg.type == "http-01") {
      store->clearHttpToken(msg.token);
    } else {
      store->clearAlpnChallenge(msg.identifier);
    }
    LOG_DEBUG("ACME {} challenge for {} withdrawn", msg.type, msg.identifier);
    return okResult();
  }
  ipc::AcmeChallengeReady ready{msg.token, true, ""};
  if (msg.type == "http-01") {
    store->setHttpToken(msg.token, msg.keyAuthorization);
  } else if (auto r = store->setAlpnChallenge(msg.identifier, msg.certPem, msg.keyPem); !r) {
    ready.ok = false;
    ready.error = r.error();
    LOG_ERR("ACME tls-alpn-01 challenge for {} refused: {}", msg.identifier, r.error());
  }
  if (ready.ok) LOG_INFO("ACME {} challenge for {} is being answered", msg.type, msg.identifier);
  ipc::SendResult sr = ch_.send(ipc::Role::Supervisor, ready);
  if (!sr.ok()) LOG_WARN("AcmeChallengeReady: {}", sr.error);
  return okResult();
}

Result<void> Control::onVerifyReply(ipc::Role, const ipc::VerifyReply& msg) {
  const auto& asker = server_.verifier();
  if (!asker) return makeError("VerifyReply to a derp-worker that asks no admission questions");
  if (msg.verdict != "allow" && msg.verdict != "deny" && msg.verdict != "unavailable") {
    return makeError("VerifyReply with unknown verdict '" + msg.verdict + "'");
  }
  asker->onReply(msg);
  return okResult();
}

Result<void> Control::onMeshPeers(ipc::Role, const ipc::MeshPeers& msg) {
  for (const ipc::MeshPeer& p : msg.peers) server_.setMeshAddresses(p);
  return okResult();
}

void Control::sendAdmissionQuestions() {
  const auto& asker = server_.verifier();
  if (!asker) return;
  for (ipc::VerifyRequest& q : asker->takeRequests()) {
    ipc::SendResult r = ch_.send(ipc::Role::Supervisor, q);
    if (!r.ok()) asker->onReply(ipc::VerifyReply{q.id, "unavailable", "control socket: " + r.error});
  }
}

}  // namespace derpd::worker
