#include "common/ipc/messages.hpp"

#include <cstdio>

namespace derpd::ipc {

std::string msgTypeName(uint16_t raw) {
  if (isKnownMsgType(raw)) return std::string(msgTypeName(static_cast<MsgType>(raw)));
  char buf[32];
  std::snprintf(buf, sizeof buf, "unknown(0x%04x)", unsigned(raw));
  return buf;
}

}  // namespace derpd::ipc
