// TLS mode of derp-worker (PROTOCOL.md §2.2, §2.4, §7.3): manual certs from a
// test CA, the meta certificate, fast start, ALPN, the port-80 listener.
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <string>
#include <vector>

#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

using Mode = WorkerConfig::Mode;

constexpr long kLeafSerial = 0x5eed42;

std::string commonName(X509* x) {
  char buf[256] = {0};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

long serialOf(X509* x) { return ASN1_INTEGER_get(X509_get0_serialNumber(x)); }

// The meta cert of §2.2: CN derpkey<hex>, serial 2, self-issued, v3, exactly
// one extension (BasicConstraints, critical, CA:FALSE), no SKI/AKI/SAN.
::testing::AssertionResult isMetaCert(X509* x, const std::string& wantHex) {
  if (commonName(x) != "derpkey" + wantHex) {
    return ::testing::AssertionFailure() << "CN '" << commonName(x) << "'";
  }
  if (serialOf(x) != 2) return ::testing::AssertionFailure() << "serial " << serialOf(x);
  if (X509_get_version(x) != 2) return ::testing::AssertionFailure() << "not X.509 v3";
  if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) != 0) {
    return ::testing::AssertionFailure() << "not self-issued";
  }
  if (X509_get_ext_by_NID(x, NID_subject_key_identifier, -1) >= 0) return ::testing::AssertionFailure() << "has SKI";
  if (X509_get_ext_by_NID(x, NID_authority_key_identifier, -1) >= 0) return ::testing::AssertionFailure() << "has AKI";
  if (X509_get_ext_by_NID(x, NID_subject_alt_name, -1) >= 0) return ::testing::AssertionFailure() << "has SAN";
  if (X509_get_ext_count(x) != 1) return ::testing::AssertionFailure() << X509_get_ext_count(x) << " extensions";
  int bc = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
  if (bc < 0) return ::testing::AssertionFailure() << "no BasicConstraints";
  if (!X509_EXTENSION_get_critical(X509_get_ext(x, bc))) {
    return ::testing::AssertionFailure() << "BasicConstraints not critical";
  }
  if (X509_check_ca(x) != 0) return ::testing::AssertionFailure() << "is a CA";
  return ::testing::AssertionSuccess();
}

class TlsTest : public WorkerTest {
 protected:
  WorkerProcess* start(Mode mode, int httpPort = -1) {
    WorkerConfig cfg;
    cfg.mode = mode;
    cfg.leafSerial = kLeafSerial;
    cfg.httpPort = httpPort;
    return startWorker(cfg);
  }
  static TlsClientOptions tlsOptions(const WorkerProcess& w) {
    TlsClientOptions t;
    t.caFile = w.caFile();
    t.serverName = w.tlsHostname();
    return t;
  }
};

// The served chain over TLS 1.3: our leaf (by serial), our CA, then the meta
// cert whose key is the -c file's key; no ALPN unless offered.
TEST_F(TlsTest, ServedChainEndsWithMetaCert) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->tls());
  EXPECT_EQ(w->url().rfind("https://", 0), 0u) << w->url();
  auto t = tlsOptions(*w);
  t.minVersion = TLS1_3_VERSION;
  auto c = RawConn::dial(w->port(), &t);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ((*c)->tlsVersion(), "TLSv1.3");
  EXPECT_EQ((*c)->alpnSelected(), "");
  auto chain = (*c)->peerChain();
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(serialOf(chain[0].get()), kLeafSerial);
  EXPECT_EQ(commonName(chain[0].get()), "localhost");
  EXPECT_EQ(commonName(chain[1].get()), "derpd test CA");
  EXPECT_TRUE(isMetaCert(chain[2].get(), kServerPublicHex));
}

// TLS 1.2 works and also carries the meta cert; TLS 1.1 is refused (§2.2).
TEST_F(TlsTest, Tls12AcceptedTls11Refused) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  auto t12 = tlsOptions(*w);
  t12.maxVersion = TLS1_2_VERSION;
  auto c = RawConn::dial(w->port(), &t12);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ((*c)->tlsVersion(), "TLSv1.2");
  auto chain = (*c)->peerChain();
  ASSERT_FALSE(chain.empty());
  EXPECT_TRUE(isMetaCert(chain.back().get(), kServerPublicHex));
  ASSERT_TRUE(
      (*c)->sendAll(std::string_view("GET /robots.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")).ok());
  bool closed = false;
  std::string resp = (*c)->readUntilIdle(Millis(1000), Millis(5000), &closed);
  EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << resp.substr(0, 200);

  auto t11 = tlsOptions(*w);
  t11.minVersion = TLS1_VERSION;
  t11.maxVersion = TLS1_1_VERSION;
  auto old = RawConn::dial(w->port(), &t11);
  EXPECT_FALSE(old.ok()) << "TLS 1.1 handshake succeeded: " << (*old)->tlsVersion();
}

// ALPN: never h2 on a connection that may carry /derp; offering only h2
// proceeds without ALPN (vectors README §14).
TEST_F(TlsTest, AlpnNeverH2) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  struct Case {
    std::vector<std::string> offer;
    std::string want;
  };
  for (const Case& k : {Case{{"h2", "http/1.1"}, "http/1.1"}, Case{{"http/1.1"}, "http/1.1"}, Case{{"h2"}, ""}}) {
    SCOPED_TRACE(k.offer.size() == 2 ? "h2,http/1.1" : k.offer[0]);
    auto t = tlsOptions(*w);
    t.alpn = k.offer;
    auto c = RawConn::dial(w->port(), &t);
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ((*c)->alpnSelected(), k.want);
  }
}

// With an IP hostname the client sends no SNI and verifies the IP SAN.
TEST_F(TlsTest, IpHostnameWithoutSni) {
  WorkerProcess* w = start(Mode::TlsIp);
  ASSERT_NE(w, nullptr);
  auto t = tlsOptions(*w);
  ASSERT_EQ(t.serverName, "127.0.0.1");
  auto c = RawConn::dial(w->port(), &t);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(SSL_get_servername((*c)->ssl(), TLSEXT_NAMETYPE_host_name), nullptr);
  auto chain = (*c)->peerChain();
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(serialOf(chain[0].get()), kLeafSerial);
  EXPECT_TRUE(isMetaCert(chain[2].get(), kServerPublicHex));
}

class FastStartTest : public TlsTest, public ::testing::WithParamInterface<Mode> {};

// Fast start over TLS 1.3 (§2.4): the client saw the meta cert, sent
// Derp-Fast-Start: 1, got no HTTP response, and the ServerKey frame matched
// the meta cert's key = the -c file's key. Packets flow.
TEST_P(FastStartTest, FastStartOverTls13) {
  WorkerProcess* w = start(GetParam());
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::fast()));
  const auto& info = a->info();
  EXPECT_TRUE(info.tls);
  EXPECT_EQ(info.tlsVersion, "TLSv1.3");
  EXPECT_TRUE(info.gotMetaCert);
  EXPECT_TRUE(info.fastStart);
  EXPECT_EQ(info.httpStatus, 0);
  EXPECT_EQ(info.serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_TRUE(b->info().fastStart);
  EXPECT_TRUE(exchange(*a, *b, patternBytes(65536, 1)));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1, 2)));
}

// Without fast start: the 101 upgrade, over the same TLS listener.
TEST_P(FastStartTest, NormalUpgradeOverTls) {
  WorkerProcess* w = start(GetParam());
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice(), [](client::ClientOptions& o) { o.fastStart = false; }));
  const auto& info = a->info();
  EXPECT_TRUE(info.tls);
  EXPECT_FALSE(info.fastStart);
  EXPECT_EQ(info.httpStatus, 101);
  EXPECT_EQ(info.serverInfoJson, "{\"version\":2}");
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));  // fast start
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 3)));
}

INSTANTIATE_TEST_SUITE_P(Hostnames, FastStartTest, ::testing::Values(Mode::TlsLocalhost, Mode::TlsIp),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return i.param == Mode::TlsIp ? std::string("IpHostname") : std::string("Localhost");
                         });

// Plain HTTP: the ordinary 101 path, and fast start with ClientInfo written
// together with the request (§2.3 step 4: bytes after the head are DERP).
TEST_F(TlsTest, PlainHttpUpgradeAndPipelinedFastStart) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  EXPECT_FALSE(a->info().tls);
  EXPECT_EQ(a->info().httpStatus, 101);
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob(), [](client::ClientOptions& o) {
    o.fastStartKeyForTest = keys::serverPublic();
  }));
  EXPECT_TRUE(b->info().fastStart);
  EXPECT_EQ(b->info().httpStatus, 0);
  EXPECT_TRUE(exchange(*a, *b, patternBytes(65536, 4)));
}

// The port-80 listener of TLS mode (§7.3), against the real derper's
// answers (tests/vectors/http/port80_*).
TEST_F(TlsTest, Port80Listener) {
  WorkerProcess* w = start(Mode::TlsLocalhost, 0);
  ASSERT_NE(w, nullptr);
  ASSERT_GT(w->port80(), 0);
  EXPECT_NE(w->port80(), w->port());
  for (const char* name : {"port80_generate_204", "port80_get_root", "port80_get_root_xff", "port80_get_path_query",
                           "port80_get_derp", "port80_get_other_host", "port80_head_root", "port80_post_root"}) {
    SCOPED_TRACE(name);
    auto got = rawHttp(static_cast<uint16_t>(w->port80()), readVectorFile(std::string("http/") + name + ".request"));
    ASSERT_TRUE(got.error.empty()) << got.error;
    EXPECT_TRUE(httpSameExceptDate(got.data, readVectorFile(std::string("http/") + name + ".response")));
  }
  // /debug on port 80 goes to the main mux (loopback allowed).
  auto varzResp = httpGet(static_cast<uint16_t>(w->port80()), "/debug/varz");
  ASSERT_TRUE(varzResp.ok()) << varzResp.error();
  EXPECT_EQ(varzResp->status, 200);
  EXPECT_NE(varzResp->body.find("derp_accepts"), std::string::npos);
  // DERP itself works on the TLS port.
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(100, 5)));
}

// The HTTP endpoints answer over TLS as over plain HTTP (netcheck's HTTPS
// latency fallback, JS clients' probe).
TEST_F(TlsTest, ProbeEndpointsOverTls) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  for (const char* name : {"derp_latency_check_get", "derp_probe_head", "generate_204_valid_challenge",
                           "get_robots_txt", "derp_no_upgrade"}) {
    SCOPED_TRACE(name);
    auto got = rawHttp(w->port(), readVectorFile(std::string("http/") + name + ".request"), true, w->caFile(),
                       "localhost");
    ASSERT_TRUE(got.error.empty()) << got.error;
    EXPECT_TRUE(httpSameExceptDate(got.data, readVectorFile(std::string("http/") + name + ".response")));
  }
}

// derp-worker's own TLS 1.3 record layer (tls13_records.hpp) under real
// relaying: a client that asks for new keys (KeyUpdate, update_requested)
// again and again keeps relaying both ways, which needs derp-worker to
// follow the client's new reading key and to answer with its own KeyUpdate.
TEST_F(TlsTest, KeyUpdatesWhileRelaying) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  ASSERT_EQ(a->info().tlsVersion, "TLSv1.3");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(a->requestTlsKeyUpdate().ok());
    ASSERT_TRUE(exchange(*a, *b, patternBytes(3000 + i, uint8_t(i)))) << "after KeyUpdate " << i;
    ASSERT_TRUE(b->requestTlsKeyUpdate().ok());
    ASSERT_TRUE(exchange(*b, *a, patternBytes(20000, uint8_t(i + 100)))) << "after bob's KeyUpdate " << i;
  }
  EXPECT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}));
}

// TLS 1.2 clients stay on OpenSSL for the whole connection; so does every
// client with --tls-own-records=false. Both relay to a TLS 1.3 client on
// derp-worker's own records.
TEST_F(TlsTest, Tls12AndOpenSslRecordsRelayWithOwnRecords) {
  for (bool own : {true, false}) {
    SCOPED_TRACE(own ? "own records" : "--tls-own-records=false");
    WorkerConfig cfg;
    cfg.mode = Mode::TlsLocalhost;
    cfg.leafSerial = kLeafSerial;
    if (!own) cfg.extra = {"--tls-own-records=false"};
    WorkerProcess* w = startWorker(cfg);
    ASSERT_NE(w, nullptr);
    DERPD_ASSERT_CONNECT(old, dial(*w, keys::alice(), [](client::ClientOptions& o) { o.maxTls12 = true; }));
    DERPD_ASSERT_CONNECT(cur, dial(*w, keys::bob()));
    EXPECT_EQ(old->info().tlsVersion, "TLSv1.2");
    EXPECT_EQ(cur->info().tlsVersion, "TLSv1.3");
    ASSERT_TRUE(exchange(*old, *cur, patternBytes(40000, 3)));
    // A KeyUpdate is TLS 1.3's: over TLS 1.2 the client cannot ask.
    EXPECT_FALSE(old->requestTlsKeyUpdate().ok());
    ASSERT_TRUE(cur->requestTlsKeyUpdate().ok());
    ASSERT_TRUE(exchange(*cur, *old, patternBytes(1000, 4)));
  }
}

// A record that does not authenticate ends the connection (and only it).
TEST_F(TlsTest, TamperedRecordClosesTheConnection) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  TlsClientOptions t = tlsOptions(*w);
  auto c = RawConn::dial(w->port(), &t);
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_EQ((*c)->tlsVersion(), "TLSv1.3");
  // A syntactically valid application_data record with garbage inside,
  // written under the TLS layer, straight to the socket.
  Bytes junk = {23, 3, 3, 0, 40};
  junk.resize(45, 0xab);
  ASSERT_EQ(::send((*c)->fd(), junk.data(), junk.size(), MSG_NOSIGNAL), ssize_t(junk.size()));
  EXPECT_TRUE((*c)->waitClosed(Millis(5000)));
  EXPECT_TRUE(w->waitForLog("does not authenticate (bad_record_mac)", Millis(2000))) << w->logText();
  // The server carries on.
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(100, 5)));
}

// Output sealed into records but not yet taken by the socket must keep the
// connection waiting for writability: a receiver that reads only after a
// burst (under the 64 KiB output high-water mark, so all of it is sealed at
// once) gets every packet, not a write-stall close.
TEST_F(TlsTest, SealedOutputIsFlushedWhenTheReceiverCatchesUp) {
  WorkerProcess* w = start(Mode::TlsLocalhost);
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(sink, dial(*w, keys::bob()));
  int small = 2048;
  ASSERT_EQ(::setsockopt(sink->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  DERPD_ASSERT_CONNECT(src, dial(*w, keys::alice()));
  constexpr int kPackets = 60;
  for (int i = 0; i < kPackets; ++i) {
    ASSERT_TRUE(src->sendPacket(keys::bob().publicKey(), patternBytes(1000, uint8_t(i))).ok());
  }
  for (int i = 0; i < kPackets; ++i) {
    auto p = recvUntil<client::RecvPacket>(*sink, Millis(5000));
    ASSERT_TRUE(p.ok()) << "packet " << i << ": " << p.error();
    EXPECT_EQ(p->data, patternBytes(1000, uint8_t(i)));
  }
}

}  // namespace
}  // namespace derpd::test
