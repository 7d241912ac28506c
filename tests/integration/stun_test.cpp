// stun-worker as a process (PROTOCOL.md §9): the real binary on loopback with
// kernel-chosen ports, driven over real UDP sockets. "No answer" is shown
// without sleeping: a rejected datagram is followed by a valid request from
// the same socket, and the first datagram back must be the valid one's
// answer (one socket, one queue, served in order). Counters are read from
// the debug lines stun-worker logs at exit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/proc/sandbox.hpp"
#include "common/proto/stun/stun.hpp"
#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

using Clock = std::chrono::steady_clock;
using stun::Endpoint;
using stun::TxId;

Millis left(Clock::time_point deadline) {
  auto d = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  return d.count() < 0 ? Millis(0) : d;
}

TxId txid(uint32_t n, uint8_t tag = 0xa5) {
  TxId t{};
  t.fill(tag);
  putU32BE(t.data() + 8, n);
  return t;
}

Bytes tailscaleRequest(const TxId& t) {
  Bytes b;
  stun::appendBindingRequest(b, t);
  return b;
}

// CRC-32 (IEEE, reflected 0xEDB88320), written out here so that the test's
// datagrams do not come from the code under test.
uint32_t crc32Ieee(ByteView b) {
  uint32_t c = 0xffffffffu;
  for (uint8_t x : b) {
    c ^= x;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A Tailscale request whose magic cookie is wrong but which is otherwise
// valid, its FINGERPRINT recomputed: only the cookie check can refuse it.
Bytes wrongCookieRequest(const TxId& t) {
  Bytes b = tailscaleRequest(t);
  b[4] ^= 0x01;  // 0x2112a442 -> 0x2012a442
  const size_t fp = b.size() - 8;  // FINGERPRINT: type 0x8028, length 4, value
  EXPECT_EQ(b[fp], 0x80);
  EXPECT_EQ(b[fp + 1], 0x28);
  putU32BE(b.data() + fp + 4, crc32Ieee(ByteView(b.data(), fp)) ^ 0x5354554eu);
  return b;
}

// The binding success response RFC 8489 and derper's net/stun define, built
// by hand: header (0x0101, length, cookie, txid) and one XOR-MAPPED-ADDRESS.
Bytes expectedResponse(const TxId& t, const stun::Endpoint& from) {
  const bool v6 = from.family == stun::Endpoint::Family::V6;
  const uint8_t cookie[4] = {0x21, 0x12, 0xa4, 0x42};
  Bytes b = {0x01, 0x01, 0x00, uint8_t(v6 ? 24 : 12)};
  b.insert(b.end(), cookie, cookie + 4);
  b.insert(b.end(), t.begin(), t.end());
  b.insert(b.end(), {0x00, 0x20, 0x00, uint8_t(v6 ? 20 : 8), 0x00, uint8_t(v6 ? 2 : 1)});
  b.push_back(uint8_t((from.port >> 8) ^ 0x21));
  b.push_back(uint8_t((from.port & 0xff) ^ 0x12));
  const size_t n = v6 ? 16 : 4;
  for (size_t i = 0; i < n; ++i) b.push_back(from.ip[i] ^ (i < 4 ? cookie[i] : t[i - 4]));
  return b;
}

// A non-blocking UDP socket on 127.0.0.1:0 or [::1]:0.
class UdpClient {
 public:
  struct Datagram {
    Bytes data;
    sockaddr_storage from{};
  };

  explicit UdpClient(bool v6) : v6_(v6) {
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_storage ss = loopback(0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), sizeof ss) != 0) {
      ADD_FAILURE() << "client socket: " << std::strerror(errno);
      return;
    }
    socklen_t len = sizeof local_;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local_), &len);
  }
  ~UdpClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  UdpClient(const UdpClient&) = delete;
  UdpClient& operator=(const UdpClient&) = delete;

  sockaddr_storage loopback(uint16_t port) const {
    sockaddr_storage ss{};
    if (v6_) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      a->sin6_port = htons(port);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a->sin_port = htons(port);
    }
    return ss;
  }

  // Sends one datagram to loopback:port (or to `to`); waits (bounded) while
  // the socket buffer is full.
  ::testing::AssertionResult send(ByteView data, uint16_t port) { return sendTo(data, loopback(port)); }
  ::testing::AssertionResult sendTo(ByteView data, const sockaddr_storage& to) {
    for (int i = 0; i < 1000; i++) {
      ssize_t n = ::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<const sockaddr*>(&to),
                           v6_ ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
      if (n == ssize_t(data.size())) return ::testing::AssertionSuccess();
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR)) {
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      return ::testing::AssertionFailure() << "sendto: " << std::strerror(errno);
    }
    return ::testing::AssertionFailure() << "sendto: socket stayed full";
  }

  // The next datagram within timeout.
  std::optional<Datagram> recv(Millis timeout) {
    auto deadline = Clock::now() + timeout;
    for (int i = 0; i < 10000; i++) {
      Datagram d;
      d.data.resize(65536);
      socklen_t len = sizeof d.from;
      ssize_t n = ::recvfrom(fd_, d.data.data(), d.data.size(), 0, reinterpret_cast<sockaddr*>(&d.from), &len);
      if (n >= 0) {
        d.data.resize(size_t(n));
        return d;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return std::nullopt;
      if (Clock::now() >= deadline) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, int(std::max<long long>(1, left(deadline).count())));
    }
    return std::nullopt;
  }

  Endpoint local() const { return *Endpoint::fromSockaddr(local_); }
  int fd() const { return fd_; }

 private:
  bool v6_;
  int fd_ = -1;
  sockaddr_storage local_{};
};

bool haveIpv6Loopback() {
  int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The answer to `t` must be the next datagram: byte-exact for the client's
// own address, from the server's address and port (by default the loopback
// address of the client's family).
::testing::AssertionResult expectAnswer(UdpClient& c, const TxId& t, uint16_t serverPort,
                                        Millis timeout = kIoTimeout,
                                        const std::optional<Endpoint>& serverAddr = std::nullopt) {
  auto d = c.recv(timeout);
  if (!d) return ::testing::AssertionFailure() << "no answer within " << timeout.count() << " ms";
  auto dec = stun::parseBindingResponse(d->data);
  if (!dec.ok()) return ::testing::AssertionFailure() << "not a binding response: " << dec.error();
  if (dec->txid != t) {
    return ::testing::AssertionFailure() << "answer for txid " << toHex(dec->txid) << ", expected "
                                         << toHex(t) << " (an earlier datagram was answered)";
  }
  Bytes want;
  stun::appendBindingResponse(want, t, c.local());
  if (d->data != want) {
    return ::testing::AssertionFailure() << "answer " << toHex(d->data) << ", expected " << toHex(want);
  }
  auto from = Endpoint::fromSockaddr(d->from);
  Endpoint server = serverAddr.value_or(c.local());
  server.port = serverPort;
  if (!from || !(*from == server)) {
    return ::testing::AssertionFailure() << "answer from " << (from ? from->toString() : "?") << ", expected "
                                         << server.toString();
  }
  return ::testing::AssertionSuccess();
}

// "name{labels}" -> value from the counters logged at exit (debug level).
std::map<std::string, uint64_t> exitCounters(const std::string& log) {
  std::map<std::string, uint64_t> m;
  std::istringstream in(log);
  std::string line;
  for (int i = 0; i < 1000000 && std::getline(in, line); i++) {
    for (const char* name : {"stun_requests{", "stun_addrfamily{"}) {
      auto pos = line.find(name);
      if (pos == std::string::npos) continue;
      auto sp = line.find("} ", pos);
      if (sp == std::string::npos) continue;
      m[line.substr(pos, sp + 1 - pos)] = std::strtoull(line.c_str() + sp + 2, nullptr, 10);
    }
  }
  return m;
}

// Server-side receive-queue drops of the UDP socket on `port` (last column
// of /proc/net/udp{,6}); nullopt when not found.
std::optional<uint64_t> kernelDrops(uint16_t port, bool v6) {
  std::ifstream f(v6 ? "/proc/net/udp6" : "/proc/net/udp");
  char portHex[8];
  std::snprintf(portHex, sizeof portHex, ":%04X", port);
  std::string line;
  for (int i = 0; i < 100000 && std::getline(f, line); i++) {
    std::istringstream ls(line);
    std::string sl, local;
    ls >> sl >> local;
    if (local.size() < 5 || local.compare(local.size() - 5, 5, portHex) != 0) continue;
    std::string last, tok;
    while (ls >> tok) last = tok;
    return std::strtoull(last.c_str(), nullptr, 10);
  }
  return std::nullopt;
}

struct Malformed {
  std::string name;
  Bytes data;
};

// Every vector request derper did not answer, plus datagrams derper never
// saw in the vectors: empty, one byte, an RFC 3489 request, a STUN
// indication, a valid request with a trailing partial attribute, and a
// truncated one: its first 2048 bytes are a valid request, the whole
// datagram is not (and a 2 KiB read buffer must not make it one).
std::vector<Malformed> malformedDatagrams() {
  std::vector<Malformed> out;
  auto j = loadVectorJson("stun/stun.json");
  for (const auto& r : j["requests"]) {
    if (r["go_ParseBindingRequest"]["ok"].get<bool>()) continue;
    out.push_back({r["name"], hexBytes(r["hex"])});
  }
  out.push_back({"wrong_magic_cookie", wrongCookieRequest(txid(4))});
  out.push_back({"empty", {}});
  out.push_back({"one_byte", {0x00}});
  out.push_back({"rfc3489", hexBytes("000100080189a32d81747a0de18c9f4068283e270003000400000000")});
  Bytes indication = tailscaleRequest(txid(1));
  indication[1] = 0x11;
  out.push_back({"indication", indication});
  Bytes partial = tailscaleRequest(txid(2));
  partial.insert(partial.end(), {0x80, 0x70});
  out.push_back({"trailing_partial_attribute", partial});

  // header || 0x8070 padding attribute || SOFTWARE || FINGERPRINT = 2048
  // bytes, valid; then 8 more bytes (another attribute) make it invalid.
  // Written in place (g++ 12 warns falsely on inserts into a short vector).
  Bytes big(2048 + 8, 0x5a);
  const TxId bt = txid(3);
  const size_t padLen = 2048 - 20 - 4 - 12 - 8;
  const uint8_t head[8] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42};
  std::memcpy(big.data(), head, 8);
  std::memcpy(big.data() + 8, bt.data(), bt.size());
  const uint8_t pad[4] = {0x80, 0x70, uint8_t(padLen >> 8), uint8_t(padLen)};
  std::memcpy(big.data() + 20, pad, 4);
  uint8_t* sw = big.data() + 24 + padLen;
  const uint8_t swHead[4] = {0x80, 0x22, 0x00, 0x08};
  std::memcpy(sw, swHead, 4);
  std::memcpy(sw + 4, stun::kSoftware.data(), stun::kSoftware.size());
  uint8_t* fp = sw + 12;
  const uint8_t fpHead[4] = {0x80, 0x28, 0x00, 0x04};
  std::memcpy(fp, fpHead, 4);
  putU32BE(fp + 4, stun::crc32Ieee(ByteView(big.data(), 2040)) ^ stun::kFingerprintXor);
  const uint8_t extra[8] = {0x80, 0x70, 0x00, 0x04, 1, 2, 3, 4};
  std::memcpy(big.data() + 2048, extra, 8);
  EXPECT_TRUE(stun::parseBindingRequest(ByteView(big.data(), 2048)).ok());  // the first 2 KiB alone pass
  EXPECT_FALSE(stun::parseBindingRequest(big).ok());
  out.push_back({"truncated_2056", big});
  return out;
}

class StunTest : public WorkerTest {
 protected:
  // stun-worker on host (an IP literal, "[::1]" for IPv6) with kernel-chosen
  // ports, debug logs (the counters at exit).
  WorkerProcess* startStun(const std::string& host, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"-a", host + ":0", "-stun-port", "0", "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    return startBinary("stun-worker", args, "serving STUN on ");
  }
  // SIGTERM, exit status 0, and the counters it logged.
  std::map<std::string, uint64_t> stopAndCount(WorkerProcess* w) {
    auto r = w->stop(SIGTERM);
    EXPECT_TRUE(r.ok()) << r.error();
    if (r.ok()) {
      EXPECT_EQ(*r, 0);
    }
    auto m = exitCounters(w->logText());
    EXPECT_EQ(m.size(), 6u) << "counters missing from the exit log";
    return m;
  }

  void requestsAreAnswered(bool v6);
  void malformedGetNoAnswer(bool v6);
};

void StunTest::requestsAreAnswered(bool v6) {
  WorkerProcess* w = startStun(v6 ? "[::1]" : "127.0.0.1");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->url(), (v6 ? "[::1]:" : "127.0.0.1:") + std::to_string(w->port()));
  UdpClient c(v6);
  auto j = loadVectorJson("stun/stun.json");
  int n = 0;
  for (const auto& r : j["requests"]) {
    if (!r["go_ParseBindingRequest"]["ok"].get<bool>()) continue;
    SCOPED_TRACE(r["name"].get<std::string>());
    Bytes req = hexBytes(r["hex"]);
    TxId t{};
    Bytes tb = hexBytes(r["go_ParseBindingRequest"]["txid_hex"]);
    std::memcpy(t.data(), tb.data(), t.size());
    ASSERT_TRUE(c.send(req, w->port()));
    auto d = c.recv(kIoTimeout);
    ASSERT_TRUE(d.has_value()) << "no answer";
    auto dec = stun::parseBindingResponse(d->data);
    ASSERT_TRUE(dec.ok()) << dec.error();
    EXPECT_EQ(dec->txid, t);
    EXPECT_EQ(dec->mapped, c.local());
    EXPECT_EQ(d->data.size(), v6 ? stun::kResponseLenV6 : stun::kResponseLenV4);
    EXPECT_EQ(d->data[stun::kHeaderLen + 5], v6 ? 2 : 1) << "XOR-MAPPED-ADDRESS family";
    EXPECT_EQ(toHex(d->data), toHex(expectedResponse(t, c.local())));
    n++;
  }
  EXPECT_EQ(n, 4);
  auto m = stopAndCount(w);
  EXPECT_EQ(m["stun_requests{disposition=\"success\"}"], 4u);
  EXPECT_EQ(m["stun_requests{disposition=\"not_stun\"}"], 0u);
  EXPECT_EQ(m[v6 ? "stun_addrfamily{family=\"ipv6\"}" : "stun_addrfamily{family=\"ipv4\"}"], 4u);
  EXPECT_EQ(m[v6 ? "stun_addrfamily{family=\"ipv4\"}" : "stun_addrfamily{family=\"ipv6\"}"], 0u);
}

void StunTest::malformedGetNoAnswer(bool v6) {
  WorkerProcess* w = startStun(v6 ? "[::1]" : "127.0.0.1");
  ASSERT_NE(w, nullptr);
  UdpClient c(v6);
  auto bad = malformedDatagrams();
  uint32_t i = 0;
  for (const auto& m : bad) {
    SCOPED_TRACE(m.name);
    ASSERT_TRUE(c.send(m.data, w->port()));
    TxId t = txid(1000 + i++);
    ASSERT_TRUE(c.send(tailscaleRequest(t), w->port()));
    EXPECT_TRUE(expectAnswer(c, t, w->port()));
  }
  auto m = stopAndCount(w);
  EXPECT_EQ(m["stun_requests{disposition=\"not_stun\"}"], bad.size());
  EXPECT_EQ(m["stun_requests{disposition=\"success\"}"], bad.size());
  EXPECT_EQ(m["stun_requests{disposition=\"write_error\"}"], 0u);
  EXPECT_EQ(m["stun_requests{disposition=\"read_error\"}"], 0u);
  EXPECT_EQ(m[v6 ? "stun_addrfamily{family=\"ipv6\"}" : "stun_addrfamily{family=\"ipv4\"}"], bad.size());
}

TEST_F(StunTest, Ipv4TailscaleRequestsAnsweredWithFamily1) { requestsAreAnswered(false); }

TEST_F(StunTest, Ipv6TailscaleRequestsAnsweredWithFamily2) {
  if (!haveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this host";
  requestsAreAnswered(true);
}

TEST_F(StunTest, Ipv4MalformedRequestsGetNoAnswer) { malformedGetNoAnswer(false); }

TEST_F(StunTest, Ipv6MalformedRequestsGetNoAnswer) {
  if (!haveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this host";
  malformedGetNoAnswer(true);
}

// 10,000 garbage datagrams back to back, then a valid request. The socket
// queue may overflow meanwhile (the kernel drops, as it would for derper),
// so the request is re-sent every 100 ms, as real clients do, for at most
// 2 s. Every garbage datagram is either counted not_stun or a kernel drop.
TEST_F(StunTest, ValidRequestAnsweredAfterGarbageFlood) {
  WorkerProcess* w = startStun("127.0.0.1");
  ASSERT_NE(w, nullptr);
  UdpClient c(false);
  constexpr int kGarbage = 10000;
  uint32_t seed = 12345;
  auto next = [&] {
    seed = seed * 1103515245u + 12345u;
    return uint8_t(seed >> 16);
  };
  Bytes valid = tailscaleRequest(txid(7));
  for (int i = 0; i < kGarbage; i++) {
    Bytes g;
    switch (i % 4) {
      case 0:  // random bytes, random length
        g.resize(next() % 120);
        for (auto& b : g) b = next();
        break;
      case 1:  // a real request with one byte flipped in the CRC-covered part
        g = valid;
        g[8 + next() % 24] ^= uint8_t(1 + next() % 255);
        break;
      case 2:  // STUN header with the cookie, random attributes
        g = Bytes(valid.begin(), valid.begin() + 20);
        for (int k = next() % 40; k > 0; k--) g.push_back(next());
        break;
      default:  // large
        g.assign(1500 + next() * 4, next());
        break;
    }
    ASSERT_TRUE(c.send(g, w->port())) << "garbage " << i;
  }
  auto deadline = Clock::now() + Millis(2000);
  bool answered = false;
  int sent = 0;
  for (; sent < 20 && !answered && left(deadline).count() > 0; sent++) {
    ASSERT_TRUE(c.send(valid, w->port()));
    auto d = c.recv(std::min(Millis(100), left(deadline)));
    if (!d) continue;
    auto dec = stun::parseBindingResponse(d->data);
    ASSERT_TRUE(dec.ok()) << "garbage was answered: " << toHex(d->data);
    EXPECT_EQ(dec->txid, txid(7));
    EXPECT_EQ(dec->mapped, c.local());
    answered = true;
  }
  ASSERT_TRUE(answered) << "no answer within 2 s after the flood";
  // Late answers to the re-sent copies arrive before this one: sync on a new txid.
  TxId last = txid(8);
  ASSERT_TRUE(c.send(tailscaleRequest(last), w->port()));
  bool synced = false;
  for (int k = 0; k < 40 && !synced; k++) {
    auto d = c.recv(kIoTimeout);
    ASSERT_TRUE(d.has_value()) << "no answer to the last request";
    auto dec = stun::parseBindingResponse(d->data);
    ASSERT_TRUE(dec.ok());
    ASSERT_TRUE(dec->txid == txid(7) || dec->txid == last);
    synced = dec->txid == last;
  }
  ASSERT_TRUE(synced);
  auto drops = kernelDrops(w->port(), false);
  auto m = stopAndCount(w);
  const uint64_t notStun = m["stun_requests{disposition=\"not_stun\"}"];
  const uint64_t valids = m["stun_addrfamily{family=\"ipv4\"}"];
  EXPECT_GE(notStun, 1u);
  EXPECT_LE(notStun, uint64_t(kGarbage));
  EXPECT_EQ(m["stun_requests{disposition=\"success\"}"], valids);
  EXPECT_EQ(m["stun_requests{disposition=\"write_error\"}"], 0u);
  if (drops) {
    // Everything sent was either read (not_stun or a valid request) or dropped.
    EXPECT_EQ(notStun + valids + *drops, uint64_t(kGarbage + sent + 1))
        << "not_stun " << notStun << ", valid " << valids << ", kernel drops " << *drops;
  }
  std::printf("[ info     ] flood: %llu not_stun, %llu kernel drops, %d sends of the valid request\n",
              static_cast<unsigned long long>(notStun), static_cast<unsigned long long>(drops.value_or(0)), sent);
}

// An empty host binds 0.0.0.0 and [::] (IPv6-only) on the same port; each
// family is answered from its own socket, from the address it was sent to:
// a request to 127.0.0.2 is answered from 127.0.0.2 (IP_PKTINFO), where the
// kernel alone would pick 127.0.0.1 for a client on 127.0.0.1.
TEST_F(StunTest, EmptyHostServesBothFamiliesOnOnePort) {
  if (!haveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this host";
  WorkerProcess* w = startBinary("stun-worker", {"-a", ":0", "-stun-port", "0", "--log-level", "debug"},
                                 "serving STUN on ");
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->waitForLog("serving STUN on [::]:" + std::to_string(w->port()) + "\n", kIoTimeout))
      << w->logText();
  EXPECT_NE(w->logText().find("serving STUN on 0.0.0.0:" + std::to_string(w->port()) + "\n"), std::string::npos);
  UdpClient c4(false), c6(true);
  ASSERT_TRUE(c4.send(tailscaleRequest(txid(41)), w->port()));
  EXPECT_TRUE(expectAnswer(c4, txid(41), w->port()));
  ASSERT_TRUE(c6.send(tailscaleRequest(txid(61)), w->port()));
  EXPECT_TRUE(expectAnswer(c6, txid(61), w->port()));
  sockaddr_storage other = c4.loopback(w->port());
  reinterpret_cast<sockaddr_in*>(&other)->sin_addr.s_addr = htonl(0x7f000002);
  ASSERT_TRUE(c4.sendTo(tailscaleRequest(txid(42)), other));
  EXPECT_TRUE(expectAnswer(c4, txid(42), w->port(), kIoTimeout, Endpoint::v4({127, 0, 0, 2}, 0)));
  auto m = stopAndCount(w);
  EXPECT_EQ(m["stun_addrfamily{family=\"ipv4\"}"], 2u);
  EXPECT_EQ(m["stun_addrfamily{family=\"ipv6\"}"], 1u);
  EXPECT_EQ(m["stun_requests{disposition=\"success\"}"], 3u);
}

// Debian's stun client (RFC 3489 requests, no SOFTWARE "tailnode") gets no
// answer: it reports the server unreachable, and every datagram it sent is
// counted not_stun.
TEST_F(StunTest, DebianStunClientGetsNoAnswer) {
  if (::access("/usr/bin/stun", X_OK) != 0) {
    GTEST_SKIP() << "/usr/bin/stun not installed (Debian package stun-client; scripts/install-deps)";
  }
  WorkerProcess* w = startStun("127.0.0.1");
  ASSERT_NE(w, nullptr);
  // `stun HOST:PORT` (its -p is the *source* port); it gives up by itself
  // after about 1 s of retransmissions; timeout bounds it anyway.
  std::string cmd = "timeout 5 /usr/bin/stun 127.0.0.1:" + std::to_string(w->port()) + " -v 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (int i = 0; i < 1000; i++) {
    size_t n = std::fread(buf, 1, sizeof buf, p);
    if (n == 0) break;
    if (out.size() < 1 << 20) out.append(buf, n);
  }
  int status = ::pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_NE(WEXITSTATUS(status), 124) << "stun did not finish within 5 s:\n" << out;
  EXPECT_NE(out.find("could not reach STUN server"), std::string::npos) << out;
  EXPECT_EQ(out.find("MappedAddress"), std::string::npos) << out;
  // Its datagrams are queued before this one: once this is answered they were read.
  UdpClient c(false);
  ASSERT_TRUE(c.send(tailscaleRequest(txid(99)), w->port()));
  ASSERT_TRUE(expectAnswer(c, txid(99), w->port()));
  auto m = stopAndCount(w);
  EXPECT_GE(m["stun_requests{disposition=\"not_stun\"}"], 1u);
  EXPECT_EQ(m["stun_requests{disposition=\"success\"}"], 1u);
  EXPECT_EQ(m["stun_addrfamily{family=\"ipv4\"}"], 1u);
}

TEST_F(StunTest, SighupIsLoggedAndServingGoesOn) {
  WorkerProcess* w = startStun("127.0.0.1");
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
  ASSERT_TRUE(w->waitForLog("nothing to reload", kIoTimeout));
  UdpClient c(false);
  ASSERT_TRUE(c.send(tailscaleRequest(txid(5)), w->port()));
  EXPECT_TRUE(expectAnswer(c, txid(5), w->port()));
  EXPECT_TRUE(w->running());
}

TEST_F(StunTest, SigtermAndSigintExitZero) {
  for (int sig : {SIGTERM, SIGINT}) {
    WorkerProcess* w = startStun("127.0.0.1");
    ASSERT_NE(w, nullptr);
    auto r = w->stop(sig);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(*r, 0) << "signal " << sig;
    EXPECT_NE(w->logText().find("stopped"), std::string::npos);
  }
}

TEST_F(StunTest, SandboxAfterBinding) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the privilege drop is only done when started as root";
  std::string empty = tmp().file("empty");
  ASSERT_TRUE(proc::prepareEmptyDir(empty).ok());
  std::vector<std::string> sandbox = {"--user", "nobody"};
#ifndef DERPD_SANITIZED
  // LeakSanitizer reads /proc at exit, which the chroot hides: sanitizer
  // builds check the user drop alone.
  sandbox.insert(sandbox.end(), {"--chroot", empty});
#endif
  WorkerProcess* w = startStun("127.0.0.1", sandbox);
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->waitForLog("sandbox: uid", Millis(100)));
  UdpClient c(false);
  ASSERT_TRUE(c.send(tailscaleRequest(txid(11)), w->port()));
  EXPECT_TRUE(expectAnswer(c, txid(11), w->port()));
}

// Flags: Go syntax, usage, version, errors.
TEST_F(StunTest, FlagsUsageAndVersion) {
  auto run = [](const std::string& args, std::string* out) {
    FILE* p = ::popen((binDir() + "/stun-worker " + args + " 2>&1").c_str(), "r");
    if (!p) return -1;
    char buf[4096];
    for (int i = 0; i < 100; i++) {
      size_t n = std::fread(buf, 1, sizeof buf, p);
      if (n == 0) break;
      out->append(buf, n);
    }
    int st = ::pclose(p);
    EXPECT_TRUE(noSanitizerReport(*out, "stun-worker " + args));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  std::string out;
  EXPECT_EQ(run("--help", &out), 0);
  for (const char* flag : {"-a ADDR", "-stun-port N", "--udp-fd N", "--user NAME", "--chroot DIR", "--log-level"}) {
    EXPECT_NE(out.find(flag), std::string::npos) << flag;
  }
  out.clear();
  EXPECT_EQ(run("--version", &out), 0);
  EXPECT_EQ(out.rfind(std::string("stun-worker ") + DERPD_VERSION, 0), 0u) << out;
  out.clear();
  EXPECT_EQ(run("-stun-port 70000", &out), 2);
  EXPECT_NE(out.find("-stun-port"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run("-a nocolon", &out), 2);
  out.clear();
  EXPECT_EQ(run("--udp-fd 3 --udp-fd 3", &out), 2);
  out.clear();
  // A descriptor that is not a UDP socket is refused at startup.
  EXPECT_EQ(run("--udp-fd 0 </dev/null", &out), 1);
  EXPECT_NE(out.find("--udp-fd"), std::string::npos) << out;
}

}  // namespace
}  // namespace derpd::test
