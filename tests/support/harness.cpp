#include "support/harness.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/vectors.hpp"

namespace derpd::test {

namespace {

using Clock = std::chrono::steady_clock;

// The test process writes to sockets the server may have closed; a write
// error must come back as EPIPE, not kill the test binary. The worker gets
// SIGPIPE back to default before exec.
[[maybe_unused]] const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

Millis remaining(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  return left.count() < 0 ? Millis(0) : left;
}

int pollOne(int fd, short events, Millis timeout) {
  pollfd p{fd, events, 0};
  int ms = static_cast<int>(std::min<long long>(timeout.count(), 60000));
  for (int i = 0; i < 1000; i++) {
    int r = ::poll(&p, 1, ms);
    if (r >= 0) return r;
    if (errno != EINTR) return -1;
  }
  return -1;
}

std::string opensslErrors() {
  std::string out;
  for (int i = 0; i < 16; i++) {
    unsigned long e = ERR_get_error();
    if (e == 0) break;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "(no OpenSSL error)" : out;
}

bool isIpLiteral(const std::string& s) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, s.c_str(), &a4) == 1 || inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// Port of "scheme://host:port[/...]" (also "[v6]:port").
std::optional<int> urlPort(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::nullopt;
  auto rest = url.substr(scheme + 3);
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto colon = authority.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto ps = authority.substr(colon + 1);
  if (ps.empty() || ps.size() > 5) return std::nullopt;
  int port = 0;
  for (char c : ps) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
  }
  if (port <= 0 || port > 65535) return std::nullopt;
  return port;
}

// The whitespace-delimited token after `marker` on the first line that has it.
std::optional<std::string> tokenAfter(const std::string& text, std::string_view marker) {
  auto pos = text.find(marker);
  if (pos == std::string::npos) return std::nullopt;
  pos += marker.size();
  auto end = text.find_first_of(" \t\r\n", pos);
  if (end == std::string::npos) return std::nullopt;  // line not complete yet
  return text.substr(pos, end - pos);
}

std::string tailLines(const std::string& text, size_t n) {
  std::vector<size_t> starts;  // start offsets of lines
  size_t pos = 0;
  for (size_t i = 0; i < 10000000 && pos < text.size(); i++) {
    starts.push_back(pos);
    auto e = text.find('\n', pos);
    if (e == std::string::npos) break;
    pos = e + 1;
  }
  if (starts.size() <= n) return text;
  return text.substr(starts[starts.size() - n]);
}

}  // namespace

// ---------------------------------------------------------------------------
// Files

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/derpd-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "mkdtemp(%s): %s\n", tmpl.c_str(), std::strerror(errno));
    std::abort();
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  const char* keep = std::getenv("DERPD_TEST_KEEP");
  if (keep && *keep && std::string_view(keep) != "0") {
    std::fprintf(stderr, "keeping %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool writeFile(const std::string& path, std::string_view data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  ::fchmod(fd, mode);
  return ::close(fd) == 0;
}

std::optional<std::string> readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------
// Keys and byte helpers

namespace keys {
namespace {
crypto::NodePrivate fromHex(const char* hex) { return crypto::NodePrivate::fromRaw(hexBytes(hex)); }
}  // namespace
crypto::NodePrivate server() { return fromHex(kServerPrivateHex); }
crypto::NodePrivate alice() { return fromHex("103a1ca3ab6bc732bc7b93b814b4a2a59d6959407d01c971aeae3777cb39544b"); }
crypto::NodePrivate bob() { return fromHex("f07688cebc15113982dc865a10a0656c2dd996c3502eefaaf8e40c755c12ff58"); }
crypto::NodePrivate carol() { return fromHex("f8f6741856b328ab01a6f37a591f12c56d35593861f86399a0abea2d67f3ca4a"); }
crypto::NodePrivate prober() { return fromHex("48e8723df4e85f2ce0e291ac251e0bccd5995a6c89d4103852d31209b137a244"); }
crypto::NodePrivate mesh() { return fromHex("20c466304b53ce580044907c79b00aa1e70f9018e8c12376d0f13fcb4a570766"); }
crypto::NodePrivate fast() { return fromHex("d8479ba45e9677b704952b4a0631154ce903c6593bf61bd73828f691d81bb46b"); }
crypto::NodePrivate ws1() { return fromHex("086084892df55ac1a3054942b00bbe837406a48c6d2623d6ed2dac533d180971"); }
crypto::NodePrivate ws2() { return fromHex("0813c12767d93c7698102a68c9c683e7856a3565aa04c02c7eb0a676cd29c853"); }
crypto::NodePrivate absent() { return fromHex("b033d59ec45a0d2428c2fd5f2517f04b52e98a3fdeed26863648458ca300e56f"); }
crypto::NodePrivate fwdsrc() { return fromHex("68b99457dbe095f4e77b57f6a878540188b1ac74218723fdbb0afc3a3bde7478"); }
crypto::NodePrivate odd() { return fromHex("48828adf0a68c39cb743e7a223a83439551747cae6484e46ab9b87a8a5f75d5a"); }
crypto::NodePublic serverPublic() { return crypto::NodePublic::fromRaw(hexBytes(kServerPublicHex)); }
}  // namespace keys

std::string serverKeyFileContents() {
  return std::string("{\n\t\"PrivateKey\": \"privkey:") + kServerPrivateHex + "\"\n}";
}

Bytes discoPacket() {
  Bytes p = {0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac};
  for (int b = 0xa0; b <= 0xbf; b++) p.push_back(static_cast<uint8_t>(b));
  for (int b = 0x10; b <= 0x27; b++) p.push_back(static_cast<uint8_t>(b));
  for (int i = 0; i < 8; i++) p.push_back(0xee);
  return p;
}

Bytes patternBytes(size_t n, uint8_t seed) {
  Bytes b(n);
  uint32_t x = 0x9e3779b9u ^ (uint32_t(seed) * 0x01000193u);
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b[i] = static_cast<uint8_t>(x);
  }
  // Never start like a disco packet by accident.
  if (n > 0 && b[0] == 0x54) b[0] = 0x55;
  return b;
}

Bytes rawFrameHeader(uint8_t type, uint32_t len) {
  Bytes out;
  out.push_back(type);
  appendU32BE(out, len);
  return out;
}

Bytes rawFrame(uint8_t type, ByteView payload) {
  Bytes out = rawFrameHeader(type, static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes concat(std::initializer_list<ByteView> parts) {
  Bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ---------------------------------------------------------------------------
// WorkerProcess

std::string binDir() {
  if (const char* d = std::getenv("DERPD_TEST_BIN_DIR"); d && *d) return d;
  return DERPD_BIN_DIR;
}

std::string workerBinary() {
  const char* dir = std::getenv("DERPD_TEST_BIN_DIR");
  if (dir && *dir) return std::string(dir) + "/derp-worker";
  return std::string(DERPD_BIN_DIR) + "/derp-worker";
}

std::optional<std::string> flagValue(const std::vector<std::string>& args, std::string_view name) {
  std::optional<std::string> found;
  for (size_t i = 0; i < args.size(); i++) {
    std::string_view a = args[i];
    if (a.size() < 2 || a[0] != '-') continue;
    a.remove_prefix(a[1] == '-' ? 2 : 1);
    if (a.substr(0, name.size()) != name) continue;
    a.remove_prefix(name.size());
    if (a.empty()) {
      if (i + 1 < args.size()) found = args[i + 1];
    } else if (a[0] == '=') {
      found = std::string(a.substr(1));
    }
  }
  return found;
}

WorkerProcess::WorkerProcess() : logPath_(dir_.file("worker.log")) {}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0 && !exitStatus_) kill9();
}

Result<void> WorkerProcess::start(const std::vector<std::string>& args, const std::string& binary,
                                  const std::string& readyLine) {
  if (pid_ > 0) return makeError("worker already started");
  args_ = args;
  std::string bin = binary.empty() ? workerBinary() : binary;
  if (::access(bin.c_str(), X_OK) != 0) return makeError("no executable at " + bin);

  std::vector<std::string> argvStrings;
  argvStrings.push_back(bin);
  argvStrings.insert(argvStrings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argvStrings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int logFd = ::open(logPath_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (logFd < 0) return makeError("open log: " + std::string(std::strerror(errno)));
  int nullFd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nullFd < 0) {
    ::close(logFd);
    return makeError("open /dev/null failed");
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(logFd);
    ::close(nullFd);
    return makeError("fork: " + std::string(std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(nullFd, 0);
    ::dup2(logFd, 1);
    ::dup2(logFd, 2);
    ::close_range(3, ~0U, 0);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    static const char kMsg[] = "derpd test harness: execv failed\n";
    ssize_t ignored = ::write(2, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    ::_exit(127);
  }
  ::close(logFd);
  ::close(nullFd);
  pid_ = pid;

  const auto httpPortFlag = flagValue(args, "http-port");
  if (auto a = flagValue(args, "a"); a && a->find("::1") != std::string::npos) ip_ = "::1";
  int ino = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ino >= 0) ::inotify_add_watch(ino, logPath_.c_str(), IN_MODIFY | IN_CLOSE_WRITE);
  auto deadline = Clock::now() + kStartDeadline;
  std::string failure;
  for (int iter = 0; iter < 100000; iter++) {
    std::string text = logText();
    if (!readyLine.empty()) {
      if (auto t = tokenAfter(text, readyLine)) {
        url_ = *t;
        auto colon = t->rfind(':');
        int p = 0;
        for (size_t k = colon == std::string::npos ? t->size() : colon + 1; k < t->size() && p <= 65535; k++) {
          if ((*t)[k] < '0' || (*t)[k] > '9') {
            p = 0;
            break;
          }
          p = p * 10 + ((*t)[k] - '0');
        }
        port_ = static_cast<uint16_t>(p <= 65535 ? p : 0);
        if (ino >= 0) ::close(ino);
        return okResult();
      }
    } else if (auto u = tokenAfter(text, "serving DERP on ")) {
      auto p = urlPort(*u);
      if (!p) {
        failure = "cannot parse the DERP URL '" + *u + "'";
        break;
      }
      url_ = *u;
      port_ = static_cast<uint16_t>(*p);
      tls_ = url_.rfind("https://", 0) == 0;
      bool needPort80 = false;
      if (tls_) {
        int hp = 80;
        if (httpPortFlag) hp = std::atoi(httpPortFlag->c_str());
        needPort80 = hp >= 0;
      }
      if (!needPort80) {
        port80_ = -1;
        if (ino >= 0) ::close(ino);
        return okResult();
      }
      if (auto u80 = tokenAfter(text, "serving port-80 HTTP on ")) {
        auto p80 = urlPort(*u80);
        if (!p80) {
          failure = "cannot parse the port-80 URL '" + *u80 + "'";
          break;
        }
        port80_ = *p80;
        if (ino >= 0) ::close(ino);
        return okResult();
      }
    }
    if (!running()) {
      failure = "derp-worker exited (status " + std::to_string(exitStatus_.value_or(-1)) +
                ") before it was ready";
      break;
    }
    if (Clock::now() >= deadline) {
      failure = "derp-worker not ready within 10 s";
      break;
    }
    if (ino >= 0) {
      pollOne(ino, POLLIN, std::min(remaining(deadline), Millis(50)));
      char buf[4096];
      for (int k = 0; k < 64 && ::read(ino, buf, sizeof(buf)) > 0; k++) {
      }
    } else {
      pollOne(-1, 0, Millis(10));  // no inotify: short poll interval
    }
  }
  if (ino >= 0) ::close(ino);
  if (running()) kill9();
  stopRequested_ = true;  // the start failure is the reported error
  return makeError(failure + "; args:" +
                   [&] {
                     std::string s;
                     for (auto& a : args) s += " " + a;
                     return s;
                   }() +
                   "\n--- log ---\n" + tailLines(logText(), 40));
}

bool WorkerProcess::running() {
  if (pid_ <= 0 || exitStatus_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    if (WIFEXITED(st)) {
      exitStatus_ = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
      exitStatus_ = 128 + WTERMSIG(st);
    } else {
      exitStatus_ = -1;
    }
    return false;
  }
  return r == 0;
}

Result<int> WorkerProcess::stop(int sig) {
  if (pid_ <= 0) return makeError("worker not started");
  stopRequested_ = true;
  if (!running()) return *exitStatus_;
  ::kill(pid_, sig);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  auto deadline = Clock::now() + kStopDeadline;
  for (int i = 0; i < 100000; i++) {
    if (!running()) {
      if (pidfd >= 0) ::close(pidfd);
      return *exitStatus_;
    }
    if (Clock::now() >= deadline) break;
    if (pidfd >= 0) {
      pollOne(pidfd, POLLIN, std::min(remaining(deadline), Millis(200)));
    } else {
      pollOne(-1, 0, Millis(10));
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  kill9();
  return makeError("derp-worker did not exit within 10 s of signal " + std::to_string(sig) +
                   " (SIGKILLed)");
}

void WorkerProcess::kill9() {
  if (pid_ <= 0 || exitStatus_) return;
  stopRequested_ = true;
  ::kill(pid_, SIGKILL);
  int st = 0;
  for (int i = 0; i < 100; i++) {
    pid_t r = ::waitpid(pid_, &st, 0);
    if (r == pid_) {
      exitStatus_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
      return;
    }
    if (r < 0 && errno != EINTR) {
      exitStatus_ = -1;
      return;
    }
  }
}

std::string WorkerProcess::logText() const { return readFile(logPath_).value_or(""); }

std::vector<std::string> WorkerProcess::errorLines() const {
  static const char* const kPatterns[] = {
      "] error: ",           "] critical: ",         "ERROR: AddressSanitizer",
      "runtime error:",      "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
  };
  std::vector<std::string> out;
  std::istringstream in(logText());
  std::string line;
  for (int i = 0; i < 10000000 && std::getline(in, line); i++) {
    for (const char* p : kPatterns) {
      if (line.find(p) != std::string::npos) {
        out.push_back(line);
        break;
      }
    }
  }
  return out;
}

bool WorkerProcess::waitForLog(std::string_view needle, Millis timeout) const {
  return waitFor([&] { return logText().find(needle) != std::string::npos; }, timeout);
}

// ---------------------------------------------------------------------------
// Test CA

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

bool addExt(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  if (!ext) return false;
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1;
}

Result<X509Ptr> makeCert(EVP_PKEY* subjectKey, const std::string& cn, long serial, int days,
                         X509* issuer, EVP_PKEY* issuerKey, bool isCa,
                         const std::vector<std::string>& sans) {
  X509Ptr cert(X509_new());
  if (!cert) return makeError("X509_new");
  X509* x = cert.get();
  if (X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1 ||
      !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(days) * 86400) ||
      X509_set_pubkey(x, subjectKey) != 1) {
    return makeError("cert fields: " + opensslErrors());
  }
  X509_NAME* name = X509_get_subject_name(x);
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("derpd tests"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) != 1) {
    return makeError("subject: " + opensslErrors());
  }
  X509* issuerCert = issuer ? issuer : x;
  if (X509_set_issuer_name(x, X509_get_subject_name(issuerCert)) != 1) {
    return makeError("issuer: " + opensslErrors());
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuerCert, x, nullptr, nullptr, 0);
  bool ok = true;
  if (isCa) {
    ok = ok && addExt(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    ok = ok && addExt(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    ok = ok && addExt(x, &ctx, NID_subject_key_identifier, "hash");
  } else {
    ok = ok && addExt(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && addExt(x, &ctx, NID_key_usage, "critical,digitalSignature");
    ok = ok && addExt(x, &ctx, NID_ext_key_usage, "serverAuth");
    ok = ok && addExt(x, &ctx, NID_subject_key_identifier, "hash");
    ok = ok && addExt(x, &ctx, NID_authority_key_identifier, "keyid:always");
    if (!sans.empty()) {
      std::string v;
      for (auto& s : sans) {
        if (!v.empty()) v += ",";
        v += (isIpLiteral(s) ? "IP:" : "DNS:") + s;
      }
      ok = ok && addExt(x, &ctx, NID_subject_alt_name, v);
    }
  }
  if (!ok) return makeError("extensions: " + opensslErrors());
  if (X509_sign(x, issuerKey, EVP_sha256()) <= 0) return makeError("sign: " + opensslErrors());
  return cert;
}

bool writePem(const std::string& path, const std::vector<X509*>& certs, EVP_PKEY* key) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  if (!bio) return false;
  bool ok = true;
  for (X509* c : certs) ok = ok && PEM_write_bio_X509(bio, c) == 1;
  if (key) ok = ok && PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  BIO_free(bio);
  if (key) ::chmod(path.c_str(), 0600);
  return ok;
}

}  // namespace

Result<TestCerts> makeTestCerts(const std::string& dir, const std::string& hostname,
                                const std::vector<std::string>& sans, const CertOptions& opts) {
  PkeyPtr caKey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  PkeyPtr leafKey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!caKey || !leafKey) return makeError("keygen: " + opensslErrors());
  auto ca = makeCert(caKey.get(), "derpd test CA", opts.caSerial, opts.validDays + 1, nullptr,
                     caKey.get(), true, {});
  if (!ca.ok()) return makeError("CA: " + ca.error());
  auto leaf = makeCert(leafKey.get(), hostname, opts.leafSerial, opts.validDays, ca->get(),
                       caKey.get(), false, sans);
  if (!leaf.ok()) return makeError("leaf: " + leaf.error());
  TestCerts out;
  out.certFile = dir + "/" + hostname + ".crt";
  out.keyFile = dir + "/" + hostname + ".key";
  out.caFile = dir + "/ca.crt";
  if (!writePem(out.certFile, {leaf->get(), ca->get()}, nullptr) ||
      !writePem(out.keyFile, {}, leafKey.get()) || !writePem(out.caFile, {ca->get()}, nullptr)) {
    return makeError("writing PEM files in " + dir + ": " + opensslErrors());
  }
  return out;
}

// ---------------------------------------------------------------------------
// RawConn

Result<std::unique_ptr<RawConn>> RawConn::dial(uint16_t port, const TlsClientOptions* tls,
                                               const std::string& ip, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::unique_ptr<RawConn> c(new RawConn());
  sockaddr_storage ss{};
  socklen_t slen = 0;
  int family = AF_INET;
  if (ip.find(':') != std::string::npos) {
    family = AF_INET6;
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    if (inet_pton(AF_INET6, ip.c_str(), &s6->sin6_addr) != 1) return makeError("bad ip " + ip);
    slen = sizeof(*s6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    if (inet_pton(AF_INET, ip.c_str(), &s4->sin_addr) != 1) return makeError("bad ip " + ip);
    slen = sizeof(*s4);
  }
  c->fd_ = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) return makeError("socket: " + std::string(std::strerror(errno)));
  int one = 1;
  ::setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&ss), slen) != 0) {
    if (errno != EINPROGRESS) return makeError("connect: " + std::string(std::strerror(errno)));
    if (pollOne(c->fd_, POLLOUT, remaining(deadline)) <= 0) return makeError("connect timeout");
    int err = 0;
    socklen_t elen = sizeof(err);
    ::getsockopt(c->fd_, SOL_SOCKET, SO_ERROR, &err, &elen);
    if (err != 0) return makeError("connect: " + std::string(std::strerror(err)));
  }
  if (!tls) return c;

  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!c->ctx_) return makeError("SSL_CTX_new: " + opensslErrors());
  SSL_CTX_set_options(c->ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(c->ctx_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (tls->minVersion) SSL_CTX_set_min_proto_version(c->ctx_, tls->minVersion);
  if (tls->maxVersion) SSL_CTX_set_max_proto_version(c->ctx_, tls->maxVersion);
  if (tls->minVersion && tls->minVersion < TLS1_2_VERSION) {
    SSL_CTX_set_security_level(c->ctx_, 0);
  }
  if (!tls->caFile.empty()) {
    if (SSL_CTX_load_verify_locations(c->ctx_, tls->caFile.c_str(), nullptr) != 1) {
      return makeError("load CA " + tls->caFile + ": " + opensslErrors());
    }
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_NONE, nullptr);
  }
  c->ssl_ = SSL_new(c->ctx_);
  if (!c->ssl_) return makeError("SSL_new: " + opensslErrors());
  SSL_set_fd(c->ssl_, c->fd_);
  if (!tls->serverName.empty()) {
    X509_VERIFY_PARAM* vp = SSL_get0_param(c->ssl_);
    if (isIpLiteral(tls->serverName)) {
      X509_VERIFY_PARAM_set1_ip_asc(vp, tls->serverName.c_str());
    } else {
      SSL_set_tlsext_host_name(c->ssl_, tls->serverName.c_str());
      X509_VERIFY_PARAM_set1_host(vp, tls->serverName.c_str(), 0);
    }
  }
  if (!tls->alpn.empty()) {
    std::vector<unsigned char> wire;
    for (auto& p : tls->alpn) {
      wire.push_back(static_cast<unsigned char>(p.size()));
      wire.insert(wire.end(), p.begin(), p.end());
    }
    SSL_set_alpn_protos(c->ssl_, wire.data(), static_cast<unsigned>(wire.size()));
  }
  for (int i = 0; i < 100000; i++) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl_);
    if (r == 1) return c;
    int e = SSL_get_error(c->ssl_, r);
    short ev = 0;
    if (e == SSL_ERROR_WANT_READ) {
      ev = POLLIN;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      ev = POLLOUT;
    } else {
      std::string why = opensslErrors();
      long vr = SSL_get_verify_result(c->ssl_);
      if (vr != X509_V_OK) why += "; verify: " + std::string(X509_verify_cert_error_string(vr));
      return makeError("TLS handshake failed: " + why);
    }
    if (remaining(deadline).count() == 0 || pollOne(c->fd_, ev, remaining(deadline)) <= 0) {
      return makeError("TLS handshake timeout");
    }
  }
  return makeError("TLS handshake did not finish");
}

RawConn::~RawConn() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  if (fd_ >= 0) ::close(fd_);
}

Result<void> RawConn::sendAll(ByteView data, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  size_t off = 0;
  for (int i = 0; i < 10000000 && off < data.size(); i++) {
    size_t chunk = std::min<size_t>(data.size() - off, 16384);
    short ev = POLLOUT;
    if (ssl_) {
      ERR_clear_error();
      int n = SSL_write(ssl_, data.data() + off, static_cast<int>(chunk));
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_READ) {
        ev = POLLIN;
      } else if (e != SSL_ERROR_WANT_WRITE) {
        return makeError("SSL_write: " + opensslErrors() + " errno " + std::strerror(errno));
      }
    } else {
      ssize_t n = ::send(fd_, data.data() + off, chunk, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        return makeError("send: " + std::string(std::strerror(errno)));
      }
    }
    if (remaining(deadline).count() == 0 || pollOne(fd_, ev, remaining(deadline)) <= 0) {
      return makeError("send timeout after " + std::to_string(off) + " of " +
                       std::to_string(data.size()) + " bytes");
    }
  }
  if (off < data.size()) return makeError("send incomplete");
  return okResult();
}

RawConn::ReadStatus RawConn::readRaw(std::string& out, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  for (int i = 0; i < 100000; i++) {
    short ev = POLLIN;
    if (ssl_) {
      ERR_clear_error();
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        return ReadStatus::Data;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_ZERO_RETURN) return ReadStatus::Closed;
      if (e == SSL_ERROR_SYSCALL) return ReadStatus::Closed;  // EOF or reset
      if (e == SSL_ERROR_WANT_WRITE) {
        ev = POLLOUT;
      } else if (e != SSL_ERROR_WANT_READ) {
        return ReadStatus::Error;
      }
    } else {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        return ReadStatus::Data;
      }
      if (n == 0) return ReadStatus::Closed;
      if (errno == EINTR) continue;
      if (errno == ECONNRESET || errno == EPIPE) return ReadStatus::Closed;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return ReadStatus::Error;
    }
    if (remaining(deadline).count() == 0) return ReadStatus::Timeout;
    int r = pollOne(fd_, ev, remaining(deadline));
    if (r < 0) return ReadStatus::Error;
    if (r == 0) return ReadStatus::Timeout;
  }
  return ReadStatus::Timeout;
}

RawConn::ReadStatus RawConn::readSome(std::string& out, Millis timeout) {
  if (!pending_.empty()) {
    out += pending_;
    pending_.clear();
    return ReadStatus::Data;
  }
  return readRaw(out, timeout);
}

std::string RawConn::readUntilIdle(Millis idle, Millis total, bool* closed) {
  auto deadline = Clock::now() + total;
  std::string out;
  if (closed) *closed = false;
  for (int i = 0; i < 1000000; i++) {
    Millis wait = std::min(idle, remaining(deadline));
    if (wait.count() == 0) break;
    auto st = readSome(out, wait);
    if (st == ReadStatus::Data) continue;
    if (st == ReadStatus::Closed || st == ReadStatus::Error) {
      if (closed) *closed = true;
    }
    break;
  }
  return out;
}

Result<std::string> RawConn::readExact(size_t n, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (int i = 0; i < 1000000 && pending_.size() < n; i++) {
    auto st = readRaw(pending_, remaining(deadline));
    if (st == ReadStatus::Timeout) return makeError("timeout");
    if (st == ReadStatus::Closed) return makeError("eof");
    if (st == ReadStatus::Error) return makeError("read error");
  }
  if (pending_.size() < n) return makeError("timeout");
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

Result<std::string> RawConn::readHttpHead(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (int i = 0; i < 100000; i++) {
    auto end = pending_.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::string head = pending_.substr(0, end + 4);
      pending_.erase(0, end + 4);
      return head;
    }
    if (pending_.size() > 65536) return makeError("no end of HTTP head in 64 KiB");
    auto st = readRaw(pending_, remaining(deadline));
    if (st == ReadStatus::Timeout) return makeError("timeout");
    if (st != ReadStatus::Data) return makeError("closed before the end of the HTTP head: '" + pending_ + "'");
  }
  return makeError("timeout");
}

Result<RawFrame> RawConn::readFrame(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  auto hdr = readExact(5, remaining(deadline));
  if (!hdr.ok()) return makeError(hdr.error());
  const auto* h = reinterpret_cast<const uint8_t*>(hdr->data());
  uint32_t len = getU32BE(h + 1);
  if (len > (2u << 20)) return makeError("frame too large: " + std::to_string(len));
  auto body = readExact(len, remaining(deadline));
  if (!body.ok()) return makeError(body.error());
  RawFrame f;
  f.type = h[0];
  f.payload.assign(body->begin(), body->end());
  return f;
}

bool RawConn::waitClosed(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  pending_.clear();
  for (int i = 0; i < 1000000; i++) {
    std::string sink;
    auto st = readRaw(sink, remaining(deadline));
    if (st == ReadStatus::Closed || st == ReadStatus::Error) return true;
    if (st == ReadStatus::Timeout) return false;
  }
  return false;
}

std::vector<X509Ptr> RawConn::peerChain() const {
  std::vector<X509Ptr> out;
  if (!ssl_) return out;
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_);
  if (!chain) return out;
  for (int i = 0; i < sk_X509_num(chain); i++) {
    X509* x = sk_X509_value(chain, i);
    X509_up_ref(x);
    out.emplace_back(x);
  }
  return out;
}

std::string RawConn::tlsVersion() const { return ssl_ ? SSL_get_version(ssl_) : ""; }

std::string RawConn::alpnSelected() const {
  if (!ssl_) return "";
  const unsigned char* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : "";
}

// ---------------------------------------------------------------------------
// HTTP

RawResponse rawHttp(uint16_t port, std::string_view request, bool tls, const std::string& caFile,
                    const std::string& serverName, Millis idle) {
  RawResponse out;
  TlsClientOptions topts;
  topts.caFile = caFile;
  topts.serverName = serverName;
  auto conn = RawConn::dial(port, tls ? &topts : nullptr);
  if (!conn.ok()) {
    out.error = conn.error();
    return out;
  }
  auto sent = (*conn)->sendAll(request);
  if (!sent.ok()) out.error = sent.error();  // the server may have answered and closed early
  out.data = (*conn)->readUntilIdle(idle, Millis(15000), &out.serverClosed);
  return out;
}

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  for (auto& [k, v] : headers) {
    if (lower(k) == lower(name)) return v;
  }
  return std::nullopt;
}

namespace {

// Decodes a chunked body at the start of data; nullopt when incomplete.
std::optional<std::string> dechunk(std::string_view data, size_t* used) {
  std::string body;
  size_t pos = 0;
  for (int i = 0; i < 1000000; i++) {
    auto eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) return std::nullopt;
    std::string sizeLine(data.substr(pos, eol - pos));
    auto semi = sizeLine.find(';');
    if (semi != std::string::npos) sizeLine.resize(semi);
    char* end = nullptr;
    unsigned long size = std::strtoul(sizeLine.c_str(), &end, 16);
    if (sizeLine.empty() || (end && *end != '\0' && *end != ' ')) return std::nullopt;
    pos = eol + 2;
    if (size == 0) {
      // Trailers until an empty line.
      for (int k = 0; k < 1000; k++) {
        auto e2 = data.find("\r\n", pos);
        if (e2 == std::string_view::npos) return std::nullopt;
        bool empty = e2 == pos;
        pos = e2 + 2;
        if (empty) {
          *used = pos;
          return body;
        }
      }
      return std::nullopt;
    }
    if (data.size() < pos + size + 2) return std::nullopt;
    body.append(data.substr(pos, size));
    pos += size + 2;
  }
  return std::nullopt;
}

std::string trimOws(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
  return std::string(s.substr(b, e - b));
}

}  // namespace

std::optional<HttpResponse> parseHttpResponse(std::string_view data, bool headRequest,
                                              size_t* consumed) {
  auto headEnd = data.find("\r\n\r\n");
  if (headEnd == std::string_view::npos) return std::nullopt;
  HttpResponse r;
  std::string_view head = data.substr(0, headEnd);
  auto eol = head.find("\r\n");
  r.statusLine = std::string(head.substr(0, eol));
  if (r.statusLine.rfind("HTTP/1.", 0) != 0 || r.statusLine.size() < 12) return std::nullopt;
  r.status = std::atoi(r.statusLine.substr(9, 3).c_str());
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  for (int i = 0; i < 1000 && pos < head.size(); i++) {
    auto e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view line = head.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    r.headers.emplace_back(std::string(line.substr(0, colon)), trimOws(line.substr(colon + 1)));
    pos = e + 2;
  }
  std::string_view rest = data.substr(headEnd + 4);
  size_t used = 0;
  bool noBody = headRequest || r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200);
  auto te = r.header("Transfer-Encoding");
  auto cl = r.header("Content-Length");
  if (noBody) {
    used = 0;
  } else if (te && lower(*te).find("chunked") != std::string::npos) {
    auto body = dechunk(rest, &used);
    if (!body) return std::nullopt;
    r.body = *body;
    r.rawBody = std::string(rest.substr(0, used));
  } else if (cl) {
    size_t n = std::strtoull(cl->c_str(), nullptr, 10);
    if (rest.size() < n) return std::nullopt;
    used = n;
    r.rawBody = r.body = std::string(rest.substr(0, n));
  } else {
    used = rest.size();
    r.rawBody = r.body = std::string(rest);
  }
  if (consumed) *consumed = headEnd + 4 + used;
  return r;
}

namespace {

struct HeadAndBody {
  std::string statusLine;
  std::vector<std::string> headerLines;
  std::string body;  // every byte after the blank line
  bool ok = false;
};

HeadAndBody split(const std::string& raw) {
  HeadAndBody r;
  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return r;
  std::string head = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  size_t pos = 0;
  for (int i = 0; i < 1000; i++) {
    auto e = head.find("\r\n", pos);
    std::string line = head.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
    if (i == 0) {
      r.statusLine = line;
    } else {
      r.headerLines.push_back(line);
    }
    if (e == std::string::npos) break;
    pos = e + 2;
  }
  r.ok = true;
  return r;
}

}  // namespace

// Byte-for-byte equality except the value of Date, which must still be an
// IMF-fixdate.
::testing::AssertionResult httpSameExceptDate(const std::string& got, const std::string& want) {
  auto g = split(got);
  auto w = split(want);
  if (!w.ok) return ::testing::AssertionFailure() << "vector has no head";
  if (!g.ok) {
    return ::testing::AssertionFailure() << "no complete response head in " << got.size()
                                         << " bytes: '" << got.substr(0, 300) << "'";
  }
  if (g.statusLine != w.statusLine) {
    return ::testing::AssertionFailure() << "status line '" << g.statusLine << "', want '" << w.statusLine << "'";
  }
  auto list = [](const HeadAndBody& h) {
    std::string s;
    for (auto& l : h.headerLines) s += "    " + l + "\n";
    return s;
  };
  if (g.headerLines.size() != w.headerLines.size()) {
    return ::testing::AssertionFailure() << "header count " << g.headerLines.size() << ", want "
                                         << w.headerLines.size() << "\n got:\n" << list(g) << " want:\n" << list(w);
  }
  static const std::regex kDate(
      R"(^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d )"
      R"((Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$)");
  for (size_t i = 0; i < w.headerLines.size(); i++) {
    const auto& wl = w.headerLines[i];
    const auto& gl = g.headerLines[i];
    if (wl.rfind("Date: ", 0) == 0) {
      if (!std::regex_match(gl, kDate)) {
        return ::testing::AssertionFailure() << "header " << i << " is '" << gl << "', want a Date header"
                                             << "\n got:\n" << list(g) << " want:\n" << list(w);
      }
      continue;
    }
    if (gl != wl) {
      return ::testing::AssertionFailure() << "header " << i << " is '" << gl << "', want '" << wl << "'"
                                           << "\n got:\n" << list(g) << " want:\n" << list(w);
    }
  }
  if (g.body != w.body) {
    return ::testing::AssertionFailure() << "body differs (" << g.body.size() << " bytes, want "
                                         << w.body.size() << "):\n got: '" << g.body << "'\n want: '"
                                         << w.body << "'";
  }
  return ::testing::AssertionSuccess();
}

namespace {

Result<HttpResponse> doGet(const std::string& ip, uint16_t port, const TlsClientOptions* tls,
                           const std::string& path,
                           const std::vector<std::pair<std::string, std::string>>& extra) {
  auto conn = RawConn::dial(port, tls, ip);
  if (!conn.ok()) return makeError("dial: " + conn.error());
  std::string hostPort = (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + hostPort +
                    "\r\nUser-Agent: derpd-integration-tests\r\nConnection: close\r\n";
  for (auto& [k, v] : extra) req += k + ": " + v + "\r\n";
  req += "\r\n";
  auto sent = (*conn)->sendAll(req);
  if (!sent.ok()) return makeError("send: " + sent.error());
  auto deadline = Clock::now() + Millis(10000);
  std::string buf;
  for (int i = 0; i < 1000000; i++) {
    auto st = (*conn)->readSome(buf, remaining(deadline));
    if (st == RawConn::ReadStatus::Data) {
      auto r = parseHttpResponse(buf);
      if (r && (r->header("Content-Length") || r->header("Transfer-Encoding") || r->status == 204 ||
                r->status == 304)) {
        return *r;
      }
      continue;
    }
    if (st == RawConn::ReadStatus::Closed) {
      auto r = parseHttpResponse(buf);
      if (r) return *r;
      return makeError("connection closed before a whole response (" + std::to_string(buf.size()) +
                       " bytes: " + buf.substr(0, 200) + ")");
    }
    return makeError(st == RawConn::ReadStatus::Timeout ? "timeout" : "read error");
  }
  return makeError("no response");
}

}  // namespace

Result<HttpResponse> httpGet(const WorkerProcess& w, const std::string& path,
                             const std::vector<std::pair<std::string, std::string>>& extraHeaders) {
  if (w.tls()) {
    TlsClientOptions t;
    t.caFile = w.caFile();
    t.serverName = w.tlsHostname();
    return doGet(w.ip(), w.port(), &t, path, extraHeaders);
  }
  return doGet(w.ip(), w.port(), nullptr, path, extraHeaders);
}

Result<HttpResponse> httpGet(uint16_t port, const std::string& path) {
  return doGet("127.0.0.1", port, nullptr, path, {});
}

Metrics parsePrometheus(std::string_view text) {
  Metrics m;
  size_t pos = 0;
  for (int i = 0; i < 10000000 && pos < text.size(); i++) {
    auto eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    size_t keyEnd = 0;
    auto brace = line.find('{');
    auto space = line.find_first_of(" \t");
    if (brace != std::string_view::npos && (space == std::string_view::npos || brace < space)) {
      bool inQuote = false;
      size_t j = brace + 1;
      for (; j < line.size(); j++) {
        char c = line[j];
        if (inQuote && c == '\\') {
          j++;
          continue;
        }
        if (c == '"') inQuote = !inQuote;
        if (!inQuote && c == '}') break;
      }
      if (j >= line.size()) continue;
      keyEnd = j + 1;
    } else {
      if (space == std::string_view::npos) continue;
      keyEnd = space;
    }
    std::string key(line.substr(0, keyEnd));
    std::string_view rest = line.substr(keyEnd);
    while (!rest.empty() && (rest[0] == ' ' || rest[0] == '\t')) rest.remove_prefix(1);
    auto vend = rest.find_first_of(" \t");
    std::string val(rest.substr(0, vend));
    if (val.empty()) continue;
    char* end = nullptr;
    double d = std::strtod(val.c_str(), &end);
    if (end == val.c_str()) continue;
    m[key] = d;
  }
  return m;
}

Result<Metrics> varz(const WorkerProcess& w) {
  auto r = httpGet(w, "/debug/varz");
  if (!r.ok()) return makeError("/debug/varz: " + r.error());
  if (r->status != 200) return makeError("/debug/varz status " + r->statusLine);
  return parsePrometheus(r->body);
}

Result<Metrics> varz(uint16_t port) {
  auto r = httpGet(port, "/debug/varz");
  if (!r.ok()) return makeError("/debug/varz: " + r.error());
  if (r->status != 200) return makeError("/debug/varz status " + r->statusLine);
  return parsePrometheus(r->body);
}

std::optional<double> metric(const WorkerProcess& w, const std::string& key) {
  auto m = varz(w);
  if (!m.ok()) return std::nullopt;
  auto it = m->find(key);
  if (it == m->end()) return std::nullopt;
  return it->second;
}

int reserveLoopbackPort(int type) {
  int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

int64_t processRssBytes(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

int processFdCount(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

bool waitFor(const std::function<bool()>& pred, Millis timeout, Millis interval) {
  auto deadline = Clock::now() + timeout;
  for (int i = 0; i < 1000000; i++) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    pollOne(-1, 0, std::min(interval, remaining(deadline)));
  }
  return false;
}

::testing::AssertionResult waitForMetric(const WorkerProcess& w, const std::string& key,
                                         const std::function<bool(double)>& pred, Millis timeout) {
  std::string last = "(never read)";
  bool ok = waitFor(
      [&] {
        auto m = varz(w);
        if (!m.ok()) {
          last = m.error();
          return false;
        }
        auto it = m->find(key);
        if (it == m->end()) {
          last = "(absent)";
          return false;
        }
        std::ostringstream s;
        s << it->second;
        last = s.str();
        return pred(it->second);
      },
      timeout, Millis(25));
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "metric " << key << " did not reach the expected value within "
                                       << timeout.count() << " ms; last: " << last;
}

// ---------------------------------------------------------------------------
// DERP client helpers

client::ClientOptions clientOptions(const WorkerProcess& w, const crypto::NodePrivate& key) {
  client::ClientOptions o;
  o.key = key;
  o.timeout = Millis(10000);
  std::string port = std::to_string(w.port());
  if (w.tls()) {
    std::string host = w.tlsHostname().empty() ? "127.0.0.1" : w.tlsHostname();
    std::string urlHost = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    o.url = "https://" + urlHost + ":" + port + "/derp";
    o.dialAddr = (w.ip() == "::1" ? "[::1]:" : "127.0.0.1:") + port;
    o.caFile = w.caFile();
  } else {
    o.url = "http://" + std::string(w.ip() == "::1" ? "[::1]" : "127.0.0.1") + ":" + port + "/derp";
  }
  return o;
}

std::string runDerpdExpectingExit(const std::vector<std::string>& args, int* exitCode) {
  WorkerProcess p;
  auto r = p.start(args, binDir() + "/derpd");
  EXPECT_FALSE(r.ok()) << "derpd started although it should have failed";
  if (r.ok()) (void)p.stop(SIGTERM);
  std::optional<int> st = p.exitStatus();
  *exitCode = st ? *st : -1;
  return p.logText();
}

pid_t startedPid(const WorkerProcess& derpd, const std::string& role, int nth) {
  const std::string needle = "started " + role + " (pid ";
  std::string log = derpd.logText();
  int seen = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    if (++seen == nth) return pid_t(std::atol(log.c_str() + at + needle.size()));
  }
  return -1;
}

uint16_t stunPort(const WorkerProcess& d, int nth) {
  static const std::regex kServing("stun-worker\\[[0-9]+\\] info: serving STUN on 127\\.0\\.0\\.1:([0-9]+)");
  std::string log = d.logText();
  int seen = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), kServing), end; it != end; ++it) {
    if (++seen == nth) return uint16_t(std::stoi((*it)[1].str()));
  }
  return 0;
}

bool dialPairWithin(const WorkerProcess& w, std::unique_ptr<client::Client>& alice,
                    std::unique_ptr<client::Client>& bob, Millis timeout) {
  return waitFor(
      [&] {
        auto ra = dial(w, keys::alice());
        if (!ra.ok()) return false;
        auto rb = dial(w, keys::bob());
        if (!rb.ok()) return false;
        alice = std::move(ra).value();
        bob = std::move(rb).value();
        return true;
      },
      timeout);
}

Result<std::unique_ptr<client::Client>> dial(const WorkerProcess& w, const crypto::NodePrivate& key,
                                             const std::function<void(client::ClientOptions&)>& tweak) {
  auto o = clientOptions(w, key);
  if (tweak) tweak(o);
  return client::Client::connect(o);
}

namespace {
std::string shortHex(const crypto::NodePublic& k) { return k.toHex().substr(0, 8); }
}  // namespace

std::string describe(const client::Message& m) {
  struct V {
    std::string operator()(const client::RecvPacket& p) const {
      return "RecvPacket(src " + shortHex(p.src) + ", " + std::to_string(p.data.size()) + " bytes)";
    }
    std::string operator()(const client::PeerGone& p) const {
      return "PeerGone(" + shortHex(p.key) + ", reason " + std::to_string(int(p.reason)) + ")";
    }
    std::string operator()(const client::PeerPresent& p) const {
      return "PeerPresent(" + shortHex(p.info.key) + ", port " + std::to_string(p.info.port) +
             ", flags " + std::to_string(p.info.flags) + ")";
    }
    std::string operator()(const client::KeepAlive&) const { return "KeepAlive"; }
    std::string operator()(const client::Ping& p) const {
      return "Ping(" + toHex(ByteView(p.data.data(), 8)) + ")";
    }
    std::string operator()(const client::Pong& p) const {
      return "Pong(" + toHex(ByteView(p.data.data(), 8)) + ")";
    }
    std::string operator()(const client::Health& h) const { return "Health(" + h.text + ")"; }
    std::string operator()(const client::Restarting&) const { return "Restarting"; }
    std::string operator()(const client::ServerInfoMsg& s) const { return "ServerInfo(" + s.json + ")"; }
    std::string operator()(const client::OtherFrame& f) const {
      return "Frame(type " + std::to_string(f.type) + ", " + std::to_string(f.payload.size()) + " bytes)";
    }
  };
  return std::visit(V{}, m);
}

bool isTimeoutError(const std::string& err) { return lower(err).find("timeout") != std::string::npos; }

::testing::AssertionResult expectPacket(client::Client& c, const crypto::NodePublic& src, ByteView data,
                                        Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::string skipped;
  for (int i = 0; i < 100000; i++) {
    auto left = remaining(deadline);
    if (left.count() == 0) break;
    auto m = c.recv(left);
    if (!m.ok()) {
      return ::testing::AssertionFailure()
             << "no packet of " << data.size() << " bytes from " << shortHex(src) << ": " << m.error()
             << (skipped.empty() ? "" : "; skipped: " + skipped);
    }
    auto* p = std::get_if<client::RecvPacket>(&*m);
    if (!p) {
      if (skipped.size() < 2000) skipped += describe(*m) + " ";
      continue;
    }
    if (!(p->src == src)) {
      return ::testing::AssertionFailure() << "packet from " << shortHex(p->src) << ", expected from "
                                           << shortHex(src) << " (" << p->data.size() << " bytes)";
    }
    if (p->data.size() != data.size() || !std::equal(data.begin(), data.end(), p->data.begin())) {
      size_t at = 0;
      while (at < std::min(data.size(), p->data.size()) && data[at] == p->data[at]) at++;
      return ::testing::AssertionFailure() << "packet from " << shortHex(src) << " has " << p->data.size()
                                           << " bytes, expected " << data.size()
                                           << "; first difference at " << at;
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no packet from " << shortHex(src) << " within "
                                       << timeout.count() << " ms";
}

::testing::AssertionResult expectClosed(client::Client& c, Millis timeout, std::vector<client::Message>* seen) {
  auto deadline = Clock::now() + timeout;
  for (int i = 0; i < 100000; i++) {
    if (c.closed()) return ::testing::AssertionSuccess();
    auto left = remaining(deadline);
    if (left.count() == 0) break;
    auto m = c.recv(left);
    if (m.ok()) {
      if (seen) seen->push_back(std::move(*m));
      continue;
    }
    if (isTimeoutError(m.error())) break;
    return ::testing::AssertionSuccess();  // eof, reset or a refused frame: the stream is gone
  }
  if (c.closed()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "connection still open after " << timeout.count() << " ms";
}

::testing::AssertionResult expectQuiet(client::Client& c, Millis d,
                                       const std::function<bool(const client::Message&)>& unwanted) {
  auto deadline = Clock::now() + d;
  for (int i = 0; i < 100000; i++) {
    auto left = remaining(deadline);
    if (left.count() == 0) return ::testing::AssertionSuccess();
    auto m = c.recv(left);
    if (!m.ok()) {
      if (isTimeoutError(m.error())) return ::testing::AssertionSuccess();
      return ::testing::AssertionFailure() << "connection closed: " << m.error();
    }
    if (!unwanted || unwanted(*m)) {
      return ::testing::AssertionFailure() << "unexpected " << describe(*m);
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult pingPong(client::Client& c, const std::array<uint8_t, 8>& data, Millis timeout,
                                    std::vector<client::Message>* skipped) {
  auto s = c.ping(data);
  if (!s.ok()) return ::testing::AssertionFailure() << "ping: " << s.error();
  auto p = recvUntil<client::Pong>(
      c, timeout, [&](const client::Pong& pong) { return pong.data == data; }, skipped);
  if (!p.ok()) {
    return ::testing::AssertionFailure() << "no Pong(" << toHex(ByteView(data.data(), 8)) << "): " << p.error();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult exchange(client::Client& a, client::Client& b, ByteView data, Millis timeout) {
  auto s1 = a.sendPacket(b.publicKey(), data);
  if (!s1.ok()) return ::testing::AssertionFailure() << "send a->b: " << s1.error();
  auto r1 = expectPacket(b, a.publicKey(), data, timeout);
  if (!r1) return ::testing::AssertionFailure() << "a->b (" << data.size() << " bytes): " << r1.message();
  auto s2 = b.sendPacket(a.publicKey(), data);
  if (!s2.ok()) return ::testing::AssertionFailure() << "send b->a: " << s2.error();
  auto r2 = expectPacket(a, b.publicKey(), data, timeout);
  if (!r2) return ::testing::AssertionFailure() << "b->a (" << data.size() << " bytes): " << r2.message();
  return ::testing::AssertionSuccess();
}

void sendRefusedFrame(client::Client& c, ByteView frame) {
  auto r = c.sendRaw(frame);
  (void)r;
}

int localPort(const client::Client& c) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(c.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -1;
}

// ---------------------------------------------------------------------------
// Fixture

std::string WorkerTest::writeServerKeyFile() {
  std::string path = tmp_.file("derper.key");
  if (!writeFile(path, serverKeyFileContents(), 0600)) ADD_FAILURE() << "cannot write " << path;
  return path;
}

std::string WorkerTest::writeMeshKeyFile(std::string_view key) {
  std::string path = tmp_.file("mesh.key");
  if (!writeFile(path, std::string(key) + "\n", 0600)) ADD_FAILURE() << "cannot write " << path;
  return path;
}

std::vector<std::string> WorkerTest::buildArgs(const WorkerConfig& cfg, std::string* hostname,
                                               std::string* caFile) {
  std::vector<std::string> args = {"-a", cfg.listen};
  if (cfg.fixedKey) {
    args.insert(args.end(), {"-c", writeServerKeyFile()});
  } else {
    args.push_back("-dev");
  }
  if (cfg.mesh) args.insert(args.end(), {"-mesh-psk-file", writeMeshKeyFile()});
  if (cfg.mode != WorkerConfig::Mode::Plain) {
    std::string host = cfg.mode == WorkerConfig::Mode::TlsLocalhost ? "localhost" : "127.0.0.1";
    std::vector<std::string> sans = cfg.mode == WorkerConfig::Mode::TlsLocalhost
                                        ? std::vector<std::string>{"localhost", "127.0.0.1", "::1"}
                                        : std::vector<std::string>{"127.0.0.1"};
    std::string dir = tmp_.file("certs" + std::to_string(certSeq_++));
    ::mkdir(dir.c_str(), 0700);
    CertOptions co;
    co.leafSerial = cfg.leafSerial;
    auto certs = makeTestCerts(dir, host, sans, co);
    if (!certs.ok()) ADD_FAILURE() << "makeTestCerts: " << certs.error();
    if (hostname) *hostname = host;
    if (caFile && certs.ok()) *caFile = certs->caFile;
    args.insert(args.end(), {"-certmode", "manual", "-certdir", dir, "-hostname", host, "-http-port",
                             std::to_string(cfg.httpPort)});
  }
  args.insert(args.end(), {"--threads", std::to_string(cfg.threads), "--log-level", cfg.logLevel});
  args.insert(args.end(), cfg.extra.begin(), cfg.extra.end());
  return args;
}

WorkerProcess* WorkerTest::startWorker(const WorkerConfig& cfg) {
  std::string hostname, caFile;
  auto args = buildArgs(cfg, &hostname, &caFile);
  auto* w = startWorkerArgs(args);
  if (w) w->setTlsClientInfo(hostname, caFile);
  return w;
}

WorkerProcess* WorkerTest::startWorkerArgs(const std::vector<std::string>& args) {
  workers_.push_back(std::make_unique<WorkerProcess>());
  WorkerProcess* w = workers_.back().get();
  auto r = w->start(args);
  if (!r.ok()) {
    ADD_FAILURE() << "derp-worker start: " << r.error();
    return nullptr;
  }
  return w;
}

WorkerProcess* WorkerTest::startDerpd(const std::vector<std::string>& args) {
  workers_.push_back(std::make_unique<WorkerProcess>());
  WorkerProcess* w = workers_.back().get();
  auto r = w->start(args, binDir() + "/derpd");
  if (!r.ok()) {
    ADD_FAILURE() << "derpd start: " << r.error() << "\n" << w->logText();
    return nullptr;
  }
  // derp-worker serves (port 80, ACME challenges) before cert-agent has
  // handed it the certificate; with a manual one, a test may dial TLS at
  // once, so wait for it to be in service, or for derpd to give up (tests
  // of bad certificates): the test's own checks say which was wanted.
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if ((args[i] == "-certmode" || args[i] == "--certmode") && args[i + 1] == "manual") {
      waitFor([&] { return !w->running() || w->waitForLog("TLS certificate in service", Millis(0)); },
              Millis(10000));
    }
  }
  return w;
}

WorkerProcess* WorkerTest::startBinary(const std::string& binary, const std::vector<std::string>& args,
                                       const std::string& readyLine) {
  workers_.push_back(std::make_unique<WorkerProcess>());
  WorkerProcess* w = workers_.back().get();
  auto r = w->start(args, binDir() + "/" + binary, readyLine);
  if (!r.ok()) {
    ADD_FAILURE() << binary << " start: " << r.error();
    return nullptr;
  }
  return w;
}

std::vector<std::string> WorkerTest::derpdArgs() {
  std::string conf = tmp().file("derpd.conf");
  writeFile(conf, "# empty: defaults and flags only\n");
  std::vector<std::string> a = {"--config", conf, "--runtime-dir", tmp().file("run"), "-a", "127.0.0.1:0",
                                "-dev", "--threads", "2", "--log-level", "debug", "-stun-port", "0"};
  if (::geteuid() == 0) a.insert(a.end(), {"--user", "nobody", "--cert-user", "nobody"});
  return a;
}

std::vector<std::string> unexpectedErrorLines(const std::vector<std::string>& errorLines, const LogPolicy& policy) {
  static const char* const kSanitizer[] = {"ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                                           "WARNING: ThreadSanitizer"};
  // Signals no test provokes by accident: a crash, an abort, a seccomp kill.
  static const int kFatal[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSYS};
  static const std::regex kKilled(R"(killed by signal ([0-9]+))");
  std::vector<std::string> out;
  for (const std::string& line : errorLines) {
    bool sanitizer = false;
    for (const char* p : kSanitizer) sanitizer = sanitizer || line.find(p) != std::string::npos;
    if (sanitizer) {
      out.push_back(line + "   [a sanitizer report is never allowed]");
      continue;
    }
    std::smatch m;
    if (std::regex_search(line, m, kKilled)) {
      const int sig = std::stoi(m[1].str());
      const bool fatal = std::find(std::begin(kFatal), std::end(kFatal), sig) != std::end(kFatal);
      const bool provoked =
          std::find(policy.allowedSignals.begin(), policy.allowedSignals.end(), sig) != policy.allowedSignals.end();
      if (fatal && !provoked) {
        out.push_back(line + "   [a child died of signal " + std::to_string(sig) + ", which the test did not send]");
        continue;
      }
    }
    std::string_view message = line;
    for (std::string_view tag : {std::string_view("] error: "), std::string_view("] critical: ")}) {
      if (auto at = message.find(tag); at != std::string_view::npos) {
        message.remove_prefix(at + tag.size());
        break;
      }
    }
    bool allowed = false;
    for (const std::string& a : policy.allowances) allowed = allowed || message.find(a) != std::string_view::npos;
    if (!allowed) out.push_back(line);
  }
  return out;
}

::testing::AssertionResult noSanitizerReport(const std::string& output, const std::string& what) {
  for (const char* p : {"ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer"}) {
    if (const size_t at = output.find(p); at != std::string::npos) {
      return ::testing::AssertionFailure() << what << ": a sanitizer report:\n"
                                           << output.substr(output.rfind('\n', at) == std::string::npos ? 0 : output.rfind('\n', at) + 1, 2000);
    }
  }
  return ::testing::AssertionSuccess();
}

void WorkerTest::TearDown() {
  for (auto& w : workers_) {
    if (w->pid() <= 0) continue;
    if (w->running()) {
      auto r = w->stop(SIGTERM);
      EXPECT_TRUE(r.ok()) << r.error();
      if (r.ok()) {
        EXPECT_EQ(*r, 0) << "derp-worker exit status after SIGTERM";
      }
    } else if (!w->stopRequested() && !w->exitExpected()) {
      ADD_FAILURE() << "derp-worker (pid " << w->pid() << ") exited on its own during the test, status "
                    << w->exitStatus().value_or(-1);
    }
    std::string unexpected;
    for (const std::string& line : unexpectedErrorLines(w->errorLines(), policy_)) unexpected += "  " + line + "\n";
    EXPECT_TRUE(unexpected.empty()) << "error lines in the derp-worker log:\n" << unexpected;
    if (HasFailure()) {
      // DERPD_TEST_LOG_LINES: more of it (a sanitizer report can be longer).
      const char* env = std::getenv("DERPD_TEST_LOG_LINES");
      const int lines = env && std::atoi(env) > 0 ? std::atoi(env) : 80;
      std::fprintf(stderr, "--- derp-worker pid %d log (last %d lines of %s) ---\n%s--- end of log ---\n",
                   static_cast<int>(w->pid()), lines, w->logPath().c_str(), tailLines(w->logText(), lines).c_str());
    }
  }
}

}  // namespace derpd::test
