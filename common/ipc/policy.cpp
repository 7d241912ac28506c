#include "common/ipc/policy.hpp"

namespace derpd::ipc {

Result<void> checkPolicy(MsgType type, Role sender, Role receiver, size_t bodySize) {
  const PolicyRule* rule = findPolicy(type, sender, receiver);
  const auto what = [&] {
    return msgTypeName(static_cast<uint16_t>(type)) + " from " + std::string(roleName(sender)) +
           " to " + std::string(roleName(receiver));
  };
  if (rule == nullptr) return makeError(what() + " not allowed");
  if (bodySize > rule->maxBodyBytes) {
    return makeError(what() + ": body " + std::to_string(bodySize) + " bytes > " +
                     std::to_string(rule->maxBodyBytes));
  }
  return okResult();
}

}  // namespace derpd::ipc
