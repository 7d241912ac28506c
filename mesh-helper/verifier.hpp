// Client verification (PROTOCOL.md §5.9) as derper does it, run by
// mesh-helper for derp-worker: the local tailscaled's LocalAPI
// (-verify-clients) and an admission controller URL (-verify-client-url).
// check() blocks (up to the timeouts below); mesh-helper calls it from a
// small pool of worker threads, never from its control loop.
// Included by mesh-helper and its tests.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/crypto/keys.hpp"

namespace derpd::mesh {

namespace detail {
class UrlClient;  // verifier_internal.hpp
}

struct VerifierOptions {
  // -verify-clients: ask tailscaled over its LocalAPI Unix socket.
  bool localApi = false;
  std::string localApiSocket = "/var/run/tailscale/tailscaled.sock";
  // -verify-client-url: POST the DERPAdmitClientRequest here ("" = off).
  // http:// or https:// (system CAs, or caFile when set).
  std::string url;
  bool failOpen = true;  // -verify-client-url-fail-open
  std::string caFile;    // PEM CA file for an https:// url ("" = system roots)
  // Per question: derper's 5 s for the URL; the same bound for the LocalAPI.
  std::chrono::milliseconds timeout{5000};
};

struct Verdict {
  bool allow = false;
  // For the log line, in derper's words where it has them:
  //   "peer nodekey:… not authorized (not found in local tailscaled)"
  //   "tailscaled version is too old (out of sync with derper binary)"
  //   "failed to query local tailscaled status for nodekey:…: <why>"
  //   "admission controller unreachable; allowing client nodekey:…"  (fail-open)
  //   "admission controller: <status line>", "admission controller: nodekey:…/<ip> not allowed",
  //   "admission controller: bad answer: <why>", "<transport error>" (fail-closed)
  // Empty when allowed for an ordinary reason.
  std::string reason;
};

class Verifier {
 public:
  explicit Verifier(VerifierOptions opts);
  const VerifierOptions& options() const { return opts_; }
  bool enabled() const { return opts_.localApi || !opts_.url.empty(); }

  // derper's order: the LocalAPI first (when on), then the URL (when set);
  // the first refusal wins. Thread-safe (no shared mutable state).
  Verdict check(const crypto::NodePublic& node, const std::string& sourceIp) const;

  // The two steps on their own (tests, and check()).
  Verdict checkLocalApi(const crypto::NodePublic& node) const;
  Verdict checkUrl(const crypto::NodePublic& node, const std::string& sourceIp) const;

 private:
  VerifierOptions opts_;
  // Built once from opts_.url (null when off): the URL split for POCO and,
  // for https, the TLS context with its CA roots loaded. Immutable, so
  // concurrent check()s share it.
  std::shared_ptr<const detail::UrlClient> url_;
};

}  // namespace derpd::mesh
