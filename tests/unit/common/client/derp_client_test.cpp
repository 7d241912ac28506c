// The blocking DERP client against fake servers on 127.0.0.1 that replay the
// real derper's bytes (tests/vectors/transcripts) and check the client's bytes
// against the real Go client's.
#include "common/client/derp_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "common/client/transport.hpp"
#include "common/crypto/box.hpp"
#include "common/crypto/meta_cert.hpp"
#include "common/proto/derp/frame.hpp"
#include "common/proto/http/http.hpp"
#include "common/proto/http/websocket.hpp"
#include "support/vectors.hpp"

namespace derpd::client {
namespace {

using namespace std::chrono_literals;
using derpd::test::hexBytes;
using derpd::test::loadVectorJson;
using derpd::test::readVectorFile;

// Keys from tests/vectors/README.md §0.
constexpr const char* kServerPrivHex = "78719ff9130931263ff58f3e315ca71a4726b7fac797b4e1efbbdd9400d42a62";
constexpr const char* kServerPubHex = "443ecfd4c12b5426ed8f4f66816bd54033739805f82088ceafb022a911b7aa39";
constexpr const char* kAlicePrivHex = "103a1ca3ab6bc732bc7b93b814b4a2a59d6959407d01c971aeae3777cb39544b";
constexpr const char* kAlicePubHex = "f2961cac0e15ce20d9848bc4f7a81a72efa61333b9f1c767b165f345bdb2f404";
constexpr const char* kBobPubHex = "8292be2d64b4158e40f45816871802865b818177ed1af64b803ca9e9b903266b";
constexpr const char* kAbsentPubHex = "cee7cfad11b1d9d4528939ed4a25c64e41b9b88112eeb408568cd956e7d4c07d";
constexpr const char* kFastPrivHex = "d8479ba45e9677b704952b4a0631154ce903c6593bf61bd73828f691d81bb46b";
constexpr const char* kFastPubHex = "a1605db404284c08862c950badc040fa96e6412168bd9276306b8a8d146ffb02";
constexpr const char* kWs1PrivHex = "086084892df55ac1a3054942b00bbe837406a48c6d2623d6ed2dac533d180971";
constexpr const char* kWs1PubHex = "4345a12669c6a4c4ababc8dd77076aba3411f8ee89c6f140bbd2f3a0e4d4db61";
constexpr const char* kWs2PubHex = "0e8ec85febaa68fee05d482278a17f8f946b7a1703e1e8eef96d2a303e7bf31b";

NodePrivate priv(const char* hex) { return NodePrivate::fromRaw(hexBytes(hex)); }
NodePublic pub(const char* hex) { return NodePublic::fromRaw(hexBytes(hex)); }
Bytes slice(const Bytes& b, size_t from, size_t to) { return Bytes(b.begin() + from, b.begin() + to); }
Bytes slice(const Bytes& b, size_t from) { return Bytes(b.begin() + from, b.end()); }
Bytes bytesOf(const std::string& s) { return Bytes(s.begin(), s.end()); }
std::string str(const Bytes& b) { return std::string(b.begin(), b.end()); }

Bytes vectorBytes(const std::string& rel) { return bytesOf(readVectorFile(rel)); }

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
}

// ---- the fake server's side of a connection: blocking, with timeouts ----

class Conn {
 public:
  Conn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
    ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }

  // Reads at least one more byte into the buffer; false on EOF, error or timeout.
  bool fill() {
    uint8_t tmp[16384];
    if (ssl_) {
      size_t got = 0;
      if (SSL_read_ex(ssl_, tmp, sizeof(tmp), &got) != 1) {
        ERR_clear_error();
        return false;
      }
      buf_.insert(buf_.end(), tmp, tmp + got);
      return true;
    }
    ssize_t n;
    do {
      n = ::recv(fd_, tmp, sizeof(tmp), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buf_.insert(buf_.end(), tmp, tmp + n);
    return true;
  }

  bool readExact(size_t n, Bytes& out) {
    while (buf_.size() < n) {
      if (!fill()) return false;
    }
    out.assign(buf_.begin(), buf_.begin() + long(n));
    buf_.erase(buf_.begin(), buf_.begin() + long(n));
    return true;
  }

  // One DERP frame: header and payload.
  bool readFrame(uint8_t& type, Bytes& payload) {
    Bytes hdr;
    if (!readExact(5, hdr)) return false;
    type = hdr[0];
    return readExact(getU32BE(&hdr[1]), payload);
  }

  bool readHead(std::string& head) {
    for (;;) {
      std::string_view sv(reinterpret_cast<const char*>(buf_.data()), buf_.size());
      size_t end = sv.find("\r\n\r\n");
      if (end != std::string_view::npos) {
        head.assign(sv.substr(0, end + 4));
        buf_.erase(buf_.begin(), buf_.begin() + long(end + 4));
        return true;
      }
      if (!fill()) return false;
    }
  }

  bool write(ByteView b) {
    size_t off = 0;
    while (off < b.size()) {
      if (ssl_) {
        size_t wrote = 0;
        if (SSL_write_ex(ssl_, b.data() + off, b.size() - off, &wrote) != 1) {
          ERR_clear_error();
          return false;
        }
        off += wrote;
        continue;
      }
      ssize_t n = ::send(fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  bool write(const Bytes& b) { return write(ByteView(b)); }
  bool write(const std::string& s) { return write(asBytes(s)); }

  // True when the peer closes (EOF) before the timeout.
  bool waitEof() {
    while (fill()) {
    }
    return true;
  }

  Bytes& buffered() { return buf_; }

 private:
  int fd_;
  SSL* ssl_;
  Bytes buf_;
};

// Listens on 127.0.0.1:0, accepts one connection in a thread and runs the
// handler on it (after a TLS handshake when a context is given).
class FakeServer {
 public:
  using Handler = std::function<void(Conn&)>;

  explicit FakeServer(Handler h, SSL_CTX* tls = nullptr, int rcvBuf = 0, bool v6 = false)
      : tls_(tls), v6_(v6) {
    ::signal(SIGPIPE, SIG_IGN);  // the server side writes with SSL_write
    lfd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(lfd_, 0);
    if (rcvBuf > 0) ::setsockopt(lfd_, SOL_SOCKET, SO_RCVBUF, &rcvBuf, sizeof(rcvBuf));
    if (v6) {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_loopback;
      listenOk_ = ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
      socklen_t len = sizeof(a);
      ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
      port_ = ntohs(a.sin6_port);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      listenOk_ = ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
      socklen_t len = sizeof(a);
      ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
      port_ = ntohs(a.sin_port);
    }
    listenOk_ = listenOk_ && ::listen(lfd_, 4) == 0;
    if (!v6) {
      EXPECT_TRUE(listenOk_);
    }
    if (tls_) SSL_CTX_up_ref(tls_);
    thread_ = std::thread([this, h = std::move(h)] { run(h); });
  }
  ~FakeServer() {
    join();
    ::close(lfd_);
    if (tls_) SSL_CTX_free(tls_);
  }

  // Waits for the handler to finish (before checking what it recorded).
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }
  std::string url(const std::string& scheme = "http", const std::string& host = "") const {
    return scheme + "://" + (host.empty() ? addr() : host + ":" + std::to_string(port_)) + "/derp";
  }
  std::string addr() const { return (v6_ ? "[::1]:" : "127.0.0.1:") + std::to_string(port_); }
  bool listening() const { return listenOk_; }
  bool tlsFailed() const { return tlsFailed_; }

 private:
  void run(const Handler& h) {
    if (!listenOk_) return;
    pollfd p{lfd_, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return;
    int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL* ssl = nullptr;
    if (tls_) {
      ssl = SSL_new(tls_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) != 1) {
        ERR_clear_error();
        tlsFailed_ = true;
        SSL_free(ssl);
        ::close(fd);
        return;
      }
    }
    Conn c(fd, ssl);
    h(c);
  }

  int lfd_ = -1;
  uint16_t port_ = 0;
  SSL_CTX* tls_;
  bool v6_;
  bool listenOk_ = false;
  std::atomic<bool> tlsFailed_{false};
  std::thread thread_;
};

ClientOptions aliceOpts(const FakeServer& s) {
  ClientOptions o;
  o.url = s.url();
  o.key = priv(kAlicePrivHex);
  o.canAckPings = true;
  o.timeout = 5000ms;
  return o;
}

// What the fake server saw of the client's upgrade and handshake.
struct Seen {
  std::mutex mu;
  std::string requestHead;
  uint8_t clientInfoType = 0;
  Bytes clientInfo;  // payload
};

// Serves 101 + ServerKey from a-normal conn1, reads ClientInfo, sends the
// recorded ServerInfo (sealed to alice).
bool serveRecordedHandshake(Conn& c, Seen& seen) {
  Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  std::string head;
  if (!c.readHead(head)) return false;
  {
    std::lock_guard<std::mutex> l(seen.mu);
    seen.requestHead = head;
  }
  if (!c.write(slice(s2c, 0, 217))) return false;
  uint8_t t = 0;
  Bytes ci;
  if (!c.readFrame(t, ci)) return false;
  {
    std::lock_guard<std::mutex> l(seen.mu);
    seen.clientInfoType = t;
    seen.clientInfo = ci;
  }
  return c.write(slice(s2c, 217, 275));
}

void expectClientInfo(Seen& seen, const char* clientPubHex, const std::string& json) {
  std::lock_guard<std::mutex> l(seen.mu);
  ASSERT_EQ(seen.clientInfoType, 0x02);
  ASSERT_GE(seen.clientInfo.size(), 56u);
  EXPECT_EQ(toHex(ByteView(seen.clientInfo).subspan(0, 32)), clientPubHex);
  auto plain = crypto::open(priv(kServerPrivHex), pub(clientPubHex), ByteView(seen.clientInfo).subspan(32));
  ASSERT_TRUE(plain.ok()) << plain.error();
  EXPECT_EQ(str(*plain), json);
}

template <typename T>
T expectMsg(Client& c, std::chrono::milliseconds timeout = 5000ms) {
  auto m = c.recv(timeout);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error());
  if (!m.ok()) return T{};
  EXPECT_TRUE(std::holds_alternative<T>(*m)) << "variant index " << m->index();
  if (!std::holds_alternative<T>(*m)) return T{};
  return std::get<T>(std::move(*m));
}

// ---------------------------------------------------------------------------

TEST(DerpClientUrl, Parses) {
  auto u = parseUrl("http://127.0.0.1:3341/derp");
  ASSERT_TRUE(u.ok()) << u.error();
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_TRUE(u->hostIsIp);
  EXPECT_EQ(u->port, 3341);
  EXPECT_EQ(u->authority, "127.0.0.1:3341");
  EXPECT_EQ(u->target, "/derp");

  u = parseUrl("https://derp.example.com");
  ASSERT_TRUE(u.ok()) << u.error();
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "derp.example.com");
  EXPECT_FALSE(u->hostIsIp);
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->authority, "derp.example.com");
  EXPECT_EQ(u->target, "/derp");

  u = parseUrl("http://derp.example.com");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 80);

  u = parseUrl("HTTPS://[::1]:8443/derp/x?y=1");
  ASSERT_TRUE(u.ok()) << u.error();
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "::1");
  EXPECT_TRUE(u->hostIsIp);
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->authority, "[::1]:8443");
  EXPECT_EQ(u->target, "/derp/x?y=1");

  u = parseUrl("https://[2001:db8::1]/");
  ASSERT_TRUE(u.ok()) << u.error();
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/");

  for (const char* bad : {"ftp://x/derp", "127.0.0.1:3340", "http://", "http://:80/derp",
                          "http://h:0/", "http://h:65536/", "http://h:x/", "http://::1/derp",
                          "http://[::1/derp", "http://[zz]:1/", "http://u@h/derp", "http://h:/derp"}) {
    EXPECT_FALSE(parseUrl(bad).ok()) << bad;
  }
}

TEST(DerpClientUrl, HostPort) {
  auto hp = parseHostPort("127.0.0.1:3340");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 3340);
  hp = parseHostPort("[::1]:443");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 443);
  hp = parseHostPort("localhost:1");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "localhost");
  EXPECT_FALSE(parseHostPort("127.0.0.1").ok());
  EXPECT_FALSE(parseHostPort("[::1]").ok());
  EXPECT_TRUE(isIpLiteral("::ffff:1.2.3.4"));
  EXPECT_FALSE(isIpLiteral("localhost"));
}

// The real derper's bytes (a-normal, alice) replayed: the handshake checks the
// real ServerKey and opens the real ServerInfo, and every frame the client
// writes afterwards equals what the Go client wrote.
TEST(DerpClient, ReplaysRealDerperSession) {
  const Bytes c2s = vectorBytes("transcripts/a-normal/conn1.c2s.bin");
  const Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  ASSERT_EQ(c2s.size(), 411u);
  ASSERT_EQ(s2c.size(), 427u);
  Seen seen;
  Bytes afterHandshake;
  bool sawEof = false;
  FakeServer srv([&](Conn& c) {
    if (!serveRecordedHandshake(c, seen)) return;
    // NotePreferred(1), SendPacket(bob), Ping, NotePreferred(0), SendPacket(absent, disco).
    if (!c.readExact(c2s.size() - 221, afterHandshake)) return;
    if (!c.write(slice(s2c, 275))) return;  // RecvPacket, Pong, PeerGone x2, KeepAlive
    ::shutdown(c.fd(), SHUT_WR);
    sawEof = c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_EQ(c.serverKey().toHex(), kServerPubHex);
  EXPECT_EQ(c.publicKey().toHex(), kAlicePubHex);
  EXPECT_FALSE(c.info().tls);
  EXPECT_FALSE(c.info().fastStart);
  EXPECT_EQ(c.info().httpStatus, 101);
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");

  ASSERT_TRUE(c.notePreferred(true).ok());
  ASSERT_TRUE(c.sendPacket(pub(kBobPubHex), asBytes("hello bob, from alice")).ok());
  ASSERT_TRUE(c.ping({1, 2, 3, 4, 5, 6, 7, 8}).ok());
  ASSERT_TRUE(c.notePreferred(false).ok());
  Bytes disco = slice(c2s, 304 + 5 + 32);
  ASSERT_EQ(disco.size(), 70u);
  ASSERT_TRUE(c.sendPacket(pub(kAbsentPubHex), disco).ok());

  auto rp = expectMsg<RecvPacket>(c);
  EXPECT_EQ(rp.src.toHex(), kBobPubHex);
  EXPECT_EQ(str(rp.data), "hello alice, from bob");
  auto pong = expectMsg<Pong>(c);
  EXPECT_EQ(pong.data, (std::array<uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8}));
  auto pg1 = expectMsg<PeerGone>(c);
  EXPECT_EQ(pg1.key.toHex(), kAbsentPubHex);
  EXPECT_EQ(pg1.reason, derp::PeerGoneReason::NotHere);
  auto pg2 = expectMsg<PeerGone>(c);
  EXPECT_EQ(pg2.key.toHex(), kBobPubHex);
  EXPECT_EQ(pg2.reason, derp::PeerGoneReason::Disconnected);
  expectMsg<KeepAlive>(c);
  auto end = c.recv(5000ms);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error(), "eof");
  EXPECT_TRUE(c.closed());
  auto again = c.recv(10ms);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error(), "eof");
  c.close();
  EXPECT_EQ(c.fd(), -1);
  cl->reset();
  srv.join();

  // The frames after ClientInfo are byte for byte the Go client's.
  EXPECT_EQ(toHex(afterHandshake), toHex(slice(c2s, 221)));
  EXPECT_TRUE(sawEof);

  // The request head equals the Go client's (Host carries our port instead of the relay's).
  auto dec = loadVectorJson("transcripts/a-normal/decoded.json");
  std::string goHead = dec["connections"][0]["http_request"]["raw_text"];
  replaceAll(goHead, "127.0.0.1:3341", srv.addr());
  EXPECT_EQ(seen.requestHead, goHead);
  auto req = http::parseRequestHead(seen.requestHead);
  ASSERT_EQ(req.status, http::ParseStatus::Complete);
  EXPECT_EQ(req.head.method, "GET");
  EXPECT_EQ(req.head.path, "/derp");
  for (const auto& kv : dec["connections"][0]["http_request"]["headers_in_order"]) {
    std::string name = kv[0], value = kv[1];
    const std::string* got = req.head.get(name);
    ASSERT_NE(got, nullptr) << name;
    if (name != "Host") {
      EXPECT_EQ(*got, value) << name;
    }
  }
  EXPECT_EQ(req.head.headers.size(), 4u);
  // Same ClientInfo JSON and length as the Go client's.
  expectClientInfo(seen, kAlicePubHex, "{\"version\":2,\"CanAckPings\":true}");
  EXPECT_EQ(seen.clientInfo.size() + 5, size_t(c2s.size() - 112 - 190));
}

// The whole recorded server stream in one write, before ClientInfo even
// arrives (the server pipelines): frames from one read come out one per call.
TEST(DerpClient, WholeRecordedStreamInOneWrite) {
  const Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (!c.readHead(head) || !c.write(s2c)) return;
    uint8_t t;
    Bytes ci;
    if (!c.readFrame(t, ci)) return;
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(str(expectMsg<RecvPacket>(c).data), "hello alice, from bob");
  expectMsg<Pong>(c);
  EXPECT_EQ(expectMsg<PeerGone>(c).reason, derp::PeerGoneReason::NotHere);
  EXPECT_EQ(expectMsg<PeerGone>(c).reason, derp::PeerGoneReason::Disconnected);
  expectMsg<KeepAlive>(c);
  auto t = c.recv(50ms);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error(), "timeout");
  EXPECT_FALSE(c.closed());
}

// The same stream dripped one byte per write.
TEST(DerpClient, RecordedStreamByteByByte) {
  const Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (!c.readHead(head)) return;
    for (size_t i = 0; i < 217; ++i) {
      if (!c.write(ByteView(&s2c[i], 1))) return;
    }
    uint8_t t;
    Bytes ci;
    if (!c.readFrame(t, ci)) return;
    for (size_t i = 217; i < s2c.size(); ++i) {
      if (!c.write(ByteView(&s2c[i], 1))) return;
    }
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(expectMsg<RecvPacket>(c).src.toHex(), kBobPubHex);
  expectMsg<Pong>(c);
  expectMsg<PeerGone>(c);
  expectMsg<PeerGone>(c);
  expectMsg<KeepAlive>(c);
}

// d-websocket, ws1: the recorded server messages replayed to a WebSocket client.
TEST(DerpClient, ReplaysRealWebSocketSession) {
  const Bytes s2c = vectorBytes("transcripts/d-websocket/conn1.s2c.bin");
  const Bytes c2s = vectorBytes("transcripts/d-websocket/conn1.c2s.bin");
  ASSERT_EQ(s2c.size(), 396u);
  auto dec = loadVectorJson("transcripts/d-websocket/decoded.json");
  const auto& conn = dec["connections"][0];
  Seen seen;
  Bytes clientData;  // unmasked DERP bytes after ClientInfo
  std::vector<std::pair<http::WsOpcode, Bytes>> controls;

  struct Ev : http::WsDecoder::Events {
    Bytes data;
    std::vector<std::pair<http::WsOpcode, Bytes>> controls;
    void onData(ByteView d) override { data.insert(data.end(), d.begin(), d.end()); }
    void onControl(http::WsOpcode op, ByteView p) override { controls.emplace_back(op, Bytes(p.begin(), p.end())); }
  };
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (!c.readHead(head)) return;
    {
      std::lock_guard<std::mutex> l(seen.mu);
      seen.requestHead = head;
    }
    auto req = http::parseRequestHead(head);
    if (req.status != http::ParseStatus::Complete || !req.head.get("Sec-WebSocket-Key")) return;
    // The recorded 101 with the Accept for this client's key.
    std::string resp(s2c.begin(), s2c.begin() + 196);
    replaceAll(resp, "/rUy7WzfYFFncbBQ5MwmL0vAzvc=", http::websocketAccept(*req.head.get("Sec-WebSocket-Key")));
    if (!c.write(resp) || !c.write(slice(s2c, 196, 243))) return;  // 101, ServerKey message

    http::WsDecoder wsdec(true, 1 << 20);
    Ev ev;
    // Expects masked frames: an unmasked one fails the decoder.
    auto pump = [&](size_t wantData, size_t wantControls) {
      while (ev.data.size() < wantData || ev.controls.size() < wantControls) {
        if (c.buffered().empty() && !c.fill()) return false;
        uint16_t code = 0;
        Bytes in;
        in.swap(c.buffered());
        if (!wsdec.feed(in, ev, &code).ok()) return false;
      }
      return true;
    };
    if (!pump(109, 0)) return;  // ClientInfo
    {
      std::lock_guard<std::mutex> l(seen.mu);
      seen.clientInfoType = ev.data[0];
      seen.clientInfo = slice(ev.data, 5, 109);
    }
    if (!c.write(slice(s2c, 243, 303))) return;  // ServerInfo message
    if (!pump(109 + 71 + 13, 0)) return;         // SendPacket(ws2), Ping
    clientData = slice(ev.data, 109);
    if (!c.write(slice(s2c, 303, 392))) return;  // RecvPacket, Pong messages
    Bytes ping;
    http::appendWsFrame(ping, http::WsOpcode::Ping, asBytes("hi"), false);
    if (!c.write(ping)) return;
    if (!pump(0, 1)) return;                     // our Pong
    if (!c.write(slice(s2c, 392))) return;       // the recorded Close 1000
    if (!pump(0, 2)) return;                     // the client's Close
    controls = ev.controls;
    c.waitEof();
  });

  ClientOptions o;
  o.url = srv.url();
  o.key = priv(kWs1PrivHex);
  o.canAckPings = true;
  o.websocket = true;
  o.timeout = 5000ms;
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_EQ(c.serverKey().toHex(), kServerPubHex);
  EXPECT_EQ(c.info().httpStatus, 101);
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");
  ASSERT_TRUE(c.sendPacket(pub(kWs2PubHex), asBytes("hello ws2, from ws1 over websocket")).ok());
  ASSERT_TRUE(c.ping({'w', 's', 'p', 'i', 'n', 'g', '0', '1'}).ok());
  auto rp = expectMsg<RecvPacket>(c);
  EXPECT_EQ(rp.src.toHex(), kWs2PubHex);
  EXPECT_EQ(str(rp.data), "hello ws1, from ws2 over plain DERP");
  auto pong = expectMsg<Pong>(c);
  EXPECT_EQ(std::string(pong.data.begin(), pong.data.end()), "wsping01");
  auto end = c.recv(5000ms);  // answers the Ping, then sees the Close
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error(), "eof");
  EXPECT_TRUE(c.closed());
  cl->reset();
  srv.join();

  expectClientInfo(seen, kWs1PubHex, "{\"version\":2,\"CanAckPings\":true}");
  // SendPacket and Ping equal the Go client's (unmasked) DERP bytes.
  std::string goFrames = std::string(conn["derp_frames_in_ws_c2s"][1]["hex"]) +
                         std::string(conn["derp_frames_in_ws_c2s"][2]["hex"]);
  EXPECT_EQ(toHex(clientData), goFrames);
  ASSERT_EQ(controls.size(), 2u);
  EXPECT_EQ(controls[0].first, http::WsOpcode::Pong);
  EXPECT_EQ(str(controls[0].second), "hi");
  EXPECT_EQ(controls[1].first, http::WsOpcode::Close);
  EXPECT_EQ(toHex(controls[1].second), "03e8");

  // Request: the Go WebSocket client's headers (the key is random).
  auto req = http::parseRequestHead(seen.requestHead);
  ASSERT_EQ(req.status, http::ParseStatus::Complete);
  EXPECT_EQ(req.head.method, "GET");
  EXPECT_EQ(req.head.path, "/derp");
  for (const auto& kv : conn["http_request"]["headers_in_order"]) {
    std::string name = kv[0], value = kv[1];
    const std::string* got = req.head.get(name);
    ASSERT_NE(got, nullptr) << name;
    if (name == "Host") {
      EXPECT_EQ(*got, srv.addr());
    } else if (name == "Sec-Websocket-Key") {
      EXPECT_EQ(got->size(), 24u);
      EXPECT_EQ(got->back(), '=');
    } else {
      EXPECT_EQ(*got, value) << name;
    }
  }
  EXPECT_EQ(req.head.headers.size(), conn["http_request"]["headers_in_order"].size());
  (void)c2s;
}

TEST(DerpClient, Ipv6Literal) {
  Seen seen;
  FakeServer srv([&](Conn& c) {
    if (serveRecordedHandshake(c, seen)) c.waitEof();
  }, nullptr, 0, true);
  if (!srv.listening()) GTEST_SKIP() << "no IPv6 loopback";
  ClientOptions o = aliceOpts(srv);
  EXPECT_EQ(o.url, "http://[::1]:" + std::to_string(srv.port()) + "/derp");
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_EQ((*cl)->serverKey().toHex(), kServerPubHex);
  cl->reset();
  srv.join();
  auto req = http::parseRequestHead(seen.requestHead);
  ASSERT_EQ(req.status, http::ParseStatus::Complete);
  EXPECT_EQ(*req.head.get("Host"), "[::1]:" + std::to_string(srv.port()));
}

// A frame of exactly 1 MiB is delivered; one byte more is refused.
TEST(DerpClient, FrameLimitIsOneMiB) {
  Seen seen;
  FakeServer srv([&](Conn& c) {
    if (!serveRecordedHandshake(c, seen)) return;
    Bytes big;
    Bytes pkt(derp::kClientMaxFrameLen - 32, 0xab);
    derp::appendRecvPacket(big, pub(kBobPubHex), pkt);
    if (!c.write(big)) return;
    Bytes hdr;
    derp::appendHeader(hdr, derp::FrameType::RecvPacket, derp::kClientMaxFrameLen + 1);
    hdr.resize(hdr.size() + 1000, 0xcd);
    if (!c.write(hdr)) return;
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  auto rp = expectMsg<RecvPacket>(**cl);
  EXPECT_EQ(rp.data.size(), size_t(derp::kClientMaxFrameLen - 32));
  EXPECT_EQ(rp.src.toHex(), kBobPubHex);
  auto m = (*cl)->recv(5000ms);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().find("too large"), std::string::npos) << m.error();
  auto again = (*cl)->recv(10ms);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error(), m.error());
}

TEST(DerpClient, ServerCloseIsEof) {
  Seen seen;
  FakeServer srv([&](Conn& c) { serveRecordedHandshake(c, seen); });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_FALSE((*cl)->closed());
  auto m = (*cl)->recv(5000ms);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error(), "eof");
  EXPECT_TRUE((*cl)->closed());
  auto p = (*cl)->recvPacket(100ms);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error(), "eof");
}

TEST(DerpClient, SilentServerTimesOut) {
  // Listens (the kernel completes the TCP handshake) but never answers.
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  for (bool tls : {false, true}) {
    ClientOptions o;
    o.url = std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/derp";
    o.key = priv(kAlicePrivHex);
    o.timeout = 300ms;
    auto t0 = std::chrono::steady_clock::now();
    auto cl = Client::connect(o);
    auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(cl.ok());
    EXPECT_NE(cl.error().find("timeout"), std::string::npos) << cl.error();
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 2000ms);
  }
  ::close(lfd);
}

TEST(DerpClient, ConnectRefused) {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(lfd);  // nobody listens there now
  ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/derp";
  o.key = priv(kAlicePrivHex);
  auto cl = Client::connect(o);
  ASSERT_FALSE(cl.ok());
  EXPECT_NE(cl.error().find("refused"), std::string::npos) << cl.error();
}

// The real derper's 426 for a request without Upgrade.
TEST(DerpClient, Non101StatusIsAnError) {
  const std::string resp = readVectorFile("http/derp_no_upgrade.response");
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (c.readHead(head)) c.write(resp);
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.error(), "unexpected HTTP status 426: DERP requires connection upgrade");
}

TEST(DerpClient, HandshakeFrameOrder) {
  const Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  const Bytes bobS2c = vectorBytes("transcripts/a-normal/conn2.s2c.bin");
  Bytes keepAlive;
  derp::appendKeepAlive(keepAlive);
  struct Case {
    const char* name;
    Bytes stream;  // sent after the request
    const char* error;
  };
  Bytes ka = slice(s2c, 0, 172);
  ka.insert(ka.end(), keepAlive.begin(), keepAlive.end());
  Bytes skKa = slice(s2c, 0, 217);
  skKa.insert(skKa.end(), keepAlive.begin(), keepAlive.end());
  Bytes wrongSi = slice(s2c, 0, 217);
  Bytes bobSi = slice(bobS2c, 217, 275);  // sealed to bob, not alice
  ASSERT_EQ(bobSi[0], 0x03);
  wrongSi.insert(wrongSi.end(), bobSi.begin(), bobSi.end());
  Bytes badMagic = slice(s2c, 0, 217);
  badMagic[172 + 5] ^= 1;
  std::vector<Case> cases = {
      {"keepalive first", ka, "expected ServerKey frame"},
      {"keepalive before ServerInfo", skKa, "expected ServerInfo frame"},
      {"ServerInfo for someone else", wrongSi, "cannot open ServerInfo"},
      {"bad magic", badMagic, "bad ServerKey"},
      {"eof after 101", slice(s2c, 0, 172), "eof"},
  };
  for (const auto& tc : cases) {
    FakeServer srv([&](Conn& c) {
      std::string head;
      if (!c.readHead(head) || !c.write(tc.stream)) return;
      ::shutdown(c.fd(), SHUT_WR);
      c.waitEof();
    });
    auto cl = Client::connect(aliceOpts(srv));
    ASSERT_FALSE(cl.ok()) << tc.name;
    EXPECT_NE(cl.error().find(tc.error), std::string::npos) << tc.name << ": " << cl.error();
  }
}

// b2-fast-start-plain: the Go fast-start request (no 101) replayed over plain HTTP.
TEST(DerpClient, FastStartReplayOverPlainHttp) {
  const Bytes c2s = vectorBytes("transcripts/b2-fast-start-plain/conn1.c2s.bin");
  const Bytes s2c = vectorBytes("transcripts/b2-fast-start-plain/conn1.s2c.bin");
  auto dec = loadVectorJson("transcripts/b2-fast-start-plain/decoded.json");
  Seen seen;
  Bytes ping;
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (!c.readHead(head)) return;
    // ClientInfo went out with the request: it is already here, unasked.
    uint8_t t;
    Bytes ci;
    if (!c.readFrame(t, ci)) return;
    {
      std::lock_guard<std::mutex> l(seen.mu);
      seen.requestHead = head;
      seen.clientInfoType = t;
      seen.clientInfo = ci;
    }
    if (!c.write(slice(s2c, 0, 103))) return;  // ServerKey, ServerInfo: no HTTP bytes at all
    if (!c.readExact(13, ping)) return;
    if (!c.write(slice(s2c, 103))) return;  // Pong
    c.waitEof();
  });
  ClientOptions o;
  o.url = srv.url();
  o.key = priv(kFastPrivHex);
  o.canAckPings = true;
  o.fastStartKeyForTest = pub(kServerPubHex);
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_TRUE(c.info().fastStart);
  EXPECT_EQ(c.info().httpStatus, 0);
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(c.serverKey().toHex(), kServerPubHex);
  ASSERT_TRUE(c.ping({0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7}).ok());
  auto pong = expectMsg<Pong>(c);
  EXPECT_EQ(pong.data[7], 0xf7);
  cl->reset();
  srv.join();

  std::string goHead = dec["connections"][0]["http_request"]["raw_text"];
  replaceAll(goHead, "127.0.0.1:3344", srv.addr());
  EXPECT_EQ(seen.requestHead, goHead);
  expectClientInfo(seen, kFastPubHex, "{\"version\":2,\"CanAckPings\":true}");
  EXPECT_EQ(toHex(ping), toHex(slice(c2s, 241)));
}

TEST(DerpClient, FastStartKeyMismatch) {
  const Bytes s2c = vectorBytes("transcripts/b2-fast-start-plain/conn1.s2c.bin");
  FakeServer srv([&](Conn& c) {
    std::string head;
    if (!c.readHead(head) || !c.write(s2c)) return;
    c.waitEof();
  });
  ClientOptions o;
  o.url = srv.url();
  o.key = priv(kFastPrivHex);
  o.fastStartKeyForTest = pub(kBobPubHex);
  auto cl = Client::connect(o);
  ASSERT_FALSE(cl.ok());
  EXPECT_NE(cl.error().find("does not match"), std::string::npos) << cl.error();
}

TEST(DerpClient, RawAfterUpgrade) {
  const Bytes s2c = vectorBytes("transcripts/a-normal/conn1.s2c.bin");
  Bytes got;
  std::string head;
  FakeServer srv([&](Conn& c) {
    if (!c.readHead(head) || !c.write(slice(s2c, 0, 217))) return;
    c.readExact(6, got);
    c.waitEof();
  });
  ClientOptions o = aliceOpts(srv);
  o.rawAfterUpgrade = true;
  o.extraHeaders = {{"X-Test", "1"}};
  o.hostHeader = "derp.example.com";
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_TRUE((*cl)->serverKey().isZero());
  EXPECT_EQ((*cl)->info().httpStatus, 101);
  auto sk = expectMsg<OtherFrame>(**cl);  // ServerKey is not a message of its own
  EXPECT_EQ(sk.type, 0x01);
  EXPECT_EQ(toHex(sk.payload), toHex(slice(s2c, 177, 217)));
  ASSERT_TRUE((*cl)->sendRaw(hexBytes("070000000101")).ok());
  cl->reset();
  srv.join();
  EXPECT_EQ(toHex(got), "070000000101");
  auto req = http::parseRequestHead(head);
  ASSERT_EQ(req.status, http::ParseStatus::Complete);
  ASSERT_NE(req.head.get("X-Test"), nullptr);
  EXPECT_EQ(*req.head.get("Host"), "derp.example.com");
}

// Every server->client frame type decodes; frames Go drops are skipped.
TEST(DerpClient, DecodesEveryFrameType) {
  Seen seen;
  FakeServer srv([&](Conn& c) {
    if (!serveRecordedHandshake(c, seen)) return;
    Bytes out;
    derp::appendServerInfo(out, crypto::seal(priv(kServerPrivHex), pub(kAlicePubHex), asBytes("{\"version\":3}")));
    derp::appendHealth(out, "abc");
    derp::appendRestarting(out, 1000, 5000);
    derp::appendHeader(out, derp::FrameType::RecvPacket, 10);  // short: dropped
    out.resize(out.size() + 10, 0);
    derp::appendPing(out, {9, 8, 7, 6, 5, 4, 3, 2});
    std::array<uint8_t, 16> ip{};
    ip[10] = ip[11] = 0xff;
    ip[12] = 192, ip[13] = 0, ip[14] = 2, ip[15] = 1;
    derp::appendPeerPresent(out, pub(kBobPubHex), ip, 41641, derp::kPeerPresentIsRegular);
    derp::appendHeader(out, derp::FrameType::PeerPresent, 32);  // legacy form
    Bytes bob = hexBytes(kBobPubHex);
    out.insert(out.end(), bob.begin(), bob.end());
    derp::appendHeader(out, derp::FrameType::PeerGone, 32);  // no reason byte
    out.insert(out.end(), bob.begin(), bob.end());
    derp::appendHeader(out, derp::FrameType::PeerGone, 3);  // short: dropped
    out.insert(out.end(), {1, 2, 3});
    derp::appendHeader(out, derp::FrameType(0x7f), 2);
    out.insert(out.end(), {0xaa, 0xbb});
    derp::appendServerKey(out, pub(kServerPubHex));
    derp::appendHealth(out, "");
    derp::appendRecvPacket(out, pub(kBobPubHex), {});
    derp::appendHeader(out, derp::FrameType::Ping, 4);  // short: dropped
    out.insert(out.end(), {1, 2, 3, 4});
    derp::appendKeepAlive(out);
    if (!c.write(out)) return;
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_EQ(expectMsg<ServerInfoMsg>(c).json, "{\"version\":3}");
  EXPECT_EQ(expectMsg<Health>(c).text, "abc");
  auto rs = expectMsg<Restarting>(c);
  EXPECT_EQ(rs.reconnectInMs, 1000u);
  EXPECT_EQ(rs.tryForMs, 5000u);
  EXPECT_EQ(expectMsg<Ping>(c).data, (std::array<uint8_t, 8>{9, 8, 7, 6, 5, 4, 3, 2}));
  auto pp = expectMsg<PeerPresent>(c);
  EXPECT_EQ(pp.info.key.toHex(), kBobPubHex);
  EXPECT_TRUE(pp.info.hasAddr);
  EXPECT_EQ(pp.info.port, 41641);
  EXPECT_EQ(pp.info.flags, derp::kPeerPresentIsRegular);
  EXPECT_EQ(pp.info.ip16[12], 192);
  auto legacy = expectMsg<PeerPresent>(c);
  EXPECT_EQ(legacy.info.key.toHex(), kBobPubHex);
  EXPECT_FALSE(legacy.info.hasAddr);
  auto pg = expectMsg<PeerGone>(c);
  EXPECT_EQ(pg.key.toHex(), kBobPubHex);
  EXPECT_EQ(pg.reason, derp::PeerGoneReason::Disconnected);
  auto other = expectMsg<OtherFrame>(c);
  EXPECT_EQ(other.type, 0x7f);
  EXPECT_EQ(toHex(other.payload), "aabb");
  EXPECT_EQ(expectMsg<OtherFrame>(c).type, 0x01);
  EXPECT_EQ(expectMsg<Health>(c).text, "");
  auto empty = expectMsg<RecvPacket>(c);
  EXPECT_TRUE(empty.data.empty());
  expectMsg<KeepAlive>(c);
}

TEST(DerpClient, RecvPacketSkipsOtherMessages) {
  Seen seen;
  std::promise<void> go;
  auto goF = go.get_future();
  FakeServer srv([&](Conn& c) {
    if (!serveRecordedHandshake(c, seen)) return;
    Bytes out;
    derp::appendKeepAlive(out);
    derp::appendPong(out, {1, 1, 1, 1, 1, 1, 1, 1});
    if (!c.write(out)) return;
    goF.wait_for(5s);
    out.clear();
    derp::appendRecvPacket(out, pub(kBobPubHex), asBytes("late"));
    if (!c.write(out)) return;
    c.waitEof();
  });
  auto cl = Client::connect(aliceOpts(srv));
  ASSERT_TRUE(cl.ok()) << cl.error();
  auto t0 = std::chrono::steady_clock::now();
  auto none = (*cl)->recvPacket(100ms);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error(), "timeout");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  go.set_value();
  auto p = (*cl)->recvPacket(5000ms);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(str(p->data), "late");
}

// A server that stops reading must not hang a sender forever.
TEST(DerpClient, WriteTimeout) {
  Seen seen;
  std::promise<void> done;
  auto doneF = done.get_future();
  FakeServer srv(
      [&](Conn& c) {
        if (!serveRecordedHandshake(c, seen)) return;
        doneF.wait_for(20s);  // never reads again
      },
      nullptr, 4096);
  ClientOptions o = aliceOpts(srv);
  o.timeout = 300ms;
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  Bytes pkt(derp::kMaxPacketSize, 0x55);
  std::string err;
  auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration last{};
  for (int i = 0; i < 4000 && err.empty(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = (*cl)->sendPacket(pub(kBobPubHex), pkt);
    last = std::chrono::steady_clock::now() - t0;
    if (!r) err = r.error();
  }
  EXPECT_EQ(err, "write timeout");
  EXPECT_GE(last, 250ms);
  EXPECT_LT(last, 2s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
  // Once a frame was cut, the stream is unusable: later sends fail at once.
  auto again = (*cl)->ping({});
  EXPECT_FALSE(again.ok());
  done.set_value();
}

// ---------------------------------------------------------------------------
// TLS: a generated CA and leaf, plus the real meta cert appended last.

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

crypto::X509Ptr makeCert(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuerKey, bool ca,
                         const char* san, long serial) {
  crypto::X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 86400);
  X509_set_pubkey(x.get(), key);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : x.get(), x.get(), nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    EXPECT_NE(ext, nullptr) << value;
    if (ext) {
      X509_add_ext(x.get(), ext, -1);
      X509_EXTENSION_free(ext);
    }
  };
  add(NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add(NID_subject_key_identifier, "hash");
  if (issuer) add(NID_authority_key_identifier, "keyid:always");
  if (ca) add(NID_key_usage, "critical,keyCertSign,cRLSign");
  if (san) {
    add(NID_key_usage, "critical,digitalSignature");
    add(NID_ext_key_usage, "serverAuth");
    add(NID_subject_alt_name, san);
  }
  EXPECT_GT(X509_sign(x.get(), issuerKey ? issuerKey : key, EVP_sha256()), 0);
  return x;
}

struct Pki {
  EvpPkeyPtr caKey, leafKey;
  crypto::X509Ptr ca, leaf, meta;
  std::string caFile;

  explicit Pki(const std::string& caName) {
    caKey.reset(EVP_EC_gen("P-256"));
    leafKey.reset(EVP_EC_gen("P-256"));
    ca = makeCert(caName, caKey.get(), nullptr, nullptr, true, nullptr, 1);
    leaf = makeCert("localhost", leafKey.get(), ca.get(), caKey.get(), false,
                    "DNS:localhost,IP:127.0.0.1,IP:::1", 7);
    auto m = crypto::makeMetaCert(pub(kServerPubHex));
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error());
    if (m.ok()) meta = std::move(*m);
    char path[] = "/tmp/derpd-client-test-ca-XXXXXX";
    int fd = ::mkstemp(path);
    EXPECT_GE(fd, 0);
    FILE* f = ::fdopen(fd, "w");
    PEM_write_X509(f, ca.get());
    std::fclose(f);
    caFile = path;
  }
  ~Pki() { ::unlink(caFile.c_str()); }

  // A server context serving leaf, CA, meta cert (as derper does).
  SSL_CTX* serverCtx(int maxVersion, bool withMeta = true) const {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, maxVersion);
    EXPECT_EQ(SSL_CTX_use_certificate(ctx, leaf.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx, leafKey.get()), 1);
    EXPECT_EQ(SSL_CTX_add1_chain_cert(ctx, ca.get()), 1);
    if (withMeta) {
      EXPECT_EQ(SSL_CTX_add1_chain_cert(ctx, meta.get()), 1);
    }
    SSL_CTX_set_client_hello_cb(ctx, clientHelloCb, nullptr);
    return ctx;
  }

  static std::atomic<bool> sawAlpn;
  static int clientHelloCb(SSL* s, int*, void*) {
    const unsigned char* out = nullptr;
    size_t len = 0;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation, &out, &len) == 1) {
      sawAlpn = true;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
  }
};
std::atomic<bool> Pki::sawAlpn{false};

struct TlsSeen {
  std::mutex mu;
  std::string sni;
  bool hadSni = false;
  std::string head;
  Bytes clientInfo;
};

// Serves the DERP handshake over TLS, fast start or 101, with a freshly
// sealed ServerInfo to alice.
FakeServer::Handler tlsDerpHandler(TlsSeen& seen) {
  return [&seen](Conn& c) {
    const char* sni = SSL_get_servername(c.ssl(), TLSEXT_NAMETYPE_host_name);
    std::string head;
    if (!c.readHead(head)) return;
    auto req = http::parseRequestHead(head);
    bool fast = req.status == http::ParseStatus::Complete && req.head.get("Derp-Fast-Start") &&
                *req.head.get("Derp-Fast-Start") == "1";
    Bytes out;
    if (!fast) {
      std::string resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                         "Derp-Version: 2\r\nDerp-Public-Key: " + std::string(kServerPubHex) + "\r\n\r\n";
      out = bytesOf(resp);
    }
    derp::appendServerKey(out, pub(kServerPubHex));
    if (!c.write(out)) return;
    uint8_t t;
    Bytes ci;
    if (!c.readFrame(t, ci)) return;
    {
      std::lock_guard<std::mutex> l(seen.mu);
      seen.hadSni = sni != nullptr;
      seen.sni = sni ? sni : "";
      seen.head = head;
      seen.clientInfo = ci;
    }
    out.clear();
    derp::appendServerInfo(out, crypto::seal(priv(kServerPrivHex), pub(kAlicePubHex), asBytes("{\"version\":2}")));
    derp::appendRecvPacket(out, pub(kBobPubHex), asBytes("over tls"));
    if (!c.write(out)) return;
    c.waitEof();
  };
}

ClientOptions tlsOpts(const FakeServer& srv, const Pki& pki, const std::string& host = "localhost") {
  ClientOptions o;
  o.url = srv.url("https", host);
  o.dialAddr = srv.addr();
  o.key = priv(kAlicePrivHex);
  o.caFile = pki.caFile;
  o.timeout = 5000ms;
  return o;
}

// TLS 1.3 with the meta cert last: verification still passes (OpenSSL's chain
// building ignores the unrelated self-signed cert) and fast start is used.
TEST(DerpClientTls, FastStartOverTls13WithMetaCert) {
  Pki pki("derpd test CA");
  Pki::sawAlpn = false;
  TlsSeen seen;
  SSL_CTX* ctx = pki.serverCtx(TLS1_3_VERSION);
  FakeServer srv(tlsDerpHandler(seen), ctx);
  SSL_CTX_free(ctx);
  auto cl = Client::connect(tlsOpts(srv, pki));
  ASSERT_TRUE(cl.ok()) << cl.error();
  Client& c = **cl;
  EXPECT_TRUE(c.info().tls);
  EXPECT_EQ(c.info().tlsVersion, "TLSv1.3");
  EXPECT_TRUE(c.info().gotMetaCert);
  EXPECT_TRUE(c.info().fastStart);
  EXPECT_EQ(c.info().httpStatus, 0);
  EXPECT_EQ(c.info().serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(c.serverKey().toHex(), kServerPubHex);
  auto rp = expectMsg<RecvPacket>(c);
  EXPECT_EQ(str(rp.data), "over tls");
  EXPECT_EQ(ERR_peek_error(), 0u);
  cl->reset();
  srv.join();
  std::lock_guard<std::mutex> l(seen.mu);
  EXPECT_EQ(seen.sni, "localhost");
  EXPECT_FALSE(Pki::sawAlpn.load());
  auto req = http::parseRequestHead(seen.head);
  ASSERT_EQ(req.status, http::ParseStatus::Complete);
  ASSERT_NE(req.head.get("Derp-Fast-Start"), nullptr);
  EXPECT_EQ(*req.head.get("Host"), "localhost:" + std::to_string(srv.port()));
  ASSERT_GE(seen.clientInfo.size(), 56u);
  auto plain = crypto::open(priv(kServerPrivHex), pub(kAlicePubHex), ByteView(seen.clientInfo).subspan(32));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(str(*plain), "{\"version\":2,\"CanAckPings\":false}");
}

TEST(DerpClientTls, Tls12UsesTheUpgrade) {
  Pki pki("derpd test CA");
  TlsSeen seen;
  SSL_CTX* ctx = pki.serverCtx(TLS1_2_VERSION);
  FakeServer srv(tlsDerpHandler(seen), ctx);
  SSL_CTX_free(ctx);
  auto cl = Client::connect(tlsOpts(srv, pki));
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_EQ((*cl)->info().tlsVersion, "TLSv1.2");
  EXPECT_TRUE((*cl)->info().gotMetaCert);
  EXPECT_FALSE((*cl)->info().fastStart);
  EXPECT_EQ((*cl)->info().httpStatus, 101);
  EXPECT_EQ(str(expectMsg<RecvPacket>(**cl).data), "over tls");
}

TEST(DerpClientTls, FastStartOptionOffAndNoMetaCert) {
  Pki pki("derpd test CA");
  for (bool withMeta : {true, false}) {
    TlsSeen seen;
    SSL_CTX* ctx = pki.serverCtx(TLS1_3_VERSION, withMeta);
    FakeServer srv(tlsDerpHandler(seen), ctx);
    SSL_CTX_free(ctx);
    ClientOptions o = tlsOpts(srv, pki);
    o.fastStart = !withMeta;  // no meta cert: the option alone does nothing
    auto cl = Client::connect(o);
    ASSERT_TRUE(cl.ok()) << cl.error();
    EXPECT_EQ((*cl)->info().gotMetaCert, withMeta);
    EXPECT_FALSE((*cl)->info().fastStart);
    EXPECT_EQ((*cl)->info().httpStatus, 101);
    EXPECT_EQ((*cl)->serverKey().toHex(), kServerPubHex);
  }
}

// An IP URL sends no SNI and is verified against the IP SAN.
TEST(DerpClientTls, IpUrlHasNoSni) {
  Pki pki("derpd test CA");
  TlsSeen seen;
  SSL_CTX* ctx = pki.serverCtx(TLS1_3_VERSION);
  FakeServer srv(tlsDerpHandler(seen), ctx);
  SSL_CTX_free(ctx);
  ClientOptions o = tlsOpts(srv, pki, "127.0.0.1");
  o.dialAddr.clear();
  auto cl = Client::connect(o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_TRUE((*cl)->info().fastStart);
  cl->reset();
  srv.join();
  std::lock_guard<std::mutex> l(seen.mu);
  EXPECT_FALSE(seen.hadSni);
}

TEST(DerpClientTls, VerificationFailures) {
  Pki pki("derpd test CA");
  Pki other("some other CA");
  struct Case {
    const char* name;
    std::function<void(ClientOptions&)> tweak;
    bool ok;
  };
  std::vector<Case> cases = {
      {"untrusted CA", [&](ClientOptions& o) { o.caFile = other.caFile; }, false},
      {"wrong name", [&](ClientOptions& o) { o.serverName = "example.com"; }, false},
      {"wrong IP", [&](ClientOptions& o) { o.serverName = "127.0.0.2"; }, false},
      {"insecure, untrusted CA",
       [&](ClientOptions& o) {
         o.caFile = other.caFile;
         o.insecureSkipVerify = true;
       },
       true},
      {"insecure, wrong name",
       [&](ClientOptions& o) {
         o.serverName = "example.com";
         o.insecureSkipVerify = true;
       },
       true},
      {"missing CA file", [&](ClientOptions& o) { o.caFile = "/nonexistent/ca.pem"; }, false},
  };
  for (const auto& tc : cases) {
    TlsSeen seen;
    SSL_CTX* ctx = pki.serverCtx(TLS1_3_VERSION);
    FakeServer srv(tlsDerpHandler(seen), ctx);
    SSL_CTX_free(ctx);
    ClientOptions o = tlsOpts(srv, pki);
    tc.tweak(o);
    auto cl = Client::connect(o);
    EXPECT_EQ(cl.ok(), tc.ok) << tc.name << ": " << (cl.ok() ? "" : cl.error());
    if (!tc.ok && !cl.ok() && std::string(tc.name) != "missing CA file") {
      EXPECT_NE(cl.error().find("verify"), std::string::npos) << tc.name << ": " << cl.error();
    }
    // No OpenSSL error is left behind for the next caller on this thread.
    EXPECT_EQ(ERR_peek_error(), 0u) << tc.name;
  }
}

}  // namespace
}  // namespace derpd::client
