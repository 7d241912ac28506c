#include "options.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>

#include "common/config/go_flags.hpp"
#include "common/net/listener.hpp"

namespace derpd::stun_worker {

namespace {

// At most this many --udp-fd sockets (derpd passes one or two).
constexpr size_t kMaxUdpFds = 16;

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = [] {
    config::GoFlagTable<Options> t = {
      {"a", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto hp = net::splitHostPort(v);
         if (!hp) return makeError(hp.error());
         o.addr = v; return {}; }}},
      {"stun-port", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error());
         if (*i < 0 || *i > 65535) return makeError("port out of range");
         o.stunPort = *i; return {}; }}},
      {"udp-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd");
         if (std::find(o.udpFds.begin(), o.udpFds.end(), *i) != o.udpFds.end()) return makeError("fd given twice");
         if (o.udpFds.size() >= kMaxUdpFds) return makeError("too many descriptors");
         o.udpFds.push_back(*i); return {}; }}},
      {"forbidden-syscall-after-for-test", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error());
         if (*i <= 0) return makeError("want a positive number of milliseconds");
         o.forbiddenSyscallAfterMsForTest = *i; return {}; }}},
    };
    config::addChildRoleFlags(t);
    return t;
  }();
  return kFlags;
}

}  // namespace

Result<Options> parseOptions(const std::vector<std::string>& args) {
  Options o;
  if (auto r = config::parseGoFlags(args, flags(), o); !r) return std::move(r).takeError();
  return o;
}

std::string usage() {
  return R"(usage: stun-worker [flags]

stun-worker is derpd's STUN process: it answers Tailscale STUN binding
requests (SOFTWARE "tailnode" and a valid FINGERPRINT) on UDP, and counts
and ignores every other datagram, as derper does. It normally runs under
derpd; it also runs on its own with derper's flags.

  -a ADDR               derper's listen address (default ":443"); only its
                        host is used: STUN is served on that host. An empty
                        host (":443") means all addresses: one IPv4 socket
                        on 0.0.0.0 and one IPv6-only socket on [::]
  -stun-port N          UDP port (default 3478; 0 = chosen by the kernel)
  --log-level LEVEL     trace, debug, info (default), warn, error; debug
                        logs the counters at exit
  -version              print the version and exit

Set by derpd when it runs stun-worker (inherited descriptors, sandbox):
  --udp-fd N            a UDP socket already bound by derpd; repeatable.
                        When given, -a and -stun-port are not used to bind
  --user NAME           when root: drop to this user once the sockets are open
  --chroot DIR          when root: chroot into this empty directory
  --seccomp=false       no seccomp system call filter after the drop (debugging)
  --forbidden-syscall-after-for-test MS
                        tests only: MS ms after the start, make a system call
                        the seccomp filter forbids (stun-worker dies of SIGSYS)
  --control ipc://PATH  derpd's control socket (ZeroMQ): Hello, Ready, Reload,
                        Shutdown, log reopen; counters reported every 2 s
  -h, --help            this text

Signals: SIGTERM and SIGINT stop it (exit status 0); SIGHUP is logged (there
is nothing to reload).
)";
}

}  // namespace derpd::stun_worker
