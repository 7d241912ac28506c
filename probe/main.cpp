// derpd-probe: derpprobe's DERP cluster monitor (PROTOCOL.md §10), alone
// (-once, or a daemon with a status page) or as derpd's monitor role
// (--control). Signals are blocked in every thread and read from a signalfd
// by main.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>

#include "common/config/go_flags.hpp"
#include "common/crypto/keys.hpp"
#include "common/ipc/child.hpp"
#include "common/log/log.hpp"
#include "common/proc/sandbox.hpp"
#include "common/proc/seccomp.hpp"
#include "common/util/fd.hpp"
#include "probe/derp_prober.hpp"
#include "probe/http_server.hpp"
#include "probe/monitor.hpp"
#include "probe/options.hpp"
#include "probe/report.hpp"

using namespace derpd;
using namespace derpd::probe;

namespace {

int fail(const std::string& msg) {
  LOG_ERR("{}", msg);
  return 1;
}

Result<std::string> meshKey(const Options& o) {
  if (o.meshKeyFd >= 0) {
    auto data = readAllAndClose(o.meshKeyFd, 64 * 1024, "--mesh-key-fd");
    if (!data) return makeError(data.error());
    auto mk = crypto::parseMeshKey(*data);
    std::fill(data->begin(), data->end(), '\0');
    if (!mk) return makeError("--mesh-key-fd: " + mk.error());
    return *mk;
  }
  if (!o.meshPskFile.empty()) return crypto::readMeshKeyFile(o.meshPskFile);
  return std::string();
}

DerpProberOptions proberOptions(const Options& o, std::string mk) {
  DerpProberOptions d;
  d.mapSource = o.derpMap;
  d.meshInterval = o.meshInterval;
  d.stunInterval = o.stunInterval;
  d.tlsInterval = o.tlsInterval;
  d.bwInterval = o.bwInterval;
  d.bwSize = o.bwProbeSizeBytes;
  d.qdPacketsPerSecond = o.qdPacketsPerSecond;
  d.qdPacketTimeout = o.qdPacketTimeout;
  d.qdOnceWindow = o.qdOnceWindow;
  d.regionCode = o.regionCode;
  d.tailscaledSocket = o.tailscaledSocket;
  d.dial.caFile = o.caFile;
  d.dial.meshKey = std::move(mk);
  const char* env = std::getenv("TS_DEBUG_USE_DERP_HTTP");
  d.dial.plainHttp = o.plainHttp || (env && std::string(env) == "1");
  return d;
}

int runOnce(const Options& o, DerpProberOptions dpo) {
  Prober prober({o.spread, true, "derpprobe"});
  DerpProber dp(prober, std::move(dpo));
  if (auto r = prober.run("derpmap-probe", o.interval, {}, dp.mapProbeClass()); !r) return fail(r.error());
  LOG_INFO("Waiting for all probes (may take up to 1m)");
  prober.wait();
  auto infos = prober.infos();
  for (const auto& i : infos) {
    if (i.name == "derpmap-probe" && i.status != ProbeStatus::Succeeded) {
      std::fprintf(stderr, "derpd-probe: DERP map: %s\n", i.error.c_str());
    }
  }
  std::fputs(onceTable(infos).c_str(), stdout);
  std::fflush(stdout);
  return allGood(infos) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const sigset_t sigs = ipc::blockChildSignals();
  std::vector<std::string> args(argv + 1, argv + argc);
  auto opts = parseOptions(args);
  if (auto rc = config::earlyExit("derpd-probe", opts, usage)) return *rc;
  const bool monitor = !opts->control.empty();
  log::init(monitor ? "monitor" : "derpd-probe", opts->logLevel);

  auto mk = meshKey(*opts);
  if (!mk) return fail(mk.error());
  DerpProberOptions dpo = proberOptions(*opts, std::move(*mk));
  if (opts->derpMapFd >= 0) {
    auto m = readAllAndClose(opts->derpMapFd, derpmap::kMaxMapBytes, "--derp-map-fd");
    if (!m) return fail(m.error());
    dpo.fixedMapJson = std::move(*m);
    dpo.mapSource = "derpd";
  }

  if (opts->once) return runOnce(*opts, std::move(dpo));

  const pid_t parent = ::getppid();
  std::unique_ptr<zmq::context_t> zctx;
  std::unique_ptr<ipc::Channel> channel;
  if (monitor) {
    zctx = std::make_unique<zmq::context_t>(1);
    auto ch = ipc::connectToSupervisor(*zctx, ipc::Role::Monitor, opts->control, std::chrono::seconds(10));
    if (!ch) return fail(ch.error());
    channel = std::move(ch).value();
  }
  bool dropped = false;
  if (!opts->user.empty()) {
    // Not chrooted: the probe resolves names and reads CA files.
    auto sb = proc::enterSandbox({opts->user, ""});
    if (!sb) return fail("sandbox: " + sb.error());
    LOG_INFO("sandbox: {}", sb->what);
    dropped = sb->dropped;
  }
  if (monitor) {
    if (auto r = ipc::armParentDeathSignal(parent); !r) return fail(r.error());
  }
  // The sandbox's last step, before the probe and HTTP threads start. The
  // monitor's list also serves derpd-probe run by hand with --user.
  if (monitor || dropped) {
    auto sc = proc::enterSeccomp(ipc::Role::Monitor, opts->seccomp, dropped);
    if (!sc) return fail(sc.error());
    LOG_INFO("{}", *sc);
  }
  int sfd = ::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));

  Prober prober({opts->spread, false, "derpprobe"});
  DerpProber dp(prober, std::move(dpo));
  std::unique_ptr<StatusServer> http;
  if (!opts->listen.empty()) {
    auto s = StatusServer::start(opts->listen, prober);
    if (!s) return fail(s.error());
    http = std::move(s).value();
    LOG_INFO("Listening on {}", http->address());
  }
  if (auto r = prober.run("derpmap-probe", opts->interval, {}, dp.mapProbeClass()); !r) return fail(r.error());

  std::unique_ptr<Monitor> mon;
  if (channel) {
    mon = std::make_unique<Monitor>(*channel, prober);
    if (auto r = mon->sendReady(); !r) return fail(r.error());
    mon->report();
  }
  auto nextReport = std::chrono::steady_clock::now() + Monitor::kReportInterval;
  for (;;) {
    pollfd pf[2] = {{sfd, POLLIN, 0}, {channel ? channel->fd() : -1, POLLIN, 0}};
    int n = ::poll(pf, channel ? 2 : 1, 500);
    if (n < 0 && errno != EINTR) return fail(std::string("poll: ") + std::strerror(errno));
    if (const char* sig = ipc::readStopSignal(sfd)) {
      LOG_INFO("{}: stopping", sig);
      break;
    }
    if (mon) {
      mon->poll();
      if (mon->stopRequested()) break;
      if (std::chrono::steady_clock::now() >= nextReport) {
        mon->report();
        nextReport = std::chrono::steady_clock::now() + Monitor::kReportInterval;
      }
    }
  }
  http.reset();
  prober.stopAll();
  ::close(sfd);
  LOG_INFO("stopped");
  return 0;
}
