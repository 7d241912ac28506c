// Private to mesh-helper's client verification (verifier*.cpp): the two
// blocking HTTP clients under Verifier, split from the verdict rules so
// each file stays about one thing. Both are safe to call concurrently.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/util/result.hpp"

namespace derpd::mesh::detail {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// What a client got back: enough for derper's rules.
struct HttpAnswer {
  int status = 0;
  std::string statusText;  // Go's Response.Status, e.g. "404 Not Found"
  std::string body;
};

// ---------------------------------------------------------------- LocalAPI

inline constexpr char kLocalApiHost[] = "local-tailscaled.sock";
// tailcfg.CurrentCapabilityVersion of the client derper is built against.
inline constexpr char kLocalApiCapVersion[] = "106";
// Head and body together; tailscaled's WhoIs answer is a few KiB.
inline constexpr size_t kMaxLocalApiResponse = 1 << 20;

// GET `target` from tailscaled's LocalAPI at the Unix socket `socketPath`,
// everything (connect, send, head, body) within `deadline`. Content-Length,
// chunked and read-to-EOF bodies. Errors read like Go's LocalClient ones:
// "Failed to connect to local Tailscale daemon …" when the socket cannot be
// reached, `Get "http://local-tailscaled.sock/…": <why>` after that.
Result<HttpAnswer> localApiGet(const std::string& socketPath, const std::string& target,
                               Deadline deadline);

// -------------------------------------------------------------------- URL

// The admission controller URL, split once, plus (for https) the POCO TLS
// context with its CA roots loaded. Immutable after make(); shared by
// concurrent checks.
class UrlClient {
 public:
  // Never fails: a URL Go would refuse or a TLS context that cannot be
  // built is remembered and reported by every post().
  static std::shared_ptr<const UrlClient> make(const std::string& url, const std::string& caFile);
  ~UrlClient();

  // Outcome of one POST, in derper's failure classes.
  struct Outcome {
    enum class Kind {
      Answered,    // a response head arrived: answer.status says the rest
      BadRequest,  // http.NewRequest would fail (the URL): never fail-open
      Transport,   // http.Client.Do failed: fail-open applies
    } kind = Kind::Transport;
    HttpAnswer answer;      // Answered; the body only for a 200
    std::string bodyError;  // Answered 200: reading the body failed (timeout, reset)
    std::string error;      // BadRequest / Transport
  };

  // POSTs `body` with no Content-Type (derper builds the request with
  // http.NewRequest, which sets none). For a 200 it reads the body until
  // `enough(bodySoFar)` says so, the body ends or `maxBody` bytes arrived,
  // as Go's json.Decoder stops once the first value is complete. The whole
  // exchange ends by `deadline`.
  Outcome post(const std::string& body, Deadline deadline, size_t maxBody,
               const std::function<bool(std::string_view)>& enough) const;

  struct Impl;

 private:
  explicit UrlClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace derpd::mesh::detail
