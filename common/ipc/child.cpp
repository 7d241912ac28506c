#include "common/ipc/child.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log/log.hpp"

namespace derpd::ipc {

Result<std::unique_ptr<Channel>> connectToSupervisor(zmq::context_t& ctx, Role self,
                                                     const std::string& endpoint,
                                                     std::chrono::milliseconds timeout) {
  // libzmq would retry a missing socket path forever: say so at once.
  if (endpoint.rfind("ipc://", 0) == 0) {
    struct stat st {};
    const std::string path = endpoint.substr(6);
    if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      return makeError("control socket " + path + " does not exist (is derpd running?)");
    }
  }
  auto ch = Channel::connect(ctx, self, Role::Supervisor, endpoint);
  if (!ch.ok()) return std::move(ch).takeError();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Nothing but Hello may arrive before the handshake completes; the channel
  // turns anything else into a fault. Budget 1 so nothing after the Hello is
  // consumed here.
  const Handler none = [](Role, const Envelope&) -> Result<void> {
    return makeError("message before the handshake completed");
  };
  while (!(*ch)->peerReady(Role::Supervisor)) {
    PollResult r = (*ch)->poll(none, 1);
    if (r.fault) return makeError("control handshake with " + endpoint + ": " + r.fault->describe());
    if ((*ch)->peerReady(Role::Supervisor)) break;
    if (r.handled > 0) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return makeError("control handshake with " + endpoint + ": no Hello from derpd within " +
                       std::to_string(timeout.count()) + " ms");
    }
    pollfd pfd{(*ch)->fd(), POLLIN, 0};
    // ZMQ_FD is edge-like: wake at least every 50 ms to re-check ZMQ_EVENTS.
    ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 50)));
  }
  return ch;
}

Result<void> pollChild(Channel& ch, const Handler& handler) {
  for (;;) {
    PollResult r = ch.poll(handler, 256);
    if (r.fault) return makeError(r.fault->describe());
    if (!r.more) return okResult();
  }
}

void pollChildOrExit(Channel& ch, const Handler& handler, std::string_view role) {
  if (auto r = pollChild(ch, handler); !r) {
    LOG_ERR("control: {}; exiting so that derpd restarts {}", r.error(), role);
    ::_exit(1);
  }
}

const char* readStopSignal(int sigFd) {
  const char* stop = nullptr;
  signalfd_siginfo si;
  for (int i = 0; i < 64 && ::read(sigFd, &si, sizeof si) == ssize_t(sizeof si); ++i) {
    if (si.ssi_signo == SIGHUP) {
      LOG_INFO("SIGHUP: reloads come from derpd over the control socket; ignored");
    } else if (!stop) {
      stop = si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
    }
  }
  return stop;
}

sigset_t blockChildSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return sigs;
}

Result<void> armParentDeathSignal(pid_t parent) {
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
    return makeError(std::string("prctl(PR_SET_PDEATHSIG): ") + std::strerror(errno));
  }
  if (::getppid() != parent) return makeError("derpd (pid " + std::to_string(parent) + ") is gone");
  return okResult();
}

}  // namespace derpd::ipc
