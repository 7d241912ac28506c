// mesh-helper: derpd's resolver of -mesh-with hosts and answerer of client
// admission questions (see service.hpp). Started by derpd as root or as
// derpd's user; drops to --user (no chroot), then serves. Signals are taken
// synchronously (signalfd) by the main thread.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/config/go_flags.hpp"
#include "common/ipc/child.hpp"
#include "common/log/log.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "options.hpp"
#include "service.hpp"

using namespace derpd;
using namespace derpd::mesh;

namespace {

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread (libzmq's, the workers, the resolver) starts.
  const sigset_t sigs = ipc::blockChildSignals();

  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (auto rc = config::earlyExit("mesh-helper", opts, usage)) return *rc;
  log::init("mesh-helper", opts->logLevel);

  const pid_t parent = ::getppid();
  zmq::context_t zctx(1);
  auto ch = ipc::connectToSupervisor(zctx, ipc::Role::MeshHelper, opts->control, std::chrono::seconds(10));
  if (!ch) return fail(ch.error());
  std::unique_ptr<ipc::Channel> channel = std::move(ch).value();

  bool dropped = false;
  if (!opts->user.empty()) {
    auto sb = proc::enterSandbox({opts->user, ""});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {} (no chroot: the resolver's files and tailscaled's socket are needed)", sb->what);
    if (auto r = ipc::armParentDeathSignal(parent); !r) return fail(r.error());
    dropped = sb->dropped;
  }
  // The sandbox's last step, before the worker and resolver threads start.
  auto sc = proc::enterSeccomp(ipc::Role::MeshHelper, opts->seccomp, dropped);
  if (!sc) return fail(sc.error());
  LOG_INFO("{}", *sc);
  int sigFd = ::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigFd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));

  int rc = 0;
  {
    Service service(*opts, *channel);
    if (auto r = service.start(); !r) {
      ::close(sigFd);
      return fail(r.error());
    }
    if (auto r = channel->send(ipc::Role::Supervisor, ipc::Ready{::getpid()}); !r.ok())
      return fail("control: Ready: " + r.error);
    rc = service.run(sigFd);
  }
  ::close(sigFd);
  channel.reset();
  return rc;
}
