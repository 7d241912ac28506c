// libFuzzer target: the DERP map (tailcfg.DERPMap JSON). Whatever parses must
// encode, parse back to the same map and encode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/proto/derpmap/derpmap.hpp"

using namespace derpd::derpmap;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto m = parse(json);
  if (!m.ok()) return 0;
  const std::string enc = encodeIndented(*m);
  (void)validateForProbe(*m);
  for (const auto& [id, region] : m->regions) {
    for (const Node& n : region.nodes) {
      const auto stun = n.effectiveStunPort();
      check(!stun || (*stun >= 0 && *stun <= 65535));
    }
  }
  // Indenting can push a map near the size limit over it.
  if (enc.size() > kMaxMapBytes) return 0;
  auto again = parse(enc);
  check(again.ok());
  check(*again == *m);
  check(encodeIndented(*again) == enc);
  return 0;
}
