// /bootstrap-dns against a real DNS server: Debian's dnsmasq on 127.0.0.1
// with a free port, serving A/AAAA/TXT records from its command line, queried
// by common/net/dns_client and driven through derp-worker's BootstrapDns.
// Skipped when the dnsmasq binary (package dnsmasq-base) is absent.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/net/dns_client.hpp"
#include "derp-worker/bootstrap_dns.hpp"
#include "support/harness.hpp"

namespace derpd {
namespace {

using namespace std::chrono_literals;
using worker::BootstrapDns;
using worker::ClientIp;

std::string findDnsmasq() {
  for (const char* p : {"/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

// A port free for both UDP and TCP on 127.0.0.1 right now (released again:
// a race with other processes, which the caller handles by retrying).
int freePort() {
  for (int attempt = 0; attempt < 20; attempt++) {
    const int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (u >= 0 && t >= 0 && ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(u, reinterpret_cast<sockaddr*>(&a), &len) == 0 &&
        ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      port = ntohs(a.sin_port);
    }
    if (u >= 0) ::close(u);
    if (t >= 0) ::close(t);
    if (port > 0) return port;
  }
  return -1;
}

// dnsmasq in the foreground; always stopped (SIGTERM, then SIGKILL) and
// reaped by the destructor.
class Dnsmasq {
 public:
  ~Dnsmasq() { stop(); }

  // Tries up to 5 ports. On failure returns nullptr and sets *why.
  static std::unique_ptr<Dnsmasq> start(const std::string& bin, const std::string& logPath,
                                        const std::vector<std::string>& records, std::string* why) {
    for (int attempt = 0; attempt < 5; attempt++) {
      const int port = freePort();
      if (port <= 0) {
        *why = "no free port";
        return nullptr;
      }
      auto d = std::unique_ptr<Dnsmasq>(new Dnsmasq());
      std::vector<std::string> args = {bin,
                                       "--no-daemon",
                                       "--no-resolv",
                                       "--no-hosts",
                                       "--conf-file=/dev/null",
                                       "--bind-interfaces",
                                       "--listen-address=127.0.0.1",
                                       "--port=" + std::to_string(port),
                                       "--user=root",
                                       "--group=root",
                                       "--pid-file=",
                                       "--cache-size=0",
                                       "--log-facility=-",
                                       "--log-queries"};
      args.insert(args.end(), records.begin(), records.end());
      if (!d->spawn(args, logPath)) {
        *why = "fork/exec dnsmasq failed";
        return nullptr;
      }
      d->server = net::parseDnsServer("127.0.0.1:" + std::to_string(port)).value();
      if (d->waitReady()) return d;
      *why = "dnsmasq on port " + std::to_string(port) + " did not answer; log: " +
             test::readFile(logPath).value_or("(none)");
      d->stop();
    }
    return nullptr;
  }

  net::DnsServer server;

 private:
  Dnsmasq() = default;

  bool spawn(const std::vector<std::string>& args, const std::string& logPath) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int logFd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logFd < 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(logFd, 1);
      ::dup2(logFd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(logFd);
    if (pid_ < 0) return false;
    pidfd_ = int(::syscall(SYS_pidfd_open, pid_, 0));
    return true;
  }

  bool exited() {
    if (pid_ <= 0) return true;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  // Readiness: a known name answers. Bounded by time and by count; a child
  // that exits (port taken) ends the wait at once.
  bool waitReady() {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (int i = 0; i < 1000 && std::chrono::steady_clock::now() < deadline; i++) {
      if (exited()) return false;
      auto r = net::dnsQuery(server, "ready.test", dns::RrType::A, 200ms);
      if (r.ok() && r->rcode == dns::Rcode::NoError && !r->a.empty()) return true;
      if (!r.ok()) {
        // Not listening yet (ECONNREFUSED comes back at once): wait for the
        // child to change state or 20 ms, whichever is first.
        pollfd p{pidfd_, POLLIN, 0};
        if (pidfd_ >= 0) ::poll(&p, 1, 20);
      }
    }
    return false;
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      bool gone = false;
      if (pidfd_ >= 0) {
        pollfd p{pidfd_, POLLIN, 0};
        gone = ::poll(&p, 1, 5000) == 1;
      }
      if (!gone) ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
    if (pidfd_ >= 0) {
      ::close(pidfd_);
      pidfd_ = -1;
    }
  }

  pid_t pid_ = -1;
  int pidfd_ = -1;
};

// 3 strings of 250 bytes: an answer over 512 bytes, so UDP sets TC.
std::string bigTxt() {
  std::string s = "--txt-record=big.test";
  for (char c : {'a', 'b', 'c'}) s += "," + std::string(250, c);
  return s;
}

class BootstrapDnsReal : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bin = findDnsmasq();
    if (bin.empty()) GTEST_SKIP() << "dnsmasq not installed (apt-get install dnsmasq-base)";
    const std::vector<std::string> records = {
        "--host-record=ready.test,127.0.0.9",
        // Published names: both families, a second IPv4 through a second record.
        "--host-record=pub.test,192.0.2.10,2001:db8::10",
        "--host-record=pub.test,192.0.2.11",
        "--host-record=v6only.test,2001:db8::66",
        "--address=/nx.test/",  // NXDOMAIN
        // Unpublished names and their TXT percentages.
        "--host-record=full.test,198.51.100.1",
        "--host-record=zero.test,198.51.100.2",
        "--host-record=all.test,198.51.100.3,2001:db8::3",
        "--host-record=half.test,198.51.100.4",
        "--host-record=notxt.test,198.51.100.5",
        "--host-record=multi.test,198.51.100.6",
        "--txt-record=pct0.test,0",
        "--txt-record=pct100.test,100",
        "--txt-record=pct50.test,50",
        // One record, strings "3" and "0": Go joins them to "30". (No shell here:
        // dnsmasq would keep quotes as part of the strings.)
        "--txt-record=multi-pct.test,3,0",
        "--txt-record=two.test,first",
        "--txt-record=two.test,second",
        bigTxt(),
    };
    std::string why;
    dnsmasq_ = Dnsmasq::start(bin, tmp_.file("dnsmasq.log"), records, &why);
    ASSERT_TRUE(dnsmasq_) << why;
  }
  void TearDown() override { dnsmasq_.reset(); }  // stops dnsmasq even after a failed assertion

  const net::DnsServer& server() const { return dnsmasq_->server; }

  test::TempDir tmp_;
  std::unique_ptr<Dnsmasq> dnsmasq_;
};

std::set<std::string> asSet(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

TEST_F(BootstrapDnsReal, ClientResolvesBothFamiliesAndTxt) {
  auto addrs = net::resolveAddrs(server(), "pub.test", 2s);
  ASSERT_TRUE(addrs.ok()) << addrs.error();
  EXPECT_EQ(asSet(*addrs), (std::set<std::string>{"192.0.2.10", "192.0.2.11", "2001:db8::10"}));
  // Case-insensitive question echo, trailing dot.
  addrs = net::resolveAddrs(server(), "PUB.Test.", 2s);
  ASSERT_TRUE(addrs.ok()) << addrs.error();
  EXPECT_EQ(addrs->size(), 3u);
  auto v6 = net::resolveAddrs(server(), "v6only.test", 2s);
  ASSERT_TRUE(v6.ok()) << v6.error();
  EXPECT_EQ(*v6, std::vector<std::string>{"2001:db8::66"});
  auto lit = net::resolveAddrs(server(), "203.0.113.9", 2s);  // an IP literal: no query
  ASSERT_TRUE(lit.ok());
  EXPECT_EQ(*lit, std::vector<std::string>{"203.0.113.9"});

  auto nx = net::resolveAddrs(server(), "host.nx.test", 2s);
  ASSERT_FALSE(nx.ok());
  EXPECT_NE(nx.error().find("no such host"), std::string::npos) << nx.error();
  auto unknown = net::resolveAddrs(server(), "unknown.test", 2s);  // no upstream: refused/failed
  EXPECT_FALSE(unknown.ok());

  auto txt = net::resolveTxt(server(), "multi-pct.test", 2s);
  ASSERT_TRUE(txt.ok()) << txt.error();
  EXPECT_EQ(*txt, std::vector<std::string>{"30"});
  auto two = net::resolveTxt(server(), "two.test", 2s);
  ASSERT_TRUE(two.ok()) << two.error();
  EXPECT_EQ(asSet(*two), (std::set<std::string>{"first", "second"}));
}

TEST_F(BootstrapDnsReal, TruncatedAnswerRetriedOverTcp) {
  auto udp = net::dnsQuery(server(), "big.test", dns::RrType::Txt, 2s);
  ASSERT_TRUE(udp.ok()) << udp.error();
  EXPECT_FALSE(udp->truncated);  // the TCP retry's answer
  ASSERT_EQ(udp->txt.size(), 1u);
  EXPECT_EQ(udp->txt[0].size(), 3u);
  auto txt = net::resolveTxt(server(), "big.test", 2s);
  ASSERT_TRUE(txt.ok()) << txt.error();
  ASSERT_EQ(txt->size(), 1u);
  EXPECT_EQ((*txt)[0], std::string(250, 'a') + std::string(250, 'b') + std::string(250, 'c'));
}

TEST_F(BootstrapDnsReal, SilentServerTimesOutAndCancelIsPrompt) {
  // A UDP socket that never answers.
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  auto silent = net::parseDnsServer("127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
  ASSERT_TRUE(silent.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = net::resolveAddrs(*silent, "pub.test", 300ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error().find("timed out"), std::string::npos) << r.error();
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
  std::atomic<bool> cancel{true};
  auto c = net::resolveAddrs(*silent, "pub.test", 30s, &cancel);
  EXPECT_FALSE(c.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  ::close(fd);
}

TEST_F(BootstrapDnsReal, PublishedNames) {
  BootstrapDns::Options o;
  o.publishedNames = "pub.test,v6only.test,host.nx.test,unknown.test";
  BootstrapDns b(o, BootstrapDns::dnsResolver(server(), net::HostsFile{}, 2s));
  b.start();
  ASSERT_TRUE(b.waitForRefreshes(1, 60s));
  const std::string body = b.handle("", ClientIp::parse("192.0.2.200")).body;
  const auto j = nlohmann::json::parse(body);
  ASSERT_TRUE(j.is_object()) << body;
  EXPECT_EQ(j.size(), 2u) << body;  // failed names omitted
  EXPECT_EQ(asSet(j.at("pub.test").get<std::vector<std::string>>()),
            (std::set<std::string>{"192.0.2.10", "192.0.2.11", "2001:db8::10"}));
  EXPECT_EQ(j.at("v6only.test").get<std::vector<std::string>>(), std::vector<std::string>{"2001:db8::66"});
  // Exactly derper's formatting of what it holds.
  std::map<std::string, std::vector<std::string>> held = {
      {"pub.test", j.at("pub.test").get<std::vector<std::string>>()},
      {"v6only.test", j.at("v6only.test").get<std::vector<std::string>>()}};
  EXPECT_EQ(body, worker::renderBootstrapJson(held));
  auto hit = b.handle("pub.test", ClientIp::parse("192.0.2.200"));
  EXPECT_EQ(hit.body, body);
  EXPECT_EQ(hit.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpPublishedHit);
  auto miss = b.handle("host.nx.test", ClientIp::parse("192.0.2.200"));
  EXPECT_EQ(miss.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedMiss);
  b.stop();
}

TEST_F(BootstrapDnsReal, UnpublishedRollout) {
  BootstrapDns::Options o;
  o.publishedNames = "pub.test";
  o.unpublishedNames =
      "full.test,zero.test/pct0.test,all.test/pct100.test,half.test/pct50.test,"
      "notxt.test/missing-pct.test,multi.test/multi-pct.test,host.nx.test/pct100.test";
  BootstrapDns b(o, BootstrapDns::dnsResolver(server(), net::HostsFile{}, 2s));
  b.refreshNow();
  ASSERT_EQ(b.refreshes(), 1u);

  const std::vector<std::string> clients = {"1.2.3.4",      "8.8.8.8",    "10.0.0.1",      "100.64.0.1",
                                            "192.168.1.1",  "203.0.113.255", "2001:db8::1", "2606:4700:4700::1111",
                                            "fd7a:115c:a1e0::1", "::ffff:1.2.3.4"};
  for (const std::string& c : clients) {
    SCOPED_TRACE(c);
    const auto ip = ClientIp::parse(c);
    ASSERT_TRUE(ip.has_value());
    // No TXT name: 100 %.
    auto r = b.handle("full.test", ip);
    EXPECT_TRUE(r.unpublished);
    EXPECT_EQ(r.body, "{\n\t\"full.test\": [\n\t\t\"198.51.100.1\"\n\t]\n}");
    // TXT "0": never; TXT "100": always.
    r = b.handle("zero.test", ip);
    EXPECT_FALSE(r.unpublished);
    EXPECT_EQ(r.body, b.publishedBody());
    EXPECT_TRUE(r.bumped & BootstrapDns::kBumpUnpublishedPercentMiss);
    r = b.handle("all.test", ip);
    EXPECT_TRUE(r.unpublished);
    const auto j = nlohmann::json::parse(r.body);
    EXPECT_EQ(asSet(j.at("all.test").get<std::vector<std::string>>()),
              (std::set<std::string>{"198.51.100.3", "2001:db8::3"}));
    // TXT "50" and the joined "3"+"0" = 30: derper's PCG draw for this IP.
    const double draw = worker::rolloutDraw(ip->as16);
    EXPECT_EQ(b.handle("half.test", ip).unpublished, 0.5 > draw);
    EXPECT_EQ(b.handle("multi.test", ip).unpublished, 0.3 > draw);
    // TXT record missing: 0 %.
    EXPECT_FALSE(b.handle("notxt.test", ip).unpublished);
    // Address lookup failed: not in the unpublished set at all.
    r = b.handle("host.nx.test", ip);
    EXPECT_FALSE(r.unpublished);
    EXPECT_EQ(r.bumped, BootstrapDns::kBumpRequests | BootstrapDns::kBumpUnpublishedMiss);
  }
  // The partial gates really split these clients both ways.
  size_t halfYes = 0;
  for (const std::string& c : clients) halfYes += b.handle("half.test", ClientIp::parse(c)).unpublished;
  EXPECT_GT(halfYes, 0u);
  EXPECT_LT(halfYes, clients.size());
  b.stop();
}

// No dnsmasq needed: a hand-driven server on loopback checks that only the
// server's own address/port, the query's id and its question are accepted.
TEST(DnsClientForgery, OnlyTheMatchingAnswerIsAccepted) {
  auto bindLoopback = [](int* port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return -1;
    *port = ntohs(a.sin_port);
    return fd;
  };
  int serverPort = 0, forgerPort = 0;
  const int server = bindLoopback(&serverPort);
  const int forger = bindLoopback(&forgerPort);
  ASSERT_GE(server, 0);
  ASSERT_GE(forger, 0);
  std::atomic<bool> answered{false};
  std::thread t([&] {
    pollfd p{server, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return;
    uint8_t q[512];
    sockaddr_storage from{};
    socklen_t fromLen = sizeof from;
    const ssize_t n = ::recvfrom(server, q, sizeof q, 0, reinterpret_cast<sockaddr*>(&from), &fromLen);
    if (n < 12) return;
    auto answer = [&](uint16_t idDelta, bool otherName, uint8_t last) {
      Bytes m(q, q + n);
      const uint16_t id = uint16_t(((m[0] << 8) | m[1]) + idDelta);
      m[0] = uint8_t(id >> 8);
      m[1] = uint8_t(id);
      m[2] |= 0x80;  // QR
      m[7] = 1;      // ancount
      if (otherName) m[13] = 'g';  // "fake" -> "gake"
      for (uint8_t b : {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 60, 0, 4, 192, 0, 2}) m.push_back(b);
      m.push_back(last);
      return m;
    };
    const Bytes fromForger = answer(0, false, 66);
    const Bytes wrongId = answer(1, false, 67);
    const Bytes wrongName = answer(0, true, 68);
    const Bytes good = answer(0, false, 99);
    ::sendto(forger, fromForger.data(), fromForger.size(), 0, reinterpret_cast<sockaddr*>(&from), fromLen);
    ::sendto(server, wrongId.data(), wrongId.size(), 0, reinterpret_cast<sockaddr*>(&from), fromLen);
    ::sendto(server, wrongName.data(), wrongName.size(), 0, reinterpret_cast<sockaddr*>(&from), fromLen);
    ::sendto(server, good.data(), good.size(), 0, reinterpret_cast<sockaddr*>(&from), fromLen);
    answered = true;
  });
  auto dnsServer = net::parseDnsServer("127.0.0.1:" + std::to_string(serverPort));
  ASSERT_TRUE(dnsServer.ok());
  auto r = net::dnsQuery(*dnsServer, "fake.test", dns::RrType::A, 5s);
  t.join();
  ::close(server);
  ::close(forger);
  ASSERT_TRUE(answered.load());
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->a.size(), 1u);
  EXPECT_EQ(dns::formatIpv4(r->a[0]), "192.0.2.99");
}

}  // namespace
}  // namespace derpd
