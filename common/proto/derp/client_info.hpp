// ClientInfo / ServerInfo JSON (PROTOCOL.md §4), with Go encoding/json
// semantics: case-insensitive key match, unknown keys ignored, a type mismatch
// is an error. Parsing is bounded (size and nesting depth).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/result.hpp"

namespace derpd::derp {

struct ClientInfo {
  std::string meshKey;   // "meshKey", omitted when empty
  int64_t version = 0;   // "version", omitted when 0
  bool canAckPings = false;  // "CanAckPings", always present
  bool isProber = false;     // "IsProber", omitted when false
  std::string appName;       // "AppName" (HEAD), omitted when empty
};

// Exactly as Go marshals it: {"meshKey":…,"version":2,"CanAckPings":…,"IsProber":true,"AppName":…}
std::string encodeClientInfo(const ClientInfo& ci);
// Rejects anything that is not a JSON object, a wrong type for a known key,
// a non-integral or out-of-range version, nesting deeper than 64, or input
// larger than 256 KiB. JSON null for a known key leaves the default (as Go).
Result<ClientInfo> parseClientInfo(std::string_view json);

struct ServerInfo {
  int64_t version = 0;
  int64_t tokenBucketBytesPerSecond = 0;
  int64_t tokenBucketBytesBurst = 0;
};
// {"version":2} for the default server (all fields omitempty).
std::string encodeServerInfo(const ServerInfo& si);
Result<ServerInfo> parseServerInfo(std::string_view json);

}  // namespace derpd::derp
