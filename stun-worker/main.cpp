// stun-worker: derpd's STUN process. Runs under derpd (sockets from
// --udp-fd) or alone with derper's -a / -stun-port. One thread: signals come
// through a signalfd in the server's epoll loop, like the UDP sockets.
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/config/go_flags.hpp"
#include "common/ipc/child.hpp"
#include "common/log/log.hpp"
#include "common/net/listener.hpp"
#include "common/net/udp.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "control.hpp"
#include "options.hpp"
#include "server.hpp"

using namespace derpd;
using namespace derpd::stun_worker;

namespace {

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

Result<std::vector<int>> openSockets(const Options& opts) {
  if (opts.udpFds.empty()) {
    auto hp = net::splitHostPort(opts.addr);
    if (!hp) return makeError("-a: " + hp.error());
    return net::listenUdp(hp->host, opts.stunPort);
  }
  for (int fd : opts.udpFds) {
    if (auto r = net::adoptUdpSocket(fd); !r) return makeError("--udp-fd: " + r.error());
  }
  return opts.udpFds;
}

// Reads every pending signal: SIGTERM/SIGINT stop the loop, SIGHUP is noted.
void onSignals(int sfd, Server& server) {
  for (int i = 0; i < 64; i++) {
    signalfd_siginfo si{};
    if (::read(sfd, &si, sizeof si) != ssize_t(sizeof si)) return;  // EAGAIN: all read
    if (si.ssi_signo == SIGHUP) {
      LOG_INFO("SIGHUP: nothing to reload");
      continue;
    }
    LOG_INFO("signal {}: stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  }
}

// --forbidden-syscall-after-for-test MS: a timer that, once the sandbox is
// in force, makes a system call no allow-list has, so tests can see the
// filter kill stun-worker (SIGSYS) and derpd restart it. personality(2)
// with 0xffffffff only reads the persona: without a filter it is harmless.
Result<int> armForbiddenSyscallForTest(Server& srv, int ms) {
  int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return makeError(std::string("timerfd_create: ") + std::strerror(errno));
  itimerspec its{};
  its.it_value.tv_sec = ms / 1000;
  its.it_value.tv_nsec = long(ms % 1000) * 1000000L;
  if (::timerfd_settime(fd, 0, &its, nullptr) != 0) {
    int e = errno;
    ::close(fd);
    return makeError(std::string("timerfd_settime: ") + std::strerror(e));
  }
  auto r = srv.addFd(fd, [fd](uint32_t) {
    uint64_t ticks = 0;
    if (::read(fd, &ticks, sizeof ticks) != ssize_t(sizeof ticks)) return;
    LOG_WARN("test hook: calling personality(2), which no seccomp allow-list has");
    long rc = ::syscall(SYS_personality, 0xffffffffUL);
    LOG_WARN("test hook: personality(2) returned {}: no seccomp filter is in force", rc);
  });
  if (!r) {
    ::close(fd);
    return makeError(r.error());
  }
  LOG_WARN("test hook: a forbidden system call in {} ms", ms);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything else, so no signal is ever delivered asynchronously.
  const sigset_t sigs = ipc::blockChildSignals();

  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (auto rc = config::earlyExit("stun-worker", opts, usage)) return *rc;
  log::init("stun-worker", opts->logLevel);

  // The control plane first: the handshake needs the socket path, which the
  // chroot below hides.
  const pid_t parent = ::getppid();
  std::unique_ptr<zmq::context_t> zctx;
  std::unique_ptr<ipc::Channel> channel;
  if (!opts->control.empty()) {
    zctx = std::make_unique<zmq::context_t>(1);
    auto ch = ipc::connectToSupervisor(*zctx, ipc::Role::StunWorker, opts->control, std::chrono::seconds(10));
    if (!ch) return fail(ch.error());
    channel = std::move(ch).value();
  }

  auto fds = openSockets(*opts);
  if (!fds) return fail("STUN sockets: " + fds.error());
  auto server = Server::create(std::move(*fds));
  if (!server) return fail("STUN server: " + server.error());
  int sfd = ::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));
  Server& srv = **server;
  if (auto r = srv.addFd(sfd, [&](uint32_t) { onSignals(sfd, srv); }); !r) return fail(r.error());

  // The test hook's timer, made while every call is still allowed.
  int hookFd = -1;
  if (opts->forbiddenSyscallAfterMsForTest > 0) {
    auto h = armForbiddenSyscallForTest(srv, opts->forbiddenSyscallAfterMsForTest);
    if (!h) return fail(h.error());
    hookFd = *h;
  }

  // Sockets are open: enter the sandbox before serving.
  bool dropped = false;
  if (!opts->user.empty() || !opts->chrootDir.empty()) {
    auto sb = proc::enterSandbox({opts->user, opts->chrootDir});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {}", sb->what);
    dropped = sb->dropped;
  }
  std::unique_ptr<Control> control;
  if (channel) {
    // A uid change clears PR_SET_PDEATHSIG: arm it now, so stun-worker never
    // outlives derpd.
    if (auto r = ipc::armParentDeathSignal(parent); !r) return fail(r.error());
    control = std::make_unique<Control>(*channel, srv);
  }
  // The sandbox's last step: from here on only the allow-list's calls.
  auto sc = proc::enterSeccomp(ipc::Role::StunWorker, opts->seccomp, dropped);
  if (!sc) return fail(sc.error());
  LOG_INFO("{}", *sc);
  for (const auto& a : srv.addresses()) LOG_INFO("serving STUN on {}", a);
  if (control) {
    if (auto r = control->attach(); !r) return fail(r.error());
  }

  if (auto r = srv.run(); !r) return fail(r.error());
  for (const auto& m : srv.metrics()) LOG_DEBUG("{}{{{}}} {}", m.name, m.labels, uint64_t(m.value));
  if (channel) srv.removeFd(channel->fd());
  srv.removeFd(sfd);
  ::close(sfd);
  if (hookFd >= 0) {
    srv.removeFd(hookFd);
    ::close(hookFd);
  }
  LOG_INFO("stopped");
  return 0;
}
