#include "supervisor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/crypto/keys.hpp"
#include "common/log/log.hpp"
#include "common/net/listener.hpp"
#include "common/proc/sandbox.hpp"

namespace derpd::supervisor {

namespace {

// A child that exits within this long of starting counts as a failed start.
constexpr auto kQuickExit = std::chrono::seconds(2);
// That many failed starts in a row: the role cannot run; derpd gives up.
constexpr int kMaxQuickFailures = 5;

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

}  // namespace

std::chrono::milliseconds restartDelay(int failures) {
  int64_t ms = 100;
  for (int i = 0; i < failures && ms < 10000; ++i) ms *= 2;
  return std::chrono::milliseconds(std::min<int64_t>(ms, 10000));
}

Supervisor::Supervisor(config::Config cfg, std::vector<std::string> args)
    : cfg_(std::move(cfg)), args_(std::move(args)) {
  // The spawn table. Roles arrive here as they are built (stun-worker,
  // cert-agent, mesh-helper, monitor).
  table_.push_back(RoleSpec{"derp-worker", true, [this](const Child& c) {
    std::vector<std::string> a = {"-a", cfg_.addr, "--listen-fd", std::to_string(listenFd_),
                                  "--key-fd", std::to_string(c.keyFd),
                                  "-certmode", cfg_.certMode, "-hostname", cfg_.hostname,
                                  "-derp=" + std::string(cfg_.derp ? "true" : "false"),
                                  "-dev=" + std::string(cfg_.dev ? "true" : "false"),
                                  "--threads", std::to_string(cfg_.threads),
                                  "--drain-timeout", config::formatGoDuration(cfg_.drainTimeout),
                                  "--log-level", cfg_.logLevel};
    if (!cfg_.certDir.empty()) a.insert(a.end(), {"-certdir", cfg_.certDir});
    if (port80Fd_ >= 0) a.insert(a.end(), {"--port80-fd", std::to_string(port80Fd_)});
    if (!cfg_.meshPskFile.empty()) a.insert(a.end(), {"-mesh-psk-file", cfg_.meshPskFile});
    if (dropPrivileges_) a.insert(a.end(), {"--user", cfg_.user, "--chroot", emptyDir_});
    return a;
  }});
}

Supervisor::~Supervisor() {
  std::fill(keyBytes_.begin(), keyBytes_.end(), '\0');
  if (listenFd_ >= 0) ::close(listenFd_);
  if (port80Fd_ >= 0) ::close(port80Fd_);
  if (sigFd_ >= 0) ::close(sigFd_);
}

std::string Supervisor::binaryPath(const std::string& role) const { return libexecDir_ + "/" + role; }

Result<void> Supervisor::prepare() {
  // Where the role binaries are: beside derpd in a build tree, else the
  // installed /usr/lib/derpd.
  std::string here = selfDir();
  libexecDir_ = ::access((here + "/derp-worker").c_str(), X_OK) == 0 ? here : "/usr/lib/derpd";
  if (::access(binaryPath("derp-worker").c_str(), X_OK) != 0)
    return makeError("cannot find the derp-worker binary (looked in " + here + " and /usr/lib/derpd)");

  auto hp = net::splitHostPort(cfg_.addr);
  if (!hp) return makeError("-a: " + hp.error());
  tls_ = hp->port == 443 || cfg_.certMode == "manual";
  if (tls_ && cfg_.certMode != "manual")
    return makeError("-certmode letsencrypt is not supported yet; use -certmode manual (or a port other than 443 for plain HTTP)");

  // The server key: a fresh one in dev mode without -c, else derper's file.
  crypto::NodePrivate key;
  if (cfg_.dev && cfg_.keyFile.empty()) {
    key = crypto::NodePrivate::generate();
  } else {
    std::string path = cfg_.keyFile.empty() ? cfg_.stateDir + "/derper.key" : cfg_.keyFile;
    bool created = false;
    auto k = crypto::loadOrCreateKeyFile(path, &created);
    if (!k) return makeError("server key: " + k.error());
    if (created) LOG_INFO("wrote a new server key to {}", path);
    key = *k;
  }
  keyBytes_ = crypto::keyFileContents(key);
  LOG_INFO("server key {}", key.publicKey().toText());

  auto fd = net::listenTcp(hp->host, hp->port);
  if (!fd) return makeError("listen on " + cfg_.addr + ": " + fd.error());
  listenFd_ = *fd;
  if (tls_ && cfg_.httpPort >= 0) {
    auto fd80 = net::listenTcp(hp->host, cfg_.httpPort);
    if (!fd80) return makeError("port-80 listener: " + fd80.error());
    port80Fd_ = *fd80;
  }

  if (::geteuid() == 0) {
    dropPrivileges_ = true;
    if (::mkdir(cfg_.runtimeDir.c_str(), 0755) != 0 && errno != EEXIST)
      return makeError("mkdir " + cfg_.runtimeDir + ": " + std::strerror(errno));
    emptyDir_ = cfg_.runtimeDir + "/empty";
    if (auto r = proc::prepareEmptyDir(emptyDir_); !r) return r;
  } else {
    LOG_WARN("running as uid {} (not root): children keep this user, no chroot", ::geteuid());
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&sigs, s);
  if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) return makeError("sigprocmask failed");
  sigFd_ = ::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigFd_ < 0) return makeError(std::string("signalfd: ") + std::strerror(errno));
  signal(SIGPIPE, SIG_IGN);

  for (const RoleSpec& spec : table_) children_.push_back(Child{&spec});
  return {};
}

Result<void> Supervisor::spawn(Child& c) {
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) return makeError(std::string("pipe: ") + std::strerror(errno));
  c.keyFd = pipeFds[0];
  std::vector<std::string> argv = {binaryPath(c.spec->name)};
  auto more = c.spec->args(c);
  argv.insert(argv.end(), more.begin(), more.end());

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(pipeFds[0]);
    ::close(pipeFds[1]);
    return makeError(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    // Child: only the fds named on its command line survive exec.
    for (int fd : {listenFd_, port80Fd_, pipeFds[0]}) {
      if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
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
  ::close(pipeFds[0]);
  c.keyFd = -1;
  // The key file is far smaller than a pipe's buffer: this never blocks.
  ssize_t w = ::write(pipeFds[1], keyBytes_.data(), keyBytes_.size());
  ::close(pipeFds[1]);
  if (w != ssize_t(keyBytes_.size())) LOG_ERR("{}: could not hand over the server key", c.spec->name);
  c.pid = pid;
  c.startedAt = Clock::now();
  LOG_INFO("started {} (pid {})", c.spec->name, pid);
  return {};
}

void Supervisor::onChildExit(Child& c, int status) {
  auto ran = Clock::now() - c.startedAt;
  c.pid = -1;
  if (stopping_) {
    LOG_INFO("{} {}", c.spec->name, describeStatus(status));
    return;
  }
  LOG_ERR("{} {}; restarting it", c.spec->name, describeStatus(status));
  c.quickFailures = ran < kQuickExit ? c.quickFailures + 1 : 0;
  if (c.quickFailures >= kMaxQuickFailures && c.spec->required) {
    LOG_ERR("{} cannot start: it exited {} times in a row within {} s of starting (see its log lines above); "
            "derpd gives up",
            c.spec->name, c.quickFailures, std::chrono::duration_cast<std::chrono::seconds>(kQuickExit).count());
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

void Supervisor::stopAll() {
  stopping_ = true;
  for (Child& c : children_) {
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  }
}

void Supervisor::reload() {
  auto fresh = config::loadConfig(args_);
  if (!fresh) {
    LOG_ERR("SIGHUP: config not reloaded, keeping the running one: {}", fresh.error());
    return;
  }
  if (auto v = config::validate(*fresh); !v) {
    LOG_ERR("SIGHUP: config not reloaded, keeping the running one: {}", v.error());
    return;
  }
  if (fresh->addr != cfg_.addr || fresh->httpPort != cfg_.httpPort) {
    LOG_WARN("SIGHUP: -a / -http-port changed; new listening sockets need a restart of derpd");
  }
  LOG_INFO("SIGHUP: configuration re-read; passing the reload to the children");
  for (Child& c : children_) {
    if (c.pid > 0) ::kill(c.pid, SIGHUP);
  }
}

int Supervisor::run() {
  for (Child& c : children_) {
    if (auto r = spawn(c); !r) {
      LOG_ERR("cannot start {}: {}", c.spec->name, r.error());
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
    // Sleep until a signal or the next restart / stop deadline.
    int timeout = 1000;
    auto now = Clock::now();
    for (const Child& c : children_) {
      if (!stopping_ && c.pid < 0 && c.restartAt != Clock::time_point{}) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c.restartAt - now).count();
        timeout = std::clamp<int>(int(ms), 0, timeout);
      }
    }
    pollfd pfd{sigFd_, POLLIN, 0};
    int n = ::poll(&pfd, 1, timeout);
    if (n < 0 && errno != EINTR) {
      LOG_ERR("poll: {}", std::strerror(errno));
      return 1;
    }
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
          log::reopen();
          LOG_INFO("SIGUSR1: log file reopened");
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
            LOG_WARN("{} (pid {}) did not stop in time: SIGKILL", c.spec->name, c.pid);
            ::kill(c.pid, SIGKILL);
          }
        }
        stopDeadline = now + std::chrono::seconds(5);
      }
      continue;
    }
    for (Child& c : children_) {
      if (c.pid < 0 && c.restartAt != Clock::time_point{} && now >= c.restartAt) {
        c.restartAt = {};
        if (auto r = spawn(c); !r) {
          LOG_ERR("cannot restart {}: {}", c.spec->name, r.error());
          c.restartAt = now + restartDelay(++c.quickFailures);
        }
      }
    }
  }
  LOG_INFO("stopped");
  return exitCode_;
}

}  // namespace derpd::supervisor
