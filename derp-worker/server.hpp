// derp-worker's server: the listeners, the event loops (one thread each),
// the registry and the key material. Included by derp-worker only.
#pragma once

#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/ipc/messages.hpp"
#include "bootstrap_dns.hpp"
#include "http_handlers.hpp"
#include "loop.hpp"
#include "mesh_link.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "tls.hpp"

namespace derpd::worker {

struct ServerConfig {
  crypto::NodePrivate privateKey;
  std::string meshKey;                 // empty: no mesh peers
  std::shared_ptr<TlsStore> tls;       // null: plain HTTP
  bool acmeHttp01 = false;             // port 80 answers ACME HTTP-01 from tls's tokens
  bool derpEnabled = true;
  bool dev = false;
  int threads = 1;
  std::string hostname;                // -hostname, shown on /debug/
  std::shared_ptr<BootstrapDns> bootstrapDns;  // /bootstrap-dns (null: derper's empty body)
  DebugAccess debugAccess;             // debug key digest, $TS_ALLOW_DEBUG_IP
  // Outbound mesh (PROTOCOL.md §6): one link per -mesh-with entry, dialled
  // with its own context (the mesh trust store: meshSslCtxs[i] for
  // meshHosts[i]) once setMeshAddresses() names its addresses. One context
  // each, because links on different loops handshaking at once through
  // one shared SSL_CTX and X509_STORE made ThreadSanitizer report a race
  // inside libcrypto (OpenSSL 3.0's store lookups); a handful of links
  // can afford a trust store each.
  std::vector<net::MeshHost> meshHosts;
  std::vector<std::shared_ptr<SSL_CTX>> meshSslCtxs;
  // Client admission (PROTOCOL.md §5.9) asked of derpd's mesh-helper:
  // `verifier` is how (null: every client is admitted at once).
  std::shared_ptr<class AdmissionAsker> verifier;
  // Limits on what connecting peers may hold (docs/SECURITY.md). The main
  // listener only; mesh links and port 80 are not limited here.
  double acceptRate = std::numeric_limits<double>::infinity();  // -accept-connection-limit (conn/s)
  int64_t acceptBurst = std::numeric_limits<int64_t>::max();     // -accept-connection-burst
  int64_t maxConnections = 0;  // --max-connections: accepted connections alive at once (0: no cap)
  int64_t maxHandshakes = 0;   // --max-handshakes: of those, not yet relaying (0: no cap)
  // --tls-own-records: after a TLS 1.3 handshake, free the SSL object and do
  // the records in derp-worker (tls13_records.hpp).
  bool tlsOwnRecords = true;
};

// Go's rate.Limiter as derper's TLS listener uses it (Allow only): a bucket
// of `burst` tokens refilled at `rate` per second. Thread-safe.
class AcceptLimiter {
 public:
  AcceptLimiter(double rate, int64_t burst);
  bool allow(std::chrono::steady_clock::time_point now);
  bool unlimited() const { return unlimited_; }

 private:
  const double rate_;
  const double burst_;
  const bool unlimited_;
  std::mutex mu_;
  double tokens_;                                   // guarded by mu_
  std::chrono::steady_clock::time_point last_{};    // guarded by mu_
};

class Server {
 public:
  explicit Server(ServerConfig cfg);
  ~Server();

  // Binds the main listener (and the port-80 one when httpPort >= 0 in TLS
  // mode). Errors name the address.
  Result<void> listen(const std::string& addr, int httpPort);
  // Uses listeners opened by derpd (port80Fd -1: none).
  void adoptListeners(int mainFd, int port80Fd);
  Result<void> start();  // spawns the loop threads
  void stop();           // any thread; loops close their connections and exit
  // Graceful stop (any thread, blocking): stop accepting, send every DERP
  // client the Restarting frame, and wait until all connections are gone or
  // `deadline` passed. Returns the connections still open at the deadline.
  size_t drain(std::chrono::milliseconds deadline);
  void join();

  int mainPort() const { return mainPort_; }

  // Whether a connection just accepted on the main listener by `loop` may
  // stay (loop thread): the accept rate, max-connections, and
  // max-handshakes (the loop's oldest pending connection is closed to make
  // room). A refusal is counted; the caller closes the socket.
  bool admitAccepted(Loop& loop);
  std::atomic<int64_t>& pendingConns() { return pendingConns_; }
  int port80() const { return port80Port_; }
  std::string mainHost() const { return mainHost_; }

  const crypto::NodePrivate& privateKey() const { return cfg_.privateKey; }
  const crypto::NodePublic& publicKey() const { return publicKey_; }
  bool meshKeyMatches(const std::string& presented) const;
  bool hasMeshKey() const;
  std::string meshKey() const;  // what our mesh links present
  // A new mesh key (Reload); "" turns mesh access off. New connections only.
  void setMeshKey(std::string key);
  // The other roles' counters and derpd's per-role up/restart counters, as
  // the supervisor last sent them; /debug/varz shows them.
  void setPeerMetrics(std::vector<ipc::RoleMetrics> roles);
  bool derpEnabled() const { return cfg_.derpEnabled; }
  bool dev() const { return cfg_.dev; }
  bool tlsOwnRecords() const { return cfg_.tlsOwnRecords; }
  SSL_CTX* sslCtx() const { return cfg_.tls ? cfg_.tls->dispatchCtx() : nullptr; }
  // The TLS contexts and ACME challenges in force (null: plain HTTP).
  const std::shared_ptr<TlsStore>& tls() const { return cfg_.tls; }
  // Port 80's /.well-known/acme-challenge/<token> answer (PROTOCOL.md §7.3).
  bool acmeHttp01() const { return cfg_.acmeHttp01 && cfg_.tls; }
  const std::string& hostname() const { return cfg_.hostname; }

  // Any thread: a -mesh-with entry's addresses (MeshPeers, or the resolver
  // thread of a derp-worker running alone). Unknown entries are ignored.
  void setMeshAddresses(const ipc::MeshPeer& peer);
  const std::vector<std::unique_ptr<MeshLink>>& meshLinks() const { return meshLinks_; }
  const std::shared_ptr<AdmissionAsker>& verifier() const { return cfg_.verifier; }

  Registry& registry() { return registry_; }
  ServerGauges& gauges() { return gauges_; }
  const ServerGauges& gauges() const { return gauges_; }
  // derp_accepts summed over the loops (any thread).
  uint64_t totalAccepts() const;
  // Each loop's iteration count (any thread), for derpd's watchdog.
  std::vector<uint64_t> loopTicks() const;
  // Test hook: blocks loop `index` for `ms` (posted to it; any thread).
  void stallLoopForTest(size_t index, int ms);
  uint64_t nextConnNum() { return connNum_.fetch_add(1) + 1; }
  // Average of the loops' queue-duration EMAs (ms).
  double averageQueueMs() const;

  // /debug/varz (Prometheus text) and /debug/vars (derper's expvar JSON):
  // the same metrics, collected once per request by collectMetrics().
  std::string varz() const;
  std::string vars() const;
  // /debug/check: the registry's consistency (Registry::checkConsistency).
  std::vector<std::string> consistencyCheck() const { return registry_.checkConsistency(); }
  // The /debug/ index's values.
  DebugInfo debugInfo() const;
  const DebugAccess& debugAccess() const { return cfg_.debugAccess; }
  // The /bootstrap-dns body for ?q= value `q` from peer `peerIp` (text);
  // bumps derper's counters. Empty when nothing is configured.
  std::string bootstrapDnsBody(std::string_view q, const std::string& peerIp) const;
  const std::shared_ptr<BootstrapDns>& bootstrapDns() const { return cfg_.bootstrapDns; }

 private:
  struct Acceptor;
  struct MetricSink;
  void collectMetrics(MetricSink& out) const;
  mutable std::mutex mu_;  // guards cfg_.meshKey and peerMetrics_
  ServerConfig cfg_;
  std::vector<ipc::RoleMetrics> peerMetrics_;
  crypto::NodePublic publicKey_;
  ServerGauges gauges_;
  Registry registry_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::unique_ptr<MeshLink>> meshLinks_;  // after loops_: destroyed first
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::vector<std::thread> threads_;
  int listenFd_ = -1;
  int port80Fd_ = -1;
  int mainPort_ = 0;
  int port80Port_ = 0;
  std::string mainHost_;
  std::atomic<uint64_t> connNum_{0};
  AcceptLimiter acceptLimiter_{cfg_.acceptRate, cfg_.acceptBurst};
  std::atomic<int64_t> pendingConns_{0};  // accepted, not yet relaying (all loops)
  long startUnix_;
  std::chrono::steady_clock::time_point startSteady_;
  std::string machine_;  // host name at start (derper: os.Hostname once)
  // Opened before any chroot so /debug/varz keeps its process figures.
  int procFdDir_ = -1;
  int procStatm_ = -1;
};

}  // namespace derpd::worker
