// cert-agent with -certmode manual, through the real derpd: the certificate
// files are validated and served, rotated on SIGHUP and on a file change
// without a restart (live DERP connections keep relaying), a broken
// replacement leaves the old certificate in service, and an IP hostname
// without files gets derper's self-signed certificate and CertName.
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;

// When the tests run as root, derpd runs cert-agent as nobody: the certdir
// and its files must be that user's, as an operator's would be cert-user's.
void giveToCertUser(const std::string& path) {
  if (::geteuid() != 0) return;
  passwd* pw = ::getpwnam("nobody");
  ASSERT_NE(pw, nullptr);
  ASSERT_EQ(::chown(path.c_str(), pw->pw_uid, pw->pw_gid), 0) << path;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      ASSERT_EQ(::lchown(e.path().c_str(), pw->pw_uid, pw->pw_gid), 0) << e.path();
    }
  }
}

std::string readAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeAll(const std::string& path, const std::string& data) {
  // Temp + rename, as an operator's tooling would (and one inotify event).
  std::string tmp = path + ".new";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << data;
  }
  fs::rename(tmp, path);
}

long leafSerial(RawConn& c) {
  auto chain = c.peerChain();
  if (chain.empty()) return -1;
  return ASN1_INTEGER_get(X509_get0_serialNumber(chain[0].get()));
}

// The leaf serial a new TLS handshake to port sees (-1: no handshake).
long servedSerial(uint16_t port, const std::string& sni = "localhost") {
  TlsClientOptions t;
  t.serverName = sni;
  auto c = RawConn::dial(port, &t);
  if (!c.ok()) return -1;
  return leafSerial(**c);
}

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

class CertTest : public WorkerTest {
 protected:
  // derpd in TLS mode (-certmode manual) on 127.0.0.1 from port 0, no
  // port-80 listener, no STUN.
  WorkerProcess* startTls(const std::string& certDir, const std::string& hostname,
                          const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a = derpdArgs();
    // Not -dev: TLS with a key file.
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    a.insert(a.end(), {"-c", writeServerKeyFile(), "-certmode", "manual", "-certdir", certDir, "-hostname",
                       hostname, "-http-port", "-1", "-stun=false", "--state-dir", tmp().path()});
    a.insert(a.end(), extra.begin(), extra.end());
    return startDerpd(a);
  }

  // Waits until derp-worker logged the n-th certificate put in service, and
  // that it carries `serialHex`.
  static ::testing::AssertionResult waitInService(const WorkerProcess& w, const std::string& serialHex,
                                                  Millis timeout = Millis(10000)) {
    const std::string needle = "TLS certificate in service for new handshakes: serial " + serialHex + " ";
    if (w.waitForLog(needle, timeout)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "no \"" << needle << "\" in the log";
  }

  std::string makeSet(const std::string& name, long serial, const std::string& host = "localhost",
                      int validDays = 30) {
    std::string dir = tmp().file(name);
    fs::create_directories(dir);
    CertOptions o;
    o.leafSerial = serial;
    o.validDays = validDays;
    auto c = makeTestCerts(dir, host, {host}, o);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error());
    return dir;
  }
};

// SIGHUP re-reads the files; certdir holds symlinks (as certbot's live/ does)
// whose targets change without any event in certdir itself.
TEST_F(CertTest, SighupRotatesCertificateLiveConnectionsKeepRelaying) {
  std::string setA = makeSet("setA", 0xA001);
  std::string live = tmp().file("live");
  std::string certDir = tmp().file("certs");
  fs::create_directories(live);
  fs::create_directories(certDir);
  fs::copy_file(setA + "/localhost.crt", live + "/cert.pem");
  fs::copy_file(setA + "/localhost.key", live + "/key.pem");
  fs::create_symlink(live + "/cert.pem", certDir + "/localhost.crt");
  fs::create_symlink(live + "/key.pem", certDir + "/localhost.key");
  giveToCertUser(live);
  giveToCertUser(certDir);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);  // nobody follows the links
  }

  WorkerProcess* w = startTls(certDir, "localhost");
  ASSERT_NE(w, nullptr);
  w->setTlsClientInfo("localhost", setA + "/ca.crt");
  ASSERT_TRUE(waitInService(*w, "A001"));
  EXPECT_EQ(servedSerial(w->port()), 0xA001);
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("before"))));

  std::string setB = makeSet("setB", 0xB002);
  writeAll(live + "/cert.pem", readAll(setB + "/localhost.crt"));
  writeAll(live + "/key.pem", readAll(setB + "/localhost.key"));
  giveToCertUser(live);
  ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
  ASSERT_TRUE(waitInService(*w, "B002"));
  EXPECT_EQ(servedSerial(w->port()), 0xB002);
  // Connections from before the swap are untouched.
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after"))));
  // New clients verify the new chain.
  w->setTlsClientInfo("localhost", setB + "/ca.crt");
  DERPD_ASSERT_CONNECT(carol, dial(*w, keys::carol()));
  EXPECT_TRUE(exchange(*carol, *alice, asBytes(std::string_view("new client"))));
}

// A change in certdir reloads without SIGHUP (inotify).
TEST_F(CertTest, FileChangeRotatesCertificateWithoutSignal) {
  std::string certDir = makeSet("certs", 0xC001);
  giveToCertUser(certDir);
  WorkerProcess* w = startTls(certDir, "localhost");
  ASSERT_NE(w, nullptr);
  w->setTlsClientInfo("localhost", certDir + "/ca.crt");
  ASSERT_TRUE(waitInService(*w, "C001"));
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));

  std::string setD = makeSet("setD", 0xD002);
  // Key first, then the certificate: in between the pair does not match,
  // which cert-agent must ride out (it waits for the files to settle).
  writeAll(certDir + "/localhost.key", readAll(setD + "/localhost.key"));
  writeAll(certDir + "/localhost.crt", readAll(setD + "/localhost.crt"));
  giveToCertUser(certDir);
  ASSERT_TRUE(waitInService(*w, "D002"));
  EXPECT_EQ(servedSerial(w->port()), 0xD002);
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("still here"))));
  w->setTlsClientInfo("localhost", setD + "/ca.crt");
  // cert-agent's counters reach /debug/varz: two certificates put in service,
  // and the expiry of the one in service (makeTestCerts: 30 days).
  EXPECT_TRUE(waitForMetric(*w, "derpd_cert_loads{result=\"ok\"}", [](double v) { return v == 2; }));
  const double soon = double(std::time(nullptr)) + 29 * 86400.0;
  EXPECT_TRUE(waitForMetric(*w, "derpd_cert_not_after_seconds", [&](double v) { return v > soon; }));
  allowErrorLine("new certificate refused");  // if the two writes straddled the settle time
}

// Unparsable, wrong name, key mismatch, expired: each is refused with an
// error line and the old certificate stays in service.
TEST_F(CertTest, BrokenReplacementKeepsOldCertificate) {
  std::string certDir = makeSet("certs", 0xE001);
  giveToCertUser(certDir);
  WorkerProcess* w = startTls(certDir, "localhost");
  ASSERT_NE(w, nullptr);
  w->setTlsClientInfo("localhost", certDir + "/ca.crt");
  ASSERT_TRUE(waitInService(*w, "E001"));
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  allowErrorLine("new certificate refused");

  const std::string goodCrt = readAll(certDir + "/localhost.crt");
  const std::string goodKey = readAll(certDir + "/localhost.key");
  std::string other = makeSet("other", 0xE002, "other.example");
  std::string mismatch = makeSet("mismatch", 0xE003);
  std::string expired = makeSet("expired", 0xE004, "localhost", -1);
  struct Case {
    const char* what;
    std::string crt, key;
    const char* reason;
  };
  const Case cases[] = {
      {"garbage", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", goodKey,
       "certificate #1"},
      {"wrong name", readAll(other + "/other.example.crt"), readAll(other + "/other.example.key"),
       "not valid for host name"},
      {"key mismatch", readAll(mismatch + "/localhost.crt"), goodKey, "does not match"},
      {"expired", readAll(expired + "/localhost.crt"), readAll(expired + "/localhost.key"), "expired"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const size_t before = countOf(w->logText(), "new certificate refused");
    // Written while derpd watches; the refusal comes from inotify, SIGHUP or both.
    writeAll(certDir + "/localhost.crt", c.crt);
    writeAll(certDir + "/localhost.key", c.key);
    giveToCertUser(certDir);
    ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
    ASSERT_TRUE(waitFor([&] { return countOf(w->logText(), "new certificate refused") > before; }, Millis(10000)));
    // The refusal line(s) this case caused, not the whole log.
    std::string log = w->logText();
    size_t at = 0;
    for (size_t k = 0; k <= before; ++k) at = log.find("new certificate refused", at + (k ? 1 : 0));
    const std::string refusals = log.substr(log.rfind('\n', at) + 1);
    EXPECT_NE(refusals.find(c.reason), std::string::npos) << "reason \"" << c.reason << "\" not in:\n" << refusals;
    EXPECT_NE(refusals.find("still serving serial E001"), std::string::npos) << refusals;
    EXPECT_EQ(servedSerial(w->port()), 0xE001);
    EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view(c.what))));
  }
  // Putting the good pair back is fine (and changes nothing in service),
  // once cert-agent has looked at it.
  const size_t unchanged = countOf(w->logText(), "certificate unchanged (serial E001)");
  writeAll(certDir + "/localhost.key", goodKey);
  writeAll(certDir + "/localhost.crt", goodCrt);
  giveToCertUser(certDir);
  ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
  ASSERT_TRUE(waitFor([&] { return countOf(w->logText(), "certificate unchanged (serial E001)") > unchanged; },
                      Millis(10000)))
      << w->logText();
  EXPECT_EQ(servedSerial(w->port()), 0xE001);
  EXPECT_EQ(countOf(w->logText(), "TLS certificate in service for new handshakes"), 1u);
}

// derper (HEAD): an IP hostname without files gets a self-signed ECDSA
// certificate, kept in certdir, and the DERPNode CertName to pin it.
TEST_F(CertTest, IpHostnameGetsSelfSignedCertificateAndCertName) {
  std::string certDir = tmp().file("certs");
  fs::create_directories(certDir);
  giveToCertUser(certDir);
  WorkerProcess* w = startTls(certDir, "127.0.0.1");
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->waitForLog("TLS certificate in service for new handshakes", Millis(10000)));
  std::smatch m;
  std::string log = w->logText();
  ASSERT_TRUE(std::regex_search(log, m, std::regex("\"CertName\":\"sha256-raw:([0-9a-f]{64})\"")))
      << "no CertName in the log";
  const std::string want = m[1];
  EXPECT_NE(log.find("\"Name\":\"custom\",\"RegionID\":900,\"HostName\":\"127.0.0.1\""), std::string::npos);

  TlsClientOptions t;  // no SNI: an IP hostname
  auto c = RawConn::dial(w->port(), &t);
  ASSERT_TRUE(c.ok()) << c.error();
  auto chain = (*c)->peerChain();
  ASSERT_EQ(chain.size(), 2u);  // the self-signed leaf, then the meta cert
  unsigned char* der = nullptr;
  int len = i2d_X509(chain[0].get(), &der);
  ASSERT_GT(len, 0);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, size_t(len), digest);
  OPENSSL_free(der);
  std::string hex;
  for (unsigned char b : digest) {
    static const char kHex[] = "0123456789abcdef";
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  EXPECT_EQ(hex, want);
  EXPECT_EQ(X509_check_ip_asc(chain[0].get(), "127.0.0.1", 0), 1);

  struct stat st {};
  ASSERT_EQ(::stat((certDir + "/127.0.0.1.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((certDir + "/127.0.0.1.crt").c_str(), &st), 0);

  // A restart keeps the same certificate (and so the same CertName).
  const long serial = leafSerial(**c);
  c->reset();
  ASSERT_TRUE(w->stop().ok());
  WorkerProcess* w2 = startTls(certDir, "127.0.0.1");
  ASSERT_NE(w2, nullptr);
  ASSERT_TRUE(w2->waitForLog("TLS certificate in service for new handshakes", Millis(10000)));
  EXPECT_NE(w2->logText().find("sha256-raw:" + want), std::string::npos);
  auto c2 = RawConn::dial(w2->port(), &t);
  ASSERT_TRUE(c2.ok()) << c2.error();
  EXPECT_EQ(leafSerial(**c2), serial);
}

// A certificate that does not fit at start: operator_test.cpp
// (BadManualCertificateIsOneErrorAndExit78WithNothingForked).

}  // namespace
}  // namespace derpd::test
