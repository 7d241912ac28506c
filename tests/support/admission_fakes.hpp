// Fakes for client verification (PROTOCOL.md §5.9): an admission controller
// for -verify-client-url and tailscaled's LocalAPI for -verify-clients.
// Linked into mesh_helper_unit_tests and derpd_integration_tests, so plain
// std/POSIX plus derpd_common only (no POCO, no gtest). Each fake serves
// HTTP/1.1 from one poll()-based thread, answers with Content-Length and
// closes the connection after each answer. Every public method is
// thread-safe. Construction throws std::runtime_error when the socket cannot
// be set up; destruction closes every connection and joins at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/proto/http/http.hpp"

namespace derpd::test {

// Bounds on what a fake accepts; larger requests get 431 / 413 and a close.
inline constexpr size_t kFakeMaxHead = 64 << 10;
inline constexpr size_t kFakeMaxBody = 1 << 20;

// One complete request as a fake received it.
struct RecordedRequest {
  std::string method;
  std::string target;                 // as sent, e.g. "/admit"
  std::vector<http::Header> headers;  // in the order received
  std::string body;                   // Content-Length bytes
  // First header with this name (ASCII case-insensitive), or nullptr.
  const std::string* header(std::string_view name) const;
};

namespace detail {
class FakeHttpServer;  // admission_fakes.cpp
struct FakeAnswer;
}

// -verify-client-url: an admission controller on 127.0.0.1, port from 0.
class FakeAdmissionServer {
 public:
  enum class Mode {
    Allow,      // 200 {"Allow":true}
    Deny,       // 200 {"Allow":false}
    Hang,       // reads the request, never answers (until destroyed)
    Garbage,    // 200 "not json at all"
    Status500,  // 500 with a short text body
  };

  explicit FakeAdmissionServer(Mode mode = Mode::Allow);
  ~FakeAdmissionServer();
  FakeAdmissionServer(const FakeAdmissionServer&) = delete;
  FakeAdmissionServer& operator=(const FakeAdmissionServer&) = delete;

  // Applies to requests completed from now on.
  void setMode(Mode mode);
  Mode mode() const;

  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:<port>/admit"

  std::vector<RecordedRequest> requests() const;
  size_t requestCount() const;
  // True once at least `n` requests were recorded; false on timeout.
  bool waitForRequests(size_t n, std::chrono::milliseconds timeout) const;

 private:
  std::atomic<Mode> mode_;
  int port_ = 0;
  std::unique_ptr<detail::FakeHttpServer> server_;  // last: its thread reads mode_
};

// -verify-clients: tailscaled's LocalAPI on a Unix socket (mode 0666).
//   GET /localapi/v0/whois?addr=nodekey%3A<hex>
//     known key  -> 200 {"Node":{"ID":1,"Key":"nodekey:…"},"UserProfile":{…}}
//     unknown    -> 404 "peer not found\n"
//     setTooOld  -> 400 {"error":"invalid 'addr' parameter"} (also for a bad addr)
//   GET /localapi/v0/derpmap -> 200 with the map of setDerpMap() (404 when unset)
//   other paths  -> 404 "404 page not found\n"
class FakeLocalApi {
 public:
  // Binds `socketPath` (an existing file there is replaced); removes it
  // when destroyed.
  explicit FakeLocalApi(std::string socketPath);
  ~FakeLocalApi();
  FakeLocalApi(const FakeLocalApi&) = delete;
  FakeLocalApi& operator=(const FakeLocalApi&) = delete;

  const std::string& socketPath() const { return path_; }
  void addKnownKey(const crypto::NodePublic& key);
  // Answers like a tailscaled that predates whois by node key.
  void setTooOld(bool tooOld);
  // Reads requests but never answers them (until destroyed).
  void setHang(bool hang);
  // The body of GET /localapi/v0/derpmap (tailscaled's current DERP map).
  void setDerpMap(std::string json);

  std::vector<RecordedRequest> requests() const;
  size_t requestCount() const;
  bool waitForRequests(size_t n, std::chrono::milliseconds timeout) const;

 private:
  detail::FakeAnswer answer(const RecordedRequest& req) const;  // on the server thread

  std::string path_;
  mutable std::mutex mu_;
  std::set<crypto::NodePublic> known_;  // guarded by mu_
  std::string derpMap_;                 // guarded by mu_
  std::atomic<bool> tooOld_{false};
  std::atomic<bool> hang_{false};
  std::unique_ptr<detail::FakeHttpServer> server_;  // last: its thread reads the above
};

// One document over HTTP on 127.0.0.1 (port from 0), e.g. a DERP map for
// derpd-probe: every request gets the answer last set (default 404).
class FakeDocumentServer {
 public:
  FakeDocumentServer();
  ~FakeDocumentServer();
  FakeDocumentServer(const FakeDocumentServer&) = delete;
  FakeDocumentServer& operator=(const FakeDocumentServer&) = delete;

  void setAnswer(int status, std::string reason, std::string body,
                 std::string contentType = "application/json");
  int port() const { return port_; }
  std::string url(const std::string& path = "/derpmap") const;
  size_t requestCount() const;
  bool waitForRequests(size_t n, std::chrono::milliseconds timeout) const;

 private:
  int port_ = 0;
  mutable std::mutex mu_;
  int status_ = 404;                              // guarded by mu_
  std::string reason_ = "Not Found", body_ = "404 page not found\n", type_ = "text/plain";  // guarded by mu_
  std::unique_ptr<detail::FakeHttpServer> server_;  // last: its thread reads the above
};

}  // namespace derpd::test
