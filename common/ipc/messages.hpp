// The control-plane message catalogue: every IPC message type and payload.
// Payloads are msgpack maps (field name -> value) so fields can be added
// without breaking an older peer: unknown keys are ignored, missing keys keep
// their defaults. Who may send what, and how big, is in policy.hpp.
// Included by every process, at any privilege. IPC types only (STYLE.md §8).
#pragma once

#include <msgpack.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/ipc/role.hpp"

namespace derpd::ipc {

// Bumped on any incompatible change to the envelope or to an existing message.
// Both sides of a connection must agree (Hello); a mismatch is fatal.
inline constexpr uint16_t kIpcVersion = 1;

// Wire values are stable: never renumber, only append. The high byte groups by
// direction.
enum class MsgType : uint16_t {
  // any -> any: the first message on every connection.
  Hello = 0x0001,

  // supervisor -> child
  Reload = 0x0100,     // re-read config / key material; keep connections
  Shutdown = 0x0101,   // stop accepting, drain until the deadline, exit 0
  LogReopen = 0x0102,  // reopen log files (SIGUSR1)

  // child -> supervisor
  Ready = 0x0200,          // started and listening
  MetricsReport = 0x0201,  // periodic counters/gauges

  // derp-worker <-> supervisor (/debug/varz aggregation)
  MetricsSnapshotRequest = 0x0300,  // derp-worker -> supervisor
  MetricsSnapshotReply = 0x0301,    // supervisor -> derp-worker

  // certificates: cert-agent -> supervisor -> derp-worker, and the answer back.
  // The supervisor keeps the last CertUpdate and the challenges in force, and
  // hands them to a (re)started derp-worker when it says Ready.
  CertUpdate = 0x0400,         // a validated chain + key to serve
  AcmeChallenge = 0x0401,      // answer (or stop answering) an ACME challenge
  AcmeChallengeReady = 0x0402, // derp-worker -> supervisor -> cert-agent
  // manual certificates: derpd (root) reads the files, cert-agent validates.
  ManualCertFiles = 0x0403,        // supervisor -> cert-agent
  ManualCertFilesRequest = 0x0404, // cert-agent -> supervisor (its watch saw a change)

  // client verification and mesh peers: mesh-helper <-> supervisor <-> derp-worker.
  // The supervisor answers a VerifyRequest itself ("unavailable") while
  // mesh-helper is not ready, and keeps the last MeshPeers for a restarted
  // derp-worker.
  VerifyRequest = 0x0500,  // derp-worker -> supervisor -> mesh-helper
  VerifyReply = 0x0501,    // mesh-helper (or supervisor) -> derp-worker
  MeshPeers = 0x0502,      // mesh-helper -> supervisor -> derp-worker
};

// PascalCase name ("MetricsReport"), or "unknown" for a value not in MsgType.
constexpr std::string_view msgTypeName(MsgType t) {
  switch (t) {
    case MsgType::Hello: return "Hello";
    case MsgType::Reload: return "Reload";
    case MsgType::Shutdown: return "Shutdown";
    case MsgType::LogReopen: return "LogReopen";
    case MsgType::Ready: return "Ready";
    case MsgType::MetricsReport: return "MetricsReport";
    case MsgType::MetricsSnapshotRequest: return "MetricsSnapshotRequest";
    case MsgType::MetricsSnapshotReply: return "MetricsSnapshotReply";
    case MsgType::CertUpdate: return "CertUpdate";
    case MsgType::AcmeChallenge: return "AcmeChallenge";
    case MsgType::AcmeChallengeReady: return "AcmeChallengeReady";
    case MsgType::ManualCertFiles: return "ManualCertFiles";
    case MsgType::ManualCertFilesRequest: return "ManualCertFilesRequest";
    case MsgType::VerifyRequest: return "VerifyRequest";
    case MsgType::VerifyReply: return "VerifyReply";
    case MsgType::MeshPeers: return "MeshPeers";
  }
  return "unknown";
}
// True when `raw` is a MsgType value this build knows.
constexpr bool isKnownMsgType(uint16_t raw) {
  return msgTypeName(static_cast<MsgType>(raw)) != "unknown";
}
// Name of a raw wire value; "unknown(0x1234)" for a value not in MsgType.
std::string msgTypeName(uint16_t raw);

enum class MetricType : uint8_t { Counter, Gauge };  // wire: "counter" / "gauge"

constexpr std::string_view metricTypeName(MetricType t) {
  return t == MetricType::Counter ? "counter" : "gauge";
}

}  // namespace derpd::ipc

// msgpack adaptors: Role and MetricType travel as their names, so a value this
// build does not know is a decode error rather than an out-of-range enum.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {

  template <>
  struct convert<derpd::ipc::Role> {
    const msgpack::object& operator()(const msgpack::object& o, derpd::ipc::Role& v) const {
      if (o.type != msgpack::type::STR) throw msgpack::type_error();
      auto r = derpd::ipc::roleFromName(std::string_view(o.via.str.ptr, o.via.str.size));
      if (!r) throw msgpack::type_error();
      v = *r;
      return o;
    }
  };

  template <>
  struct pack<derpd::ipc::Role> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& pk, derpd::ipc::Role v) const {
      const std::string_view n = derpd::ipc::roleName(v);
      pk.pack_str(static_cast<uint32_t>(n.size()));
      pk.pack_str_body(n.data(), static_cast<uint32_t>(n.size()));
      return pk;
    }
  };

  template <>
  struct convert<derpd::ipc::MetricType> {
    const msgpack::object& operator()(const msgpack::object& o, derpd::ipc::MetricType& v) const {
      if (o.type != msgpack::type::STR) throw msgpack::type_error();
      const std::string_view s(o.via.str.ptr, o.via.str.size);
      if (s == "counter") {
        v = derpd::ipc::MetricType::Counter;
      } else if (s == "gauge") {
        v = derpd::ipc::MetricType::Gauge;
      } else {
        throw msgpack::type_error();
      }
      return o;
    }
  };

  template <>
  struct pack<derpd::ipc::MetricType> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& pk, derpd::ipc::MetricType v) const {
      const std::string_view n = derpd::ipc::metricTypeName(v);
      pk.pack_str(static_cast<uint32_t>(n.size()));
      pk.pack_str_body(n.data(), static_cast<uint32_t>(n.size()));
      return pk;
    }
  };

  }  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack

// A payload with no fields yet: an empty msgpack map (MSGPACK_DEFINE_MAP()
// does not accept an empty list). Decoding still insists on a map.
#define DERPD_IPC_DEFINE_EMPTY_MAP()                                  \
  template <typename Packer>                                          \
  void msgpack_pack(Packer& pk) const {                               \
    pk.pack_map(0);                                                   \
  }                                                                   \
  void msgpack_unpack(const msgpack::object& o) {                     \
    if (o.type != msgpack::type::MAP) throw msgpack::type_error();    \
  }

namespace derpd::ipc {

// ---- any -> any ----

// First message on every connection, in both directions. `role` must equal
// the sender's routing identity; `ipcVersion` must equal kIpcVersion.
struct Hello {
  static constexpr MsgType kType = MsgType::Hello;
  Role role = Role::Supervisor;
  std::string buildId;  // DERPD_VERSION + git rev; informational
  uint16_t ipcVersion = kIpcVersion;
  MSGPACK_DEFINE_MAP(role, MSGPACK_NVP("build_id", buildId), MSGPACK_NVP("ipc_version", ipcVersion));
  bool operator==(const Hello&) const = default;
};

// ---- supervisor -> child ----

// Sent on SIGHUP after the supervisor re-read the config file and the key
// material it names. Settings that need a new socket are not here: they need
// a restart of derpd (the supervisor says so in its log).
struct Reload {
  static constexpr MsgType kType = MsgType::Reload;
  std::string logLevel;  // trace|debug|info|warn|error; empty = unchanged
  std::string meshKey;   // derp-worker only: the -mesh-psk-file key (hex); empty = none
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("log_level", logLevel), MSGPACK_NVP("mesh_key", meshKey));
  bool operator==(const Reload&) const = default;
};

struct Shutdown {
  static constexpr MsgType kType = MsgType::Shutdown;
  uint32_t drainDeadlineMs = 0;  // 0: exit at once
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("drain_deadline_ms", drainDeadlineMs));
  bool operator==(const Shutdown&) const = default;
};

struct LogReopen {
  static constexpr MsgType kType = MsgType::LogReopen;
  DERPD_IPC_DEFINE_EMPTY_MAP()
  bool operator==(const LogReopen&) const = default;
};

// ---- child -> supervisor ----

struct Ready {
  static constexpr MsgType kType = MsgType::Ready;
  int32_t pid = 0;  // informational: the supervisor uses its own fork() result
  MSGPACK_DEFINE_MAP(pid);
  bool operator==(const Ready&) const = default;
};

struct Metric {
  std::string name;    // derper's name where derper has one, else "derpd_..."
  std::string labels;  // Prometheus label body without braces, e.g. `reason="x"`; may be empty
  double value = 0;
  MetricType type = MetricType::Counter;
  MSGPACK_DEFINE_MAP(name, labels, value, type);
  bool operator==(const Metric&) const = default;
};

// A Prometheus metric name ([A-Za-z0-9_], 1..200) and a label body of at
// most 200 bytes without a newline: what may be copied into /debug/varz.
bool isValidMetric(const Metric& m);

struct MetricsReport {
  static constexpr MsgType kType = MsgType::MetricsReport;
  std::vector<Metric> metrics;
  MSGPACK_DEFINE_MAP(metrics);
  bool operator==(const MetricsReport&) const = default;
};

// ---- derp-worker <-> supervisor ----

struct MetricsSnapshotRequest {
  static constexpr MsgType kType = MsgType::MetricsSnapshotRequest;
  // derp-worker's connected clients now (derp_current_connections), for
  // derpd's systemd STATUS= line.
  uint64_t clients = 0;
  // Each event loop's iteration count (a loop wakes at least once a second
  // when idle): derpd's child-watchdog kills a derp-worker whose loop stops
  // counting, even while its main thread still sends this.
  std::vector<uint64_t> loopTicks;
  MSGPACK_DEFINE_MAP(clients, MSGPACK_NVP("loop_ticks", loopTicks));
  bool operator==(const MetricsSnapshotRequest&) const = default;
};

struct RoleMetrics {
  Role role = Role::Supervisor;
  std::vector<Metric> metrics;
  MSGPACK_DEFINE_MAP(role, metrics);
  bool operator==(const RoleMetrics&) const = default;
};

// Answers MetricsSnapshotRequest with the same request_id. The supervisor's
// own entry (role derpd) carries the per-role up/restart counters.
struct MetricsSnapshotReply {
  static constexpr MsgType kType = MsgType::MetricsSnapshotReply;
  std::vector<RoleMetrics> roles;
  MSGPACK_DEFINE_MAP(roles);
  bool operator==(const MetricsSnapshotReply&) const = default;
};

// ---- certificates: cert-agent -> supervisor -> derp-worker ----

// The certificate derp-worker serves to new TLS handshakes from now on.
// cert-agent validated it (name, key, dates); derp-worker checks the key
// against the chain again when it builds its TLS context and keeps the old
// one when that fails. The supervisor does not look inside.
struct CertUpdate {
  static constexpr MsgType kType = MsgType::CertUpdate;
  std::string chainPem;  // leaf first, then the issuer chain
  std::string keyPem;    // the leaf's private key (PKCS#8 PEM)
  std::string serial;    // the leaf's serial, hex, for logs
  int64_t notAfter = 0;  // unix seconds, for logs and metrics
  std::string source;    // "manual <file>", "self-signed", "acme", for logs
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("chain_pem", chainPem), MSGPACK_NVP("key_pem", keyPem), serial,
                     MSGPACK_NVP("not_after", notAfter), source);
  bool operator==(const CertUpdate&) const = default;
};

// Start (present = true) or stop answering one ACME challenge.
//   http-01: port 80 answers GET /.well-known/acme-challenge/<token> with
//            keyAuthorization.
//   tls-alpn-01: a TLS handshake offering ALPN "acme-tls/1" with SNI
//            `identifier` gets certPem/keyPem (RFC 8737) and nothing else.
struct AcmeChallenge {
  static constexpr MsgType kType = MsgType::AcmeChallenge;
  bool present = true;
  std::string type;        // "http-01" or "tls-alpn-01"
  std::string identifier;  // the name being validated
  std::string token;
  std::string keyAuthorization;  // http-01
  std::string certPem;           // tls-alpn-01
  std::string keyPem;            // tls-alpn-01
  MSGPACK_DEFINE_MAP(present, type, identifier, token, MSGPACK_NVP("key_authorization", keyAuthorization),
                     MSGPACK_NVP("cert_pem", certPem), MSGPACK_NVP("key_pem", keyPem));
  bool operator==(const AcmeChallenge&) const = default;
};

// derp-worker's answer to AcmeChallenge{present = true}: it now answers the
// challenge (ok), or could not (error). cert-agent tells the CA to validate
// only after ok.
struct AcmeChallengeReady {
  static constexpr MsgType kType = MsgType::AcmeChallengeReady;
  std::string token;
  bool ok = false;
  std::string error;
  MSGPACK_DEFINE_MAP(token, ok, error);
  bool operator==(const AcmeChallengeReady&) const = default;
};

// certmode manual: the bytes of <certdir>/<stem>.crt and .key as derpd read
// them with its own privileges (operators' key files are often root:root
// 0600, which cert-user cannot open). cert-agent parses and validates them as
// if it had read them itself; derpd only reads. Sent when cert-agent says
// Ready, on every SIGHUP, and in answer to ManualCertFilesRequest.
struct ManualCertFile {
  std::string path;   // as read, for logs
  std::string bytes;  // the contents (at most kMaxManualCertFile)
  bool missing = false;  // ENOENT
  std::string error;  // why it could not be read (empty: read, or missing)
  MSGPACK_DEFINE_MAP(path, bytes, missing, error);
  bool operator==(const ManualCertFile&) const = default;
};
inline constexpr size_t kMaxManualCertFile = 192 * 1024;

struct ManualCertFiles {
  static constexpr MsgType kType = MsgType::ManualCertFiles;
  std::string reason;  // "start", "reload", "certificate files changed", for logs
  ManualCertFile crt;
  ManualCertFile key;
  MSGPACK_DEFINE_MAP(reason, crt, key);
  bool operator==(const ManualCertFiles&) const = default;
};

// cert-agent's inotify watch on certdir saw the files change: read them again.
struct ManualCertFilesRequest {
  static constexpr MsgType kType = MsgType::ManualCertFilesRequest;
  std::string reason;
  MSGPACK_DEFINE_MAP(reason);
  bool operator==(const ManualCertFilesRequest&) const = default;
};

// ---- client verification and mesh peers ----

// May this client connect (PROTOCOL.md §5.9)? derp-worker asks after a
// ClientInfo that is not a mesh peer's, when -verify-clients or
// -verify-client-url is set; the connection waits (its loop does not).
struct VerifyRequest {
  static constexpr MsgType kType = MsgType::VerifyRequest;
  uint64_t id = 0;       // derp-worker's, echoed in the reply
  std::string nodeKey;   // "nodekey:<hex>"
  std::string source;    // the client's IP address as text
  MSGPACK_DEFINE_MAP(id, MSGPACK_NVP("node_key", nodeKey), source);
  bool operator==(const VerifyRequest&) const = default;
};

// The answer. verdict: "allow", "deny", or "unavailable" (mesh-helper is not
// running or has too much pending: derp-worker's fail-open setting decides).
struct VerifyReply {
  static constexpr MsgType kType = MsgType::VerifyReply;
  uint64_t id = 0;
  std::string verdict;
  std::string reason;  // for derp-worker's log line
  MSGPACK_DEFINE_MAP(id, verdict, reason);
  bool operator==(const VerifyReply&) const = default;
};

// One -mesh-with entry as mesh-helper resolved it.
struct MeshPeer {
  std::string host;                // as configured: "name", "name:port", "[v6]:port"
  std::vector<std::string> addrs;  // "ip:port" / "[ip]:port" to dial, in resolver order
  std::string error;               // why addrs is empty
  MSGPACK_DEFINE_MAP(host, addrs, error);
  bool operator==(const MeshPeer&) const = default;
};

// Every -mesh-with entry's addresses, sent whenever one changes. derp-worker
// (chrooted, no resolver) dials only what this says.
struct MeshPeers {
  static constexpr MsgType kType = MsgType::MeshPeers;
  std::vector<MeshPeer> peers;
  MSGPACK_DEFINE_MAP(peers);
  bool operator==(const MeshPeers&) const = default;
};

// Every payload type, for tests, the fuzzer and docs/IPC.md.
using AllMessages = std::tuple<Hello, Reload, Shutdown, LogReopen, Ready, MetricsReport,
                               MetricsSnapshotRequest, MetricsSnapshotReply, CertUpdate,
                               AcmeChallenge, AcmeChallengeReady, ManualCertFiles,
                               ManualCertFilesRequest, VerifyRequest, VerifyReply, MeshPeers>;

}  // namespace derpd::ipc
