#include "common/ipc/messages.hpp"

#include <cstdio>

namespace derpd::ipc {

std::string msgTypeName(uint16_t raw) {
  if (isKnownMsgType(raw)) return std::string(msgTypeName(static_cast<MsgType>(raw)));
  char buf[32];
  std::snprintf(buf, sizeof buf, "unknown(0x%04x)", unsigned(raw));
  return buf;
}

bool isValidMetric(const Metric& m) {
  if (m.name.empty() || m.name.size() > 200 || m.labels.size() > 200) return false;
  if (m.labels.find('\n') != std::string::npos) return false;
  for (char c : m.name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace derpd::ipc
