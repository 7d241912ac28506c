// libFuzzer target: ClientInfo / ServerInfo JSON (and the key-file parser,
// which shares the Go-style field matching). Whatever parses must survive
// encode -> parse with the same fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/crypto/keys.hpp"
#include "common/proto/derp/client_info.hpp"

using namespace derpd;
using namespace derpd::derp;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);

  if (auto ci = parseClientInfo(json); ci.ok()) {
    const std::string enc = encodeClientInfo(*ci);
    auto again = parseClientInfo(enc);
    check(again.ok());
    check(again->meshKey == ci->meshKey);
    check(again->version == ci->version);
    check(again->canAckPings == ci->canAckPings);
    check(again->isProber == ci->isProber);
    check(again->appName == ci->appName);
    check(encodeClientInfo(*again) == enc);
  }

  if (auto si = parseServerInfo(json); si.ok()) {
    auto again = parseServerInfo(encodeServerInfo(*si));
    check(again.ok());
    check(again->version == si->version);
    check(again->tokenBucketBytesPerSecond == si->tokenBucketBytesPerSecond);
    check(again->tokenBucketBytesBurst == si->tokenBucketBytesBurst);
  }

  if (auto k = crypto::parseKeyFile(json); k.ok()) {
    check(!k->isZero());
    auto again = crypto::parseKeyFile(crypto::keyFileContents(*k));
    check(again.ok() && *again == *k);
  }
  return 0;
}
