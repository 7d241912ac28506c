// derpd-bench: load generator for derpd (and derper). Today: `stun`, batched
// Tailscale binding requests against a STUN server. The DERP modes (pairs,
// paced rate, idle connections, connect rate) arrive with the performance
// work. Every run is bounded in time and, by default, may only target
// loopback addresses.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/config/go_flags.hpp"
#include "common/net/listener.hpp"
#include "stun_load.hpp"

using namespace derpd;

namespace {

struct Options {
  std::string target = "127.0.0.1:3478";
  std::chrono::milliseconds duration{5000};
  int sockets = 4;
  int window = 256;
  int serverPid = -1;
  bool allowNonLoopback = false;
  bool help = false;
};

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = {
      {"target", {false, [](Options& o, const std::string& v) -> Result<void> { o.target = v; return {}; }}},
      {"duration", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto d = config::parseGoDuration(v);
         if (!d || d->count() <= 0 || *d > std::chrono::minutes(10)) return makeError("want a duration in (0, 10m]");
         o.duration = std::chrono::duration_cast<std::chrono::milliseconds>(*d); return {}; }}},
      {"sockets", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.sockets = *i; return {}; }}},
      {"window", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.window = *i; return {}; }}},
      {"server-pid", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i <= 0) return makeError("want a pid"); o.serverPid = *i; return {}; }}},
      {"allow-non-loopback", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.allowNonLoopback = *b; return {}; }}},
      {"h", {true, [](Options& o, const std::string&) -> Result<void> { o.help = true; return {}; }}},
      {"help", {true, [](Options& o, const std::string&) -> Result<void> { o.help = true; return {}; }}},
  };
  return kFlags;
}

const char* kUsage = R"(usage: derpd-bench MODE [flags]

Modes:
  stun    Tailscale STUN binding requests from -sockets UDP sockets, each
          keeping -window requests in flight (sendmmsg/recvmmsg batches of
          64); a request unanswered for 200 ms counts as lost. Prints
          requests sent, answers per second, losses, and the CPU time of
          -server-pid and of derpd-bench itself.

Flags (stun):
  -target HOST:PORT     STUN server (default 127.0.0.1:3478); an IP address
  -duration D           how long to send (Go duration, at most 10m; default 5s)
  -sockets N            client sockets, 1..64 (default 4)
  -window N             requests in flight per socket, 1..4096 (default 256)
  -server-pid PID       report this process's CPU seconds over the run
  -allow-non-loopback   permit a target outside 127.0.0.0/8 and ::1 (off:
                        load generators here only aim at this machine)
  -h, --help            this text
)";

bool isLoopback(const std::string& host) {
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  return ::inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

int runStun(const Options& o) {
  auto hp = net::splitHostPort(o.target);
  if (!hp || hp->port <= 0) {
    std::fprintf(stderr, "derpd-bench: -target %s: want HOST:PORT\n", o.target.c_str());
    return 2;
  }
  if (!o.allowNonLoopback && !isLoopback(hp->host)) {
    std::fprintf(stderr, "derpd-bench: -target %s is not a loopback address (see -allow-non-loopback)\n",
                 o.target.c_str());
    return 2;
  }
  bench::StunLoadOptions so;
  so.host = hp->host;
  so.port = uint16_t(hp->port);
  so.duration = o.duration;
  so.sockets = o.sockets;
  so.window = o.window;
  so.serverPid = o.serverPid;
  auto r = bench::runStunLoad(so);
  if (!r) {
    std::fprintf(stderr, "derpd-bench: %s\n", r.error().c_str());
    return 1;
  }
  const auto& x = *r;
  const double lostPct = x.sent ? 100.0 * double(x.lost) / double(x.sent) : 0;
  std::printf("stun %s: %.2f s, %d sockets x %d in flight\n", o.target.c_str(), x.seconds, o.sockets, o.window);
  std::printf("sent %llu, answered %llu (%.0f/s), lost %llu (%.2f %%), invalid %llu\n",
              (unsigned long long)x.sent, (unsigned long long)x.answered, double(x.answered) / x.seconds,
              (unsigned long long)x.lost, lostPct, (unsigned long long)x.invalid);
  if (x.serverCpuSeconds >= 0) {
    std::printf("server cpu %.2f s (%.0f %% of one core), %.0f answers per server cpu-second\n",
                x.serverCpuSeconds, 100.0 * x.serverCpuSeconds / x.seconds,
                x.serverCpuSeconds > 0 ? double(x.answered) / x.serverCpuSeconds : 0.0);
  }
  std::printf("derpd-bench cpu %.2f s\n", x.ownCpuSeconds);
  return x.answered > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "-version") {
    std::printf("derpd-bench %s (%s)\n", DERPD_VERSION, DERPD_GIT_REV);
    return 0;
  }
  const std::string mode = args[0];
  args.erase(args.begin());
  Options o;
  if (auto r = config::parseGoFlags(args, flags(), o); !r) {
    std::fprintf(stderr, "derpd-bench: %s\n(run derpd-bench --help for usage)\n", r.error().c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (mode == "stun") return runStun(o);
  std::fprintf(stderr, "derpd-bench: unknown mode \"%s\" (run derpd-bench --help)\n", mode.c_str());
  return 2;
}
