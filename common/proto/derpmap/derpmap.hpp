// The DERP map (tailcfg.DERPMap, PROTOCOL.md §10): what derpd-probe and the
// monitor role read from a URL or a file, as Go's encoding/json reads it at
// the reference commit. The input is untrusted bytes from the network:
// parsing is bounded and fuzzed. Included by derpd-probe, tests, the fuzzer.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::derpmap {

inline constexpr size_t kMaxMapBytes = 4 << 20;  // a DERP map larger than this is refused
inline constexpr int kMaxDepth = 64;             // JSON nesting bound

struct Node {
  std::string name;
  int regionId = 0;
  std::string hostName;
  std::string certName;
  std::string ipv4;  // "" = resolve HostName; not an IPv4 literal (e.g. "none") = no IPv4
  std::string ipv6;  // likewise for IPv6
  int stunPort = 0;  // 0 = 3478, -1 = no STUN
  bool stunOnly = false;
  int derpPort = 0;  // 0 = 443
  bool insecureForTests = false;
  std::string stunTestIp;
  bool canPort80 = false;

  int effectiveDerpPort() const { return derpPort == 0 ? 443 : derpPort; }
  // nullopt: this node has no STUN.
  std::optional<int> effectiveStunPort() const;
  bool operator==(const Node&) const = default;
};

struct Region {
  int regionId = 0;
  std::string regionCode;
  std::string regionName;
  double latitude = 0;
  double longitude = 0;
  bool avoid = false;
  std::vector<Node> nodes;
  bool operator==(const Region&) const = default;
};

struct DerpMap {
  // HomeParams.RegionScore: region id -> score. Empty when absent.
  std::map<int, double> regionScore;
  bool hasHomeParams = false;  // "HomeParams" present and not null
  std::map<int, Region> regions;  // by the JSON key (a decimal region id)
  bool omitDefaultRegions = false;
  bool operator==(const DerpMap&) const = default;
};

// Go's json.Unmarshal into tailcfg.DERPMap: object keys match field names
// as Go folds them (case-insensitive, plus U+017F and the Kelvin sign); a
// repeated key decodes into what the earlier one set (a plain value is
// replaced, a repeated object or list is merged element by element, as Go
// does); unknown keys are ignored, JSON null leaves a field at its zero value, a wrong type is an
// error naming the field ("Regions.900.Nodes[1].DERPPort: want a number"),
// integers must be integral and fit an int32 here (Go: int), the Regions and
// RegionScore keys must be decimal integers. Input over kMaxMapBytes, nesting
// over kMaxDepth, invalid JSON or trailing non-space bytes are errors.
Result<DerpMap> parse(std::string_view json);

// Go's json.MarshalIndent(m, "", "  ") of the same struct (omitempty as
// tailcfg declares it): for tests that the vectors round-trip byte for byte.
std::string encodeIndented(const DerpMap& m);

// What derpprobe requires of a map before probing it: node names unique
// across all regions (error: duplicate node name "900a" in regions 900 and
// 901). Errors are one line.
Result<void> validateForProbe(const DerpMap& m);

}  // namespace derpd::derpmap
