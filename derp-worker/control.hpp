// derp-worker's end of derpd's control plane (docs/IPC.md): the handlers for
// what the supervisor sends, and the periodic metrics snapshot request that
// feeds /debug/varz. Runs on derp-worker's main thread, never on an event
// loop. Included by derp-worker's main only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "common/ipc/channel.hpp"
#include "common/ipc/messages.hpp"
#include "server.hpp"

namespace derpd::worker {

class Control {
 public:
  Control(ipc::Channel& channel, Server& server) : ch_(channel), server_(server) {}

  // Reads what is queued; an error is a peer fault (log it and exit 1).
  Result<void> poll();
  // Asks for the other roles' metrics (every kSnapshotInterval).
  void requestSnapshot();
  // Set once a Shutdown arrived: the drain deadline it asked for.
  std::optional<std::chrono::milliseconds> shutdownRequested() const { return shutdown_; }

  static constexpr std::chrono::milliseconds kSnapshotInterval{1000};

  Result<void> onReload(ipc::Role from, const ipc::Reload& msg);
  Result<void> onShutdown(ipc::Role from, const ipc::Shutdown& msg);
  Result<void> onLogReopen(ipc::Role from, const ipc::LogReopen& msg);
  Result<void> onSnapshot(ipc::Role from, const ipc::MetricsSnapshotReply& msg);
  // Certificates from cert-agent (relayed by derpd). A certificate or
  // challenge that OpenSSL refuses is logged and answered, not a peer fault:
  // the old certificate stays in service.
  Result<void> onCertUpdate(ipc::Role from, const ipc::CertUpdate& msg);
  Result<void> onAcmeChallenge(ipc::Role from, const ipc::AcmeChallenge& msg);
  // mesh-helper's answers (relayed by derpd).
  Result<void> onVerifyReply(ipc::Role from, const ipc::VerifyReply& msg);
  Result<void> onMeshPeers(ipc::Role from, const ipc::MeshPeers& msg);
  // Sends the admission questions the loops queued (AdmissionAsker).
  void sendAdmissionQuestions();

 private:
  ipc::Channel& ch_;
  Server& server_;
  std::optional<std::chrono::milliseconds> shutdown_;
  uint64_t nextRequestId_ = 1;
};

}  // namespace derpd::worker
