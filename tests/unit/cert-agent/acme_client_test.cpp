// AcmeClient against a real Pebble (Debian package `pebble`, v2.4) on
// loopback, and against a tiny in-test HTTP server that answers garbage.
// Pebble runs with PEBBLE_VA_ALWAYS_VALID=1: these tests cover the client's
// side of the protocol; real HTTP-01 / TLS-ALPN-01 validation against the
// daemons is an integration test.
#include "acme_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/jws.hpp"
#include "common/util/fd.hpp"

extern char** environ;

namespace derpd::certagent {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kPebble[] = "/usr/bin/pebble";
// pebble's example EAB key (test/config/pebble-config-external-account-bindings.json).
constexpr char kEabKid[] = "kid-1";
constexpr char kEabKey[] = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
constexpr char kOtherEabKey[] = "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH";

// ---------------------------------------------------------------- helpers --

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "acme-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void writeFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  ASSERT_TRUE(f.good()) << path;
}

std::string readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A port nothing listens on right now (bound to 0, read, closed).
uint16_t freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool canConnect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// ------------------------------------------------------------ test PKI --

struct KeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct CertFree {
  void operator()(X509* x) const { X509_free(x); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;

void addExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

CertPtr makeCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuerKey, bool ca,
                 const std::string& san) {
  CertPtr c(X509_new());
  X509_set_version(c.get(), X509_VERSION_3);
  BIGNUM* serial = BN_new();
  BN_rand(serial, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(c.get()));
  BN_free(serial);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 86400);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(c.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(c.get(), key);
  X509* iss = issuer ? issuer : c.get();
  if (ca) {
    addExt(c.get(), iss, NID_basic_constraints, "critical,CA:TRUE");
    addExt(c.get(), iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    addExt(c.get(), iss, NID_basic_constraints, "critical,CA:FALSE");
    addExt(c.get(), iss, NID_key_usage, "critical,digitalSignature");
    addExt(c.get(), iss, NID_ext_key_usage, "serverAuth");
    addExt(c.get(), iss, NID_subject_alt_name, san.c_str());
  }
  addExt(c.get(), iss, NID_subject_key_identifier, "hash");
  X509_sign(c.get(), issuerKey, EVP_sha256());
  return c;
}

std::string certPem(X509* c) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, c);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, size_t(n));
  BIO_free(b);
  return s;
}

std::string keyPem(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, size_t(n));
  BIO_free(b);
  return s;
}

// A CA and a server certificate for pebble's HTTPS API, written to `dir`.
struct TestPki {
  std::string caFile, certFile, keyFile;
};

TestPki writePki(const TempDir& dir, const std::string& san, const std::string& prefix = "") {
  KeyPtr caKey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  CertPtr ca = makeCert(caKey.get(), "derpd test CA", nullptr, caKey.get(), true, "");
  KeyPtr srvKey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  CertPtr srv = makeCert(srvKey.get(), "localhost", ca.get(), caKey.get(), false, san);
  TestPki p{dir.file(prefix + "ca.pem"), dir.file(prefix + "server.pem"), dir.file(prefix + "server.key")};
  writeFile(p.caFile, certPem(ca.get()));
  writeFile(p.certFile, certPem(srv.get()));
  writeFile(p.keyFile, keyPem(srvKey.get()));
  return p;
}

// --------------------------------------------------------------- pebble --

struct PebbleOptions {
  bool eabRequired = false;
  std::map<std::string, std::string> env;  // on top of NOSLEEP / ALWAYS_VALID
  std::string san = "DNS:localhost,IP:127.0.0.1";
};

class Pebble {
 public:
  explicit Pebble(const PebbleOptions& opt) : pki_(writePki(dir_, opt.san)) {
    port_ = freePort();
    std::string cfg = "{\"pebble\":{";
    cfg += "\"listenAddress\":\"127.0.0.1:" + std::to_string(port_) + "\",";
    cfg += "\"managementListenAddress\":\"\",";
    cfg += "\"certificate\":\"" + pki_.certFile + "\",";
    cfg += "\"privateKey\":\"" + pki_.keyFile + "\",";
    cfg += "\"httpPort\":" + std::to_string(freePort()) + ",";
    cfg += "\"tlsPort\":" + std::to_string(freePort()) + ",";
    cfg += "\"ocspResponderURL\":\"\",";
    cfg += "\"certificateValidityPeriod\":604800,";
    cfg += "\"domainBlocklist\":[\"blocked.example.test\"],";
    cfg += std::string("\"externalAccountBindingRequired\":") + (opt.eabRequired ? "true" : "false");
    if (opt.eabRequired) {
      cfg += std::string(",\"externalAccountMACKeys\":{\"") + kEabKid + "\":\"" + kEabKey + "\"}";
    }
    cfg += "}}";
    writeFile(dir_.file("pebble.json"), cfg);

    std::vector<std::string> env = {"PEBBLE_VA_NOSLEEP=1", "PEBBLE_VA_ALWAYS_VALID=1",
                                    "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0"};
    for (const auto& kv : opt.env) {
      const std::string prefix = kv.first + "=";
      std::erase_if(env, [&](const std::string& e) { return e.rfind(prefix, 0) == 0; });
      env.push_back(prefix + kv.second);
    }
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    logFile_ = dir_.file("pebble.log");
    std::string cfgPath = dir_.file("pebble.json");
    std::vector<std::string> args = {kPebble, "-config", cfgPath};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    const int devNull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int log = ::open(logFile_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec. Pebble dies with the test
      // process, even when that one crashes.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(devNull, 0);
      ::dup2(log, 1);
      ::dup2(log, 2);
      ::execve(kPebble, argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(devNull);
    ::close(log);
    if (pid_ < 0) return;
    pidfd_ = int(::syscall(SYS_pidfd_open, pid_, 0));
  }

  ~Pebble() { stop(); }

  // Polls (bounded: 10 s) until pebble accepts connections; false if it
  // exited or never came up.
  bool waitReady() {
    const auto deadline = Clock::now() + 10s;
    while (Clock::now() < deadline) {
      if (canConnect(port_)) return true;
      if (exited(20ms)) return false;
    }
    return false;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (!exited(5000ms)) {
      ::kill(pid_, SIGKILL);
    }
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    if (pidfd_ >= 0) ::close(pidfd_);
    pidfd_ = -1;
  }

  std::string directoryUrl(const std::string& host = "localhost") const {
    return "https://" + host + ":" + std::to_string(port_) + "/dir";
  }
  const std::string& caFile() const { return pki_.caFile; }
  std::string log() const { return readFile(logFile_); }
  const TempDir& dir() const { return dir_; }

 private:
  // Waits up to `d` for the child to exit (pidfd), without reaping it.
  bool exited(std::chrono::milliseconds d) {
    if (pidfd_ < 0) {  // no pidfd_open (old kernel): look after a short wait
      std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(d, 20ms));
      siginfo_t si{};
      return ::waitid(P_PID, id_t(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid_;
    }
    pollfd p{pidfd_, POLLIN, 0};
    return ::poll(&p, 1, int(d.count())) == 1;
  }

  TempDir dir_;
  TestPki pki_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::string logFile_;
};

// ------------------------------------------------------------ responder --

class RecordingResponder : public ChallengeResponder {
 public:
  Result<void> present(const Challenge& c) override {
    presented.push_back(c);
    ++live;
    if (onPresent) return onPresent(c);
    return okResult();
  }
  void cleanup(const Challenge& c) override {
    cleanedUp.push_back(c);
    --live;
  }

  std::vector<Challenge> presented;
  std::vector<Challenge> cleanedUp;
  int live = 0;
  std::function<Result<void>(const Challenge&)> onPresent;
};

// ------------------------------------------------------------ assertions --

std::vector<CertPtr> parseChain(const std::string& pem) {
  std::vector<CertPtr> out;
  BIO* b = BIO_new_mem_buf(pem.data(), int(pem.size()));
  while (X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) out.emplace_back(x);
  BIO_free(b);
  return out;
}

void expectGoodCert(const IssuedCert& c, const std::vector<std::string>& ids) {
  auto chain = parseChain(c.chainPem);
  ASSERT_GE(chain.size(), 2u) << "leaf + pebble intermediate";
  X509* leaf = chain[0].get();
  for (const auto& id : ids) {
    unsigned char buf[16];
    const bool isIp = inet_pton(AF_INET, id.c_str(), buf) == 1 || inet_pton(AF_INET6, id.c_str(), buf) == 1;
    const int ok = isIp ? X509_check_ip_asc(leaf, id.c_str(), 0) : X509_check_host(leaf, id.data(), id.size(), 0, nullptr);
    EXPECT_EQ(ok, 1) << id;
  }
  BIO* kb = BIO_new_mem_buf(c.keyPem.data(), int(c.keyPem.size()));
  KeyPtr key(PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr));
  BIO_free(kb);
  ASSERT_TRUE(key);
  EXPECT_EQ(EVP_PKEY_get_bits(key.get()), 256);
  EXPECT_EQ(X509_check_private_key(leaf, key.get()), 1);
  EXPECT_EQ(c.keyPem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  // The leaf is signed by the next certificate.
  KeyPtr issuerKey(X509_get_pubkey(chain[1].get()));
  EXPECT_EQ(X509_verify(leaf, issuerKey.get()), 1);
}

std::string newAccountKey() {
  auto k = crypto::Es256Key::generate();
  EXPECT_TRUE(k.ok());
  auto pem = k->toPkcs8Pem();
  EXPECT_TRUE(pem.ok());
  return *pem;
}

AcmeConfig configFor(const Pebble& p) {
  AcmeConfig cfg;
  cfg.directoryUrl = p.directoryUrl();
  cfg.caFile = p.caFile();
  cfg.email = "ops@example.test";
  cfg.requestTimeout = 10s;
  cfg.orderTimeout = 30s;
  return cfg;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

#define REQUIRE_PEBBLE()                                                  \
  do {                                                                    \
    if (::access(kPebble, X_OK) != 0) GTEST_SKIP() << kPebble << " not installed"; \
  } while (0)

#define START_PEBBLE(var, opts)                                     \
  REQUIRE_PEBBLE();                                                 \
  Pebble var(opts);                                                 \
  ASSERT_TRUE(var.waitReady()) << "pebble did not start:\n" << var.log()

const std::atomic<bool> kNoCancel{false};

// ----------------------------------------------------------------- tests --

class AcmeIssuance : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(AcmeIssuance, IssuesWithChallengePreference) {
  START_PEBBLE(pebble, PebbleOptions{});
  AcmeConfig cfg = configFor(pebble);
  cfg.challengeTypes = GetParam();
  const std::string accountKey = newAccountKey();
  auto client = AcmeClient::create(cfg, accountKey);
  ASSERT_TRUE(client.ok()) << client.error();

  RecordingResponder responder;
  const std::vector<std::string> ids = {"relay.example.test", "127.0.0.1"};
  auto cert = (*client)->obtain(ids, responder, kNoCancel);
  ASSERT_TRUE(cert.ok()) << cert.error() << "\n" << pebble.log();
  expectGoodCert(*cert, ids);

  // One challenge per identifier, of the preferred type, presented and
  // cleaned up in pairs, with the RFC 8555 §8.1 key authorization.
  const std::string thumb = crypto::Es256Key::fromPem(accountKey)->thumbprint();
  ASSERT_EQ(responder.presented.size(), 2u);
  EXPECT_EQ(responder.cleanedUp.size(), responder.presented.size());
  EXPECT_EQ(responder.live, 0);
  std::set<std::string> seen;
  for (size_t i = 0; i < responder.presented.size(); ++i) {
    const Challenge& c = responder.presented[i];
    EXPECT_EQ(c.type, GetParam().front());
    EXPECT_EQ(c.keyAuthorization, c.token + "." + thumb);
    EXPECT_FALSE(c.token.empty());
    EXPECT_EQ(responder.cleanedUp[i].token, c.token);
    seen.insert(c.identifier);
  }
  EXPECT_EQ(seen, std::set<std::string>(ids.begin(), ids.end()));
}

INSTANTIATE_TEST_SUITE_P(Preferences, AcmeIssuance,
                         ::testing::Values(std::vector<std::string>{"tls-alpn-01", "http-01"},
                                           std::vector<std::string>{"http-01", "tls-alpn-01"},
                                           std::vector<std::string>{"http-01"},
                                           std::vector<std::string>{"tls-alpn-01"}));

TEST(AcmeClient, AccountAndValidAuthorizationsAreReused) {
  PebbleOptions opt;
  opt.env["PEBBLE_AUTHZREUSE"] = "100";
  START_PEBBLE(pebble, opt);
  const std::string accountKey = newAccountKey();
  auto client = AcmeClient::create(configFor(pebble), accountKey);
  ASSERT_TRUE(client.ok()) << client.error();
  RecordingResponder r1;
  auto c1 = (*client)->obtain({"a.example.test"}, r1, kNoCancel);
  ASSERT_TRUE(c1.ok()) << c1.error();
  EXPECT_EQ(r1.presented.size(), 1u);

  // Same client: same account; the valid authorization is reused, so no
  // challenge is presented.
  RecordingResponder r2;
  auto c2 = (*client)->obtain({"a.example.test"}, r2, kNoCancel);
  ASSERT_TRUE(c2.ok()) << c2.error();
  EXPECT_EQ(r2.presented.size(), 0u);
  expectGoodCert(*c2, {"a.example.test"});

  // A new client with the same key finds the existing account (200).
  auto again = AcmeClient::create(configFor(pebble), accountKey);
  ASSERT_TRUE(again.ok());
  RecordingResponder r3;
  auto c3 = (*again)->obtain({"b.example.test"}, r3, kNoCancel);
  ASSERT_TRUE(c3.ok()) << c3.error();
  EXPECT_EQ(r3.presented.size(), 1u);
  EXPECT_EQ(r3.cleanedUp.size(), 1u);
}

TEST(AcmeClient, ResponderFailureIsReportedAndCleanedUp) {
  START_PEBBLE(pebble, PebbleOptions{});
  auto client = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  responder.onPresent = [](const Challenge&) -> Result<void> { return makeError("derp-worker is gone"); };
  auto cert = (*client)->obtain({"x.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(cert.ok());
  EXPECT_TRUE(contains(cert.error(), "derp-worker is gone")) << cert.error();
  EXPECT_TRUE(contains(cert.error(), "x.example.test")) << cert.error();
  EXPECT_EQ(responder.presented.size(), 1u);
  EXPECT_EQ(responder.cleanedUp.size(), 1u);
}

TEST(AcmeClient, WildcardNeedsDns01WhichIsNotSupported) {
  START_PEBBLE(pebble, PebbleOptions{});
  auto client = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  auto cert = (*client)->obtain({"*.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(cert.ok());
  EXPECT_TRUE(contains(cert.error(), "none of the configured challenge types")) << cert.error();
  EXPECT_TRUE(contains(cert.error(), "dns-01")) << cert.error();
  EXPECT_TRUE(responder.presented.empty());
}

TEST(AcmeClient, CaProblemIsInTheError) {
  START_PEBBLE(pebble, PebbleOptions{});
  auto client = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  auto cert = (*client)->obtain({"blocked.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(cert.ok());
  EXPECT_EQ(cert.error().rfind("newOrder: urn:ietf:params:acme:error:rejectedIdentifier: ", 0), 0u) << cert.error();
  auto bad = (*client)->obtain({"bad_name.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().rfind("newOrder: urn:ietf:params:acme:error:malformed: ", 0), 0u) << bad.error();
}

TEST(AcmeClient, ExternalAccountBinding) {
  PebbleOptions opt;
  opt.eabRequired = true;
  START_PEBBLE(pebble, opt);

  AcmeConfig good = configFor(pebble);
  good.eabKid = kEabKid;
  good.eabHmacKey = kEabKey;
  auto client = AcmeClient::create(good, newAccountKey());
  ASSERT_TRUE(client.ok()) << client.error();
  RecordingResponder responder;
  auto cert = (*client)->obtain({"eab.example.test"}, responder, kNoCancel);
  ASSERT_TRUE(cert.ok()) << cert.error() << "\n" << pebble.log();
  expectGoodCert(*cert, {"eab.example.test"});

  AcmeConfig wrongKey = good;
  wrongKey.eabHmacKey = kOtherEabKey;
  auto c2 = AcmeClient::create(wrongKey, newAccountKey());
  ASSERT_TRUE(c2.ok());
  auto r2 = (*c2)->obtain({"eab.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().rfind("newAccount: urn:ietf:params:acme:error:unauthorized: ", 0), 0u) << r2.error();
  EXPECT_TRUE(contains(r2.error(), "external account binding")) << r2.error();

  AcmeConfig wrongKid = good;
  wrongKid.eabKid = "kid-unknown";
  auto c3 = AcmeClient::create(wrongKid, newAccountKey());
  ASSERT_TRUE(c3.ok());
  auto r3 = (*c3)->obtain({"eab.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(r3.ok());
  EXPECT_TRUE(contains(r3.error(), "newAccount: urn:ietf:params:acme:error:unauthorized")) << r3.error();

  auto c4 = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(c4.ok());
  auto r4 = (*c4)->obtain({"eab.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(r4.ok());
  EXPECT_TRUE(contains(r4.error(), "External Account Binding")) << r4.error();
}

TEST(AcmeClient, BadNonceIsRetried) {
  PebbleOptions opt;
  opt.env["PEBBLE_WFE_NONCEREJECT"] = "50";
  START_PEBBLE(pebble, opt);
  // Each POST is rejected with probability 1/2 and retried up to 5 times, so
  // one POST fails for good with probability 1/64 and a whole order (about
  // ten POSTs) with about 1/7. Up to five orders are tried; each failure
  // must be that exhaustion (chance that all five fail: below 1e-4).
  const std::string accountKey = newAccountKey();
  int successes = 0;
  for (int attempt = 0; attempt < 5 && successes == 0; ++attempt) {
    auto client = AcmeClient::create(configFor(pebble), accountKey);
    ASSERT_TRUE(client.ok());
    RecordingResponder responder;
    auto cert = (*client)->obtain({"nonce.example.test"}, responder, kNoCancel);
    if (cert.ok()) {
      ++successes;
      expectGoodCert(*cert, {"nonce.example.test"});
    } else {
      EXPECT_TRUE(contains(cert.error(), "badNonce") && contains(cert.error(), "6 attempts")) << cert.error();
    }
    EXPECT_EQ(responder.presented.size(), responder.cleanedUp.size());
  }
  EXPECT_EQ(successes, 1);
}

TEST(AcmeClient, BadNonceRetriesAreBounded) {
  PebbleOptions opt;
  opt.env["PEBBLE_WFE_NONCEREJECT"] = "100";
  START_PEBBLE(pebble, opt);
  auto client = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  auto cert = (*client)->obtain({"nonce.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(cert.ok());
  EXPECT_EQ(cert.error().rfind("newAccount: urn:ietf:params:acme:error:badNonce: ", 0), 0u) << cert.error();
  EXPECT_TRUE(contains(cert.error(), "after 6 attempts")) << cert.error();
}

TEST(AcmeClient, TlsVerificationFailures) {
  REQUIRE_PEBBLE();
  PebbleOptions opt;
  opt.san = "DNS:localhost";  // no IP SAN: https://127.0.0.1 must not verify
  START_PEBBLE(pebble, opt);
  RecordingResponder responder;

  AcmeConfig byIp = configFor(pebble);
  byIp.directoryUrl = pebble.directoryUrl("127.0.0.1");
  auto c1 = AcmeClient::create(byIp, newAccountKey());
  ASSERT_TRUE(c1.ok());
  auto r1 = (*c1)->obtain({"x.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.error().rfind("directory: ", 0), 0u) << r1.error();
  EXPECT_TRUE(contains(r1.error(), "certificate verify failed")) << r1.error();
  EXPECT_TRUE(contains(r1.error(), "hostname mismatch") || contains(r1.error(), "IP address mismatch")) << r1.error();

  // A CA file that did not issue pebble's certificate.
  TempDir other;
  TestPki otherPki = writePki(other, "DNS:localhost");
  AcmeConfig wrongCa = configFor(pebble);
  wrongCa.caFile = otherPki.caFile;
  auto c2 = AcmeClient::create(wrongCa, newAccountKey());
  ASSERT_TRUE(c2.ok());
  auto r2 = (*c2)->obtain({"x.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().rfind("directory: ", 0), 0u) << r2.error();
  EXPECT_TRUE(contains(r2.error(), "certificate signature failure")) << r2.error();

  // The right CA by name still works (the SAN has no IP, the name matches).
  auto c3 = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(c3.ok());
  auto r3 = (*c3)->obtain({"x.example.test"}, responder, kNoCancel);
  EXPECT_TRUE(r3.ok()) << r3.error();
}

TEST(AcmeClient, NothingListeningFailsQuickly) {
  AcmeConfig cfg;
  cfg.directoryUrl = "https://127.0.0.1:" + std::to_string(freePort()) + "/dir";
  cfg.requestTimeout = 5s;
  auto client = AcmeClient::create(cfg, newAccountKey());
  ASSERT_TRUE(client.ok()) << client.error();
  RecordingResponder responder;
  const auto t0 = Clock::now();
  auto cert = (*client)->obtain({"x.example.test"}, responder, kNoCancel);
  ASSERT_FALSE(cert.ok());
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_EQ(cert.error().rfind("directory: ", 0), 0u) << cert.error();
  EXPECT_TRUE(contains(cert.error(), "refused")) << cert.error();
}

// A one-thread HTTP/1.1 server on 127.0.0.1 answering every request with
// `response` (raw bytes), or never answering when `response` is empty.
class GarbageServer {
 public:
  explicit GarbageServer(std::string response) : response_(std::move(response)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0) {
      std::abort();
    }
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe2(wake_, O_CLOEXEC) != 0) std::abort();
    thread_ = std::thread([this] { run(); });
  }
  ~GarbageServer() {
    const char c = 'x';
    (void)!::write(wake_[1], &c, 1);
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  std::string url(const std::string& path = "/dir") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int requests() const { return requests_.load(); }

 private:
  void run() {
    for (;;) {
      pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) return;
      if (p[1].revents) return;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      // Read the request head (bounded by size and by the client's close).
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos && req.size() < 65536) {
        pollfd q[2] = {{c, POLLIN, 0}, {wake_[0], POLLIN, 0}};
        if (::poll(q, 2, -1) < 0 || q[1].revents) {
          ::close(c);
          return;
        }
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, size_t(n));
      }
      ++requests_;
      if (response_.empty()) {
        held_.push_back(c);  // never answer
        continue;
      }
      size_t off = 0;
      while (off < response_.size()) {
        ssize_t n = ::send(c, response_.data() + off, response_.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += size_t(n);
      }
      ::close(c);
    }
  }

  std::string response_;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<int> requests_{0};
  std::vector<int> held_;  // owned by the server thread until join
  std::thread thread_;
};

std::string httpResponse(int status, const std::string& contentType, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + contentType +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

Result<IssuedCert> obtainFrom(const std::string& directoryUrl, std::chrono::seconds timeout = 5s) {
  AcmeConfig cfg;
  cfg.directoryUrl = directoryUrl;
  cfg.requestTimeout = timeout;
  auto client = AcmeClient::create(cfg, newAccountKey());
  if (!client) return std::move(client).takeError();
  RecordingResponder responder;
  return (*client)->obtain({"x.example.test"}, responder, kNoCancel);
}

TEST(AcmeClient, GarbageDirectoryIsAClearError) {
  struct Case {
    std::string response;
    std::string expect;
  };
  const std::string validDirButRemoteNonce =
      R"({"newNonce":"http://192.0.2.1/nonce","newAccount":"http://127.0.0.1:1/a","newOrder":"http://127.0.0.1:1/o"})";
  const Case cases[] = {
      {httpResponse(200, "text/html", "<html>hello</html>"), "directory: not JSON"},
      {httpResponse(200, "application/json", R"({"newNonce":5,"newAccount":"a","newOrder":"b"})"),
       "directory: \"newNonce\" is not a string"},
      {httpResponse(200, "application/json", R"({"newAccount":"a","newOrder":"b"})"),
       "directory: \"newNonce\" is missing"},
      {httpResponse(200, "application/json", "[1,2,3]"), "directory: not a JSON object"},
      {httpResponse(500, "text/plain", "internal error\r\n"), "directory: HTTP 500: internal error.."},
      {httpResponse(503, "application/problem+json",
                    R"({"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for maintenance"})"),
       "directory: urn:ietf:params:acme:error:serverInternal: down for maintenance"},
      {httpResponse(200, "application/json", std::string(200 * 1024, ' ')), "larger than 65536 bytes"},
      {"this is not HTTP\r\n\r\n", "not a valid HTTP response"},
      {httpResponse(200, "application/json", validDirButRemoteNonce),
       "plain http:// is only allowed to a loopback host"},
  };
  for (const Case& c : cases) {
    GarbageServer server(c.response);
    auto r = obtainFrom(server.url());
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error(), c.expect)) << "got: " << r.error() << "\nwant: " << c.expect;
    EXPECT_GE(server.requests(), 1);
  }
}

TEST(AcmeClient, SilentServerTimesOut) {
  GarbageServer server("");  // accepts, reads, never answers
  const auto t0 = Clock::now();
  auto r = obtainFrom(server.url(), 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_TRUE(contains(r.error(), "directory: ")) << r.error();
  EXPECT_TRUE(contains(r.error(), "imeout") || contains(r.error(), "timed out")) << r.error();
}

TEST(AcmeClient, CancelledBeforeStart) {
  const std::atomic<bool> cancel{true};
  AcmeConfig cfg;
  cfg.directoryUrl = "https://127.0.0.1:" + std::to_string(freePort()) + "/dir";
  auto client = AcmeClient::create(cfg, newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  auto r = (*client)->obtain({"x.example.test"}, responder, cancel);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error(), "cancelled")) << r.error();
}

TEST(AcmeClient, CancelledWhileValidating) {
  START_PEBBLE(pebble, PebbleOptions{});
  auto client = AcmeClient::create(configFor(pebble), newAccountKey());
  ASSERT_TRUE(client.ok());
  std::atomic<bool> cancel{false};
  RecordingResponder responder;
  responder.onPresent = [&](const Challenge&) -> Result<void> {
    cancel = true;  // as if cert-agent were shutting down right now
    return okResult();
  };
  const auto t0 = Clock::now();
  auto r = (*client)->obtain({"x.example.test"}, responder, cancel);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error(), "cancelled")) << r.error();
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_EQ(responder.presented.size(), 1u);
  EXPECT_EQ(responder.cleanedUp.size(), 1u);
}

TEST(AcmeClient, CreateRejectsBadInput) {
  const std::string key = newAccountKey();
  AcmeConfig cfg;
  EXPECT_TRUE(AcmeClient::create(cfg, key).ok());
  EXPECT_FALSE(AcmeClient::create(cfg, "not a key").ok());

  EVP_PKEY* rsa = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(2048));
  EXPECT_FALSE(AcmeClient::create(cfg, keyPem(rsa)).ok());
  EVP_PKEY_free(rsa);

  AcmeConfig c = cfg;
  c.directoryUrl = "http://acme.example.org/dir";  // plain http off loopback
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c.directoryUrl = "ftp://x/dir";
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c.directoryUrl = "https://x/dir\r\nX-Injected: 1";
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c = cfg;
  c.challengeTypes = {};
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c.challengeTypes = {"dns-01"};
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c = cfg;
  c.eabKid = "kid";
  c.eabHmacKey = "bad key!";
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c = cfg;
  c.caFile = "/nonexistent/ca.pem";
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
  c = cfg;
  c.requestTimeout = 0s;
  EXPECT_FALSE(AcmeClient::create(c, key).ok());
}

TEST(AcmeClient, EmptyIdentifiersAreRejected) {
  auto client = AcmeClient::create(AcmeConfig{}, newAccountKey());
  ASSERT_TRUE(client.ok());
  RecordingResponder responder;
  EXPECT_FALSE((*client)->obtain({}, responder, kNoCancel).ok());
  EXPECT_FALSE((*client)->obtain({""}, responder, kNoCancel).ok());
}

TEST(AccountKey, CreatedOnceThenReused) {
  TempDir dir;
  const std::string path = dir.file("account.key");
  bool created = false;
  auto k1 = loadOrCreateAccountKey(path, &created);
  ASSERT_TRUE(k1.ok()) << k1.error();
  EXPECT_TRUE(created);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(readFile(path), *k1);
  EXPECT_TRUE(crypto::Es256Key::fromPem(*k1).ok());

  auto k2 = loadOrCreateAccountKey(path, &created);
  ASSERT_TRUE(k2.ok()) << k2.error();
  EXPECT_FALSE(created);
  EXPECT_EQ(*k2, *k1);
  // No temp files left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(AccountKey, WrongKeyTypeOrGarbageIsAnError) {
  TempDir dir;
  EVP_PKEY* rsa = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(2048));
  writeFile(dir.file("rsa.key"), keyPem(rsa));
  EVP_PKEY_free(rsa);
  bool created = true;
  auto r = loadOrCreateAccountKey(dir.file("rsa.key"), &created);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(created);
  EXPECT_TRUE(contains(r.error(), "rsa.key")) << r.error();

  writeFile(dir.file("junk.key"), "junk");
  EXPECT_FALSE(loadOrCreateAccountKey(dir.file("junk.key"), &created).ok());
  // A missing directory is an error, not a crash.
  EXPECT_FALSE(loadOrCreateAccountKey(dir.file("no/such/dir/account.key"), &created).ok());
}

}  // namespace
}  // namespace derpd::certagent
