// Where derpd-probe gets its DERP map: an http(s) URL, a file:// URL or a
// path, or "local" (tailscaled's LocalAPI over its Unix socket). Bounded in
// time and size (derpmap::kMaxMapBytes). Runs unprivileged.
#pragma once

#include <chrono>
#include <string>

#include "common/proto/derpmap/derpmap.hpp"
#include "common/util/result.hpp"
#include "probe/checks.hpp"

namespace derpd::probe {

struct MapFetchResult {
  derpmap::DerpMap map;
  std::string error;        // empty on success
  // The map could not be reached at all (connect, TLS, I/O, missing file):
  // derpprobe then keeps using a map fetched less than 10 minutes ago.
  bool unreachable = false;
  bool ok() const { return error.empty(); }
};

// Fetches and decodes the map at `src`, requiring derpprobe's unique node
// names. Errors read like derpprobe's ("fetching URL: 404 Not Found",
// "decoding URL JSON: ...").
MapFetchResult fetchMap(const std::string& src, const DialSettings& ds, const std::string& tailscaledSocket,
                        std::chrono::milliseconds timeout);

// Decodes and checks map bytes already in hand; `what` names them in errors.
MapFetchResult decodeMap(const std::string& json, const std::string& what);

}  // namespace derpd::probe
