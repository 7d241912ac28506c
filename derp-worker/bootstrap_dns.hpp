// /bootstrap-dns (PROTOCOL.md §7.1), as derper's cmd/derper/bootstrap_dns.go
// does it: the names of -bootstrap-dns-names and
// -unpublished-bootstrap-dns-names are resolved by a background thread at
// start and every 10 minutes (never on the request path), and handle()
// answers a request from the last results.
// Included by derp-worker (unprivileged, chrooted) and its tests.
//
// Wiring (derp-worker):
//   before the chroot:  auto ns = net::systemNameserver();        // "127.0.0.53"
//                       auto server = net::parseDnsServer(*ns);
//                       auto hosts = net::HostsFile::load();      // /etc/hosts
//   then:  BootstrapDns bdns({.publishedNames = opts.bootstrapDnsNames,
//                             .unpublishedNames = opts.unpublishedBootstrapDnsNames},
//                            BootstrapDns::dnsResolver(*server, *hosts));
//          bdns.start();          // no thread when both lists are empty (derper)
//   GET /bootstrap-dns[?q=...]:
//          auto q = http::queryValue(rawQuery, "q").value_or("");   // Go's Query().Get("q")
//          auto ip = ClientIp::fromSockaddr(peer);
//          auto r = bdns.handle(q, ip);   // bumps the counters itself
//          reply 200, Content-Type: application/json, Connection: close, the
//          browser headers of §7, body r.body (possibly empty: nothing configured)
//   /debug/varz: append bdns.metrics() (derper's names); /debug/vars uses the
//          "counter_" form (kBootstrapDnsExpvarNames).
//   shutdown: bdns.stop() (or the destructor); returns within ~50 ms of an
//          in-flight query, or at once while the thread sleeps.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/ipc/messages.hpp"
#include "common/net/dns_client.hpp"
#include "common/util/result.hpp"

namespace derpd::worker {

// A request's remote IP as derper sees it in remoteAddrMatchesPercent.
struct ClientIp {
  std::array<uint8_t, 16> as16{};  // netip.Addr.As16(): IPv4 as ::ffff:a.b.c.d; zone dropped
  bool loopback = false;           // netip.Addr.IsLoopback(): 127/8 (also v4-mapped), ::1

  // AF_INET / AF_INET6 peer address; nullopt for other families.
  static std::optional<ClientIp> fromSockaddr(const sockaddr_storage& ss);
  // "1.2.3.4", "::ffff:1.2.3.4", "2001:db8::1", "fe80::1%eth0"; nullopt otherwise.
  static std::optional<ClientIp> parse(std::string_view ip);
};

// derper's per-client draw in [0, 1): math/rand/v2
// New(NewPCG(LE64(ip[0:8]), LE64(ip[8:16]))).Float64(). Pure; byte-exact
// with tests/vectors/bootstrap-rollout.json.
double rolloutDraw(const std::array<uint8_t, 16>& ip16);

// remoteAddrMatchesPercent: fraction (0..1) 0 -> false, 1 -> true; no client
// IP -> false; loopback -> coin() < 0.5; else fraction > rolloutDraw(ip).
bool rolloutMatches(double fraction, const std::optional<ClientIp>& client, const std::function<double()>& coin);

// Go's json.MarshalIndent(map[string][]net.IP, "", "\t") for the given map:
// keys sorted bytewise, tab indent, no trailing newline, strings escaped as
// encoding/json does (HTML-safe). An empty map is Go's nil map: "null".
std::string renderBootstrapJson(const std::map<std::string, std::vector<std::string>>& ips);

// The counters derper exports (expvar names in kBootstrapDnsExpvarNames).
struct BootstrapDnsCounters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> publishedHits{0};
  std::atomic<uint64_t> publishedMisses{0};
  std::atomic<uint64_t> unpublishedHits{0};
  std::atomic<uint64_t> unpublishedMisses{0};
  std::atomic<uint64_t> unpublishedPercentMisses{0};
};

// /debug/vars (expvar) names, in metrics() order; /debug/varz strips "counter_".
inline constexpr std::array<std::string_view, 7> kBootstrapDnsExpvarNames = {
    "counter_bootstrap_dns_requests",
    "counter_bootstrap_dns_published_hits",
    "counter_bootstrap_dns_published_misses",
    "counter_bootstrap_dns_unpublished_hits",
    "counter_bootstrap_dns_unpublished_misses",
    "counter_bootstrap_dns_unpublished_percent_misses",
    "counter_bootstrap_dns_queried_domains",  // an expvar.Func: the remembered-names count
};

class BootstrapDns {
 public:
  // A lookup: addresses (Go's net.IP.String() form) or TXT strings (one per
  // record, its strings joined). `cancel` turns true at stop().
  using LookupFn = std::function<Result<std::vector<std::string>>(const std::string& name,
                                                                  const std::atomic<bool>& cancel)>;
  struct Resolver {
    LookupFn lookupIp;   // Go's LookupIP(ctx, "ip", name)
    LookupFn lookupTxt;  // Go's LookupTXT(ctx, name)
  };
  // The production resolver: `hosts` first (as Go with "files dns"), then
  // net::resolveAddrs / net::resolveTxt against `server`, each query with
  // `perQueryTimeout`.
  static Resolver dnsResolver(net::DnsServer server, net::HostsFile hosts,
                              std::chrono::milliseconds perQueryTimeout = std::chrono::seconds(5));

  struct Options {
    std::string publishedNames;    // -bootstrap-dns-names: "a.example,b.example"
    std::string unpublishedNames;  // -unpublished-bootstrap-dns-names: "name" or "name/txtname", comma-separated
    std::chrono::milliseconds refreshInterval = std::chrono::minutes(10);
    // Uniform [0,1) for the loopback coin flip; default: a random generator.
    std::function<double()> coin;
    // Seed of the per-name IP shuffle; 0: from std::random_device.
    uint64_t shuffleSeed = 0;
  };

  // Which counters one handle() bumped (a bit set), for tests and logs.
  enum Bump : uint8_t {
    kBumpRequests = 1 << 0,
    kBumpPublishedHit = 1 << 1,
    kBumpPublishedMiss = 1 << 2,
    kBumpUnpublishedHit = 1 << 3,
    kBumpUnpublishedMiss = 1 << 4,
    kBumpUnpublishedPercentMiss = 1 << 5,
  };
  struct Response {
    std::string body;    // may be empty (no published list, or before the first refresh)
    uint8_t bumped = 0;  // Bump bits
    bool unpublished = false;  // body is the {"q": [...]} answer
  };

  BootstrapDns(Options opts, Resolver resolver);
  ~BootstrapDns();  // stop()
  BootstrapDns(const BootstrapDns&) = delete;
  BootstrapDns& operator=(const BootstrapDns&) = delete;

  // derper runs its refresh loop only when a list is non-empty.
  bool enabled() const { return !opts_.publishedNames.empty() || !opts_.unpublishedNames.empty(); }
  // Spawns the refresh thread: refreshNow(), then again every
  // refreshInterval. No-op when !enabled() or already started.
  void start();
  // Wakes and joins the thread; an in-flight lookup sees `cancel` and
  // returns; results of a cancelled refresh are dropped. Idempotent.
  void stop();
  // One refresh on the calling thread (the thread's body; tests call it
  // directly instead of start()). Serialised with the thread's.
  void refreshNow();
  // Completed refreshes, and a bounded wait for the count to reach n.
  uint64_t refreshes() const;
  bool waitForRefreshes(uint64_t n, std::chrono::milliseconds timeout) const;

  // A /bootstrap-dns request. `q` = the decoded first q= value ("" when
  // absent); `client` = the peer IP (nullopt: gate fails, as derper on an
  // unparsable RemoteAddr). Thread-safe, no I/O, bumps the counters.
  Response handle(std::string_view q, const std::optional<ClientIp>& client);

  // The published body as it stands (what handle("") returns).
  std::string publishedBody() const;
  const BootstrapDnsCounters& counters() const { return counters_; }
  size_t queriedDomains() const;
  // derper's /debug/varz entries, all counters: bootstrap_dns_requests,
  // _published_hits, _published_misses, _unpublished_hits,
  // _unpublished_misses, _unpublished_percent_misses, _queried_domains.
  std::vector<ipc::Metric> metrics() const;

  // Past this many remembered q names, derper clears the set.
  static constexpr size_t kMaxRememberedNames = 500;

 private:
  struct Entries {
    std::map<std::string, std::vector<std::string>> ips;  // name -> IPs; failed names absent
    std::map<std::string, double> percent;                // name -> 0..1 (absent: 0)
  };
  struct Published {
    Entries entries;
    std::string body;  // rendered once per refresh
  };

  Entries resolveList(const std::string& list);
  void run();

  const Options opts_;
  const Resolver resolver_;
  BootstrapDnsCounters counters_;

  mutable std::mutex mu_;  // guards the snapshots, stopping_, refreshes_
  mutable std::condition_variable cv_;
  std::shared_ptr<const Published> published_;      // guarded by mu_; null until the first refresh
  std::shared_ptr<const Entries> unpublished_;      // guarded by mu_
  bool stopping_ = false;                           // guarded by mu_
  uint64_t refreshes_ = 0;                          // guarded by mu_
  std::atomic<bool> cancel_{false};                 // set by stop(), read by lookups

  std::mutex refreshMu_;  // serialises refreshNow(); guards rng_
  std::mt19937_64 rng_;   // shuffle; guarded by refreshMu_

  mutable std::mutex namesMu_;                 // guards remembered_
  std::unordered_set<std::string> remembered_;  // bootstrapLookupMap

  std::mutex threadMu_;  // guards thread_ (start/stop from the owner thread)
  std::thread thread_;
};

}  // namespace derpd::worker
