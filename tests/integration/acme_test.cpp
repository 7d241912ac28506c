// -certmode letsencrypt through the real derpd against Debian's Pebble
// (Let's Encrypt's ACME test server), started by each test on loopback with
// its own config and its own HTTPS certificate: issuance with HTTP-01 (port
// 80 answers the token) and TLS-ALPN-01 (the TLS port answers acme-tls/1),
// renewal of a short-lived certificate while the CA is down and after it is
// back, the kept certificate served at a restart without the CA, and a CA
// that answers garbage. Skipped when /usr/bin/pebble is absent.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPebble = "/usr/bin/pebble";
constexpr const char* kInService = "TLS certificate in service for new handshakes: serial ";

std::string serialHexOf(X509* x) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string s = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  // As cert-agent logs it: no leading zeros (BN_bn2hex prints whole bytes).
  const size_t nz = s.find_first_not_of('0');
  return nz == std::string::npos ? "0" : s.substr(nz);
}

// The leaf a new handshake to port sees: serial (hex), or "" when none.
std::string servedSerial(uint16_t port, std::string* issuerCn = nullptr) {
  TlsClientOptions t;
  t.serverName = "localhost";
  auto c = RawConn::dial(port, &t, "127.0.0.1", Millis(3000));
  if (!c.ok()) return "";
  auto chain = (*c)->peerChain();
  if (chain.empty()) return "";
  if (issuerCn) {
    char buf[256] = {};
    X509_NAME_get_text_by_NID(X509_get_issuer_name(chain[0].get()), NID_commonName, buf, sizeof buf - 1);
    *issuerCn = buf;
  }
  return serialHexOf(chain[0].get());
}

// The serial in the n-th (1-based) "in service" log line, or "".
std::string nthInService(const std::string& log, int n) {
  size_t at = 0;
  for (int i = 0; i < n; ++i) {
    at = log.find(kInService, i == 0 ? 0 : at + 1);
    if (at == std::string::npos) return "";
  }
  size_t start = at + std::strlen(kInService);
  return log.substr(start, log.find(' ', start) - start);
}

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

class AcmeTest : public WorkerTest {
 protected:
  void SetUp() override {
    if (::access(kPebble, X_OK) != 0) GTEST_SKIP() << "pebble not installed (apt-get install pebble)";
    tlsPort_ = reserveLoopbackPort();
    httpPort_ = reserveLoopbackPort();
    ASSERT_GT(tlsPort_, 0);
    ASSERT_GT(httpPort_, 0);
    ASSERT_NE(tlsPort_, httpPort_);
    // Pebble's own HTTPS certificate, from a test CA the relay is told to trust.
    pebbleDir_ = tmp().file("pebble");
    fs::create_directories(pebbleDir_);
    auto certs = makeTestCerts(pebbleDir_, "localhost", {"localhost", "127.0.0.1"});
    ASSERT_TRUE(certs.ok()) << certs.error();
    pebbleCa_ = certs->caFile;
    // cert-agent (nobody, when the tests run as root) reads the CA file by
    // path, as it would a CA bundle under /etc.
    ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);
    ASSERT_EQ(::chmod(pebbleDir_.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(pebbleCa_.c_str(), 0644), 0);
    certDir_ = tmp().file("acme");
    ::setenv("PEBBLE_VA_NOSLEEP", "1", 1);  // no random sleeps before validating
  }

  void TearDown() override {
    if (pebble_ && pebble_->running()) (void)pebble_->stop(SIGTERM);
    WorkerTest::TearDown();
  }

  // Starts (or restarts, on the same port) Pebble validating against the
  // relay's ports; certificates valid for `validitySeconds`.
  void startPebble(int validitySeconds = 3600) {
    if (pebblePort_ == 0) pebblePort_ = reserveLoopbackPort();
    const int mgmt = reserveLoopbackPort();
    mgmtPort_ = mgmt;
    const std::string conf = tmp().file("pebble.json");
    const std::string json =
        "{\"pebble\": {\"listenAddress\": \"127.0.0.1:" + std::to_string(pebblePort_) +
        "\", \"managementListenAddress\": \"127.0.0.1:" + std::to_string(mgmt) +
        "\", \"certificate\": \"" + pebbleDir_ + "/localhost.crt\", \"privateKey\": \"" + pebbleDir_ +
        "/localhost.key\", \"httpPort\": " + std::to_string(httpPort_) + ", \"tlsPort\": " +
        std::to_string(tlsPort_) +
        ", \"ocspResponderURL\": \"\", \"externalAccountBindingRequired\": false, "
        "\"certificateValidityPeriod\": " +
        std::to_string(validitySeconds) + "}}";
    ASSERT_TRUE(writeFile(conf, json));
    pebble_ = std::make_unique<WorkerProcess>();
    auto r = pebble_->start({"-config", conf, "-strict=false"}, kPebble, "ACME directory available at: ");
    ASSERT_TRUE(r.ok()) << "pebble: " << r.error() << "\n" << pebble_->logText();
  }

  // Pebble's root for this run (it makes a new one at every start), as a
  // file clients can trust.
  std::string pebbleRoot() {
    RawResponse r = rawHttp(uint16_t(mgmtPort_), "GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                            true, pebbleCa_, "localhost");
    auto resp = parseHttpResponse(r.data);
    EXPECT_TRUE(resp && resp->status == 200) << r.error << r.data;
    std::string path = tmp().file("pebble-root.pem");
    EXPECT_TRUE(writeFile(path, resp ? resp->body : ""));
    return path;
  }

  std::string directoryUrl() const { return "https://localhost:" + std::to_string(pebblePort_) + "/dir"; }

  WorkerProcess* startRelay(const std::string& challenges, const std::string& directory) {
    std::vector<std::string> a = derpdArgs();
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    auto at = std::find(a.begin(), a.end(), "-a");
    *(at + 1) = "127.0.0.1:" + std::to_string(tlsPort_);
    a.insert(a.end(), {"-c", writeServerKeyFile(), "-certmode", "letsencrypt", "--force-tls", "-certdir", certDir_, "-hostname",
                       "localhost", "-http-port", std::to_string(httpPort_), "-stun=false", "--state-dir",
                       tmp().path(), "--acme-directory-url", directory, "--acme-ca-file", pebbleCa_,
                       "--acme-challenges", challenges});
    return startDerpd(a);
  }

  int tlsPort_ = 0, httpPort_ = 0, pebblePort_ = 0, mgmtPort_ = 0;
  std::string pebbleDir_, pebbleCa_, certDir_;
  std::unique_ptr<WorkerProcess> pebble_;
};

void expectIssued(WorkerProcess& w, const char* challenge) {
  ASSERT_TRUE(w.waitForLog(kInService, Millis(60000))) << "no certificate issued";
  const std::string serial = nthInService(w.logText(), 1);
  std::string issuer;
  EXPECT_EQ(servedSerial(w.port(), &issuer), serial);
  EXPECT_NE(issuer.find("Pebble"), std::string::npos) << issuer;
  const std::string log = w.logText();
  EXPECT_NE(log.find(std::string("ACME ") + challenge + " challenge for localhost is being answered"),
            std::string::npos);
}

TEST_F(AcmeTest, Http01IssuesAndServes) {
  startPebble();
  WorkerProcess* w = startRelay("http-01", directoryUrl());
  ASSERT_NE(w, nullptr);
  expectIssued(*w, "http-01");
  // The account key and the certificate are kept, the keys 0600.
  struct stat st {};
  ASSERT_EQ(::stat((certDir_ + "/acme-account.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((certDir_ + "/localhost.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(fs::exists(certDir_ + "/localhost.crt"));
  // DERP clients verify the issued chain up to Pebble's root and relay.
  w->setTlsClientInfo("localhost", pebbleRoot());
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("over an ACME certificate"))));
}

TEST_F(AcmeTest, TlsAlpn01IssuesAndServes) {
  startPebble();
  WorkerProcess* w = startRelay("tls-alpn-01", directoryUrl());
  ASSERT_NE(w, nullptr);
  expectIssued(*w, "tls-alpn-01");
}

// A short-lived certificate is renewed when a third of its life is left; a
// CA that is down meanwhile means retries with backoff while the old
// certificate stays in service; live connections are never touched.
TEST_F(AcmeTest, RenewsShortLivedCertificateAndRidesOutCaOutage) {
  startPebble(24);  // renewal due 16 s after issuance
  WorkerProcess* w = startRelay("http-01,tls-alpn-01", directoryUrl());
  ASSERT_NE(w, nullptr);
  allowErrorLine("ACME: ");
  ASSERT_TRUE(w->waitForLog(kInService, Millis(60000)));
  const std::string first = nthInService(w->logText(), 1);
  w->setTlsClientInfo("localhost", pebbleRoot());
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));

  // The CA goes away before the renewal is due.
  ASSERT_TRUE(pebble_->stop(SIGTERM).ok());
  ASSERT_TRUE(waitFor([&] { return countOf(w->logText(), "; retrying in ") >= 2; }, Millis(40000)))
      << "no retries logged";
  const std::string log = w->logText();
  EXPECT_NE(log.find("retrying in 2 s (still serving serial " + first + ")"), std::string::npos);
  EXPECT_NE(log.find("retrying in 4 s (still serving serial " + first + ")"), std::string::npos);
  EXPECT_EQ(servedSerial(w->port()), first);
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("during the outage"))));

  // Back (a fresh Pebble: a new account from the kept key, a new order).
  startPebble(24);
  ASSERT_TRUE(waitFor([&] { return !nthInService(w->logText(), 2).empty(); }, Millis(60000)))
      << "not renewed after the CA came back";
  const std::string second = nthInService(w->logText(), 2);
  EXPECT_NE(second, first);
  EXPECT_EQ(servedSerial(w->port()), second);
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after the renewal"))));
}

// A restart serves the kept certificate at once, without the CA.
TEST_F(AcmeTest, RestartServesKeptCertificateWithoutCa) {
  startPebble();
  WorkerProcess* w = startRelay("http-01", directoryUrl());
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->waitForLog(kInService, Millis(60000)));
  const std::string serial = nthInService(w->logText(), 1);
  ASSERT_TRUE(w->stop().ok());
  ASSERT_TRUE(pebble_->stop(SIGTERM).ok());

  WorkerProcess* again = startRelay("http-01", directoryUrl());
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->waitForLog(kInService, Millis(10000)));
  EXPECT_EQ(nthInService(again->logText(), 1), serial);
  EXPECT_NE(again->logText().find("(acme, kept in " + certDir_ + ")"), std::string::npos);
  EXPECT_EQ(servedSerial(again->port()), serial);
}

// A "CA" that answers garbage: clear errors, retries with growing backoff,
// no crash, no certificate.
TEST_F(AcmeTest, GarbageFromCaIsRetriedWithBackoff) {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 16), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::thread server([&] {
    // Plain HTTP; each request gets a 200 whose body is not JSON. Bounded:
    // at most 50 connections, and it stops with the test.
    for (int i = 0; i < 50 && !stop; ++i) {
      pollfd p{lfd, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) {
        --i;
        continue;
      }
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      char buf[4096];
      (void)!::recv(c, buf, sizeof buf, 0);
      const std::string resp =
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
          "<html>no</htm";
      (void)!::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
      ++served;
    }
  });
  WorkerProcess* w = startRelay("http-01", "http://127.0.0.1:" + std::to_string(port) + "/directory");
  ASSERT_NE(w, nullptr);
  allowErrorLine("ACME: ");
  bool retried = waitFor([&] { return countOf(w->logText(), "; retrying in ") >= 2; }, Millis(30000));
  stop = true;
  server.join();
  ::close(lfd);
  ASSERT_TRUE(retried) << "no retries logged";
  const std::string log = w->logText();
  EXPECT_NE(log.find("retrying in 2 s (no certificate yet)"), std::string::npos);
  EXPECT_NE(log.find("retrying in 4 s (no certificate yet)"), std::string::npos);
  EXPECT_GE(served.load(), 2);
  EXPECT_EQ(log.find(kInService), std::string::npos);
  EXPECT_EQ(servedSerial(w->port()), "");  // no certificate: handshakes fail
}

}  // namespace
}  // namespace derpd::test
