// libFuzzer target: the IPC envelope decoder (common/ipc/envelope.hpp).
//
// Input = one envelope as received from a peer. decodeEnvelope must never
// crash or throw; when it succeeds, decodeBody runs for every payload type
// (only the matching one may succeed), policy is checked for every sender,
// and a decoded payload must re-encode to an envelope that decodes to the
// same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <tuple>

#include "common/ipc/envelope.hpp"
#include "common/ipc/messages.hpp"
#include "common/ipc/policy.hpp"

using namespace derpd;
using namespace derpd::ipc;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

template <typename T>
void tryBody(const Envelope& env) {
  auto r = decodeBody<T>(env);
  if (env.type != T::kType) {
    check(!r.ok());
    return;
  }
  if (!r.ok()) return;
  auto again = decodeEnvelope(encode(*r, env.requestId));
  check(again.ok());
  check(again->type == T::kType && again->requestId == env.requestId);
  auto back = decodeBody<T>(*again);
  check(back.ok());
  // NaN metric values do not compare equal; compare the encodings instead.
  check(encodeBody(*back) == encodeBody(*r));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto env = decodeEnvelope(ByteView(data, size));
  if (!env.ok()) return 0;
  check(env->ipcVersion == kIpcVersion);
  check(isKnownMsgType(static_cast<uint16_t>(env->type)));
  check(!env->body.empty());
  for (Role from : kAllRoles) {
    for (Role to : kAllRoles) (void)checkPolicy(env->type, from, to, env->body.size());
  }
  std::apply([&](auto... m) { (tryBody<decltype(m)>(*env), ...); }, AllMessages{});
  return 0;
}
