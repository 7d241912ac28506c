// derp-worker: the TLS/HTTP/DERP relay process. Runs under derpd, or alone
// with derper's flags. Signals are taken synchronously by the main thread
// (sigwait); the event-loop threads never see them.
#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/config/go_flags.hpp"
#include "common/crypto/keys.hpp"
#include "common/ipc/child.hpp"
#include "common/log/log.hpp"
#include "common/net/dns_client.hpp"
#include "common/net/listener.hpp"
#include "common/net/mesh_hosts.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "common/tls/certs.hpp"
#include "common/util/fd.hpp"
#include "admission.hpp"
#include "control.hpp"
#include "options.hpp"
#include "server.hpp"
#include "tls.hpp"

using namespace derpd;
using namespace derpd::worker;

namespace {

// A secret from a pipe written by derpd (no secret in argv), closed after.
Result<std::string> readSecretFd(int fd, const char* flag) { return readAllAndClose(fd, 64 * 1024, flag); }

Result<crypto::NodePrivate> readKeyFromFd(int fd) {
  auto data = readSecretFd(fd, "--key-fd");
  if (!data) return std::move(data).takeError();
  auto k = crypto::parseKeyFile(*data);
  std::fill(data->begin(), data->end(), '\0');
  return k;
}

// The control loop of a derp-worker run by derpd: signals (signalfd), the
// control socket and the metrics snapshot tick, on the main thread. Returns
// the drain deadline to stop with, or an error (a peer fault: exit 1).
// Connects and disconnects at info level as one summary line per
// kInterval in which something changed (derper logs each; per-connection
// lines are at debug here).
class ClientSummary {
 public:
  static constexpr std::chrono::seconds kInterval{10};
  explicit ClientSummary(const Server& s)
      : server_(s), accepts_(s.totalAccepts()), current_(current()), since_(std::chrono::steady_clock::now()) {}

  void tick(std::chrono::steady_clock::time_point now) {
    if (now - since_ < kInterval) return;
    const uint64_t accepts = server_.totalAccepts();
    const int64_t cur = current();
    const uint64_t joined = accepts - accepts_;
    if (joined != 0 || cur != current_) {
      const int64_t left = std::max<int64_t>(0, current_ + int64_t(joined) - cur);
      LOG_INFO("clients: {} connected; in the last {} s {} connected and {} disconnected", cur,
               std::chrono::duration_cast<std::chrono::seconds>(now - since_).count(), joined, left);
    }
    accepts_ = accepts;
    current_ = cur;
    since_ = now;
  }

 private:
  int64_t current() const { return std::max<int64_t>(0, server_.gauges().currentConnections.load()); }
  const Server& server_;
  uint64_t accepts_;
  int64_t current_;
  std::chrono::steady_clock::time_point since_;
};

Result<std::chrono::milliseconds> controlLoop(ipc::Channel& ch, Server& server, int sigFd,
                                              std::chrono::milliseconds drainTimeout) {
  Control control(ch, server);
  auto nextSnapshot = std::chrono::steady_clock::now();
  ClientSummary summary(server);
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    if (now >= nextSnapshot) {
      control.requestSnapshot();
      summary.tick(now);
      nextSnapshot = now + Control::kSnapshotInterval;
    }
    control.sendAdmissionQuestions();
    // Every send may eat the fd's wake-up: read before sleeping.
    if (auto r = control.poll(); !r) return std::move(r).takeError();
    if (auto d = control.shutdownRequested()) {
      LOG_INFO("Shutdown from derpd: draining (up to {} ms)", d->count());
      return *d;
    }
    if (const char* sig = ipc::readStopSignal(sigFd)) {
      LOG_INFO("signal {}: draining (up to {} ms)", sig, drainTimeout.count());
      return drainTimeout;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(nextSnapshot - std::chrono::steady_clock::now());
    int askFd = server.verifier() ? server.verifier()->wakeFd() : -1;
    pollfd pfds[3] = {{sigFd, POLLIN, 0}, {ch.fd(), POLLIN, 0}, {askFd, POLLIN, 0}};
    ::poll(pfds, askFd >= 0 ? 3 : 2, int(std::clamp<int64_t>(wait.count(), 0, 1000)));
  }
}

// The /debug/ access settings (PROTOCOL.md §7.2), read here, before the
// sandbox, whose chroot hides the key file: the key file (--debug-key-file,
// else $TS_DEBUG_KEY_PATH) and $TS_ALLOW_DEBUG_IP. derper re-reads the key
// file on every request; here a new key needs a restart.
Result<DebugAccess> loadDebugAccess(const Options& o) {
  DebugAccess access;
  std::string path = o.debugKeyFile;
  if (!o.debugKeyFileSet) {
    if (const char* env = std::getenv("TS_DEBUG_KEY_PATH")) path = env;
  }
  if (!path.empty()) {
    const char* what = o.debugKeyFileSet ? "--debug-key-file" : "TS_DEBUG_KEY_PATH";
    std::string why;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      why = std::strerror(errno);
    } else if (auto content = readAllAndClose(fd, 64 * 1024, path); !content) {
      why = content.error();
    } else {
      access.keyDigest = debugKeyDigest(*content);
      std::fill(content->begin(), content->end(), '\0');
      if (!access.keyDigest) why = "the file is empty";
    }
    if (!why.empty()) {
      if (o.debugKeyFileSet) return makeError(std::string(what) + " " + path + ": " + why);
      LOG_WARN("{} {}: {}; /debug/ key access is off", what, path, why);
    } else {
      LOG_INFO("/debug/ key loaded from {} ({})", path, what);
    }
  }
  if (const char* ip = std::getenv("TS_ALLOW_DEBUG_IP"); ip && *ip) {
    if (auto parsed = parseIp16(ip)) {
      access.allowIp = parsed;
      LOG_INFO("TS_ALLOW_DEBUG_IP: /debug/ is also open to {}", ip);
    } else {
      LOG_WARN("TS_ALLOW_DEBUG_IP=\"{}\" is not one IP address; ignored (derper compares it with the "
               "peer's address as a string: a list or a prefix matches no peer)", ip);
    }
  }
  return access;
}

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (auto rc = config::earlyExit("derp-worker", opts, usage)) return *rc;
  log::init("derp-worker", opts->logLevel);
  if (auto n = proc::raiseFdLimit(); !n) LOG_WARN("file descriptor limit: {}", n.error());

  // Signals are taken synchronously (sigwait or a signalfd); block them
  // before any thread starts, libzmq's included.
  const sigset_t sigs = ipc::blockChildSignals();

  // The control plane first: the handshake needs the socket path, which the
  // chroot below hides.
  const pid_t parent = ::getppid();
  std::unique_ptr<zmq::context_t> zctx;
  std::unique_ptr<ipc::Channel> control;
  if (!opts->control.empty()) {
    zctx = std::make_unique<zmq::context_t>(1);
    auto ch = ipc::connectToSupervisor(*zctx, ipc::Role::DerpWorker, opts->control, std::chrono::seconds(10));
    if (!ch) return fail(ch.error());
    control = std::move(ch).value();
  }

  // Server key.
  crypto::NodePrivate key;
  if (opts->keyFd >= 0) {
    auto k = readKeyFromFd(opts->keyFd);
    if (!k) return fail("server key: " + k.error());
    key = *k;
  } else if (!opts->configPath.empty()) {
    bool created = false;
    auto k = crypto::loadOrCreateKeyFile(opts->configPath, &created);
    if (!k) return fail("key file: " + k.error());
    key = *k;
    if (created) LOG_INFO("wrote a new server key to {}", opts->configPath);
  } else if (opts->dev) {
    key = crypto::NodePrivate::generate();
  } else {
    return fail("-c FILE is required (the server key file; it is created when missing), or use -dev");
  }

  ServerConfig cfg;
  cfg.privateKey = key;
  cfg.derpEnabled = opts->derpEnabled;
  cfg.dev = opts->dev;
  cfg.acceptRate = opts->acceptConnectionLimit;
  cfg.acceptBurst = opts->acceptConnectionBurst;
  cfg.maxConnections = opts->maxConnections;
  cfg.maxHandshakes = opts->maxHandshakes;
  cfg.tlsOwnRecords = opts->tlsOwnRecords;
  unsigned hw = std::thread::hardware_concurrency();
  cfg.threads = opts->threads > 0 ? opts->threads : int(hw ? hw : 1);
  if (opts->meshKeyFd >= 0) {
    auto data = readSecretFd(opts->meshKeyFd, "--mesh-key-fd");
    if (!data) return fail(data.error());
    auto mk = crypto::parseMeshKey(*data);
    std::fill(data->begin(), data->end(), '\0');
    if (!mk) return fail("--mesh-key-fd: " + mk.error());
    cfg.meshKey = *mk;
  } else if (!opts->meshPskFile.empty()) {
    auto mk = crypto::readMeshKeyFile(opts->meshPskFile);
    if (!mk) return fail(mk.error());
    cfg.meshKey = *mk;
  }

  cfg.hostname = opts->hostname;
  auto debugAccess = loadDebugAccess(*opts);
  if (!debugAccess) return fail(debugAccess.error());
  cfg.debugAccess = *debugAccess;
  // /bootstrap-dns: the resolver's server and /etc/hosts are read now, the
  // chroot below hides them. Names are resolved by BootstrapDns's own thread.
  {
    BootstrapDns::Resolver resolver;
    if (!opts->bootstrapDnsNames.empty() || !opts->unpublishedBootstrapDnsNames.empty()) {
      std::string ns = opts->bootstrapDnsServer;
      if (ns.empty()) {
        auto sys = net::systemNameserver();
        if (!sys) return fail("bootstrap DNS: " + sys.error() + " (set --bootstrap-dns-server)");
        ns = *sys;
      }
      auto server = net::parseDnsServer(ns);
      if (!server) return fail("bootstrap DNS server " + ns + ": " + server.error());
      auto hosts = net::HostsFile::load();
      if (!hosts) LOG_WARN("bootstrap DNS: {}; resolving every name over DNS", hosts.error());
      resolver = BootstrapDns::dnsResolver(*server, hosts ? *hosts : net::HostsFile::parse(""));
      LOG_INFO("bootstrap DNS: names resolved with {}", ns);
    }  // else: nothing to resolve; BootstrapDns starts no thread
    BootstrapDns::Options bo;
    bo.publishedNames = opts->bootstrapDnsNames;
    bo.unpublishedNames = opts->unpublishedBootstrapDnsNames;
    cfg.bootstrapDns = std::make_shared<BootstrapDns>(std::move(bo), std::move(resolver));
  }

  // Outbound mesh links: the hosts, and the CA file loaded before the chroot.
  auto meshHosts = net::parseMeshWith(opts->meshWith);
  if (!meshHosts) return fail(meshHosts.error());
  if (!meshHosts->empty()) {
    if (cfg.meshKey.empty()) return fail("-mesh-with requires -mesh-psk-file");
    for (size_t i = 0; i < meshHosts->size(); ++i) {  // one each: see ServerConfig
      auto ctx = makeMeshTlsContext(opts->meshCaFile, i == 0);
      if (!ctx) return fail(ctx.error());
      cfg.meshSslCtxs.push_back(*ctx);
    }
    cfg.meshHosts = *meshHosts;
  }
  if (opts->verifyViaControl) {
    auto asker = AdmissionAsker::create(opts->verifyFailOpen);
    if (!asker) return fail(asker.error());
    cfg.verifier = *asker;
    LOG_INFO("clients are verified by derpd's mesh-helper; a client it cannot answer for is {}",
             opts->verifyFailOpen ? "admitted (-verify-client-url-fail-open, -verify-client-url only)" : "refused");
  }

  auto hp = net::splitHostPort(opts->addr);
  if (!hp) return fail("-a: " + hp.error());
  bool tls = hp->port == 443 || opts->certMode == "manual" || opts->tlsFromControl;
  if (tls) {
    auto store = TlsStore::create(key.publicKey());
    if (!store) return fail("TLS: " + store.error());
    cfg.tls = *store;
    if (opts->tlsFromControl) {
      cfg.acmeHttp01 = true;  // cert-agent may hand over HTTP-01 tokens
      LOG_INFO("TLS certificates come from cert-agent");
    } else {
      if (opts->certMode != "manual") {
        return fail("-certmode letsencrypt is provided by derpd's cert-agent; derp-worker alone "
                    "serves TLS only with -certmode manual");
      }
      if (opts->certDir.empty()) return fail("-certdir is required with -certmode manual");
      std::string stem = certFileStem(opts->hostname);
      auto bundle = tls::loadBundleFiles(opts->certDir + "/" + stem + ".crt", opts->certDir + "/" + stem + ".key",
                                         opts->hostname, int64_t(std::time(nullptr)));
      if (!bundle) return fail(bundle.error());
      if (auto r = (*store)->setCertificate(bundle->chainPem, bundle->keyPem); !r)
        return fail("TLS certificate: " + r.error());
      std::fill(bundle->keyPem.begin(), bundle->keyPem.end(), '\0');
    }
  }

  Server server(std::move(cfg));
  if (opts->listenFd >= 0) {
    server.adoptListeners(opts->listenFd, opts->port80Fd);
  } else if (auto r = server.listen(opts->addr, opts->httpPort); !r) {
    return fail("listen: " + r.error());
  }
  // Everything is loaded: enter the sandbox before serving.
  bool dropped = false;
  if (!opts->user.empty() || !opts->chrootDir.empty()) {
    auto sb = proc::enterSandbox({opts->user, opts->chrootDir});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {}", sb->what);
    dropped = sb->dropped;
  }
  if (control) {
    // A uid change clears PR_SET_PDEATHSIG: arm it now, so derp-worker never
    // outlives derpd (which would keep the port busy).
    if (auto r = ipc::armParentDeathSignal(parent); !r) return fail(r.error());
  }
  // The sandbox's last step, before the loops start: from here on only the
  // allow-list's calls, on every thread.
  // Alone with -mesh-with, it resolves the hosts itself (getaddrinfo).
  proc::SeccompExtras extras;
  extras.resolveNames = !opts->meshPeersFromControl && !meshHosts->empty();
  auto sc = proc::enterSeccomp(ipc::Role::DerpWorker, opts->seccomp, dropped, extras);
  if (!sc) return fail(sc.error());
  LOG_INFO("{}", *sc);
  if (auto r = server.start(); !r) return fail("start: " + r.error());
  if (auto b = server.bootstrapDns()) b->start();
  // Alone, derp-worker resolves its mesh peers itself (no chroot then);
  // under derpd, mesh-helper sends their addresses.
  std::unique_ptr<net::MeshResolver> meshResolver;
  if (!opts->meshPeersFromControl && !meshHosts->empty()) {
    meshResolver = std::make_unique<net::MeshResolver>(
        *meshHosts, std::chrono::seconds(60), [&server](const ipc::MeshPeers& peers) {
          for (const ipc::MeshPeer& p : peers.peers) server.setMeshAddresses(p);
        });
    meshResolver->start();
  }

  std::string host = hp->host.empty() ? "[::]" : (hp->host.find(':') != std::string::npos ? "[" + hp->host + "]" : hp->host);
  LOG_INFO("server key {}", server.publicKey().toText());
  LOG_INFO("serving DERP on {}://{}:{}/derp{}", tls ? "https" : "http", host, server.mainPort(),
           opts->dev ? " (dev mode)" : "");
  if (server.port80() > 0) LOG_INFO("serving port-80 HTTP on http://{}:{}", host, server.port80());

  std::chrono::milliseconds drainFor = opts->drainTimeout;
  if (control) {
    if (auto r = control->send(ipc::Role::Supervisor, ipc::Ready{::getpid()}); !r.ok())
      return fail("control: Ready: " + r.error);
    if (opts->stallLoopForTestMs > 0) server.stallLoopForTest(0, opts->stallLoopForTestMs);
    int sigFd = ::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigFd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));
    auto r = controlLoop(*control, server, sigFd, opts->drainTimeout);
    ::close(sigFd);
    if (!r) {
      // Only derpd can write to this socket: a fault is its bug or a forgery.
      LOG_ERR("control: {}; exiting so that derpd restarts derp-worker", r.error());
      ::_exit(1);
    }
    drainFor = *r;
  } else {
    for (;;) {
      int sig = 0;
      if (sigwait(&sigs, &sig) != 0) continue;
      if (sig == SIGHUP) {
        LOG_INFO("SIGHUP: derp-worker alone has nothing to reload (certificate rotation comes from derpd)");
        continue;
      }
      LOG_INFO("signal {}: draining (up to {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               opts->drainTimeout.count());
      break;
    }
  }
  meshResolver.reset();
  size_t left = server.drain(drainFor);
  if (left > 0) LOG_WARN("drain deadline passed with {} connection(s) open; closing them", left);
  server.stop();
  server.join();
  LOG_INFO("stopped");
  return 0;
}
