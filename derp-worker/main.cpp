// derp-worker: the TLS/HTTP/DERP relay process. Runs under derpd, or alone
// with derper's flags. Signals are taken synchronously by the main thread
// (sigwait); the event-loop threads never see them.
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/stat.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/crypto/keys.hpp"
#include "common/log/log.hpp"
#include "common/net/listener.hpp"
#include "common/proc/sandbox.hpp"
#include "options.hpp"
#include "server.hpp"
#include "tls.hpp"

using namespace derpd;
using namespace derpd::worker;

namespace {

// derper's rule: the trimmed file content must match ^[0-9a-fA-F]{64,}$.
Result<std::string> readMeshKey(const std::string& path) {
  std::ifstream f(path);
  if (!f) return makeError("cannot read mesh key file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  s = s.substr(i);
  if (s.size() < 64) return makeError("mesh key file " + path + ": key must be at least 64 hex digits");
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      return makeError("mesh key file " + path + ": key must be hex digits only");
  }
  return s;
}

// The key file's bytes from a pipe written by derpd (no secret in argv).
Result<crypto::NodePrivate> readKeyFromFd(int fd) {
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return makeError(std::string("read --key-fd: ") + std::strerror(errno));
    if (n == 0) break;
    data.append(buf, size_t(n));
    if (data.size() > 64 * 1024) return makeError("--key-fd: key file too large");
  }
  ::close(fd);
  auto k = crypto::parseKeyFile(data);
  std::fill(data.begin(), data.end(), '\0');
  return k;
}

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (!opts) {
    std::fprintf(stderr, "derp-worker: %s\n(run derp-worker --help for usage)\n", opts.error().c_str());
    return 2;
  }
  if (opts->help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  if (opts->version) {
    std::printf("derp-worker %s (%s)\n", DERPD_VERSION, DERPD_GIT_REV);
    return 0;
  }
  log::init("derp-worker", opts->logLevel);

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
  unsigned hw = std::thread::hardware_concurrency();
  cfg.threads = opts->threads > 0 ? opts->threads : int(hw ? hw : 1);
  if (!opts->meshPskFile.empty()) {
    auto mk = readMeshKey(opts->meshPskFile);
    if (!mk) return fail(mk.error());
    cfg.meshKey = *mk;
  }

  auto hp = net::splitHostPort(opts->addr);
  if (!hp) return fail("-a: " + hp.error());
  bool tls = hp->port == 443 || opts->certMode == "manual";
  if (tls) {
    if (opts->certMode != "manual") {
      return fail("-certmode letsencrypt is provided by derpd's cert-agent; derp-worker alone "
                  "serves TLS only with -certmode manual");
    }
    if (opts->certDir.empty()) return fail("-certdir is required with -certmode manual");
    std::string stem = certFileStem(opts->hostname);
    std::string crt = opts->certDir + "/" + stem + ".crt";
    std::string keyFile = opts->certDir + "/" + stem + ".key";
    auto ctx = TlsContext::loadManual(crt, keyFile, opts->hostname, key.publicKey());
    if (!ctx) return fail(ctx.error());
    cfg.tls = *ctx;
  }

  // Signals go to sigwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Server server(std::move(cfg));
  if (opts->listenFd >= 0) {
    server.adoptListeners(opts->listenFd, opts->port80Fd);
  } else if (auto r = server.listen(opts->addr, opts->httpPort); !r) {
    return fail("listen: " + r.error());
  }
  // Everything is loaded: enter the sandbox before serving.
  if (!opts->user.empty() || !opts->chrootDir.empty()) {
    auto sb = proc::enterSandbox({opts->user, opts->chrootDir});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {}", *sb);
  }
  if (auto r = server.start(); !r) return fail("start: " + r.error());

  std::string host = hp->host.empty() ? "[::]" : (hp->host.find(':') != std::string::npos ? "[" + hp->host + "]" : hp->host);
  LOG_INFO("server key {}", server.publicKey().toText());
  LOG_INFO("serving DERP on {}://{}:{}/derp{}", tls ? "https" : "http", host, server.mainPort(),
           opts->dev ? " (dev mode)" : "");
  if (server.port80() > 0) LOG_INFO("serving port-80 HTTP on http://{}:{}", host, server.port80());

  for (;;) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig == SIGHUP) {
      LOG_INFO("SIGHUP: derp-worker alone has nothing to reload (certificate rotation comes from derpd)");
      continue;
    }
    LOG_INFO("signal {}: draining (up to {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT", opts->drainTimeout.count());
    break;
  }
  size_t left = server.drain(opts->drainTimeout);
  if (left > 0) LOG_WARN("drain deadline passed with {} connection(s) open; closing them", left);
  server.stop();
  server.join();
  LOG_INFO("stopped");
  return 0;
}
