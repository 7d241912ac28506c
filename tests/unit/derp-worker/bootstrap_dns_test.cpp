#include "bootstrap_dns.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"
#include "support/vectors.hpp"

namespace derpd::worker {
namespace {

using namespace std::chrono_literals;
using Lookup = Result<std::vector<std::string>>;

// An in-memory resolver: name -> addresses / TXT strings; absent -> error.
struct FakeDns {
  std::mutex mu;
  std::map<std::string, std::vector<std::string>> ips;
  std::map<std::string, std::vector<std::string>> txt;
  std::vector<std::string> asked;

  BootstrapDns::Resolver resolver() {
    BootstrapDns::Resolver r;
    r.lookupIp = [this](const std::string& name, const std::atomic<bool>&) -> Lookup {
      std::lock_guard<std::mutex> l(mu);
      asked.push_back("ip:" + name);
      auto it = ips.find(name);
      if (it == ips.end()) return makeError("lookup " + name + ": no such host");
      return it->second;
    };
    r.lookupTxt = [this](const std::string& name, const std::atomic<bool>&) -> Lookup {
      std::lock_guard<std::mutex> l(mu);
      asked.push_back("txt:" + name);
      auto it = txt.find(name);
      if (it == txt.end()) return makeError("lookup " + name + ": no such host");
      return it->second;
    };
    return r;
  }
};

ClientIp ip(const char* s) {
  auto c = ClientIp::parse(s);
  EXPECT_TRUE(c.has_value()) << s;
  return c.value_or(ClientIp{});
}

BootstrapDns::Options opts(std::string pub, std::string unpub = "") {
  BootstrapDns::Options o;
  o.publishedNames = std::move(pub);
  o.unpublishedNames = std::move(unpub);
  o.shuffleSeed = 1;
  o.coin = [] { return 0.25; };  // loopback coin flip: "heads" (< 0.5) unless a test says otherwise
  return o;
}

uint64_t get(const std::atomic<uint64_t>& a) { return a.load(); }

// ---------------------------------------------------------------------------
// Rollout draw, byte-exact against tests/vectors/bootstrap-rollout.json.

TEST(BootstrapRollout, DrawMatchesEveryVector) {
  const auto v = test::loadVectorJson("bootstrap-rollout.json");
  ASSERT_GE(v["rows"].size(), 20u);
  size_t gateChecks = 0;
  for (const auto& row : v["rows"]) {
    const std::string ipStr = row["ip"];
    SCOPED_TRACE(ipStr);
    const Bytes as16 = test::hexBytes(row["as16_hex"]);
    ASSERT_EQ(as16.size(), 16u);
    std::array<uint8_t, 16> a{};
    std::copy(as16.begin(), as16.end(), a.begin());
    // The vector's own consistency: float64 = first_uint64 << 11 >> 11 / 2^53.
    const uint64_t first = std::stoull(row["first_uint64"].get<std::string>());
    const double want = row["float64"].get<double>();
    EXPECT_EQ(double(first << 11 >> 11) / double(uint64_t(1) << 53), want);
    EXPECT_EQ(rolloutDraw(a), want);

    // ClientIp::parse gives the same As16 (IPv4 -> ::ffff:, zone dropped).
    const auto c = ClientIp::parse(ipStr);
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->as16, a);
    EXPECT_EQ(c->loopback, ipStr == "127.0.0.1" || ipStr == "::1");
    if (c->loopback) continue;  // derper flips a coin for loopback clients
    for (const auto& [pct, match] : row["matches_at_percent"].items()) {
      const double fraction = std::stod(pct);
      EXPECT_EQ(rolloutMatches(fraction, c, [] { return 0.0; }), match.get<bool>()) << pct;
      gateChecks++;
    }
    EXPECT_FALSE(rolloutMatches(0.0, c, [] { return 0.0; }));
    EXPECT_TRUE(rolloutMatches(1.0, c, [] { return 0.99; }));
  }
  EXPECT_GT(gateChecks, 100u);
}

TEST(BootstrapRollout, LoopbackAndMissingClient) {
  const auto lo = ClientIp::parse("127.5.6.7");
  ASSERT_TRUE(lo && lo->loopback);
  EXPECT_TRUE(rolloutMatches(0.3, lo, [] { return 0.49; }));
  EXPECT_FALSE(rolloutMatches(0.3, lo, [] { return 0.5; }));
  EXPECT_FALSE(rolloutMatches(0.0, lo, [] { return 0.0; }));  // 0 never, even on loopback
  EXPECT_TRUE(rolloutMatches(1.0, lo, [] { return 0.9; }));   // 100 % always
  const auto mapped = ClientIp::parse("::ffff:127.0.0.1");
  ASSERT_TRUE(mapped && mapped->loopback);
  const auto v6lo = ClientIp::parse("::1");
  ASSERT_TRUE(v6lo && v6lo->loopback);
  EXPECT_FALSE(ClientIp::parse("::2")->loopback);
  EXPECT_FALSE(ClientIp::parse("128.0.0.1")->loopback);
  EXPECT_FALSE(ClientIp::parse("not-an-ip").has_value());
  EXPECT_FALSE(rolloutMatches(0.5, std::nullopt, [] { return 0.0; }));
  EXPECT_TRUE(rolloutMatches(1.0, std::nullopt, [] { return 0.0; }));

  sockaddr_storage ss{};
  auto& sin = reinterpret_cast<sockaddr_in&>(ss);
  sin.sin_family = AF_INET;
  ASSERT_EQ(inet_pton(AF_INET, "1.2.3.4", &sin.sin_addr), 1);
  auto fromSa = ClientIp::fromSockaddr(ss);
  ASSERT_TRUE(fromSa.has_value());
  EXPECT_EQ(toHex(fromSa->as16), "00000000000000000000ffff01020304");
  ss.ss_family = AF_UNIX;
  EXPECT_FALSE(ClientIp::fromSockaddr(ss).has_value());
}

// ---------------------------------------------------------------------------
// Rendering: Go's json.MarshalIndent(map[string][]net.IP, "", "\t").

TEST(BootstrapRender, MatchesDerperCapture) {
  // tests/vectors/http/bootstrap_dns.response: the body after the blank line.
  const std::string resp = test::readVectorFile("http/bootstrap_dns.response");
  const size_t sep = resp.find("\r\n\r\n");
  ASSERT_NE(sep, std::string::npos);
  const std::string body = resp.substr(sep + 4);
  EXPECT_EQ(renderBootstrapJson({{"localhost", {"127.0.0.1"}}}), body);
  EXPECT_EQ(body, "{\n\t\"localhost\": [\n\t\t\"127.0.0.1\"\n\t]\n}");
}

TEST(BootstrapRender, SortedKeysEscapingAndEmpty) {
  EXPECT_EQ(renderBootstrapJson({}), "null");  // Go's nil map: no name resolved
  EXPECT_EQ(renderBootstrapJson({{"b.example", {"::1", "10.0.0.1"}}, {"a.example", {}}}),
            "{\n\t\"a.example\": [],\n\t\"b.example\": [\n\t\t\"::1\",\n\t\t\"10.0.0.1\"\n\t]\n}");
  EXPECT_EQ(renderBootstrapJson({{"<a&b>\"\\\n\x01\x7f\xff\xe2\x80\xa8\xc3\xa9", {"x"}}}),
            "{\n\t\"\\u003ca\\u0026b\\u003e\\\"\\\\\\n\\u0001\x7f\\ufffd\\u2028\xc3\xa9\": [\n\t\t\"x\"\n\t]\n}");
  // Byte order (Go sorts map keys as strings, bytewise).
  EXPECT_EQ(renderBootstrapJson({{"B", {"1"}}, {"a", {"2"}}, {"_", {"3"}}}).find("\"B\""), 3u);
}

// ---------------------------------------------------------------------------
// handle(): PROTOCOL.md §7.1, counter by counter.

TEST(BootstrapHandle, ReproducesTheDerperCapture) {
  // The vectors' derper ran with -bootstrap-dns-names localhost and served
  // /bootstrap-dns, ?q=localhost, ?q=unknown.example; then /debug/varz said
  // requests 3, published_hits 1, unpublished_misses 1, queried_domains 2.
  FakeDns dns;
  dns.ips["localhost"] = {"127.0.0.1"};
  BootstrapDns b(opts("localhost"), dns.resolver());
  b.refreshNow();
  const std::string want = "{\n\t\"localhost\": [\n\t\t\"127.0.0.1\"\n\t]\n}";
  const auto client = ClientIp::parse("127.0.0.1");
  EXPECT_EQ(b.handle("", client).body, want);
  EXPECT_EQ(b.handle("localhost", client).body, want);
  EXPECT_EQ(b.handle("unknown.example", client).body, want);
  std::map<std::string, double> m;
  for (const auto& x : b.metrics()) {
    EXPECT_EQ(x.type, ipc::MetricType::Counter);
    EXPECT_TRUE(x.labels.empty());
    m[x.name] = x.value;
  }
  const std::map<std::string, double> wantVarz = {
      {"bootstrap_dns_requests", 3},          {"bootstrap_dns_published_hits", 1},
      {"bootstrap_dns_published_misses", 0},  {"bootstrap_dns_unpublished_hits", 0},
      {"bootstrap_dns_unpublished_misses", 1}, {"bootstrap_dns_unpublished_percent_misses", 0},
      {"bootstrap_dns_queried_domains", 2},
  };
  EXPECT_EQ(m, wantVarz);
  // The same names as the capture's /debug/varz.
  const std::string varz = test::readVectorFile("http/debug_varz.body");
  for (const auto& [name, _] : wantVarz) EXPECT_NE(varz.find("# TYPE " + name + " counter\n"), std::string::npos) << name;
  const std::string vars = test::readVectorFile("http/debug_vars.body");
  for (std::string_view n : kBootstrapDnsExpvarNames) EXPECT_NE(vars.find("\"" + std::string(n) + "\""), std::string::npos) << n;
}

TEST(BootstrapHandle, NothingConfiguredOrNotYetRefreshed) {
  FakeDns dns;
  BootstrapDns none(opts(""), dns.resolver());
  EXPECT_FALSE(none.enabled());
  none.start();  // no thread, nothing resolved
  none.refreshNow();
  auto r = none.handle("", ip("1.2.3.4"));
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests);
  r = none.handle("x.example", ip("1.2.3.4"));
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedMiss);
  EXPECT_TRUE(dns.asked.empty());

  dns.ips["a.example"] = {"10.0.0.1"};
  BootstrapDns early(opts("a.example"), dns.resolver());
  EXPECT_TRUE(early.enabled());
  EXPECT_EQ(early.handle("", ip("1.2.3.4")).body, "");  // before the first refresh
  EXPECT_EQ(early.refreshes(), 0u);
}

TEST(BootstrapHandle, FailedNamesOmittedAllFailedIsNull) {
  FakeDns dns;
  dns.ips["ok.example"] = {"192.0.2.1"};
  BootstrapDns b(opts("bad.example,ok.example,,also-bad.example"), dns.resolver());
  b.refreshNow();
  EXPECT_EQ(b.publishedBody(), "{\n\t\"ok.example\": [\n\t\t\"192.0.2.1\"\n\t]\n}");
  // Every lookup in list order, empty entries included (derper's strings.Split).
  EXPECT_EQ(dns.asked, (std::vector<std::string>{"ip:bad.example", "ip:ok.example", "ip:", "ip:also-bad.example"}));

  FakeDns none;
  BootstrapDns allBad(opts("bad.example"), none.resolver());
  allBad.refreshNow();
  EXPECT_EQ(allBad.publishedBody(), "null");
  // A later refresh replaces the results (failed names are not kept from before).
  dns.ips.erase("ok.example");
  b.refreshNow();
  EXPECT_EQ(b.publishedBody(), "null");
  EXPECT_EQ(b.refreshes(), 2u);
}

TEST(BootstrapHandle, PublishedIpsShuffledPerName) {
  FakeDns dns;
  std::vector<std::string> many;
  for (int i = 1; i <= 12; i++) many.push_back("10.0.0." + std::to_string(i));
  dns.ips["m.example"] = many;
  std::set<std::string> bodies;
  for (uint64_t seed = 1; seed <= 4; seed++) {
    auto o = opts("m.example");
    o.shuffleSeed = seed;
    BootstrapDns b(std::move(o), dns.resolver());
    b.refreshNow();
    const std::string body = b.publishedBody();
    bodies.insert(body);
    // A permutation of the resolver's answer.
    for (const auto& a : many) EXPECT_NE(body.find("\"" + a + "\""), std::string::npos);
  }
  EXPECT_GT(bodies.size(), 1u);
}

TEST(BootstrapHandle, UnpublishedWithoutTxtIsAlwaysServed) {
  FakeDns dns;
  dns.ips["pub.example"] = {"192.0.2.1"};
  dns.ips["hidden.example"] = {"198.51.100.1", "2001:db8::1"};
  BootstrapDns b(opts("pub.example", "hidden.example"), dns.resolver());
  b.refreshNow();
  auto r = b.handle("hidden.example", ip("8.8.8.8"));
  EXPECT_TRUE(r.unpublished);
  // Unpublished answers keep the resolver's order (derper shuffles only the published set).
  EXPECT_EQ(r.body, "{\n\t\"hidden.example\": [\n\t\t\"198.51.100.1\",\n\t\t\"2001:db8::1\"\n\t]\n}");
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedHit);
  // Not asked by name: the published body, and the hidden name stays hidden.
  r = b.handle("", ip("8.8.8.8"));
  EXPECT_EQ(r.body.find("hidden"), std::string::npos);
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests);
  r = b.handle("pub.example", ip("8.8.8.8"));
  EXPECT_FALSE(r.unpublished);
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpPublishedHit);
  EXPECT_EQ(get(b.counters().unpublishedHits), 1u);
  EXPECT_EQ(get(b.counters().publishedHits), 1u);
  EXPECT_EQ(get(b.counters().requests), 3u);
}

TEST(BootstrapHandle, TxtPercentGate) {
  FakeDns dns;
  dns.ips["zero.example"] = {"10.0.0.1"};
  dns.ips["full.example"] = {"10.0.0.2"};
  dns.ips["half.example"] = {"10.0.0.3"};
  dns.ips["notxt.example"] = {"10.0.0.4"};
  dns.ips["bad.example"] = {"10.0.0.5"};
  dns.ips["last.example"] = {"10.0.0.6"};
  dns.txt["pct0"] = {"0"};
  dns.txt["pct100"] = {"100"};
  dns.txt["pct50"] = {"50"};
  dns.txt["pctbad"] = {" 50", "101", "5x", "", "-1", "1e2", "0x10", "99999999999999999999999"};
  dns.txt["pctlast"] = {"+20", "junk", "030"};  // Atoi: "+20" = 20, then "030" = 30 wins
  BootstrapDns b(opts("", "zero.example/pct0,full.example/pct100,half.example/pct50,notxt.example/missing,"
                          "bad.example/pctbad,last.example/pctlast"),
                 dns.resolver());
  b.refreshNow();

  // 0 %: never, whoever asks (loopback included).
  for (const char* c : {"1.2.3.4", "127.0.0.1", "2001:db8::1"}) {
    auto r = b.handle("zero.example", ip(c));
    EXPECT_FALSE(r.unpublished) << c;
    EXPECT_EQ(r.body, "") << c;  // no published list: empty fallback body
    EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedHit |
                            BootstrapDns::kBumpUnpublishedPercentMiss | BootstrapDns::kBumpUnpublishedMiss)
        << c;
  }
  // 100 %: always.
  for (const char* c : {"1.2.3.4", "127.0.0.1", "2001:db8::1"}) EXPECT_TRUE(b.handle("full.example", ip(c)).unpublished) << c;
  // Missing TXT and only-invalid TXT: 0 %.
  EXPECT_FALSE(b.handle("notxt.example", ip("1.2.3.4")).unpublished);
  EXPECT_FALSE(b.handle("bad.example", ip("1.2.3.4")).unpublished);
  // 50 %: the per-IP draw decides.
  for (const char* c : {"1.2.3.4", "8.8.8.8", "10.0.0.1", "192.0.2.1", "2001:db8::1", "fe80::1", "::"}) {
    const auto client = ip(c);
    EXPECT_EQ(b.handle("half.example", client).unpublished, rolloutDraw(client.as16) < 0.5) << c;
  }
  // "030" (the last valid record) = 30 %.
  for (const char* c : {"1.2.3.4", "8.8.8.8", "100.64.0.1", "203.0.113.255", "2606:4700:4700::1111"}) {
    const auto client = ip(c);
    EXPECT_EQ(b.handle("last.example", client).unpublished, rolloutDraw(client.as16) < 0.3) << c;
  }
  // Loopback: the coin.
  {
    auto o = opts("", "half.example/pct50");
    bool heads = true;
    o.coin = [&heads] { return heads ? 0.1 : 0.9; };
    BootstrapDns lb(std::move(o), dns.resolver());
    lb.refreshNow();
    EXPECT_TRUE(lb.handle("half.example", ip("127.0.0.1")).unpublished);
    heads = false;
    EXPECT_FALSE(lb.handle("half.example", ip("::1")).unpublished);
    // No client address: the gate fails.
    EXPECT_FALSE(lb.handle("half.example", std::nullopt).unpublished);
  }
}

TEST(BootstrapHandle, PercentMissFallsThroughToPublishedCounters) {
  FakeDns dns;
  dns.ips["both.example"] = {"10.0.0.1"};
  dns.txt["pct0"] = {"0"};
  BootstrapDns b(opts("both.example", "both.example/pct0"), dns.resolver());
  b.refreshNow();
  auto r = b.handle("both.example", ip("1.2.3.4"));
  EXPECT_FALSE(r.unpublished);
  EXPECT_EQ(r.body, "{\n\t\"both.example\": [\n\t\t\"10.0.0.1\"\n\t]\n}");
  EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedHit |
                          BootstrapDns::kBumpUnpublishedPercentMiss | BootstrapDns::kBumpPublishedHit);
}

TEST(BootstrapHandle, RepeatedEntriesKeepGoSemantics) {
  // derper fills maps entry by entry: a later failing TXT lookup does not
  // reset an earlier percentage; a later successful one replaces it.
  FakeDns dns;
  dns.ips["r.example"] = {"10.0.0.1"};
  dns.txt["pct100"] = {"100"};
  dns.txt["pct0"] = {"0"};
  BootstrapDns keep(opts("", "r.example/pct100,r.example/missing"), dns.resolver());
  keep.refreshNow();
  EXPECT_TRUE(keep.handle("r.example", ip("1.2.3.4")).unpublished);
  BootstrapDns replace(opts("", "r.example/pct100,r.example/pct0"), dns.resolver());
  replace.refreshNow();
  EXPECT_FALSE(replace.handle("r.example", ip("1.2.3.4")).unpublished);
}

TEST(BootstrapHandle, RememberedNamesClearedPast500) {
  FakeDns dns;
  BootstrapDns b(opts("", "x.example"), dns.resolver());
  for (int i = 0; i < 500; i++) (void)b.handle("n" + std::to_string(i) + ".example", ip("1.2.3.4"));
  EXPECT_EQ(b.queriedDomains(), 500u);
  (void)b.handle("n0.example", ip("1.2.3.4"));  // already known: still 500
  EXPECT_EQ(b.queriedDomains(), 500u);
  (void)b.handle("n500.example", ip("1.2.3.4"));  // the 501st: cleared
  EXPECT_EQ(b.queriedDomains(), 0u);
  (void)b.handle("again.example", ip("1.2.3.4"));
  EXPECT_EQ(b.queriedDomains(), 1u);
  (void)b.handle("", ip("1.2.3.4"));  // no q: not remembered
  EXPECT_EQ(b.queriedDomains(), 1u);
  EXPECT_EQ(get(b.counters().unpublishedMisses), 503u);
  EXPECT_EQ(get(b.counters().requests), 504u);
}

// ---------------------------------------------------------------------------
// The refresh thread.

TEST(BootstrapThread, RefreshesOnIntervalAndStopsPromptly) {
  FakeDns dns;
  dns.ips["t.example"] = {"10.0.0.1"};
  auto o = opts("t.example");
  o.refreshInterval = 5ms;
  BootstrapDns b(std::move(o), dns.resolver());
  b.start();
  b.start();  // idempotent
  ASSERT_TRUE(b.waitForRefreshes(3, 10s));
  EXPECT_EQ(b.publishedBody(), "{\n\t\"t.example\": [\n\t\t\"10.0.0.1\"\n\t]\n}");
  const auto t0 = std::chrono::steady_clock::now();
  b.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  const uint64_t n = b.refreshes();
  b.stop();  // idempotent
  EXPECT_EQ(b.refreshes(), n);
}

TEST(BootstrapThread, StopWakesTheLongSleep) {
  FakeDns dns;
  dns.ips["t.example"] = {"10.0.0.1"};
  BootstrapDns b(opts("t.example"), dns.resolver());  // 10 minutes
  b.start();
  ASSERT_TRUE(b.waitForRefreshes(1, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  b.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(b.refreshes(), 1u);
}

TEST(BootstrapThread, StopCancelsAnInFlightLookup) {
  std::atomic<bool> entered{false};
  BootstrapDns::Resolver r;
  r.lookupIp = [&entered](const std::string&, const std::atomic<bool>& cancel) -> Lookup {
    entered = true;
    // A lookup that honours `cancel`, as net::resolveAddrs does.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!cancel.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return makeError("cancelled");
  };
  r.lookupTxt = r.lookupIp;
  BootstrapDns b(opts("slow.example"), r);
  b.start();
  const auto waitStart = std::chrono::steady_clock::now();
  while (!entered.load() && std::chrono::steady_clock::now() - waitStart < 10s) std::this_thread::yield();
  ASSERT_TRUE(entered.load());
  const auto t0 = std::chrono::steady_clock::now();
  b.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(b.refreshes(), 0u);        // the cancelled refresh is dropped
  EXPECT_EQ(b.publishedBody(), "");
}

TEST(BootstrapThread, ConcurrentHandleDuringRefresh) {
  FakeDns dns;
  dns.ips["c.example"] = {"10.0.0.1", "10.0.0.2"};
  dns.ips["h.example"] = {"10.0.0.3"};
  auto o = opts("c.example", "h.example");
  o.refreshInterval = 1ms;
  BootstrapDns b(std::move(o), dns.resolver());
  b.start();
  ASSERT_TRUE(b.waitForRefreshes(1, 10s));
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; t++) {
    threads.emplace_back([&b, t] {
      for (int i = 0; i < 2000; i++) {
        auto r = b.handle(i % 3 == 0 ? "h.example" : "q" + std::to_string(i % 700 + t), ip("1.2.3.4"));
        ASSERT_FALSE(r.body.empty());
      }
    });
  }
  for (auto& t : threads) t.join();
  b.stop();
  EXPECT_EQ(get(b.counters().requests), 4000u);
}

}  // namespace
}  // namespace derpd::worker
