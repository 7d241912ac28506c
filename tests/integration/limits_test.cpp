// Limits on what connecting peers may hold (docs/SECURITY.md), against the
// real derpd: thousands of half-open TCP connections and slowloris HTTP
// heads do not lock a new client out; max-handshakes closes the oldest
// unfinished handshake for a new connection; max-connections and derper's
// accept rate limiter close new connections at once, with counters.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;

// TCP connections to 127.0.0.1:port that never send a byte.
class IdleConns {
 public:
  ~IdleConns() {
    for (int fd : fds_) ::close(fd);
  }
  // Opens n connections; true once every one is established (bounded).
  bool open(uint16_t port, size_t n) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    std::vector<pollfd> waiting;
    for (size_t i = 0; i < n; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) return false;
      fds_.push_back(fd);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) return false;
      waiting.push_back({fd, POLLOUT, 0});
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!waiting.empty() && std::chrono::steady_clock::now() < deadline) {
      if (::poll(waiting.data(), waiting.size(), 200) < 0 && errno != EINTR) return false;
      std::vector<pollfd> still;
      for (const pollfd& p : waiting) {
        if (p.revents == 0) {
          still.push_back({p.fd, POLLOUT, 0});
          continue;
        }
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) return false;
      }
      waiting.swap(still);
    }
    return waiting.empty();
  }
  // How many of them the server has closed (EOF or reset seen).
  size_t closedByPeer() const {
    size_t n = 0;
    for (int fd : fds_) {
      char b;
      ssize_t r = ::recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) ++n;
    }
    return n;
  }
  // Whether the i-th connection (in opening order) was closed by the server.
  bool closed(size_t i) const {
    char b;
    ssize_t r = ::recv(fds_[i], &b, 1, MSG_DONTWAIT | MSG_PEEK);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
  size_t size() const { return fds_.size(); }

 private:
  std::vector<int> fds_;
};

class LimitsTest : public WorkerTest {
 protected:
  void SetUp() override {
    WorkerTest::SetUp();
    rlimit rl{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
    fdLimit_ = rl.rlim_cur;
  }

  WorkerProcess* startPlain(const std::vector<std::string>& extra) {
    std::vector<std::string> a = derpdArgs();
    a.insert(a.end(), extra.begin(), extra.end());
    return startDerpd(a);
  }

  WorkerProcess* startTls(const std::vector<std::string>& extra) {
    std::string dir = tmp().file("certs");
    fs::create_directories(dir);
    auto c = makeTestCerts(dir, "localhost", {"localhost", "127.0.0.1"});
    EXPECT_TRUE(c.ok()) << c.error();
    if (::geteuid() == 0) {
      ::chmod(tmp().path().c_str(), 0755);
      for (const auto& e : fs::directory_iterator(dir)) ::chmod(e.path().c_str(), 0644);
      ::chmod(dir.c_str(), 0755);
    }
    std::vector<std::string> a = derpdArgs();
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    a.insert(a.end(), {"-c", tmp().file("derper.key"), "-certmode", "manual", "-certdir", dir, "-hostname",
                       "localhost", "-http-port", "-1", "--state-dir", tmp().path(), "-stun=false"});
    a.insert(a.end(), extra.begin(), extra.end());
    WorkerProcess* w = startDerpd(a);
    if (w) w->setTlsClientInfo("localhost", c->caFile);
    return w;
  }

  // A DERP pair connects (each within `budget`) and relays one packet.
  ::testing::AssertionResult pairRelays(const WorkerProcess& w, Millis budget) {
    auto tweak = [&](client::ClientOptions& o) { o.timeout = budget; };
    auto a = dial(w, keys::alice(), tweak);
    if (!a.ok()) return ::testing::AssertionFailure() << "alice: " << a.error();
    auto b = dial(w, keys::bob(), tweak);
    if (!b.ok()) return ::testing::AssertionFailure() << "bob: " << b.error();
    return exchange(**a, **b, asBytes(std::string_view("still served")), budget);
  }

  rlim_t fdLimit_ = 0;
};

// 5,000 idle half-open TCP connections and 1,000 TLS connections trickling
// an HTTP head are all held (default limits), and a new client pair still
// connects and relays within 1 s.
TEST_F(LimitsTest, HalfOpenAndSlowlorisConnectionsDoNotLockClientsOut) {
  if (fdLimit_ < 8000) GTEST_SKIP() << "needs 8000 descriptors, the hard limit is " << fdLimit_;
  WorkerProcess* w = startTls({});
  ASSERT_NE(w, nullptr);
  IdleConns idle;
  ASSERT_TRUE(idle.open(w->port(), 5000));
  std::vector<std::unique_ptr<RawConn>> slow;
  TlsClientOptions tls;
  tls.caFile = w->caFile();
  tls.serverName = "localhost";
  for (int i = 0; i < 1000; ++i) {
    auto c = RawConn::dial(w->port(), &tls);
    ASSERT_TRUE(c.ok()) << i << ": " << c.error();
    ASSERT_TRUE((*c)->sendAll(std::string_view("GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\n")).ok());
    slow.push_back(std::move(c).value());
  }
  ASSERT_TRUE(waitForMetric(*w, "derpd_handshakes_pending", [](double v) { return v >= 6000; }, Millis(10000)));
  EXPECT_TRUE(pairRelays(*w, Millis(1000)));
  EXPECT_EQ(idle.closedByPeer(), 0u);
  // One more line of the slow heads: they are still being read.
  for (auto& c : slow) ASSERT_TRUE(c->sendAll(std::string_view("X-Slow: 1\r\n")).ok());
  EXPECT_EQ(metric(*w, "derpd_accept_rejected{reason=\"handshakes\"}"), 0);
}

// max-handshakes: the oldest unfinished handshakes are closed for new
// connections; a client arriving last still gets in.
TEST_F(LimitsTest, MaxHandshakesClosesTheOldestUnfinishedHandshake) {
  WorkerProcess* w = startPlain({"--max-handshakes", "20", "--threads", "1"});
  ASSERT_NE(w, nullptr);
  IdleConns first, second;
  ASSERT_TRUE(first.open(w->port(), 20));
  ASSERT_TRUE(waitForMetric(*w, "derpd_handshakes_pending", [](double v) { return v == 20; }));
  ASSERT_TRUE(second.open(w->port(), 20));
  EXPECT_TRUE(waitFor([&] { return first.closedByPeer() == 20; }, kIoTimeout)) << first.closedByPeer();
  EXPECT_EQ(second.closedByPeer(), 0u);
  EXPECT_TRUE(pairRelays(*w, Millis(2000)));
  // (Each /debug/varz request is a new connection too, and evicts one.)
  EXPECT_TRUE(waitForMetric(*w, "derpd_conn_closes{reason=\"evicted\"}", [](double v) { return v >= 20; }));
  EXPECT_TRUE(waitForMetric(*w, "derpd_handshakes_pending", [](double v) { return v <= 20; }));
}

// max-connections: beyond it a new connection is closed at once; room made
// by closing lets clients in again.
TEST_F(LimitsTest, MaxConnectionsClosesNewConnectionsAtTheCap) {
  // One loop: with two, two loops' accepts can pass the check in either order.
  WorkerProcess* w = startPlain({"--max-connections", "7", "--threads", "1"});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  // Seven alive (no /debug/varz read here: it would be a connection too, and
  // an HTTP connection lingers a moment after its answer).
  auto idle = std::make_unique<IdleConns>();
  ASSERT_TRUE(idle->open(w->port(), 5));
  auto full = std::make_unique<IdleConns>();
  ASSERT_TRUE(full->open(w->port(), 1));
  IdleConns over;
  ASSERT_TRUE(over.open(w->port(), 1));
  EXPECT_TRUE(waitFor([&] { return over.closedByPeer() == 1; }, kIoTimeout));
  EXPECT_EQ(full->closedByPeer(), 0u);
  EXPECT_FALSE(dial(*w, keys::bob(), [](client::ClientOptions& o) { o.timeout = Millis(2000); }).ok());
  idle.reset();
  full.reset();
  ASSERT_TRUE(waitForMetric(*w, "derpd_handshakes_pending", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derpd_accept_rejected{reason=\"connections\"}", [](double v) { return v >= 2; }));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("room again"))));
}

// derper's accept limiter: a bucket of -accept-connection-burst tokens
// refilled at -accept-connection-limit per second; an accept without a
// token is closed at once and counted as derper counts it.
TEST_F(LimitsTest, AcceptRateLimiterClosesConnectionsBeyondTheBurst) {
  WorkerProcess* w = startTls({"-accept-connection-limit", "0.5", "-accept-connection-burst", "3", "--threads", "1"});
  ASSERT_NE(w, nullptr);
  IdleConns three;
  ASSERT_TRUE(three.open(w->port(), 3));
  IdleConns fourth;  // within 2 s of the three: no token yet
  ASSERT_TRUE(fourth.open(w->port(), 1));
  EXPECT_TRUE(waitFor([&] { return fourth.closedByPeer() == 1; }, kIoTimeout));
  EXPECT_EQ(three.closedByPeer(), 0u);
  // /debug/varz needs a connection too: it gets one once a token is back.
  EXPECT_TRUE(waitForMetric(*w, "tls_listener_rejected_connections", [](double v) { return v >= 1; },
                            Millis(10000)));
  // One /debug/varz read for both (each read is a connection the limiter may
  // close), and both must be there: two absent metrics compare equal.
  Result<Metrics> m = makeError("no /debug/varz yet");
  ASSERT_TRUE(waitFor([&] { return (m = varz(*w)).ok(); }, Millis(10000))) << m.error();
  ASSERT_EQ(m->count("derpd_accept_rejected{reason=\"rate\"}"), 1u);
  ASSERT_EQ(m->count("tls_listener_rejected_connections"), 1u);
  EXPECT_GE(m->at("tls_listener_rejected_connections"), 1);
  EXPECT_EQ(m->at("derpd_accept_rejected{reason=\"rate\"}"), m->at("tls_listener_rejected_connections"));
}

}  // namespace
}  // namespace derpd::test
