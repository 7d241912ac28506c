// cert-agent: derpd's certificate process (see agent.hpp). Started by derpd
// as root or as derpd's user; opens -certdir (and its inotify watch) first,
// then drops to --user, then serves. Signals are taken synchronously
// (signalfd) by the main thread.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <Poco/Net/SSLManager.h>

#include "agent.hpp"
#include "cert_dir.hpp"
#include "common/config/go_flags.hpp"
#include "common/ipc/child.hpp"
#include "common/log/log.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "common/util/fd.hpp"
#include "options.hpp"

using namespace derpd;
using namespace derpd::certagent;

namespace {

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread (libzmq's, the ACME one) starts.
  const sigset_t sigs = ipc::blockChildSignals();

  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (auto rc = config::earlyExit("cert-agent", opts, usage)) return *rc;
  log::init("cert-agent", opts->logLevel);

  const pid_t parent = ::getppid();
  zmq::context_t zctx(1);
  auto ch = ipc::connectToSupervisor(zctx, ipc::Role::CertAgent, opts->control, std::chrono::seconds(10));
  if (!ch) return fail(ch.error());
  std::unique_ptr<ipc::Channel> channel = std::move(ch).value();

  std::string eabKey;
  if (opts->acmeEabKeyFd >= 0) {
    auto k = readAllAndClose(opts->acmeEabKeyFd, 4096, "--acme-eab-key-fd");
    if (!k) return fail(k.error());
    eabKey = std::move(*k);
  }
  // The directory is opened (and watched) with derpd's privileges; the
  // descriptor keeps working after the drop.
  auto dir = CertDir::open(opts->certDir);
  if (!dir) return fail(dir.error());
  if (opts->certMode == "manual") {
    // inotify_add_watch takes a path: before the drop, like the open.
    if (auto w = dir->watch(); !w) return fail(w.error());
  }

  bool dropped = false;
  if (!opts->user.empty()) {
    auto sb = proc::enterSandbox({opts->user, ""});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {} (no chroot: -certdir, DNS and the CA certificates are needed)", sb->what);
    if (auto r = ipc::armParentDeathSignal(parent); !r) return fail(r.error());
    dropped = sb->dropped;
  }
  // The sandbox's last step, before the ACME thread starts.
  auto sc = proc::enterSeccomp(ipc::Role::CertAgent, opts->seccomp, dropped);
  if (!sc) return fail(sc.error());
  LOG_INFO("{}", *sc);
  int sigFd = ::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigFd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));

  int rc = 0;
  {
    Agent agent(*opts, std::move(*dir), std::move(eabKey), *channel);
    if (auto r = agent.start(); !r) {
      ::close(sigFd);
      return fail(r.error());
    }
    if (auto r = channel->send(ipc::Role::Supervisor, ipc::Ready{::getpid()}); !r.ok())
      return fail("control: Ready: " + r.error);
    LOG_INFO("certmode {} for {} in {}", opts->certMode, opts->hostname, opts->certDir);
    rc = agent.run(sigFd);
  }
  ::close(sigFd);
  channel.reset();
  return rc;
}
