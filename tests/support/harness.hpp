// Integration-test harness: starts the real derp-worker binary in a temp dir
// on 127.0.0.1 with ports from port 0, watches its log, talks raw HTTP/TLS to
// it, reads /debug/varz, makes a throwaway test CA, and wraps the DERP client
// library with gtest-friendly helpers. Linked only into
// derpd_integration_tests (unprivileged test process).
//
// Rules kept everywhere in here: no fixed ports, no sleeps used as
// synchronisation, every wait bounded in time and every loop in count.
#pragma once

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <initializer_list>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/client/derp_client.hpp"
#include "common/crypto/keys.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::test {

using Millis = std::chrono::milliseconds;

// Default budget for "this should happen soon" (a packet arriving, a close).
inline constexpr Millis kIoTimeout{5000};

// ---------------------------------------------------------------------------
// Files and directories

// A fresh directory (mkdtemp under $TMPDIR or /tmp), removed recursively when
// destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

bool writeFile(const std::string& path, std::string_view data, mode_t mode = 0644);
std::optional<std::string> readFile(const std::string& path);

// ---------------------------------------------------------------------------
// Fixed keys and values from tests/vectors/README.md §0.

namespace keys {
crypto::NodePrivate server();
crypto::NodePrivate alice();
crypto::NodePrivate bob();
crypto::NodePrivate carol();
crypto::NodePrivate prober();
crypto::NodePrivate mesh();
crypto::NodePrivate fast();
crypto::NodePrivate ws1();
crypto::NodePrivate ws2();
crypto::NodePrivate absent();
crypto::NodePrivate fwdsrc();
crypto::NodePrivate odd();
crypto::NodePublic serverPublic();  // parsed from kServerPublicHex, independent of X25519
}  // namespace keys

inline constexpr const char* kServerPrivateHex =
    "78719ff9130931263ff58f3e315ca71a4726b7fac797b4e1efbbdd9400d42a62";
inline constexpr const char* kServerPublicHex =
    "443ecfd4c12b5426ed8f4f66816bd54033739805f82088ceafb022a911b7aa39";
inline constexpr const char* kMeshKey =
    "d5c9c87c76f24ca6f7e4b0169a455714d3eb90a83520caeb2c5143ea1163504d";

// derper's -c file for the vectors' server key.
std::string serverKeyFileContents();
// The 70-byte disco-looking packet of README §0.
Bytes discoPacket();
// n bytes of a deterministic pattern that differs by seed.
Bytes patternBytes(size_t n, uint8_t seed);
// One DERP frame built by hand: type(1) || len(4, BE) || payload. The
// payload length is written as given (tests build malformed frames).
Bytes rawFrame(uint8_t type, ByteView payload);
Bytes rawFrameHeader(uint8_t type, uint32_t len);
Bytes concat(std::initializer_list<ByteView> parts);

// ---------------------------------------------------------------------------
// The derp-worker process

// Path of the binary: $DERPD_TEST_BIN_DIR/derp-worker if set, else
// DERPD_BIN_DIR/derp-worker.
std::string workerBinary();
// The directory of the binaries under test ($DERPD_TEST_BIN_DIR or DERPD_BIN_DIR).
std::string binDir();

class WorkerProcess {
 public:
  static constexpr Millis kStartDeadline{10000};
  static constexpr Millis kStopDeadline{10000};

  WorkerProcess();
  ~WorkerProcess();  // SIGKILLs a still-running process
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Forks and execs the binary with `args` (argv[1..]), stdout and stderr to
  // a log file in the process's own temp dir. Returns once the log has the
  // "serving DERP on <url>" line (and, in TLS mode with -http-port >= 0, the
  // "serving port-80 HTTP on <url>" line), or fails after kStartDeadline or
  // when the process exits first.
  // `binary` overrides the executable (default: workerBinary()).
  // A non-empty `readyLine` replaces the DERP readiness rule: start returns
  // once a complete log line contains it; url() is then the token after it
  // and port() that token's trailing ":<port>" (0 when it has none). E.g.
  // "serving STUN on " for stun-worker.
  Result<void> start(const std::vector<std::string>& args, const std::string& binary = "",
                     const std::string& readyLine = "");
  // Sends `sig` (SIGTERM) and waits for exit; after kStopDeadline sends
  // SIGKILL and fails. Returns the exit code (or 128+signal when killed).
  Result<int> stop(int sig = SIGTERM);
  // SIGKILL and reap.
  void kill9();
  // True while the process has not exited (reaps it when it has).
  bool running();
  // Exit code (or 128+signal) once reaped.
  std::optional<int> exitStatus() const { return exitStatus_; }
  // True when the exit came from stop() or kill9().
  bool stopRequested() const { return stopRequested_; }
  // The test provokes the process's own exit: TearDown does not fail on it.
  void expectExit() { exitExpected_ = true; }
  bool exitExpected() const { return exitExpected_; }

  pid_t pid() const { return pid_; }
  const std::string& logPath() const { return logPath_; }
  std::string logText() const;
  // Lines with "] error: ", "] critical: " or a sanitizer report.
  std::vector<std::string> errorLines() const;
  // Waits (bounded) until the log contains `needle`.
  bool waitForLog(std::string_view needle, Millis timeout) const;

  const std::string& url() const { return url_; }  // as logged
  // The address to dial: the host of -a ("127.0.0.1" or "::1").
  const std::string& ip() const { return ip_; }
  uint16_t port() const { return port_; }
  int port80() const { return port80_; }  // -1 when there is no port-80 listener
  bool tls() const { return tls_; }
  const std::vector<std::string>& args() const { return args_; }

  // How clients should reach a TLS worker: the name in URLs (SNI unless it is
  // an IP literal) and the CA file to trust. Set by the fixture.
  void setTlsClientInfo(std::string hostname, std::string caFile) {
    tlsHostname_ = std::move(hostname);
    caFile_ = std::move(caFile);
  }
  const std::string& tlsHostname() const { return tlsHostname_; }
  const std::string& caFile() const { return caFile_; }

 private:
  TempDir dir_;
  std::string logPath_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  std::optional<int> exitStatus_;
  bool stopRequested_ = false;
  bool exitExpected_ = false;
  std::string url_;
  uint16_t port_ = 0;
  int port80_ = -1;
  bool tls_ = false;
  std::string ip_ = "127.0.0.1";
  std::string tlsHostname_;
  std::string caFile_;
};

// Runs binDir()/derpd with `args`, expecting it to exit before it serves
// (a failed check at start); returns its output and sets *exitCode (-1 when
// it did not exit). A derpd that serves instead is a test failure.
std::string runDerpdExpectingExit(const std::vector<std::string>& args, int* exitCode);

// The pid derpd logged ("started <role> (pid N)") for its n-th start of
// `role` (1-based), or -1.
pid_t startedPid(const WorkerProcess& derpd, const std::string& role, int nth);

// The 127.0.0.1 STUN port the n-th start of stun-worker logged under derpd
// ("serving STUN on 127.0.0.1:PORT"), or 0.
uint16_t stunPort(const WorkerProcess& derpd, int nth = 1);

// The value of a Go-syntax flag in args ("-x v", "-x=v", "--x v", "--x=v").
std::optional<std::string> flagValue(const std::vector<std::string>& args, std::string_view name);

// ---------------------------------------------------------------------------
// Test CA (OpenSSL 3 API)

struct CertOptions {
  long leafSerial = 0x1d3a5;
  long caSerial = 0x1ca;
  int validDays = 30;
};

struct TestCerts {
  std::string certFile;  // DIR/<hostname>.crt: leaf then CA
  std::string keyFile;   // DIR/<hostname>.key
  std::string caFile;    // DIR/ca.crt
};

// A P-256 CA (CA:TRUE) and a P-256 leaf for `hostname` with `sans` as DNS or
// IP SANs (an entry that parses as an IP address becomes an IP SAN).
Result<TestCerts> makeTestCerts(const std::string& dir, const std::string& hostname,
                                const std::vector<std::string>& sans,
                                const CertOptions& opts = {});

// ---------------------------------------------------------------------------
// Raw TCP / TLS connections

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

struct TlsClientOptions {
  std::string caFile;      // verify against this CA; empty = no verification
  std::string serverName;  // SNI (DNS names only) and verify name
  int minVersion = 0;      // TLS1_2_VERSION ...; 0 = library default
  int maxVersion = 0;
  std::vector<std::string> alpn;  // offered protocols; empty = no ALPN
};

struct RawFrame {
  uint8_t type = 0;
  Bytes payload;
};

// A non-blocking socket to 127.0.0.1 (or ::1), optionally TLS, with bounded
// reads and writes.
class RawConn {
 public:
  enum class ReadStatus { Data, Timeout, Closed, Error };

  static Result<std::unique_ptr<RawConn>> dial(uint16_t port, const TlsClientOptions* tls = nullptr,
                                               const std::string& ip = "127.0.0.1",
                                               Millis timeout = kIoTimeout);
  ~RawConn();
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  // Writes everything (bounded by timeout). Fails on a reset/closed peer.
  Result<void> sendAll(ByteView data, Millis timeout = kIoTimeout);
  Result<void> sendAll(std::string_view data, Millis timeout = kIoTimeout) {
    return sendAll(asBytes(data), timeout);
  }
  // Appends whatever arrives within `timeout` (at least one byte, up to a
  // buffer's worth) to out. Data already buffered by readFrame is returned first.
  ReadStatus readSome(std::string& out, Millis timeout);
  // Reads until the peer closes or `idle` passes without a byte, at most
  // `total` overall. Returns the bytes; *closed says whether the peer closed.
  std::string readUntilIdle(Millis idle, Millis total, bool* closed);
  // The next whole DERP frame (payloads up to 2 MiB), within timeout.
  Result<RawFrame> readFrame(Millis timeout);
  // Exactly n bytes within timeout.
  Result<std::string> readExact(size_t n, Millis timeout);
  // An HTTP head up to and including the blank line (at most 64 KiB); bytes
  // after it stay buffered for the next read.
  Result<std::string> readHttpHead(Millis timeout);
  // Waits for EOF/reset, discarding data; true if it came within timeout.
  bool waitClosed(Millis timeout);

  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }
  // TLS only: the chain exactly as the server sent it (leaf first).
  std::vector<X509Ptr> peerChain() const;
  std::string tlsVersion() const;  // "TLSv1.3", "" when plain
  std::string alpnSelected() const;

 private:
  RawConn() = default;
  ReadStatus readRaw(std::string& out, Millis timeout);
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string pending_;  // read but not yet handed out
};

// ---------------------------------------------------------------------------
// HTTP

struct RawResponse {
  std::string data;           // every byte received
  bool serverClosed = false;  // the server closed (FIN or reset)
  std::string error;          // connect/TLS/send failure
};

// Connects to 127.0.0.1:port (TLS if `tls`, trusting caFile and sending
// serverName as SNI when it is a DNS name), sends `request` and returns every
// byte received until the server closes or 1 s after the last byte (at most
// 15 s in all).
RawResponse rawHttp(uint16_t port, std::string_view request, bool tls = false,
                    const std::string& caFile = "", const std::string& serverName = "",
                    Millis idle = Millis(1000));

struct HttpResponse {
  std::string statusLine;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // wire order
  std::string rawBody;  // bytes after the head as framed (chunked kept)
  std::string body;     // de-chunked
  // First header value with this name (case-insensitive).
  std::optional<std::string> header(std::string_view name) const;
};

// Parses one response at the start of data. `headRequest`: no body follows.
// Returns nullopt when incomplete/invalid; *consumed = bytes used. Without
// Content-Length or chunking the body runs to the end of data.
std::optional<HttpResponse> parseHttpResponse(std::string_view data, bool headRequest = false,
                                              size_t* consumed = nullptr);

// Compares two raw HTTP responses byte for byte except the value of the Date
// header, which must be an IMF-fixdate in `got`.
::testing::AssertionResult httpSameExceptDate(const std::string& got, const std::string& want);

// GET path with "Connection: close" from 127.0.0.1 to the worker (TLS as the
// worker is configured). Stops reading once a whole response arrived.
Result<HttpResponse> httpGet(const WorkerProcess& w, const std::string& path,
                             const std::vector<std::pair<std::string, std::string>>& extraHeaders = {});
Result<HttpResponse> httpGet(uint16_t port, const std::string& path);

// Prometheus text → "name{labels}" → value (comments skipped).
using Metrics = std::map<std::string, double>;
Metrics parsePrometheus(std::string_view text);
Result<Metrics> varz(const WorkerProcess& w);
Result<Metrics> varz(uint16_t port);
// Value of one metric; nullopt when absent or when /debug/varz failed.
std::optional<double> metric(const WorkerProcess& w, const std::string& key);

// A free loopback TCP port: bound on port 0, read, closed (-1 on failure).
// For the few cases where a port must be known before the server binds it
// (Pebble's config, -mesh-with lists); everything else binds port 0 itself.
// With SOCK_DGRAM: a UDP port nothing listens on once this returns.
int reserveLoopbackPort(int type = SOCK_STREAM);

// VmRSS of a process in bytes (-1 when unreadable) and its open descriptors
// (-1 when unreadable), from /proc.
int64_t processRssBytes(pid_t pid);
int processFdCount(pid_t pid);

// Polls pred every `interval` until it is true or `timeout` passes.
bool waitFor(const std::function<bool()>& pred, Millis timeout, Millis interval = Millis(20));

// Waits until metric `key` satisfies pred; the failure message carries the
// last value seen.
::testing::AssertionResult waitForMetric(const WorkerProcess& w, const std::string& key,
                                         const std::function<bool(double)>& pred,
                                         Millis timeout = kIoTimeout);

// ---------------------------------------------------------------------------
// DERP client helpers

// Options to reach worker w with key: http(s)://<host>:<port>/derp, dialling
// 127.0.0.1 and trusting the worker's test CA when it is TLS.
client::ClientOptions clientOptions(const WorkerProcess& w, const crypto::NodePrivate& key);
Result<std::unique_ptr<client::Client>> dial(
    const WorkerProcess& w, const crypto::NodePrivate& key,
    const std::function<void(client::ClientOptions&)>& tweak = nullptr);

// Retries until alice and bob are both connected to w (e.g. while a restarted
// worker comes up), or `timeout` passes.
bool dialPairWithin(const WorkerProcess& w, std::unique_ptr<client::Client>& alice,
                    std::unique_ptr<client::Client>& bob, Millis timeout);

std::string describe(const client::Message& m);
bool isTimeoutError(const std::string& err);

// The next RecvPacket (other messages skipped) must come from src and carry data.
::testing::AssertionResult expectPacket(client::Client& c, const crypto::NodePublic& src,
                                        ByteView data, Millis timeout = kIoTimeout);
// The server must close c within timeout. Messages read meanwhile go to *seen.
::testing::AssertionResult expectClosed(client::Client& c, Millis timeout = kIoTimeout,
                                        std::vector<client::Message>* seen = nullptr);
// Nothing matching `unwanted` (any message when null) may arrive and the
// connection must stay open for `d`.
::testing::AssertionResult expectQuiet(client::Client& c, Millis d,
                                       const std::function<bool(const client::Message&)>& unwanted = nullptr);
// Sends Ping(data) and waits for Pong(data), skipping other messages
// (appended to *skipped).
::testing::AssertionResult pingPong(client::Client& c, const std::array<uint8_t, 8>& data,
                                    Millis timeout = kIoTimeout,
                                    std::vector<client::Message>* skipped = nullptr);
// a -> b and b -> a with `data`.
::testing::AssertionResult exchange(client::Client& a, client::Client& b, ByteView data,
                                    Millis timeout = kIoTimeout);
// Writes a frame the server is expected to refuse. The server may close the
// connection as soon as it has read the header, so a write error is fine.
void sendRefusedFrame(client::Client& c, ByteView frame);
// Local TCP port of the client's socket (what the server sees as its port).
int localPort(const client::Client& c);

// Waits for a message of type T (for which pred holds, when given), skipping
// others (appended to *skipped). Errors on timeout or close.
template <typename T>
Result<T> recvUntil(client::Client& c, Millis timeout,
                    const std::function<bool(const T&)>& pred = nullptr,
                    std::vector<client::Message>* skipped = nullptr) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int i = 0; i < 100000; i++) {
    auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto m = c.recv(left);
    if (!m.ok()) return makeError("recv: " + m.error());
    if (auto* t = std::get_if<T>(&*m)) {
      if (!pred || pred(*t)) return std::move(*t);
    }
    if (skipped) skipped->push_back(std::move(*m));
  }
  return makeError("timeout waiting for message");
}

// ---------------------------------------------------------------------------
// Log policing (tests/README.md): which error-level lines of a log a test
// did not provoke on purpose.
//
// - An allowance matches the message of an error line (after "] error: " or
//   "] critical: "), never the role and pid before it: "mesh" does not admit
//   every mesh-helper line, "cert-agent" not every line cert-agent logs.
// - A sanitizer report (ASan, UBSan "runtime error:", LSan, TSan) is never
//   allowed.
// - A child killed by SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL or SIGSYS
//   ("killed by signal N") is never allowed unless the test provoked that
//   signal (allowedSignals), whatever the allowances say.
struct LogPolicy {
  std::vector<std::string> allowances;
  std::vector<int> allowedSignals;
};
// The lines of `errorLines` (WorkerProcess::errorLines()) the policy does
// not admit, each with why.
std::vector<std::string> unexpectedErrorLines(const std::vector<std::string>& errorLines, const LogPolicy& policy);
// For the output of a process a test ran to completion itself (derpd-probe
// -once, derpd-bench, stun-client): a sanitizer report in it fails the test.
::testing::AssertionResult noSanitizerReport(const std::string& output, const std::string& what);

// ---------------------------------------------------------------------------
// gtest fixture

struct WorkerConfig {
  enum class Mode { Plain, TlsLocalhost, TlsIp };
  Mode mode = Mode::Plain;
  bool fixedKey = true;  // -c with the vectors' server key (else -dev)
  bool mesh = false;     // -mesh-psk-file with kMeshKey
  int threads = 2;
  std::string listen = "127.0.0.1:0";  // -a
  int httpPort = -1;     // TLS mode only
  long leafSerial = CertOptions{}.leafSerial;
  std::string logLevel = "debug";
  std::vector<std::string> extra;
};

// Starts workers, stops every one at TearDown and expects no error lines in
// their logs except those whitelisted with allowErrorLine().
class WorkerTest : public ::testing::Test {
 protected:
  void TearDown() override;

  // nullptr (with a recorded failure) when the worker does not become ready.
  WorkerProcess* startWorker(const WorkerConfig& cfg);
  WorkerProcess* startWorkerArgs(const std::vector<std::string>& args);
  // Starts the supervisor (binDir()/derpd) with `args`; ready when its
  // derp-worker child logs "serving DERP on". Stopped at TearDown like workers.
  WorkerProcess* startDerpd(const std::vector<std::string>& args);
  // Starts binDir()/<binary> (e.g. "stun-worker") with `args`; ready when its
  // log has `readyLine` (see WorkerProcess::start). Stopped at TearDown like workers.
  WorkerProcess* startBinary(const std::string& binary, const std::vector<std::string>& args,
                             const std::string& readyLine);
  // derpd arguments for a test: an empty --config, --runtime-dir in tmp(),
  // --user nobody when root, -dev on 127.0.0.1:0, STUN on a port from port 0,
  // two loops, debug logs.
  std::vector<std::string> derpdArgs();
  // The argument list startWorker() uses for cfg (creates key/cert files).
  std::vector<std::string> buildArgs(const WorkerConfig& cfg, std::string* hostname,
                                     std::string* caFile);
  // Admits error lines whose message contains `substring` (see LogPolicy).
  void allowErrorLine(std::string substring) { policy_.allowances.push_back(std::move(substring)); }
  // The test kills a child with `sig` (e.g. SIGSYS from a seccomp filter) on
  // purpose: "killed by signal <sig>" lines may be allowed.
  void allowSignal(int sig) { policy_.allowedSignals.push_back(sig); }
  TempDir& tmp() { return tmp_; }
  std::string writeServerKeyFile();
  std::string writeMeshKeyFile(std::string_view key = kMeshKey);

 private:
  TempDir tmp_;
  std::vector<std::unique_ptr<WorkerProcess>> workers_;
  LogPolicy policy_;
  int certSeq_ = 0;
};

}  // namespace derpd::test

// Connects a client or fails the test: declares `std::unique_ptr<Client> var`.
#define DERPD_ASSERT_CONNECT(var, expr)                                         \
  auto var##_result = (expr);                                                   \
  ASSERT_TRUE(var##_result.ok()) << #var " connect: " << var##_result.error();  \
  std::unique_ptr<::derpd::client::Client> var = std::move(var##_result).value()
