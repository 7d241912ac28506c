// derpd-bench: load generator for derpd (and derper): `stun`, batched
// Tailscale binding requests against a STUN server; `derp`, pairs of clients
// relaying through one server or across a mesh; `idle`, N connections held
// with the server's memory read; `connect`, DERP handshakes per second;
// `floor`, what a relay that does no work of its own costs the kernel.
// Every run is bounded in time and count and, by default, may only target
// loopback addresses.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/config/go_flags.hpp"
#include "common/client/transport.hpp"
#include "common/net/listener.hpp"
#include "common/util/version.hpp"
#include "conn_load.hpp"
#include "derp_load.hpp"
#include "floor_load.hpp"
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
  // derp
  std::string from, to, caFile;
  int pairs = 1;
  int size = 1000;
  int rate = 0;
  int threads = 1;
  std::string latencyFile;
  // idle, connect
  std::string url;
  int conns = 1000;
  int workers = 1;
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
      {"from", {false, [](Options& o, const std::string& v) -> Result<void> { o.from = v; return {}; }}},
      {"to", {false, [](Options& o, const std::string& v) -> Result<void> { o.to = v; return {}; }}},
      {"ca-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.caFile = v; return {}; }}},
      {"pairs", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.pairs = *i; return {}; }}},
      {"size", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.size = *i; return {}; }}},
      {"rate", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.rate = *i; return {}; }}},
      {"threads", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error()); o.threads = *i; return {}; }}},
      {"latency-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.latencyFile = v; return {}; }}},
      {"url", {false, [](Options& o, const std::string& v) -> Result<void> { o.url = v; return {}; }}},
      {"conns", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 1 || *i > 100000) return makeError("want 1..100000");
         o.conns = *i; return {}; }}},
      {"workers", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 1 || *i > 64) return makeError("want 1..64");
         o.workers = *i; return {}; }}},
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

  derp    -pairs sender/receiver client pairs: senders on -from, receivers
          on -to (the same URL: local relaying; another node of a mesh:
          forwarding). Each sender sends -size byte packets at full speed or
          -rate per second for -duration. Prints packets sent and delivered,
          loss, throughput, and one-way latency (p50/p99/p99.9/max) measured
          with the send time carried in each packet; with -server-pid, the
          server's CPU seconds over the run, MB delivered per server
          CPU-second and its RSS. The last line, "result k=v ...", is the
          same for scripts (bench/run.sh).

  idle    -conns DERP clients connect to -url (full handshake, one after
          another), are held for -duration and closed. Prints the time to
          connect them and, with -server-pid, the server's resident memory
          before, while held (and per connection) and after they closed.

  connect Complete DERP handshakes (TCP, TLS, upgrade, ServerKey,
          ClientInfo, ServerInfo, close) against -url from -workers
          dialers, until -conns handshakes or -duration. Prints handshakes
          per second and, with -server-pid, the server's CPU seconds.

  floor   What relaying costs this machine's kernel before the relay does
          any work: an in-process relay thread that only epoll_waits,
          reads and writes (plain loopback TCP, no TLS, no DERP) forwards
          -pairs senders' bytes to their receivers under the paced load of
          `derp` (-size, -rate, -duration, -threads). Prints its CPU time
          per relayed packet and MB relayed per CPU-second: the floor under
          any relay's figures at that load on this machine.

Flags (idle, connect):
  -url URL              http(s)://host:port/derp
  -ca-file FILE         CA (PEM) that verifies its TLS certificate
  -conns N              1..100000 (default 1000)
  -workers N            connect: parallel dialers, 1..64 (default 1)
  -duration D           idle: how long to hold them; connect: time bound
  -server-pid PID       the server process (derp-worker) to read

Flags (derp):
  -from URL, -to URL    http(s)://host:port/derp of the two servers
  -ca-file FILE         CA (PEM) that verifies their TLS certificates
  -pairs N              1..256 (default 1)
  -size N               packet bytes, 16..65536 (default 1000)
  -rate N               packets per second per sender; 0 = full speed (default)
  -threads N            with -rate: threads sharing the pairs, each asleep in
                        epoll until a send is due or a packet arrives, 1..64
                        (default 1). Full speed: two threads per pair.
  -duration D           how long to send (default 5s, at most 10m)
  -server-pid PID       the server process (derp-worker, or derper) to read
  -latency-file FILE    write the latency distribution: lines of
                        "<fraction of packets> <latency ms>" (a CDF)

Flags (floor): -pairs, -size, -rate (required), -threads, -duration as for derp.

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

// A URL must be on loopback unless -allow-non-loopback; 0 or an exit code.
int checkUrl(const Options& o, const std::string& u) {
  auto pu = client::parseUrl(u);
  if (!pu) {
    std::fprintf(stderr, "derpd-bench: %s: %s\n", u.c_str(), pu.error().c_str());
    return 2;
  }
  if (!o.allowNonLoopback && !isLoopback(pu->host) && pu->host != "localhost") {
    std::fprintf(stderr, "derpd-bench: %s is not on a loopback address (see -allow-non-loopback)\n", u.c_str());
    return 2;
  }
  return 0;
}

// A CDF of `sortedUs` in at most ~2,000 lines: evenly spaced fractions,
// denser in the tail (the last 1 %) where the interest is.
int writeCdf(const std::string& path, const std::vector<uint32_t>& sortedUs) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "derpd-bench: -latency-file %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  std::fprintf(f, "# fraction latency_ms (%zu packets)\n", sortedUs.size());
  const size_t n = sortedUs.size();
  auto emit = [&](double q) {
    const size_t i = std::min(n - 1, size_t(q * double(n)));
    std::fprintf(f, "%.6f %.4f\n", q, double(sortedUs[i]) / 1000);
  };
  if (n > 0) {
    for (int i = 0; i < 990; ++i) emit(double(i) / 1000);
    for (int i = 0; i < 1000; ++i) emit(0.99 + double(i) / 100000);
    std::fprintf(f, "1.000000 %.4f\n", double(sortedUs.back()) / 1000);
  }
  if (std::fclose(f) != 0) {
    std::fprintf(stderr, "derpd-bench: -latency-file %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  return 0;
}

int runDerp(const Options& o) {
  if (o.from.empty() || o.to.empty()) {
    std::fprintf(stderr, "derpd-bench: derp needs -from and -to\n");
    return 2;
  }
  for (const std::string& u : {o.from, o.to}) {
    if (int rc = checkUrl(o, u)) return rc;
  }
  bench::DerpLoadOptions d;
  d.fromUrl = o.from;
  d.toUrl = o.to;
  d.caFile = o.caFile;
  d.pairs = o.pairs;
  d.size = size_t(std::max(o.size, 0));
  d.rate = o.rate;
  d.threads = o.threads;
  d.duration = o.duration;
  d.serverPid = o.serverPid;
  auto r = bench::runDerpLoad(d);
  if (!r) {
    std::fprintf(stderr, "derpd-bench: %s\n", r.error().c_str());
    return 1;
  }
  const auto& x = *r;
  const double lossPct = x.sent ? 100.0 * double(x.sent - std::min(x.sent, x.delivered)) / double(x.sent) : 0;
  std::printf("derp %s -> %s: %d pair(s), %d-byte packets, %s, %.2f s\n", o.from.c_str(), o.to.c_str(), o.pairs,
              o.size, o.rate > 0 ? (std::to_string(o.rate) + " pkt/s per sender").c_str() : "full speed", x.seconds);
  std::printf("sent %llu, delivered %llu (%.0f pkt/s, %.1f MB/s), lost %.2f %%\n", (unsigned long long)x.sent,
              (unsigned long long)x.delivered, double(x.delivered) / x.seconds,
              double(x.delivered) * double(o.size) / x.seconds / 1e6, lossPct);
  const double mb = double(x.delivered) * double(o.size) / 1e6;
  std::printf("latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n", x.p50Ms, x.p99Ms, x.p999Ms,
              x.maxMs);
  double mbPerCpu = -1;
  if (x.serverCpuSeconds >= 0) {
    mbPerCpu = x.serverCpuSeconds > 0 ? mb / x.serverCpuSeconds : 0;
    std::printf("server pid %d: cpu %.2f s (%.0f %% of one core), %.1f MB delivered per cpu-second, rss %.1f MB\n",
                o.serverPid, x.serverCpuSeconds, 100 * x.serverCpuSeconds / x.measuredSeconds, mbPerCpu,
                double(x.serverRssBytes) / 1e6);
  }
  std::printf("derpd-bench cpu %.2f s\n", x.ownCpuSeconds);
  std::printf("result pairs=%d size=%d rate=%d seconds=%.2f sent=%llu delivered=%llu pkt_s=%.0f mb_s=%.2f "
              "loss_pct=%.3f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f server_cpu_s=%.3f "
              "mb_per_server_cpu_s=%.2f server_rss_kb=%lld bench_cpu_s=%.2f\n",
              o.pairs, o.size, o.rate, x.seconds, (unsigned long long)x.sent, (unsigned long long)x.delivered,
              double(x.delivered) / x.seconds, mb / x.seconds, lossPct, x.p50Ms, x.p99Ms, x.p999Ms, x.maxMs,
              x.serverCpuSeconds, mbPerCpu, (long long)(x.serverRssBytes / 1024), x.ownCpuSeconds);
  if (!o.latencyFile.empty()) {
    if (int rc = writeCdf(o.latencyFile, x.latenciesUs)) return rc;
  }
  return x.delivered > 0 ? 0 : 1;
}

int runFloor(const Options& o) {
  bench::FloorLoadOptions f;
  f.pairs = o.pairs;
  f.size = size_t(std::max(o.size, 0));
  f.rate = o.rate;
  f.threads = o.threads;
  f.duration = o.duration;
  auto r = bench::runFloorLoad(f);
  if (!r) {
    std::fprintf(stderr, "derpd-bench: %s\n", r.error().c_str());
    return 1;
  }
  const auto& x = *r;
  const double mb = double(x.delivered) * double(o.size) / 1e6;
  const double usPerPacket = x.delivered ? 1e6 * x.relayCpuSeconds / double(x.delivered) : 0;
  const double mbPerCpu = x.relayCpuSeconds > 0 ? mb / x.relayCpuSeconds : 0;
  std::printf("floor: plain TCP relay thread on 127.0.0.1, %d pair(s), %d-byte packets, %d pkt/s per sender, %.2f s\n",
              o.pairs, o.size, o.rate, x.seconds);
  std::printf("sent %llu, delivered %llu (%.0f pkt/s)\n", (unsigned long long)x.sent,
              (unsigned long long)x.delivered, double(x.delivered) / x.seconds);
  std::printf("latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n", x.p50Ms, x.p99Ms, x.p999Ms,
              x.maxMs);
  std::printf("relay thread cpu %.2f s: %.2f us per relayed packet, %.1f MB relayed per cpu-second\n",
              x.relayCpuSeconds, usPerPacket, mbPerCpu);
  std::printf("derpd-bench cpu %.2f s (relay thread included)\n", x.ownCpuSeconds);
  std::printf("result pairs=%d size=%d rate=%d seconds=%.2f sent=%llu delivered=%llu p50_ms=%.3f p99_ms=%.3f "
              "relay_cpu_s=%.3f us_per_packet=%.2f mb_per_relay_cpu_s=%.2f bench_cpu_s=%.2f\n",
              o.pairs, o.size, o.rate, x.seconds, (unsigned long long)x.sent, (unsigned long long)x.delivered,
              x.p50Ms, x.p99Ms, x.relayCpuSeconds, usPerPacket, mbPerCpu, x.ownCpuSeconds);
  return x.delivered == x.sent && x.delivered > 0 ? 0 : 1;
}

bench::ConnLoadOptions connOptions(const Options& o) {
  bench::ConnLoadOptions c;
  c.url = o.url;
  c.caFile = o.caFile;
  c.conns = o.conns;
  c.duration = o.duration;
  c.serverPid = o.serverPid;
  c.workers = o.workers;
  return c;
}

int runIdle(const Options& o) {
  if (o.url.empty()) {
    std::fprintf(stderr, "derpd-bench: idle needs -url\n");
    return 2;
  }
  if (int rc = checkUrl(o, o.url)) return rc;
  auto r = bench::runIdle(connOptions(o));
  if (!r) {
    std::fprintf(stderr, "derpd-bench: %s\n", r.error().c_str());
    return 1;
  }
  const auto& x = *r;
  std::printf("idle %s: %d of %d connections held for %.1f s, %d still open at the end (connected in %.2f s, "
              "%.0f/s)\n",
              o.url.c_str(), x.connected, o.conns, std::chrono::duration<double>(o.duration).count(), x.held,
              x.connectSeconds, x.connectSeconds > 0 ? x.connected / x.connectSeconds : 0.0);
  if (!x.firstError.empty()) std::printf("stopped early: %s\n", x.firstError.c_str());
  if (x.rssBefore >= 0 && x.rssHeld >= 0 && x.rssAfter >= 0) {
    std::printf("server rss: before %.1f MB, held %.1f MB (%.0f bytes per connection), after %.1f MB\n",
                double(x.rssBefore) / 1e6, double(x.rssHeld) / 1e6,
                x.connected ? double(x.rssHeld - x.rssBefore) / x.connected : 0.0, double(x.rssAfter) / 1e6);
  }
  std::printf("derpd-bench cpu %.2f s\n", x.ownCpuSeconds);
  std::printf("result conns=%d connected=%d held=%d connect_s=%.2f rss_before_kb=%lld rss_held_kb=%lld "
              "rss_after_kb=%lld rss_per_conn_bytes=%.0f bench_cpu_s=%.2f\n",
              o.conns, x.connected, x.held, x.connectSeconds, (long long)(x.rssBefore / 1024), (long long)(x.rssHeld / 1024),
              (long long)(x.rssAfter / 1024),
              x.connected && x.rssHeld >= 0 && x.rssBefore >= 0 ? double(x.rssHeld - x.rssBefore) / x.connected
                                                                : -1.0,
              x.ownCpuSeconds);
  if (x.held < x.connected)
    std::printf("lost during the hold: %d connection(s) closed by the server\n", x.connected - x.held);
  return x.held == o.conns ? 0 : 1;
}

int runConnect(const Options& o) {
  if (o.url.empty()) {
    std::fprintf(stderr, "derpd-bench: connect needs -url\n");
    return 2;
  }
  if (int rc = checkUrl(o, o.url)) return rc;
  auto r = bench::runConnect(connOptions(o));
  if (!r) {
    std::fprintf(stderr, "derpd-bench: %s\n", r.error().c_str());
    return 1;
  }
  const auto& x = *r;
  std::printf("connect %s: %d handshakes in %.2f s (%.0f/s) from %d worker(s), %d failed\n", o.url.c_str(),
              x.handshakes, x.seconds, x.seconds > 0 ? x.handshakes / x.seconds : 0.0, o.workers, x.failures);
  if (!x.firstError.empty()) std::printf("first failure: %s\n", x.firstError.c_str());
  if (x.serverCpuSeconds >= 0) {
    std::printf("server cpu %.2f s, %.0f handshakes per server cpu-second\n", x.serverCpuSeconds,
                x.serverCpuSeconds > 0 ? x.handshakes / x.serverCpuSeconds : 0.0);
  }
  std::printf("derpd-bench cpu %.2f s\n", x.ownCpuSeconds);
  std::printf("result handshakes=%d failures=%d seconds=%.2f per_s=%.0f server_cpu_s=%.3f per_server_cpu_s=%.0f "
              "bench_cpu_s=%.2f\n",
              x.handshakes, x.failures, x.seconds, x.seconds > 0 ? x.handshakes / x.seconds : 0.0,
              x.serverCpuSeconds, x.serverCpuSeconds > 0 ? x.handshakes / x.serverCpuSeconds : -1.0,
              x.ownCpuSeconds);
  return x.handshakes > 0 && x.failures == 0 ? 0 : 1;
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
    std::printf("derpd-bench %s (%s)\n", DERPD_VERSION, gitRev());
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
  if (mode == "derp") return runDerp(o);
  if (mode == "idle") return runIdle(o);
  if (mode == "connect") return runConnect(o);
  if (mode == "floor") return runFloor(o);
  std::fprintf(stderr, "derpd-bench: unknown mode \"%s\" (run derpd-bench --help)\n", mode.c_str());
  return 2;
}
