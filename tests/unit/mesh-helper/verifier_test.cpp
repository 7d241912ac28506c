// mesh-helper's Verifier against the fakes (tests/support/admission_fakes)
// and a few scripted servers for what the fakes do not do (odd framing,
// trickling, TLS). Timeouts are 300 ms so the failure paths stay quick; no
// sleeps are used for synchronisation and every port comes from port 0.
#include "verifier.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/tls/certs.hpp"
#include "scripted_server.hpp"
#include "support/admission_fakes.hpp"

namespace derpd::mesh {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::FakeAdmissionServer;
using test::FakeLocalApi;
using Mode = FakeAdmissionServer::Mode;

constexpr auto kShort = 300ms;
// Upper bound for a check that must give up at kShort: generous for
// sanitizer builds, far below POCO's per-operation behaviour it guards.
constexpr auto kShortBound = 3s;
constexpr char kSource[] = "192.0.2.7";

// The fakes and POCO write to sockets a peer may have closed.
const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

crypto::NodePublic key(uint8_t seed) {
  std::array<uint8_t, crypto::kKeyLen> raw{};
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = uint8_t(seed + i);
  return crypto::NodePublic::fromRaw(ByteView(raw.data(), raw.size()));
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "verifier-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A loopback port nobody listens on: bound, then closed.
int closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  ::close(fd);
  return ntohs(sa.sin_port);
}

VerifierOptions urlOptions(const std::string& url, bool failOpen) {
  VerifierOptions o;
  o.url = url;
  o.failOpen = failOpen;
  o.timeout = kShort;
  return o;
}

VerifierOptions localApiOptions(const std::string& socketPath) {
  VerifierOptions o;
  o.localApi = true;
  o.localApiSocket = socketPath;
  o.timeout = kShort;
  return o;
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// ------------------------------------------------------------------- URL --

TEST(VerifierUrl, AllowedByTheController) {
  FakeAdmissionServer fake(Mode::Allow);
  for (bool failOpen : {true, false}) {
    const Verdict v = Verifier(urlOptions(fake.url(), failOpen)).check(key(1), kSource);
    EXPECT_TRUE(v.allow) << v.reason;
    EXPECT_EQ(v.reason, "");
  }
  EXPECT_EQ(fake.requestCount(), 2u);
}

TEST(VerifierUrl, RequestIsWhatDerperSends) {
  FakeAdmissionServer fake(Mode::Allow);
  ASSERT_TRUE(Verifier(urlOptions(fake.url(), false)).checkUrl(key(1), "2001:db8::1").allow);
  ASSERT_TRUE(fake.waitForRequests(1, 5s));
  const auto req = fake.requests().at(0);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/admit");
  EXPECT_EQ(req.body, "{\"NodePublic\":\"" + key(1).toText() + "\",\"Source\":\"2001:db8::1\"}");
  EXPECT_EQ(req.header("Content-Type"), nullptr);
  ASSERT_NE(req.header("Content-Length"), nullptr);
  EXPECT_EQ(*req.header("Content-Length"), std::to_string(req.body.size()));
  ASSERT_NE(req.header("Host"), nullptr);
  EXPECT_EQ(*req.header("Host"), "127.0.0.1:" + std::to_string(fake.port()));
  ASSERT_NE(req.header("User-Agent"), nullptr);
  EXPECT_EQ(*req.header("User-Agent"), "Go-http-client/1.1");
}

TEST(VerifierUrl, DeniedByTheControllerWhateverFailOpen) {
  FakeAdmissionServer fake(Mode::Deny);
  for (bool failOpen : {true, false}) {
    const Verdict v = Verifier(urlOptions(fake.url(), failOpen)).check(key(2), kSource);
    EXPECT_FALSE(v.allow);
    EXPECT_EQ(v.reason, "admission controller: " + key(2).toText() + "/" + kSource + " not allowed");
  }
}

TEST(VerifierUrl, GarbageAnswerIsDenied) {
  FakeAdmissionServer fake(Mode::Garbage);
  for (bool failOpen : {true, false}) {
    const Verdict v = Verifier(urlOptions(fake.url(), failOpen)).check(key(3), kSource);
    EXPECT_FALSE(v.allow);
    EXPECT_EQ(v.reason, "admission controller: bad answer: invalid character 'o' in literal null (expecting 'u')");
  }
}

TEST(VerifierUrl, Non200IsDeniedWhateverFailOpen) {
  FakeAdmissionServer fake(Mode::Status500);
  for (bool failOpen : {true, false}) {
    const Verdict v = Verifier(urlOptions(fake.url(), failOpen)).check(key(4), kSource);
    EXPECT_FALSE(v.allow);
    EXPECT_EQ(v.reason, "admission controller: 500 Internal Server Error");
  }
}

TEST(VerifierUrl, ModeChangesAtRuntime) {
  FakeAdmissionServer fake(Mode::Deny);
  const Verifier verifier(urlOptions(fake.url(), false));
  EXPECT_FALSE(verifier.check(key(5), kSource).allow);
  fake.setMode(Mode::Allow);
  EXPECT_TRUE(verifier.check(key(5), kSource).allow);
  EXPECT_EQ(fake.requestCount(), 2u);
}

TEST(VerifierUrl, HangingControllerTimesOut) {
  FakeAdmissionServer fake(Mode::Hang);
  for (bool failOpen : {true, false}) {
    const auto start = Clock::now();
    const Verdict v = Verifier(urlOptions(fake.url(), failOpen)).check(key(6), kSource);
    EXPECT_LT(Clock::now() - start, kShortBound);
    EXPECT_EQ(v.allow, failOpen) << v.reason;
    if (failOpen) {
      EXPECT_EQ(v.reason, "admission controller unreachable; allowing client " + key(6).toText());
    } else {
      EXPECT_EQ(v.reason, "Post \"" + fake.url() + "\": context deadline exceeded");
    }
  }
  EXPECT_TRUE(fake.waitForRequests(2, 5s));
}

TEST(VerifierUrl, ConnectionRefused) {
  const std::string url = "http://127.0.0.1:" + std::to_string(closedPort()) + "/admit";
  const Verdict open = Verifier(urlOptions(url, true)).check(key(7), kSource);
  EXPECT_TRUE(open.allow);
  EXPECT_EQ(open.reason, "admission controller unreachable; allowing client " + key(7).toText());
  const Verdict closed = Verifier(urlOptions(url, false)).check(key(7), kSource);
  EXPECT_FALSE(closed.allow);
  EXPECT_TRUE(contains(closed.reason, "Post \"" + url + "\": dial tcp 127.0.0.1:")) << closed.reason;
  EXPECT_TRUE(contains(closed.reason, "refused")) << closed.reason;
}

TEST(VerifierUrl, TricklingServerCannotStretchTheTimeout) {
  // A head that never ends, one byte per 20 ms: each receive succeeds well
  // within POCO's per-operation timeout, so only the overall deadline stops it.
  test::ScriptedServer server(test::ScriptedServer::tcp(), "HTTP/1.1 200 OK\r\nX-Slow: " + std::string(100000, 'a'),
                              20ms);
  for (bool failOpen : {true, false}) {
    const auto start = Clock::now();
    const Verdict v = Verifier(urlOptions(server.url(), failOpen)).check(key(8), kSource);
    EXPECT_LT(Clock::now() - start, kShortBound);
    EXPECT_EQ(v.allow, failOpen) << v.reason;
    if (!failOpen) {
      EXPECT_TRUE(contains(v.reason, "context deadline exceeded")) << v.reason;
    }
  }
}

TEST(VerifierUrl, TricklingBodyIsABadAnswer) {
  // The head arrives; the body then never completes: a decode error, which
  // fail-open does not cover.
  test::ScriptedServer server(test::ScriptedServer::tcp(),
                              "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{\"Allow\":true,\"pad\":\"" +
                                  std::string(100000, 'a'),
                              20ms, /*trickleFrom=*/60);
  const auto start = Clock::now();
  const Verdict v = Verifier(urlOptions(server.url(), true)).check(key(8), kSource);
  EXPECT_LT(Clock::now() - start, kShortBound);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "admission controller: bad answer: context deadline exceeded");
}

TEST(VerifierUrl, AnswerCompleteBeforeTheBodyEndsIsEnough) {
  // Go's decoder stops after the first value; the rest never has to arrive.
  test::ScriptedServer server(test::ScriptedServer::tcp(),
                              "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{\"Allow\":true} ", 0ms,
                              /*trickleFrom=*/0, /*holdOpen=*/true);
  const Verdict v = Verifier(urlOptions(server.url(), false)).check(key(9), kSource);
  EXPECT_TRUE(v.allow) << v.reason;
}

TEST(VerifierUrl, ChunkedAnswerAndTrailingBytes) {
  test::ScriptedServer server(test::ScriptedServer::tcp(),
                              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\n{\"All\r\n9\r\now\":true}\r\n5\r\n junk\r\n0\r\n\r\n",
                              0ms);
  const Verdict v = Verifier(urlOptions(server.url(), false)).check(key(9), kSource);
  EXPECT_TRUE(v.allow) << v.reason;
}

TEST(VerifierUrl, AnswerCutShortIsABadAnswer) {
  test::ScriptedServer server(test::ScriptedServer::tcp(),
                              "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"Allow\":tr", 0ms);
  const Verdict v = Verifier(urlOptions(server.url(), true)).check(key(9), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "admission controller: bad answer: unexpected EOF");
}

TEST(VerifierUrl, ClosedWithoutAnswerIsATransportError) {
  test::ScriptedServer server(test::ScriptedServer::tcp(), "", 0ms);
  EXPECT_TRUE(Verifier(urlOptions(server.url(), true)).check(key(9), kSource).allow);
  const Verdict v = Verifier(urlOptions(server.url(), false)).check(key(9), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "Post \"" + server.url() + "\": ")) << v.reason;
}

TEST(VerifierUrl, TlsFailureFollowsFailOpen) {
  // https:// to the plain-HTTP fake: the handshake fails.
  FakeAdmissionServer fake(Mode::Allow);
  const std::string url = "https://127.0.0.1:" + std::to_string(fake.port()) + "/admit";
  const Verdict open = Verifier(urlOptions(url, true)).check(key(10), kSource);
  EXPECT_TRUE(open.allow);
  EXPECT_EQ(open.reason, "admission controller unreachable; allowing client " + key(10).toText());
  const Verdict closed = Verifier(urlOptions(url, false)).check(key(10), kSource);
  EXPECT_FALSE(closed.allow);
  EXPECT_TRUE(contains(closed.reason, "Post \"" + url + "\": ")) << closed.reason;
  EXPECT_EQ(fake.requestCount(), 0u);
}

class VerifierTls : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    auto bundle = tls::makeSelfSigned("127.0.0.1", now - 60);
    ASSERT_TRUE(bundle.ok()) << bundle.error();
    bundle_ = *bundle;
    caFile_ = dir_.file("ca.pem");
    std::ofstream(caFile_) << bundle_.chainPem;
  }
  TempDir dir_;
  tls::CertBundle bundle_;
  std::string caFile_;
};

TEST_F(VerifierTls, TrustedCertificateWorks) {
  test::ScriptedServer server(test::ScriptedServer::tcp(&bundle_),
                              "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"Allow\":true}", 0ms);
  VerifierOptions o = urlOptions(server.url(), false);
  o.caFile = caFile_;
  const Verdict v = Verifier(o).check(key(11), kSource);
  EXPECT_TRUE(v.allow) << v.reason;
  EXPECT_TRUE(contains(server.request(), "POST /admit HTTP/1.1\r\n")) << server.request();
}

TEST_F(VerifierTls, UntrustedCertificateIsATransportError) {
  test::ScriptedServer server(test::ScriptedServer::tcp(&bundle_),
                              "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"Allow\":true}", 0ms);
  const Verdict v = Verifier(urlOptions(server.url(), false)).check(key(11), kSource);  // system roots
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "Post \"" + server.url() + "\": ")) << v.reason;
  EXPECT_TRUE(contains(v.reason, "self-signed") || contains(v.reason, "self signed")) << v.reason;
  EXPECT_TRUE(Verifier(urlOptions(server.url(), true)).check(key(11), kSource).allow);
}

TEST_F(VerifierTls, MissingCaFileFollowsFailOpen) {
  VerifierOptions o = urlOptions("https://127.0.0.1:1/admit", false);
  o.caFile = dir_.file("missing.pem");
  const Verdict v = Verifier(o).check(key(12), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "TLS setup")) << v.reason;
  o.failOpen = true;
  EXPECT_TRUE(Verifier(o).check(key(12), kSource).allow);
}

TEST(VerifierUrl, UnparsableUrlIsDeniedEvenFailOpen) {
  const Verdict v = Verifier(urlOptions("http://127.0.0.1:abc/admit", true)).check(key(13), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "parse")) << v.reason;
  // An unknown scheme is http.Client.Do's error: fail-open applies.
  EXPECT_TRUE(Verifier(urlOptions("ftp://127.0.0.1/admit", true)).check(key(13), kSource).allow);
  const Verdict ftp = Verifier(urlOptions("ftp://127.0.0.1/admit", false)).check(key(13), kSource);
  EXPECT_FALSE(ftp.allow);
  EXPECT_TRUE(contains(ftp.reason, "unsupported protocol scheme \"ftp\"")) << ftp.reason;
}

// -------------------------------------------------------------- LocalAPI --

class VerifierLocalApi : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string sock_ = dir_.file("tailscaled.sock");
  std::string failedPrefix(const crypto::NodePublic& k) {
    return "failed to query local tailscaled status for " + k.toText() + ": ";
  }
};

TEST_F(VerifierLocalApi, KnownKeyIsAllowed) {
  FakeLocalApi api(sock_);
  api.addKnownKey(key(20));
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(20), kSource);
  EXPECT_TRUE(v.allow) << v.reason;
  EXPECT_EQ(v.reason, "");
}

TEST_F(VerifierLocalApi, RequestIsWhatLocalClientSends) {
  FakeLocalApi api(sock_);
  api.addKnownKey(key(20));
  ASSERT_TRUE(Verifier(localApiOptions(sock_)).checkLocalApi(key(20)).allow);
  ASSERT_TRUE(api.waitForRequests(1, 5s));
  const auto req = api.requests().at(0);
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/localapi/v0/whois?addr=nodekey%3A" + key(20).toHex());
  ASSERT_NE(req.header("Tailscale-Cap"), nullptr);
  EXPECT_EQ(*req.header("Tailscale-Cap"), "106");
  ASSERT_NE(req.header("Host"), nullptr);
  EXPECT_EQ(*req.header("Host"), "local-tailscaled.sock");
  ASSERT_NE(req.header("User-Agent"), nullptr);
  EXPECT_EQ(*req.header("User-Agent"), "Go-http-client/1.1");
  EXPECT_EQ(req.body, "");
}

TEST_F(VerifierLocalApi, UnknownKeyIsDenied) {
  FakeLocalApi api(sock_);
  api.addKnownKey(key(20));
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(21), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "peer " + key(21).toText() + " not authorized (not found in local tailscaled)");
}

TEST_F(VerifierLocalApi, TooOldTailscaled) {
  FakeLocalApi api(sock_);
  api.addKnownKey(key(20));
  api.setTooOld(true);
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(20), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "tailscaled version is too old (out of sync with derper binary)");
}

TEST_F(VerifierLocalApi, MissingSocketIsDeniedNeverFailOpen) {
  VerifierOptions o = localApiOptions(sock_);
  o.failOpen = true;  // a URL option: never applies to the LocalAPI
  const Verdict v = Verifier(o).check(key(22), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, failedPrefix(key(22)) +
                          "Failed to connect to local Tailscale daemon for /localapi/v0/whois; not running? "
                          "Error: dial unix " + sock_ + ": connect: no such file or directory");
}

TEST_F(VerifierLocalApi, ListenerThatNeverAcceptsTimesOut) {
  test::UnixListener listener(sock_);  // listening, never accepting
  const auto start = Clock::now();
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(23), kSource);
  EXPECT_LT(Clock::now() - start, kShortBound);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, failedPrefix(key(23)) + "Get \"http://local-tailscaled.sock/localapi/v0/whois?addr=nodekey%3A" +
                          key(23).toHex() + "\": context deadline exceeded");
}

TEST_F(VerifierLocalApi, ServerThatNeverAnswersTimesOut) {
  FakeLocalApi api(sock_);
  api.setHang(true);
  const auto start = Clock::now();
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(24), kSource);
  EXPECT_LT(Clock::now() - start, kShortBound);
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "context deadline exceeded")) << v.reason;
  EXPECT_TRUE(api.waitForRequests(1, 5s));
}

TEST_F(VerifierLocalApi, TricklingServerCannotStretchTheTimeout) {
  test::ScriptedServer server(test::ScriptedServer::unixAt(sock_),
                              "HTTP/1.1 200 OK\r\nX-Slow: " + std::string(100000, 'a'), 20ms);
  const auto start = Clock::now();
  const Verdict v = Verifier(localApiOptions(sock_)).check(key(25), kSource);
  EXPECT_LT(Clock::now() - start, kShortBound);
  EXPECT_FALSE(v.allow);
  EXPECT_TRUE(contains(v.reason, "context deadline exceeded")) << v.reason;
}

// Answers the fake does not give, one scripted response each.
struct LocalApiCase {
  const char* name;
  std::string response;
  bool allow;
  std::string reasonSuffix;  // after "failed to query …: " (or the whole reason when it starts with '=')
};

TEST_F(VerifierLocalApi, ResponseFramingAndErrors) {
  const std::string json = R"({"Node":{"ID":1},"UserProfile":{"ID":1}})";
  const std::string longBody = "  " + std::string(300, 'x') + "\n";
  const std::vector<LocalApiCase> cases = {
      {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(json.size()) + "\r\n\r\n" + json,
       true, ""},
      {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"No\r\n6;ext=1\r\nde\":{}\r\n1\r\n}\r\n"
                  "0\r\nX-Trailer: 1\r\n\r\n",
       true, ""},
      {"read to EOF", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + json + "\n", true, ""},
      {"interim 100 first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnull", true, ""},
      {"200 not JSON", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false,
       "failed to unmarshal JSON into *apitype.WhoIsResponse: invalid character 'h' looking for beginning of value"},
      {"200 array", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", false,
       "failed to unmarshal JSON into *apitype.WhoIsResponse: json: cannot unmarshal array into Go value of type "
       "apitype.WhoIsResponse"},
      {"200 trailing junk", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{} {}", false,
       "failed to unmarshal JSON into *apitype.WhoIsResponse: invalid character '{' after top-level value"},
      {"500 with body", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: " + std::to_string(longBody.size()) +
                            "\r\n\r\n" + longBody,
       false, "500 Internal Server Error: " + std::string(200, 'x') + "..."},
      {"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n\r\naccess denied\n", false,
       "403 Forbidden: access denied"},
      {"too old, text body", "HTTP/1.1 400 Bad Request\r\nContent-Length: 25\r\n\r\ninvalid 'addr' parameter\n",
       false, "=tailscaled version is too old (out of sync with derper binary)"},
      {"too large", "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n{}", false, "response larger than 1 MiB"},
      {"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", false, "unexpected EOF"},
      {"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, "malformed chunk size"},
      {"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", false, "malformed HTTP response"},
      {"closed at once", "", false, "\": EOF"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    test::ScriptedServer server(test::ScriptedServer::unixAt(sock_), c.response, 0ms);
    const Verdict v = Verifier(localApiOptions(sock_)).check(key(26), kSource);
    EXPECT_EQ(v.allow, c.allow) << v.reason;
    if (c.reasonSuffix.empty()) {
      EXPECT_EQ(v.reason, "");
    } else if (c.reasonSuffix[0] == '=') {
      EXPECT_EQ(v.reason, c.reasonSuffix.substr(1));
    } else {
      EXPECT_EQ(v.reason.rfind(failedPrefix(key(26)), 0), 0u) << v.reason;
      EXPECT_TRUE(contains(v.reason, c.reasonSuffix)) << v.reason;
    }
  }
}

// ------------------------------------------------------------------ both --

TEST_F(VerifierLocalApi, LocalApiRefusalMeansTheUrlIsNeverAsked) {
  FakeLocalApi api(sock_);
  FakeAdmissionServer fake(Mode::Allow);
  VerifierOptions o = localApiOptions(sock_);
  o.url = fake.url();
  const Verdict v = Verifier(o).check(key(30), kSource);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "peer " + key(30).toText() + " not authorized (not found in local tailscaled)");
  EXPECT_EQ(api.requestCount(), 1u);
  EXPECT_EQ(fake.requestCount(), 0u);
}

TEST_F(VerifierLocalApi, BothAllowThenTheUrlDecides) {
  FakeLocalApi api(sock_);
  api.addKnownKey(key(31));
  FakeAdmissionServer fake(Mode::Deny);
  VerifierOptions o = localApiOptions(sock_);
  o.url = fake.url();
  const Verifier verifier(o);
  EXPECT_FALSE(verifier.check(key(31), kSource).allow);
  fake.setMode(Mode::Allow);
  EXPECT_TRUE(verifier.check(key(31), kSource).allow);
  EXPECT_EQ(api.requestCount(), 2u);
  EXPECT_EQ(fake.requestCount(), 2u);
}

TEST(Verifier, NothingEnabledAllows) {
  const Verifier verifier(VerifierOptions{});
  EXPECT_FALSE(verifier.enabled());
  const Verdict v = verifier.check(key(32), kSource);
  EXPECT_TRUE(v.allow);
  EXPECT_EQ(v.reason, "");
}

TEST(Verifier, ConcurrentChecksShareOneVerifier) {
  FakeAdmissionServer fake(Mode::Allow);
  const Verifier verifier(urlOptions(fake.url(), false));
  std::vector<std::thread> threads;
  std::atomic<int> allowed{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (verifier.check(key(uint8_t(40 + i)), kSource).allow) allowed.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 8);
  EXPECT_EQ(fake.requestCount(), 8u);
}

}  // namespace
}  // namespace derpd::mesh
