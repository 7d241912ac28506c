// derp-worker's HTTP endpoints (PROTOCOL.md §7) as a pure function from a
// request head to an action: a complete response (byte-exact with derper's
// but for the Date value), or a DERP / WebSocket takeover.
// Included by derp-worker only.
#pragma once

#include <functional>
#include <string>

#include "common/proto/http/http.hpp"

namespace derpd::worker {

struct HttpContext {
  bool derpEnabled = true;
  bool port80 = false;        // the TLS-mode port-80 listener
  bool dev = false;
  std::string peerIp;         // textual IP of the TCP peer
  bool peerLoopback = false;
  long nowUnix = 0;
  std::function<std::string()> varz;  // /debug/varz body
};

struct HttpAction {
  enum class Kind { Respond, DerpUpgrade, WebSocketUpgrade } kind = Kind::Respond;
  std::string response;   // Respond: the whole response
  bool close = false;     // Respond: close the connection afterwards
};

HttpAction handleHttpRequest(const http::RequestHead& req, const HttpContext& ctx);

// Go's http.Error-style plain-text response (used for 4xx/5xx).
std::string plainTextResponse(int status, const std::string& body, long nowUnix, bool close);

// Whether a peer may see /debug/ (PROTOCOL.md §7.2; no debug key file yet):
// no X-Forwarded-For, and a loopback or Tailscale-range peer.
bool debugAllowed(const http::RequestHead& req, const std::string& peerIp, bool peerLoopback);

}  // namespace derpd::worker
