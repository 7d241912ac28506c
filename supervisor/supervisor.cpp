#include "supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/crypto/keys.hpp"
#include "common/proto/derpmap/derpmap.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"
#include "common/net/listener.hpp"
#include "common/net/udp.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "common/tls/certs.hpp"
#include "common/util/fd.hpp"

namespace derpd::supervisor {

namespace {

using ipc::Role;

// A child that exits within this long of starting counts as a failed start.
constexpr auto kQuickExit = std::chrono::seconds(2);
// That many failed starts in a row: the role cannot run; derpd gives up.
constexpr int kMaxQuickFailures = 5;
// Messages read from the control socket per wake-up before signals get a turn.
constexpr size_t kControlBudget = 256;
// A child log line longer than this is passed on in pieces.
constexpr size_t kMaxLogLine = 64 * 1024;
// Settings a SIGHUP applies to the running processes; any other change needs
// a restart of derpd and is logged as such.
constexpr std::array<std::string_view, 3> kLiveKeys = {"config", "log-level", "mesh-psk-file"};

constexpr std::array kHandlers = {
    ipc::handlerFor<&Supervisor::onReady>(),
    ipc::handlerFor<&Supervisor::onMetricsReport>(),
    ipc::handlerFor<&Supervisor::onSnapshotRequest>(),
    ipc::handlerFor<&Supervisor::onCertUpdate>(),
    ipc::handlerFor<&Supervisor::onAcmeChallenge>(),
    ipc::handlerFor<&Supervisor::onAcmeChallengeReady>(),
    ipc::handlerFor<&Supervisor::onVerifyRequest>(),
    ipc::handlerFor<&Supervisor::onVerifyReply>(),
    ipc::handlerFor<&Supervisor::onMeshPeers>(),
    ipc::handlerFor<&Supervisor::onManualCertFilesRequest>(),
};
static_assert(ipc::uniqueTypes(kHandlers));

std::string describeStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return std::string("killed by signal ") + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped (status " + std::to_string(status) + ")";
}

std::string selfDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, size_t(n));
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

// The message of an error-level line a child logged
// ("... role[pid] error: MESSAGE"), or "" for any other line.
std::string errorMessageOf(std::string_view line) {
  for (std::string_view tag : {std::string_view("] error: "), std::string_view("] critical: ")}) {
    if (auto at = line.find(tag); at != std::string_view::npos) return std::string(line.substr(at + tag.size()));
  }
  return "";
}

// A file of the manual certificate, read by derpd through `dirFd`. With
// `as` set (a certdir that a user other than root can write to, such as
// cert-agent's own), the open runs with that user's file-system ids
// (setfsuid/setfsgid, this thread only): derpd then reads only what
// cert-agent could have read itself, so a link planted there cannot point
// derpd at a file only root may read. In a root-only directory (certbot's
// /etc/letsencrypt/live/NAME) root-only files are read as root.
ipc::ManualCertFile readCertFile(int dirFd, const std::string& dir, const std::string& name,
                                 const std::optional<proc::UserIds>& as) {
  ipc::ManualCertFile f;
  f.path = dir + "/" + name;
  int fd = -1;
  int e = ENOENT;
  if (dirFd >= 0) {
    if (as) {
      ::setfsgid(as->gid);
      ::setfsuid(as->uid);
    }
    fd = ::openat(dirFd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    e = errno;
    if (as) {
      ::setfsuid(0);
      ::setfsgid(0);
    }
  }
  if (fd < 0) {
    if (e == ENOENT) {
      f.missing = true;
    } else {
      f.error = std::strerror(e);
      if (as && e == EACCES)
        f.error += " (the directory is writable by a user other than root, so derpd reads it as cert-user uid " +
                   std::to_string(as->uid) + "; make the file readable by it, or keep it in a root-only directory)";
    }
    return f;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    f.error = "not a regular file";
    return f;
  }
  auto bytes = readAllAndClose(fd, ipc::kMaxManualCertFile, f.path);
  if (!bytes) {
    f.error = bytes.error();
  } else {
    f.bytes = std::move(*bytes);
  }
  return f;
}

// -dev listens on :3340 unless -a was given (derper forces :3340 even then;
// an explicit address is more useful and what tests need).
void applyDevDefaults(config::Config& cfg) {
  if (cfg.dev && cfg.originOf("a").kind == config::Origin::Kind::Default) cfg.addr = ":3340";
}


}  // namespace

std::string devRuntimeDir(const config::Config& cfg) {
  if (!cfg.dev || ::geteuid() != 0) return "";
  auto hp = net::splitHostPort(cfg.dev && cfg.originOf("a").kind == config::Origin::Kind::Default ? ":3340" : cfg.addr);
  if (!hp || hp->port == 0) return "";
  std::string host = hp->host.empty() ? "any" : hp->host;
  for (char& ch : host) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-') ch = '_';
  }
  return "/run/derpd-dev." + host + "_" + std::to_string(hp->port);
}

std::string Child::name() const { return std::string(ipc::roleName(spec->role)); }

std::chrono::milliseconds restartDelay(int failures) {
  int64_t ms = 100;
  for (int i = 0; i < failures && ms < 10000; ++i) ms *= 2;
  return std::chrono::milliseconds(std::min<int64_t>(ms, 10000));
}

Supervisor::Supervisor(config::Config cfg, std::vector<std::string> args, TestHooks hooks)
    : cfg_(std::move(cfg)), args_(std::move(args)), hooks_(hooks) {
  applyDevDefaults(cfg_);
  // sd_watchdog_enabled(3): WATCHDOG_USEC, for this pid when WATCHDOG_PID
  // names one. Removed from the environment either way (children never ping).
  if (const char* usec = std::getenv("WATCHDOG_USEC")) {
    const char* pid = std::getenv("WATCHDOG_PID");
    auto v = config::parseGoInt(usec);
    if (v && *v > 0 && (!pid || std::to_string(::getpid()) == pid)) systemdWatchdog_ = std::chrono::microseconds(*v);
  }
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  // The spawn table. Roles arrive here as they are built (stun-worker,
  // cert-agent, mesh-helper, monitor).
  table_.push_back(RoleSpec{
      Role::DerpWorker, true,
      [this] {
        std::vector<std::string> a = {"-a", cfg_.addr, "--listen-fd", std::to_string(listenFd_),
                                      "-certmode", cfg_.certMode, "-hostname", cfg_.hostname,
                                      "-derp=" + std::string(cfg_.derp ? "true" : "false"),
                                      "-dev=" + std::string(cfg_.dev ? "true" : "false"),
                                      "--threads", std::to_string(cfg_.threads),
                                      "--drain-timeout", config::formatGoDuration(cfg_.drainTimeout),
                                      "-accept-connection-limit", config::renderValue(cfg_, "accept-connection-limit"),
                                      "-accept-connection-burst", std::to_string(cfg_.acceptConnectionBurst),
                                      "--max-connections", std::to_string(cfg_.maxConnections),
                                      "--max-handshakes", std::to_string(cfg_.maxHandshakes),
                                      "--log-level", cfg_.logLevel};
        // TLS certificates come from cert-agent over the control plane.
        if (tls_) a.push_back("--tls-from-control");
        if (!cfg_.tlsOwnRecords) a.push_back("--tls-own-records=false");
        if (!cfg_.bootstrapDnsNames.empty()) a.insert(a.end(), {"-bootstrap-dns-names", cfg_.bootstrapDnsNames});
        if (!cfg_.unpublishedBootstrapDnsNames.empty())
          a.insert(a.end(), {"-unpublished-bootstrap-dns-names", cfg_.unpublishedBootstrapDnsNames});
        if (!cfg_.bootstrapDnsServer.empty()) a.insert(a.end(), {"--bootstrap-dns-server", cfg_.bootstrapDnsServer});
        if (port80Fd_ >= 0) a.insert(a.end(), {"--port80-fd", std::to_string(port80Fd_)});
        if (!cfg_.meshWith.empty()) {
          // Its links dial what mesh-helper resolves (no resolver in the chroot).
          a.insert(a.end(), {"-mesh-with", cfg_.meshWith, "--mesh-peers-from-control"});
          if (!cfg_.meshCaFile.empty()) a.insert(a.end(), {"--mesh-ca-file", cfg_.meshCaFile});
        }
        if (cfg_.verifyClients || !cfg_.verifyClientUrl.empty()) {
          // With no answer from mesh-helper, fail open only where derper
          // would: -verify-client-url alone with its fail-open flag
          // (-verify-clients, asked first, fails closed).
          const bool failOpen = cfg_.verifyClientUrlFailOpen && !cfg_.verifyClientUrl.empty() && !cfg_.verifyClients;
          a.insert(a.end(), {"--verify-via-control",
                             "-verify-client-url-fail-open=" + std::string(failOpen ? "true" : "false")});
        }
        if (hooks_.stallDerpLoopForTestMs > 0) {
          // The first start only: the restarted derp-worker serves normally.
          a.insert(a.end(), {"--stall-loop-for-test", std::to_string(hooks_.stallDerpLoopForTestMs)});
          hooks_.stallDerpLoopForTestMs = 0;
        }
        if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.user, "--chroot", emptyDir_});
        return a;
      },
      [this] {
        std::vector<Secret> s = {{"--key-fd", keyBytes_}};
        if (!meshKey_.empty()) s.push_back({"--mesh-key-fd", meshKey_});
        return s;
      },
      [this] { return std::vector<int>{listenFd_, port80Fd_}; },
      nullptr,
  });
  table_.push_back(RoleSpec{
      Role::CertAgent, true,
      [this] {
        std::vector<std::string> a = {"-certmode", cfg_.certMode, "-certdir", cfg_.certDir,
                                      "-hostname", cfg_.hostname, "--log-level", cfg_.logLevel,
                                      "--acme-directory-url", cfg_.acmeDirectoryUrl,
                                      "--acme-challenges", cfg_.acmeChallenges};
        if (!cfg_.acmeCaFile.empty()) a.insert(a.end(), {"--acme-ca-file", cfg_.acmeCaFile});
        if (!cfg_.acmeEmail.empty()) a.insert(a.end(), {"-acme-email", cfg_.acmeEmail});
        if (!cfg_.acmeEabKid.empty()) a.insert(a.end(), {"-acme-eab-kid", cfg_.acmeEabKid});
        if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.certUser});
        return a;
      },
      [this] {
        std::vector<Secret> s;
        if (!eabKey_.empty()) s.push_back({"--acme-eab-key-fd", eabKey_});
        return s;
      },
      nullptr,
      [this] { return tls_; },
  });
  table_.push_back(RoleSpec{
      Role::MeshHelper, true,
      [this] {
        std::vector<std::string> a = {"--log-level", cfg_.logLevel,
                                      "-verify-clients=" + std::string(cfg_.verifyClients ? "true" : "false"),
                                      "-verify-client-url-fail-open=" +
                                          std::string(cfg_.verifyClientUrlFailOpen ? "true" : "false"),
                                      "--verify-clients-socket", cfg_.verifyClientsSocket};
        if (!cfg_.meshWith.empty()) a.insert(a.end(), {"-mesh-with", cfg_.meshWith});
        if (!cfg_.verifyClientUrl.empty()) a.insert(a.end(), {"-verify-client-url", cfg_.verifyClientUrl});
        // Not chrooted: it needs the resolver's files and tailscaled's socket.
        if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.user});
        return a;
      },
      nullptr,
      nullptr,
      [this] { return meshHelper_; },
  });
  table_.push_back(RoleSpec{
      Role::Monitor, false,
      [this] {
        const std::string every = config::formatGoDuration(cfg_.monitorInterval);
        std::vector<std::string> a = {"--log-level", cfg_.logLevel, "-listen", cfg_.monitorListen,
                                      "-spread=false", "-interval", every, "-mesh-interval", every,
                                      "-stun-interval", every, "-tls-interval", every};
        if (!cfg_.monitorDerpMap.empty()) a.insert(a.end(), {"-derp-map", cfg_.monitorDerpMap});
        if (!cfg_.monitorCaFile.empty()) a.insert(a.end(), {"--ca-file", cfg_.monitorCaFile});
        if (!tls_) a.push_back("--plain-http");
        // Not chrooted: it resolves names and reads CA files.
        if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.user});
        return a;
      },
      [this] {
        std::vector<Secret> s;
        if (cfg_.monitorDerpMap.empty()) s.push_back({"--derp-map-fd", selfMap_});
        if (!meshKey_.empty()) s.push_back({"--mesh-key-fd", meshKey_});
        return s;
      },
      nullptr,
      [this] { return cfg_.monitor; },
  });
  if (cfg_.stun) {
    table_.push_back(RoleSpec{
        Role::StunWorker, true,
        [this] {
          std::vector<std::string> a = {"--log-level", cfg_.logLevel};
          for (int fd : udpFds_) a.insert(a.end(), {"--udp-fd", std::to_string(fd)});
          if (hooks_.stunForbiddenSyscallAfterMs > 0) {
            // The first start only: the restarted stun-worker serves normally.
            a.insert(a.end(), {"--forbidden-syscall-after-for-test", std::to_string(hooks_.stunForbiddenSyscallAfterMs)});
            hooks_.stunForbiddenSyscallAfterMs = 0;
          }
          if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.user, "--chroot", emptyDir_});
          return a;
        },
        nullptr,
        [this] { return udpFds_; },
        nullptr,
    });
  }
}

Supervisor::~Supervisor() {
  std::fill(keyBytes_.begin(), keyBytes_.end(), '\0');
  std::fill(meshKey_.begin(), meshKey_.end(), '\0');
  std::fill(eabKey_.begin(), eabKey_.end(), '\0');
  if (cert_) std::fill(cert_->keyPem.begin(), cert_->keyPem.end(), '\0');
  for (Child& c : children_) {
    if (c.logFd >= 0) ::close(c.logFd);
  }
  if (listenFd_ >= 0) ::close(listenFd_);
  if (port80Fd_ >= 0) ::close(port80Fd_);
  for (int fd : udpFds_) ::close(fd);
  if (sigFd_ >= 0) ::close(sigFd_);
  if (control_) {
    const std::string ep = control_->endpoint();
    control_.reset();
    // Only the socket this derpd bound, under the lock it still holds.
    if (ownSocket_ && ep.rfind("ipc://", 0) == 0) ::unlink(ep.substr(6).c_str());
  }
  if (ownRunDir_) {
    ::rmdir(emptyDir_.c_str());
    if (lockFd_ >= 0) ::unlink((runDir_ + "/derpd.lock").c_str());
    ::rmdir(runDir_.c_str());
  }
  // Last: another derpd may take the directory from here on.
  if (lockFd_ >= 0) ::close(lockFd_);
}

// The monitor's DERP map when none is configured: region 900 "self" with
// this server as its only node, reached over loopback when -a listens on
// every address.
std::string Supervisor::selfDerpMap() const {
  auto hp = net::splitHostPort(cfg_.addr);
  std::string host = hp ? hp->host : "";
  std::string ipv4 = "none", ipv6 = "none";
  if (host.empty() || host == "0.0.0.0" || host == "::") {
    ipv4 = "127.0.0.1";
  } else if (host.find(':') != std::string::npos) {
    ipv6 = host;
  } else {
    ipv4 = host;
  }
  const int derpPort = net::localPort(listenFd_);
  int stunPort = -1;
  for (int fd : udpFds_) {
    if (int p = net::localPort(fd); p > 0) stunPort = p;
  }
  derpmap::Node n;
  n.name = "self";
  n.regionId = 900;
  // In TLS mode the certificate names -hostname; in plain mode any name does.
  n.hostName = tls_ ? cfg_.hostname : (ipv4 != "none" ? ipv4 : ipv6);
  n.ipv4 = ipv4;
  n.ipv6 = ipv6;
  n.stunPort = stunPort;
  n.derpPort = derpPort;
  derpmap::DerpMap m;
  m.regions[900] = derpmap::Region{900, "self", "this derpd", 0, 0, false, {n}};
  return derpmap::encodeIndented(m);
}

std::string Supervisor::binaryPath(const std::string& role) const { return libexecDir_ + "/" + role; }

Child* Supervisor::childFor(Role role) {
  for (Child& c : children_) {
    if (c.spec->role == role) return &c;
  }
  return nullptr;
}

// The runtime dir, made if needed and locked (flock on derpd.lock, held for
// derpd's life): a second derpd on the same directory would replace the
// control socket of the first (ZeroMQ unlinks an existing ipc:// path when
// it binds) and remove it when it exits.
Result<void> Supervisor::lockRuntimeDir() {
  const bool root = ::geteuid() == 0;
  if (cfg_.originOf("runtime-dir").kind != config::Origin::Kind::Default) {
    runDir_ = cfg_.runtimeDir;
  } else if (std::string dev = devRuntimeDir(cfg_); !dev.empty()) {
    runDir_ = dev;
    ownRunDir_ = true;  // removed at exit, like a private one (the lock keeps it one derpd's)
    LOG_INFO("runtime dir {} (-dev on this address, no --runtime-dir)", runDir_);
  } else if (!root || cfg_.dev) {
    // Not root (/run/derpd is not ours to make) or -dev on port 0, and no
    // --runtime-dir: a private directory for this run, removed at exit.
    const char* base = root ? "/run" : std::getenv("XDG_RUNTIME_DIR");
    if (!base || base[0] != '/') base = std::getenv("TMPDIR");
    if (!base || base[0] != '/') base = "/tmp";
    std::string tmpl = std::string(base) + (root ? "/derpd-dev.XXXXXX" : "/derpd.XXXXXX");
    if (!::mkdtemp(tmpl.data())) return makeError("mkdtemp " + tmpl + ": " + std::strerror(errno));
    runDir_ = tmpl;
    ownRunDir_ = true;
    LOG_INFO("runtime dir {} ({}, no --runtime-dir)", runDir_, root ? "-dev" : "not root");
  } else {
    runDir_ = cfg_.runtimeDir;
  }
  if (auto r = ipc::ensureRuntimeDir(runDir_); !r) return makeError("--runtime-dir: " + r.error());
  const std::string lockPath = runDir_ + "/derpd.lock";
  int fd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return makeError("lock file " + lockPath + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    std::string holder;
    char buf[32] = {};
    if (::pread(fd, buf, sizeof buf - 1, 0) > 0) {
      holder = buf;
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    }
    ::close(fd);
    if (e == EWOULDBLOCK) {
      return makeError("runtime dir " + runDir_ + " is in use by derpd pid " + (holder.empty() ? "?" : holder) +
                       " (give this derpd a --runtime-dir of its own)");
    }
    return makeError("flock " + lockPath + ": " + std::strerror(e));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    LOG_WARN("lock file {}: cannot write the pid: {}", lockPath, std::strerror(errno));
  }
  lockFd_ = fd;
  return {};
}

Result<void> Supervisor::prepareRuntimeDir() {
  emptyDir_ = runDir_ + "/empty";
  if (dropPrivileges_) {
    if (auto r = proc::prepareEmptyDir(emptyDir_); !r) return r;
  }
  auto ch = ipc::Channel::bind(zmq_, Role::Supervisor, runDir_, "control");
  if (!ch) return makeError("control socket: " + ch.error());
  control_ = std::move(ch).value();
  ownSocket_ = true;
  return {};
}

Result<void> Supervisor::checkUsers() {
  if (::geteuid() != 0) return {};
  auto missing = [](const std::string& key, const std::string& user, const char* roles, const std::string& err) {
    return makeError("-" + key + " " + user + " (" + roles + " run as it): " + err +
                     ". Create it with `systemd-sysusers` (the package ships /usr/lib/sysusers.d/derpd.conf) "
                     "or `adduser --system --group --no-create-home " + user + "`, or set " + key +
                     " to an existing unprivileged user");
  };
  if (auto ids = proc::lookupUser(cfg_.user); !ids)
    return missing("user", cfg_.user, "derp-worker, stun-worker, mesh-helper and the monitor", ids.error());
  if (tls_) {
    if (auto ids = proc::lookupUser(cfg_.certUser); !ids)
      return missing("cert-user", cfg_.certUser, "cert-agent", ids.error());
  }
  return {};
}

ipc::ManualCertFiles Supervisor::readManualCertFiles(const std::string& reason) const {
  ipc::ManualCertFiles m;
  m.reason = reason;
  const std::string stem = tls::certFileStem(cfg_.hostname);
  int dirFd = ::open(cfg_.certDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int openErr = errno;
  std::optional<proc::UserIds> as;
  struct stat st {};
  if (dropPrivileges_ && dirFd >= 0 && ::fstat(dirFd, &st) == 0 &&
      (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)) {
    if (auto ids = proc::lookupUser(cfg_.certUser)) as = *ids;
  }
  m.crt = readCertFile(dirFd, cfg_.certDir, stem + ".crt", as);
  m.key = readCertFile(dirFd, cfg_.certDir, stem + ".key", as);
  if (dirFd < 0) {
    const std::string err = std::string("-certdir ") + cfg_.certDir + ": " + std::strerror(openErr);
    m.crt.missing = m.key.missing = false;
    m.crt.error = m.key.error = err;
  } else {
    ::close(dirFd);
  }
  return m;
}

void Supervisor::sendManualCertFiles(const std::string& reason) {
  ipc::ManualCertFiles m = readManualCertFiles(reason);
  sendIfReady(Role::CertAgent, m);
  std::fill(m.key.bytes.begin(), m.key.bytes.end(), '\0');
}

// derper reads the files itself and fails on the first handshake; derpd
// checks them before anything starts, so that a bad certificate is one
// error line and exit 78 instead of a restart loop.
Result<void> Supervisor::checkManualCert() {
  if (!tls_) return {};
  if (cfg_.certMode != "manual") {
    if (tls::isIpLiteral(cfg_.hostname))
      return makeError("-hostname " + cfg_.hostname +
                       " is an IP address: Let's Encrypt does not issue for it here; use -certmode manual "
                       "(a self-signed certificate is made for it)");
    return {};
  }
  ipc::ManualCertFiles m = readManualCertFiles("start");
  auto scrub = [&] { std::fill(m.key.bytes.begin(), m.key.bytes.end(), '\0'); };
  if (m.crt.missing && m.key.missing && tls::isIpLiteral(cfg_.hostname)) return {};  // self-signed
  auto unreadable = [](const ipc::ManualCertFile& f) { return f.missing ? f.path + ": no such file" : f.path + ": " + f.error; };
  if (m.crt.missing || !m.crt.error.empty() || m.key.missing || !m.key.error.empty()) {
    std::string why;
    if (m.crt.missing || !m.crt.error.empty()) why = "certificate " + unreadable(m.crt);
    if (m.key.missing || !m.key.error.empty()) why += (why.empty() ? "" : "; ") + ("key " + unreadable(m.key));
    scrub();
    return makeError("certmode manual for -hostname " + cfg_.hostname + ": " + why);
  }
  auto b = tls::validateBundle(m.crt.bytes, m.key.bytes, cfg_.hostname, int64_t(std::time(nullptr)),
                               m.crt.path + " and " + m.key.path);
  scrub();
  if (!b) return makeError("certmode manual for -hostname " + cfg_.hostname + ": " + b.error());
  std::fill(b->keyPem.begin(), b->keyPem.end(), '\0');
  return {};
}

// certdir belongs to cert-agent: a missing one is made (0700, owned by
// cert-user when derpd is root), as derper's autocert cache does. An existing
// one is left as the operator made it; cert-agent says what it cannot read.
Result<void> Supervisor::prepareCertDir() {
  struct stat st {};
  if (::stat(cfg_.certDir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return makeError("-certdir " + cfg_.certDir + " is not a directory");
    return {};
  }
  if (errno != ENOENT) return makeError("-certdir " + cfg_.certDir + ": " + std::strerror(errno));
  std::error_code ec;
  std::filesystem::create_directories(cfg_.certDir, ec);
  if (ec) return makeError("cannot create -certdir " + cfg_.certDir + ": " + ec.message());
  ::chmod(cfg_.certDir.c_str(), 0700);
  if (dropPrivileges_) {
    auto ids = proc::lookupUser(cfg_.certUser);
    if (!ids) return makeError("-cert-user: " + ids.error());
    if (::chown(cfg_.certDir.c_str(), ids->uid, ids->gid) != 0)
      return makeError("chown " + cfg_.certDir + ": " + std::strerror(errno));
  }
  LOG_INFO("created -certdir {} for cert-agent", cfg_.certDir);
  return {};
}

Result<void> Supervisor::prepare() {
  // Where the role binaries are: beside derpd in a build tree, else
  // <prefix>/lib/derpd beside <prefix>/sbin/derpd, else /usr/lib/derpd.
  std::string here = selfDir();
  libexecDir_ = "/usr/lib/derpd";
  for (const std::string& dir : {here, here + "/../lib/derpd"}) {
    if (::access((dir + "/derp-worker").c_str(), X_OK) == 0) {
      libexecDir_ = dir;
      break;
    }
  }
  if (::access(binaryPath("derp-worker").c_str(), X_OK) != 0)
    return makeError("cannot find the derp-worker binary (looked in " + here + ", " + here +
                     "/../lib/derpd and /usr/lib/derpd)");

  auto hp = net::splitHostPort(cfg_.addr);
  if (!hp) return makeError("-a: " + hp.error());
  tls_ = hp->port == 443 || cfg_.certMode == "manual" || cfg_.forceTls;
  dropPrivileges_ = ::geteuid() == 0;
  // Configuration errors (exit 78: systemd does not restart on them), each
  // found before anything is bound or forked.
  prepareExit_ = kExitConfig;
  if (tls_ && cfg_.certDir.empty())
    return makeError("-certdir is empty and no default applies ($HOME and $XDG_CACHE_HOME are unset): set "
                     "certdir, the directory of the " +
                     std::string(cfg_.certMode == "manual" ? "certificate files" : "ACME account and certificates"));
  if (auto r = checkUsers(); !r) return r;
  if (auto r = checkManualCert(); !r) return r;
  prepareExit_ = 1;
  if (auto r = lockRuntimeDir(); !r) return r;
  if (tls_ && ::access(binaryPath("cert-agent").c_str(), X_OK) != 0)
    return makeError("cannot find the cert-agent binary in " + libexecDir_ + " (TLS needs it)");
  eabKey_ = cfg_.acmeEabKey;
  meshHelper_ = !cfg_.meshWith.empty() || cfg_.verifyClients || !cfg_.verifyClientUrl.empty();
  if (meshHelper_ && ::access(binaryPath("mesh-helper").c_str(), X_OK) != 0)
    return makeError("cannot find the mesh-helper binary in " + libexecDir_ +
                     " (-mesh-with, -verify-clients and -verify-client-url need it)");

  // The server key: a fresh one in dev mode without -c, else derper's file.
  crypto::NodePrivate key;
  if (cfg_.dev && cfg_.keyFile.empty()) {
    key = crypto::NodePrivate::generate();
  } else {
    std::string path = cfg_.keyFile.empty() ? cfg_.stateDir + "/derper.key" : cfg_.keyFile;
    bool created = false;
    auto k = crypto::loadOrCreateKeyFile(path, &created);
    if (!k) {
      prepareExit_ = kExitConfig;
      return makeError("server key: " + k.error());
    }
    if (created) LOG_INFO("wrote a new server key to {}", path);
    key = *k;
  }
  keyBytes_ = crypto::keyFileContents(key);
  LOG_INFO("server key {}", key.publicKey().toText());
  if (!cfg_.meshPskFile.empty()) {
    auto mk = crypto::readMeshKeyFile(cfg_.meshPskFile);
    if (!mk) {
      prepareExit_ = kExitConfig;
      return makeError(mk.error());
    }
    meshKey_ = *mk;
  }

  auto fd = net::listenTcp(hp->host, hp->port);
  if (!fd) return makeError("listen on " + cfg_.addr + ": " + fd.error());
  listenFd_ = *fd;
  if (tls_ && cfg_.httpPort >= 0) {
    auto fd80 = net::listenTcp(hp->host, cfg_.httpPort);
    if (!fd80) return makeError("port-80 listener: " + fd80.error());
    port80Fd_ = *fd80;
  }

  if (cfg_.stun) {
    // derper serves STUN on the host of -a.
    auto udp = net::listenUdp(hp->host, cfg_.stunPort);
    if (!udp) return makeError("STUN: " + udp.error());
    udpFds_ = *udp;
  }

  if (cfg_.monitor) {
    if (::access(binaryPath("monitor").c_str(), X_OK) != 0)
      return makeError("cannot find the monitor binary (derpd-probe) in " + libexecDir_ + " (monitor needs it)");
    if (cfg_.monitorDerpMap.empty()) selfMap_ = selfDerpMap();
  }

  if (!dropPrivileges_) LOG_WARN("running as uid {} (not root): children keep this user, no chroot", ::geteuid());
  // Said once here; each child logs its own seccomp line as well.
  if (!proc::kSeccompBuild) {
    LOG_INFO("seccomp: off in this sanitizer build (the sanitizers' own system calls and LeakSanitizer's ptrace)");
  } else if (!cfg_.seccomp) {
    LOG_WARN("seccomp = false: the children run without system call filters");
  }
  if (auto r = prepareRuntimeDir(); !r) return r;

  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&sigs, s);
  if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) return makeError("sigprocmask failed");
  sigFd_ = ::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigFd_ < 0) return makeError(std::string("signalfd: ") + std::strerror(errno));
  signal(SIGPIPE, SIG_IGN);

  if (tls_) {
    if (auto r = prepareCertDir(); !r) return r;
  }
  for (const RoleSpec& spec : table_) {
    if (spec.enabled && !spec.enabled()) continue;
    Child c;
    c.spec = &spec;
    children_.push_back(std::move(c));
  }
  return {};
}

Result<void> Supervisor::spawn(Child& c) {
  std::vector<std::string> argv = {binaryPath(c.name())};
  auto more = c.spec->args();
  argv.insert(argv.end(), more.begin(), more.end());
  argv.insert(argv.end(), {"--control", control_->endpoint()});
  // Every role installs its seccomp filter after the drop unless told not to.
  if (!cfg_.seccomp) argv.push_back("--seccomp=false");

  // One pipe per secret: the child reads it before anything else.
  std::vector<Secret> secrets = c.spec->secrets ? c.spec->secrets() : std::vector<Secret>{};
  std::vector<std::array<int, 2>> pipes;
  auto closeAll = [&] {
    for (auto& p : pipes) {
      if (p[0] >= 0) ::close(p[0]);
      if (p[1] >= 0) ::close(p[1]);
    }
  };
  for (const Secret& s : secrets) {
    std::array<int, 2> p{-1, -1};
    if (::pipe2(p.data(), O_CLOEXEC) != 0) {
      int e = errno;
      closeAll();
      return makeError(std::string("pipe: ") + std::strerror(e));
    }
    pipes.push_back(p);
    argv.insert(argv.end(), {s.flag, std::to_string(p[0])});
  }
  // Its stderr comes to derpd, which writes each line where its own go and
  // remembers the last error (named when derpd gives up on the role).
  int logPipe[2] = {-1, -1};
  if (::pipe2(logPipe, O_CLOEXEC) != 0) {
    int e = errno;
    closeAll();
    return makeError(std::string("pipe: ") + std::strerror(e));
  }
  std::vector<int> keep = c.spec->fds ? c.spec->fds() : std::vector<int>{};

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    closeAll();
    if (logPipe[0] >= 0) ::close(logPipe[0]), ::close(logPipe[1]);
    return makeError(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    // Child: only the fds named on its command line survive exec.
    for (int fd : keep) {
      if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
    }
    for (auto& p : pipes) ::fcntl(p[0], F_SETFD, 0);
    if (logPipe[1] >= 0) {
      ::dup2(logPipe[1], STDOUT_FILENO);
      ::dup2(logPipe[1], STDERR_FILENO);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    std::vector<char*> cargv;
    for (auto& s : argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  for (size_t i = 0; i < pipes.size(); ++i) {
    ::close(pipes[i][0]);
    // A secret is far smaller than a pipe's buffer: this never blocks.
    const std::string& b = secrets[i].bytes;
    ssize_t w = ::write(pipes[i][1], b.data(), b.size());
    ::close(pipes[i][1]);
    if (w != ssize_t(b.size())) LOG_ERR("{}: could not hand over {}", c.name(), secrets[i].flag);
  }
  if (logPipe[0] >= 0) {
    ::close(logPipe[1]);
    ::fcntl(logPipe[0], F_SETFL, O_NONBLOCK);
    if (c.logFd >= 0) ::close(c.logFd);
    c.logFd = logPipe[0];
    c.logPartial.clear();
  }
  c.lastError.clear();
  c.pid = pid;
  c.ready = false;
  c.startedAt = Clock::now();
  c.lastHeard = c.startedAt;
  c.loopTicks.clear();
  c.loopProgress.clear();
  c.watchdogReason.clear();
  // Before the loop polls again: from now on only this process is c's role.
  control_->expectPeer(c.spec->role, pid);
  LOG_INFO("started {} (pid {})", c.name(), pid);
  return {};
}

void Supervisor::onChildExit(Child& c, int status) {
  auto ran = Clock::now() - c.startedAt;
  c.pid = -1;
  c.ready = false;
  c.metrics.clear();
  control_->forgetPeer(c.spec->role);
  if (c.logFd >= 0) readChildLog(c);
  if (c.spec->role == Role::MeshHelper) {
    // Its questions will not be answered: derp-worker's fail-open decides.
    for (uint64_t id : verifyPending_) {
      sendIfReady(Role::DerpWorker, ipc::VerifyReply{id, "unavailable", "mesh-helper exited"});
    }
    verifyPending_.clear();
  }
  if (c.spec->role == Role::DerpWorker) {  // nobody waits for those answers
    verifyPending_.clear();
    verifyWaiting_.clear();
  }
  if (c.spec->role == Role::CertAgent) {
    // Its orders died with it; the next cert-agent starts them afresh.
    for (auto& [token, ch] : challenges_) {
      ch.present = false;
      sendIfReady(Role::DerpWorker, ch);
    }
    challenges_.clear();
  }
  if (stopping_) {
    LOG_INFO("{} {}", c.name(), describeStatus(status));
    return;
  }
  if (!c.watchdogReason.empty()) {
    LOG_ERR("{} {} (child-watchdog: {}); restarting it", c.name(), describeStatus(status), c.watchdogReason);
  } else {
    LOG_ERR("{} {}; restarting it", c.name(), describeStatus(status));
  }
  notifyState();
  c.quickFailures = ran < kQuickExit ? c.quickFailures + 1 : 0;
  if (c.quickFailures >= kMaxQuickFailures && c.spec->required) {
    LOG_ERR("{} cannot start: it exited {} times in a row within {} s of starting; {}; derpd gives up", c.name(),
            c.quickFailures, std::chrono::duration_cast<std::chrono::seconds>(kQuickExit).count(),
            c.lastError.empty() ? std::string("it logged no error (see its lines above)")
                                : "its last error: " + c.lastError);
    exitCode_ = 1;
    stopAll();
    return;
  }
  auto delay = restartDelay(c.quickFailures);
  c.restartAt = Clock::now() + delay;
  ++c.restarts;
}

void Supervisor::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (Child& c : children_) {
      if (c.pid == pid) onChildExit(c, status);
    }
  }
}

void Supervisor::sendToChildren(const std::function<ipc::SendResult(Child&)>& send, const char* what) {
  for (Child& c : children_) {
    if (c.pid <= 0) continue;
    if (!c.ready) {
      // Not through its handshake yet: it will read the current state when
      // it starts, except for a stop, which a signal delivers.
      if (std::string_view(what) == "Shutdown") ::kill(c.pid, SIGTERM);
      continue;
    }
    ipc::SendResult r = send(c);
    if (!r.ok()) onSendFailure(c, what, r.error);
  }
  pollControl();  // libzmq may have consumed the fd's wake-up during send()
}

void Supervisor::stopAll() {
  if (!stopping_) notifier_.notify("STOPPING=1\nSTATUS=stopping: draining clients");
  stopping_ = true;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.drainTimeout).count();
  sendToChildren(
      [&](Child& c) {
        return control_->send(c.spec->role, ipc::Shutdown{static_cast<uint32_t>(ms)});
      },
      "Shutdown");
}

void Supervisor::reload() {
  // systemd (Type=notify) hears when a reload starts and, whatever happens
  // below, that it is over; before the first READY=1 there is nothing to say.
  if (notifiedReady_)
    notifier_.notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(proc::Notifier::monotonicUsec()));
  struct Done {
    Supervisor& s;
    ~Done() {
      if (!s.notifiedReady_) return;
      s.notifiedStatus_.clear();
      s.notifier_.notify("READY=1");
      s.notifyState();
    }
  } done{*this};
  auto fresh = config::loadConfig(args_);
  if (!fresh) {
    LOG_ERR("SIGHUP: config not reloaded, keeping the running one: {}", fresh.error());
    return;
  }
  if (auto v = config::validate(*fresh); !v) {
    LOG_ERR("SIGHUP: config not reloaded, keeping the running one: {}", v.error());
    return;
  }
  applyDevDefaults(*fresh);
  std::string meshKey;
  if (!fresh->meshPskFile.empty()) {
    auto mk = crypto::readMeshKeyFile(fresh->meshPskFile);
    if (!mk) {
      LOG_ERR("SIGHUP: config not reloaded, keeping the running one: {}", mk.error());
      return;
    }
    meshKey = *mk;
  }
  for (const std::string& key : config::keyNames()) {
    if (std::find(kLiveKeys.begin(), kLiveKeys.end(), key) != kLiveKeys.end()) continue;
    if (config::renderValue(*fresh, key) != config::renderValue(cfg_, key)) {
      LOG_WARN("SIGHUP: {} changed ({} -> {}); that takes effect when derpd restarts", key,
               config::renderValue(cfg_, key), config::renderValue(*fresh, key));
    }
  }
  if (!(cfg_.dev && cfg_.keyFile.empty())) {
    // The server key is who this relay is: clients learn it at connect and
    // mesh peers by it. A changed file is noticed, not applied live.
    std::string path = cfg_.keyFile.empty() ? cfg_.stateDir + "/derper.key" : cfg_.keyFile;
    auto k = crypto::loadOrCreateKeyFile(path);
    if (!k) {
      LOG_WARN("SIGHUP: server key {}: {}; still serving with the key derpd started with", path, k.error());
    } else if (crypto::keyFileContents(*k) != keyBytes_) {
      LOG_WARN("SIGHUP: the server key in {} changed; it takes effect when derpd restarts", path);
    }
  }
  if (meshKey != meshKey_) LOG_INFO("SIGHUP: new mesh key from {}", fresh->meshPskFile);
  std::fill(meshKey_.begin(), meshKey_.end(), '\0');
  meshKey_ = std::move(meshKey);
  if (fresh->logLevel != cfg_.logLevel) {
    log::setLevel(fresh->logLevel);
    LOG_INFO("SIGHUP: log level {}", fresh->logLevel);
  }
  // Only the live keys change; everything else stays as the processes run it.
  cfg_.logLevel = fresh->logLevel;
  cfg_.meshPskFile = fresh->meshPskFile;
  LOG_INFO("SIGHUP: configuration re-read; passing the reload to the children");
  sendToChildren(
      [&](Child& c) {
        ipc::Reload msg{cfg_.logLevel, c.spec->role == Role::DerpWorker ? meshKey_ : std::string()};
        return control_->send(c.spec->role, msg);
      },
      "Reload");
  // cert-agent cannot read root-only files: derpd reads them again for it.
  if (tls_ && cfg_.certMode == "manual") sendManualCertFiles("reload");
}

void Supervisor::checkWatchdog(Clock::time_point now) {
  const auto limit = std::chrono::duration_cast<Clock::duration>(cfg_.childWatchdog);
  bool answering = true;
  for (Child& c : children_) {
    if (c.pid <= 0) {
      if (c.spec->required) answering = false;
      continue;
    }
    if (!c.watchdogReason.empty() || limit.count() == 0) continue;  // killed, not reaped yet; or off
    std::string why;
    if (now - c.lastHeard > limit) {
      why = "sent nothing on the control socket for " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - c.lastHeard).count()) + " s";
    }
    for (size_t i = 0; why.empty() && i < c.loopProgress.size(); ++i) {
      if (now - c.loopProgress[i] > limit) {
        why = "event loop " + std::to_string(i) + " made no progress for " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - c.loopProgress[i]).count()) +
              " s";
      }
    }
    if (why.empty()) continue;
    LOG_ERR("{} (pid {}) {} (child-watchdog {}): killing it with SIGKILL", c.name(), c.pid, why,
            config::formatGoDuration(cfg_.childWatchdog));
    c.watchdogReason = why;
    ::kill(c.pid, SIGKILL);
    if (c.spec->required) answering = false;
  }
  // systemd's own watchdog of derpd (WatchdogSec=): pinged from this loop,
  // and only while the children answer, so that a derpd that cannot keep
  // them going is restarted as a whole.
  if (systemdWatchdog_.count() > 0 && answering && now - lastWatchdogPing_ >= systemdWatchdog_ / 2) {
    notifier_.notify("WATCHDOG=1");
    lastWatchdogPing_ = now;
  }
}

void Supervisor::notifyState() {
  if (!notifier_.enabled() || stopping_) return;
  bool allReady = true;
  for (const Child& c : children_) {
    if (c.spec->required && !(c.pid > 0 && c.ready)) allReady = false;
  }
  std::string status;
  if (!allReady) {
    status = notifiedReady_ ? "restarting a role" : "starting";
  } else {
    status = "serving " + std::to_string(clients_) + (clients_ == 1 ? " client" : " clients");
  }
  std::string msg;
  if (allReady && !notifiedReady_) {
    msg = "READY=1\n";
    notifiedReady_ = true;
  }
  if (status == notifiedStatus_ && msg.empty()) return;
  notifiedStatus_ = status;
  notifier_.notify(msg + "STATUS=" + status);
}

void Supervisor::reopenLogs() {
  log::reopen();
  LOG_INFO("SIGUSR1: log file reopened");
  sendToChildren([&](Child& c) { return control_->send(c.spec->role, ipc::LogReopen{}); }, "LogReopen");
}

// ---- control plane ----

Result<void> Supervisor::onReady(Role from, const ipc::Ready&) {
  Child* c = childFor(from);
  if (!c || c->pid <= 0) return makeError("Ready from a role that is not running");
  c->ready = true;
  LOG_INFO("{} is ready (pid {})", c->name(), c->pid);
  if (from == Role::CertAgent && cfg_.certMode == "manual") sendManualCertFiles("start");
  notifyState();
  if (from == Role::DerpWorker) {
    // A (re)started derp-worker: the certificate and challenges in force.
    if (cert_) sendIfReady(Role::DerpWorker, *cert_);
    for (const auto& [token, ch] : challenges_) sendIfReady(Role::DerpWorker, ch);
    if (meshPeers_) sendIfReady(Role::DerpWorker, *meshPeers_);
  }
  if (from == Role::MeshHelper) {
    // The questions that came while it was starting.
    std::vector<ipc::VerifyRequest> waiting;
    waiting.swap(verifyWaiting_);
    for (const ipc::VerifyRequest& q : waiting) {
      if (sendIfReady(Role::MeshHelper, q)) {
        verifyPending_.insert(q.id);
      } else {
        sendIfReady(Role::DerpWorker, ipc::VerifyReply{q.id, "unavailable", "mesh-helper could not be asked"});
      }
    }
  }
  return okResult();
}

Result<void> Supervisor::onMetricsReport(Role from, const ipc::MetricsReport& msg) {
  Child* c = childFor(from);
  if (!c || c->pid <= 0) return makeError("MetricsReport from a role that is not running");
  for (const ipc::Metric& m : msg.metrics) {
    // Copied into /debug/varz: a bad name or label would corrupt it.
    if (!ipc::isValidMetric(m)) return makeError("bad metric name or labels in MetricsReport");
  }
  c->metrics = msg.metrics;
  return okResult();
}

Result<void> Supervisor::onSnapshotRequest(Role from, const ipc::MetricsSnapshotRequest& req) {
  clients_ = req.clients;
  if (Child* c = childFor(from)) {
    const auto now = Clock::now();
    if (c->loopTicks.size() != req.loopTicks.size()) {
      c->loopTicks = req.loopTicks;
      c->loopProgress.assign(req.loopTicks.size(), now);
    }
    for (size_t i = 0; i < req.loopTicks.size(); ++i) {
      if (req.loopTicks[i] != c->loopTicks[i]) c->loopProgress[i] = now;
      c->loopTicks[i] = req.loopTicks[i];
    }
  }
  notifyState();
  ipc::MetricsSnapshotReply reply;
  ipc::RoleMetrics own{Role::Supervisor, {}};
  for (const Child& c : children_) {
    const std::string label = "role=\"" + c.name() + "\"";
    own.metrics.push_back({"derpd_role_up", label, c.pid > 0 && c.ready ? 1.0 : 0.0, ipc::MetricType::Gauge});
    own.metrics.push_back({"derpd_role_restarts", label, double(c.restarts), ipc::MetricType::Counter});
  }
  reply.roles.push_back(std::move(own));
  for (const Child& c : children_) {
    if (c.spec->role != from && !c.metrics.empty()) reply.roles.push_back({c.spec->role, c.metrics});
  }
  ipc::SendResult r = control_->send(from, reply, requestId_);
  if (!r.ok()) LOG_WARN("metrics snapshot for {}: {}", ipc::roleName(from), r.error);
  return okResult();
}

template <typename Msg>
bool Supervisor::sendIfReady(Role role, const Msg& msg) {
  Child* c = childFor(role);
  if (!c || c->pid <= 0 || !c->ready) return false;
  ipc::SendResult r = control_->send(role, msg);
  if (!r.ok()) {
    onSendFailure(*c, ipc::msgTypeName(Msg::kType), r.error);
    return false;
  }
  return true;
}

void Supervisor::onSendFailure(Child& c, std::string_view what, const std::string& why) {
  if (stopping_) {
    // Children are leaving: one that already closed its socket is expected.
    LOG_DEBUG("{}: {} not sent while stopping ({})", c.name(), what, why);
    return;
  }
  // The child has not read kDefaultHwm messages, or is gone: wedged.
  LOG_ERR("{}: cannot send {} ({}); restarting it", c.name(), what, why);
  ::kill(c.pid, SIGKILL);
}

Result<void> Supervisor::onCertUpdate(Role, const ipc::CertUpdate& msg) {
  if (cert_) std::fill(cert_->keyPem.begin(), cert_->keyPem.end(), '\0');
  cert_ = msg;
  LOG_INFO("certificate from cert-agent (serial {}, {}); passing it to derp-worker", msg.serial, msg.source);
  sendIfReady(Role::DerpWorker, *cert_);
  return okResult();
}

Result<void> Supervisor::onAcmeChallenge(Role, const ipc::AcmeChallenge& msg) {
  if (msg.present) {
    challenges_[msg.token] = msg;
  } else {
    challenges_.erase(msg.token);
  }
  // A derp-worker that is not ready gets the challenges in force when it is.
  sendIfReady(Role::DerpWorker, msg);
  return okResult();
}

Result<void> Supervisor::onAcmeChallengeReady(Role, const ipc::AcmeChallengeReady& msg) {
  sendIfReady(Role::CertAgent, msg);
  return okResult();
}

Result<void> Supervisor::onVerifyRequest(Role, const ipc::VerifyRequest& msg) {
  // Bounded like derp-worker's own table: a flood cannot grow derpd.
  constexpr size_t kMaxPending = 16384;
  std::string why;
  if (!meshHelper_) {
    why = "no mesh-helper in this configuration";
  } else if (verifyPending_.size() + verifyWaiting_.size() >= kMaxPending) {
    why = "mesh-helper has too many questions pending";
  } else {
    Child* c = childFor(Role::MeshHelper);
    if (c && c->pid > 0 && c->ready) {
      if (sendIfReady(Role::MeshHelper, msg)) {
        verifyPending_.insert(msg.id);
        return okResult();
      }
      why = "mesh-helper could not be asked";
    } else {
      // Starting or restarting: asked when it says Ready (derp-worker stops
      // waiting on its own after a while).
      verifyWaiting_.push_back(msg);
      return okResult();
    }
  }
  sendIfReady(Role::DerpWorker, ipc::VerifyReply{msg.id, "unavailable", why});
  return okResult();
}

Result<void> Supervisor::onVerifyReply(Role, const ipc::VerifyReply& msg) {
  // Only answers to questions still open go on (not those of a derp-worker
  // that has restarted since).
  if (verifyPending_.erase(msg.id)) sendIfReady(Role::DerpWorker, msg);
  return okResult();
}

Result<void> Supervisor::onManualCertFilesRequest(Role, const ipc::ManualCertFilesRequest& msg) {
  if (cfg_.certMode != "manual") return makeError("ManualCertFilesRequest in certmode " + cfg_.certMode);
  sendManualCertFiles(msg.reason);
  return okResult();
}

Result<void> Supervisor::onMeshPeers(Role, const ipc::MeshPeers& msg) {
  meshPeers_ = msg;
  sendIfReady(Role::DerpWorker, msg);
  return okResult();
}

void Supervisor::pollControl() {
  for (int round = 0; round < 64; ++round) {
    ipc::PollResult r = control_->poll(
        [this](Role from, const ipc::Envelope& env) {
          requestId_ = env.requestId;
          if (Child* c = childFor(from); c && c->pid > 0) c->lastHeard = Clock::now();
          return ipc::dispatch(*this, kHandlers, from, env);
        },
        kControlBudget);
    if (r.fault) {
      const ipc::PeerFault& f = *r.fault;
      Child* c = f.peer ? childFor(*f.peer) : nullptr;
      if (c && c->pid > 0) {
        LOG_ERR("control: {}; killing {} (pid {}) so that it restarts", f.describe(), c->name(), c->pid);
        ::kill(c->pid, SIGKILL);
      } else if (!f.peer) {
        LOG_ERR("control: {}; ignored", f.describe());
      } else {
        LOG_ERR("control: {}; ignored (no such child running)", f.describe());
      }
      continue;  // the rest of the queue still needs reading
    }
    if (!r.more) return;
  }
}

void Supervisor::readChildLog(Child& c) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(c.logFd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {  // the child and every copy of the write end are gone
      if (!c.logPartial.empty()) log::writeRaw(c.logPartial);
      c.logPartial.clear();
      ::close(c.logFd);
      c.logFd = -1;
      return;
    }
    c.logPartial.append(buf, size_t(n));
    size_t start = 0;
    for (size_t nl; (nl = c.logPartial.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string_view line = std::string_view(c.logPartial).substr(start, nl - start);
      log::writeRaw(line);
      if (std::string e = errorMessageOf(line); !e.empty()) c.lastError = std::move(e);
    }
    c.logPartial.erase(0, start);
    if (c.logPartial.size() > kMaxLogLine) {
      log::writeRaw(c.logPartial);
      c.logPartial.clear();
    }
  }
}

int Supervisor::run() {
  for (Child& c : children_) {
    if (auto r = spawn(c); !r) {
      LOG_ERR("cannot start {}: {}", c.name(), r.error());
      return 1;
    }
  }
  Clock::time_point stopDeadline{};
  for (;;) {
    bool anyAlive = std::any_of(children_.begin(), children_.end(), [](const Child& c) { return c.pid > 0; });
    if (stopping_ && !anyAlive) break;
    if (stopping_ && stopDeadline == Clock::time_point{}) {
      stopDeadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(cfg_.drainTimeout) +
                     std::chrono::seconds(5);
    }
    // Sleep until a signal, a control message, a child's log line or the
    // next restart / stop deadline.
    int timeout = 1000;
    auto now = Clock::now();
    for (const Child& c : children_) {
      if (!stopping_ && c.pid < 0 && c.restartAt != Clock::time_point{}) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c.restartAt - now).count();
        timeout = std::clamp<int>(int(ms), 0, timeout);
      }
    }
    std::vector<pollfd> pfds = {{sigFd_, POLLIN, 0}, {control_->fd(), POLLIN, 0}};
    for (const Child& c : children_) {
      if (c.logFd >= 0) pfds.push_back({c.logFd, POLLIN, 0});
    }
    int n = ::poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      LOG_ERR("poll: {}", std::strerror(errno));
      return 1;
    }
    for (Child& c : children_) {
      if (c.logFd >= 0) readChildLog(c);
    }
    pollControl();
    signalfd_siginfo si;
    while (::read(sigFd_, &si, sizeof si) == ssize_t(sizeof si)) {
      switch (si.ssi_signo) {
        case SIGCHLD:
          reap();
          break;
        case SIGTERM:
        case SIGINT:
          if (!stopping_) {
            LOG_INFO("{}: stopping the children", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            stopAll();
          }
          break;
        case SIGHUP:
          reload();
          break;
        case SIGUSR1:
          reopenLogs();
          break;
        default:
          break;
      }
    }
    reap();  // a SIGCHLD may have been coalesced with another signal
    now = Clock::now();
    if (stopping_) {
      if (stopDeadline != Clock::time_point{} && now >= stopDeadline) {
        for (Child& c : children_) {
          if (c.pid > 0) {
            LOG_WARN("{} (pid {}) did not stop in time: SIGKILL", c.name(), c.pid);
            ::kill(c.pid, SIGKILL);
          }
        }
        stopDeadline = now + std::chrono::seconds(5);
      }
      continue;
    }
    checkWatchdog(now);
    for (Child& c : children_) {
      if (c.pid < 0 && c.restartAt != Clock::time_point{} && now >= c.restartAt) {
        c.restartAt = {};
        if (auto r = spawn(c); !r) {
          LOG_ERR("cannot restart {}: {}", c.name(), r.error());
          c.restartAt = now + restartDelay(++c.quickFailures);
        }
      }
    }
  }
  LOG_INFO("stopped");
  return exitCode_;
}

}  // namespace derpd::supervisor
