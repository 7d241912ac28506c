// Who may send which IPC message to whom, and how big its body may be.
// The channel checks every received message against this table *before* any
// handler runs (bgpd's "request not from RDE", OpenSSH's MON_PERMIT). A
// message with no row, from the wrong sender or over the size limit is a peer
// fault: the receiver logs role and type and exits(1); the supervisor, as
// receiver, kills and respawns the sender instead. Senders check it too, to
// catch their own bugs.
// Included by every process, at any privilege. docs/IPC.md mirrors this table.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>

#include "common/ipc/envelope.hpp"
#include "common/ipc/messages.hpp"
#include "common/ipc/role.hpp"
#include "common/util/result.hpp"

namespace derpd::ipc {

struct PolicyRule {
  MsgType type;
  Role sender;
  Role receiver;
  size_t maxBodyBytes;
};

namespace policy_detail {
using R = Role;
using T = MsgType;
inline constexpr size_t kTiny = 64;         // empty or a few scalars
inline constexpr size_t kSmall = 4096;      // a few short strings (Reload)
inline constexpr size_t kHello = 512;       // role + build id + version
inline constexpr size_t kReport = 256 * 1024;
inline constexpr size_t kSnapshot = kMaxBodyBytes;
inline constexpr size_t kCert = 512 * 1024;      // a chain (<= 256 KiB PEM) + key
inline constexpr size_t kChallenge = 64 * 1024;  // a token + a challenge cert and key
inline constexpr size_t kMeshPeers = 64 * 1024;  // -mesh-with's hosts and their addresses
}  // namespace policy_detail

// One row per (type, sender, receiver). Keep grouped as in messages.hpp.
inline constexpr auto kPolicy = [] {
  using namespace policy_detail;
  return std::array<PolicyRule, 51>{{
      // any -> any: Hello on every supervisor <-> child connection.
      {T::Hello, R::Supervisor, R::DerpWorker, kHello},
      {T::Hello, R::Supervisor, R::StunWorker, kHello},
      {T::Hello, R::Supervisor, R::CertAgent, kHello},
      {T::Hello, R::Supervisor, R::MeshHelper, kHello},
      {T::Hello, R::Supervisor, R::Monitor, kHello},
      {T::Hello, R::DerpWorker, R::Supervisor, kHello},
      {T::Hello, R::StunWorker, R::Supervisor, kHello},
      {T::Hello, R::CertAgent, R::Supervisor, kHello},
      {T::Hello, R::MeshHelper, R::Supervisor, kHello},
      {T::Hello, R::Monitor, R::Supervisor, kHello},

      // supervisor -> child
      {T::Reload, R::Supervisor, R::DerpWorker, kSmall},
      {T::Reload, R::Supervisor, R::StunWorker, kSmall},
      {T::Reload, R::Supervisor, R::CertAgent, kSmall},
      {T::Reload, R::Supervisor, R::MeshHelper, kSmall},
      {T::Reload, R::Supervisor, R::Monitor, kSmall},
      {T::Shutdown, R::Supervisor, R::DerpWorker, kTiny},
      {T::Shutdown, R::Supervisor, R::StunWorker, kTiny},
      {T::Shutdown, R::Supervisor, R::CertAgent, kTiny},
      {T::Shutdown, R::Supervisor, R::MeshHelper, kTiny},
      {T::Shutdown, R::Supervisor, R::Monitor, kTiny},
      {T::LogReopen, R::Supervisor, R::DerpWorker, kTiny},
      {T::LogReopen, R::Supervisor, R::StunWorker, kTiny},
      {T::LogReopen, R::Supervisor, R::CertAgent, kTiny},
      {T::LogReopen, R::Supervisor, R::MeshHelper, kTiny},
      {T::LogReopen, R::Supervisor, R::Monitor, kTiny},

      // child -> supervisor
      {T::Ready, R::DerpWorker, R::Supervisor, kTiny},
      {T::Ready, R::StunWorker, R::Supervisor, kTiny},
      {T::Ready, R::CertAgent, R::Supervisor, kTiny},
      {T::Ready, R::MeshHelper, R::Supervisor, kTiny},
      {T::Ready, R::Monitor, R::Supervisor, kTiny},
      {T::MetricsReport, R::DerpWorker, R::Supervisor, kReport},
      {T::MetricsReport, R::StunWorker, R::Supervisor, kReport},
      {T::MetricsReport, R::CertAgent, R::Supervisor, kReport},
      {T::MetricsReport, R::MeshHelper, R::Supervisor, kReport},
      {T::MetricsReport, R::Monitor, R::Supervisor, kReport},

      // derp-worker <-> supervisor
      {T::MetricsSnapshotRequest, R::DerpWorker, R::Supervisor, kSmall},  // up to 256 loops' ticks
      {T::MetricsSnapshotReply, R::Supervisor, R::DerpWorker, kSnapshot},

      // certificates: cert-agent -> supervisor -> derp-worker and back
      {T::CertUpdate, R::CertAgent, R::Supervisor, kCert},
      {T::CertUpdate, R::Supervisor, R::DerpWorker, kCert},
      {T::AcmeChallenge, R::CertAgent, R::Supervisor, kChallenge},
      {T::AcmeChallenge, R::Supervisor, R::DerpWorker, kChallenge},
      {T::AcmeChallengeReady, R::DerpWorker, R::Supervisor, kSmall},
      {T::AcmeChallengeReady, R::Supervisor, R::CertAgent, kSmall},
      {T::ManualCertFiles, R::Supervisor, R::CertAgent, kCert},
      {T::ManualCertFilesRequest, R::CertAgent, R::Supervisor, kSmall},

      // client verification and mesh peers: derp-worker <-> supervisor <-> mesh-helper
      {T::VerifyRequest, R::DerpWorker, R::Supervisor, kSmall},
      {T::VerifyRequest, R::Supervisor, R::MeshHelper, kSmall},
      {T::VerifyReply, R::MeshHelper, R::Supervisor, kSmall},
      {T::VerifyReply, R::Supervisor, R::DerpWorker, kSmall},
      {T::MeshPeers, R::MeshHelper, R::Supervisor, kMeshPeers},
      {T::MeshPeers, R::Supervisor, R::DerpWorker, kMeshPeers},
  }};
}();

constexpr const PolicyRule* findPolicy(MsgType type, Role sender, Role receiver) {
  for (const PolicyRule& r : kPolicy) {
    if (r.type == type && r.sender == sender && r.receiver == receiver) return &r;
  }
  return nullptr;
}

// Largest body `receiver` may be sent by anyone (0 if none).
constexpr size_t maxBodyFor(Role receiver) {
  size_t m = 0;
  for (const PolicyRule& r : kPolicy) {
    if (r.receiver == receiver && r.maxBodyBytes > m) m = r.maxBodyBytes;
  }
  return m;
}

// Table sanity, checked at compile time.
namespace policy_detail {
constexpr bool tableIsSane() {
  for (size_t i = 0; i < kPolicy.size(); ++i) {
    const PolicyRule& a = kPolicy[i];
    if (a.maxBodyBytes == 0 || a.maxBodyBytes > kMaxBodyBytes) return false;
    if (a.sender == a.receiver) return false;
    if (!isKnownMsgType(static_cast<uint16_t>(a.type))) return false;
    for (size_t j = i + 1; j < kPolicy.size(); ++j) {
      const PolicyRule& b = kPolicy[j];
      if (a.type == b.type && a.sender == b.sender && a.receiver == b.receiver) return false;
    }
  }
  return true;
}
static_assert(tableIsSane(), "kPolicy: duplicate row, self-send, unknown type or size out of range");
}  // namespace policy_detail

// ok, or why the message is a peer fault ("MetricsReport from stun-worker to
// cert-agent not allowed", "... body 70000 bytes > 64").
Result<void> checkPolicy(MsgType type, Role sender, Role receiver, size_t bodySize);

}  // namespace derpd::ipc
