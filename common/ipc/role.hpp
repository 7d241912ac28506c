// Process roles of the derpd suite and their wire/identity names.
// The name is the ZeroMQ routing identity of a child's DEALER and the
// encoding of a Role inside IPC messages.
// Included by every process, at any privilege.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace derpd::ipc {

enum class Role : uint8_t {
  Supervisor,  // "derpd": root; binds the control ROUTER
  DerpWorker,  // "derp-worker"
  StunWorker,  // "stun-worker"
  CertAgent,   // "cert-agent"
  MeshHelper,  // "mesh-helper"
  Monitor,     // "monitor"
};

inline constexpr size_t kRoleCount = 6;
inline constexpr std::array<Role, kRoleCount> kAllRoles = {
    Role::Supervisor, Role::DerpWorker, Role::StunWorker,
    Role::CertAgent,  Role::MeshHelper, Role::Monitor,
};
// Every role the supervisor spawns.
inline constexpr std::array<Role, kRoleCount - 1> kChildRoles = {
    Role::DerpWorker, Role::StunWorker, Role::CertAgent, Role::MeshHelper, Role::Monitor,
};

constexpr std::string_view roleName(Role r) {
  switch (r) {
    case Role::Supervisor: return "derpd";
    case Role::DerpWorker: return "derp-worker";
    case Role::StunWorker: return "stun-worker";
    case Role::CertAgent: return "cert-agent";
    case Role::MeshHelper: return "mesh-helper";
    case Role::Monitor: return "monitor";
  }
  return "unknown";
}

// Exact, case-sensitive match of roleName(); nullopt for anything else.
constexpr std::optional<Role> roleFromName(std::string_view name) {
  for (Role r : kAllRoles) {
    if (roleName(r) == name) return r;
  }
  return std::nullopt;
}

constexpr size_t roleIndex(Role r) { return static_cast<size_t>(r); }

}  // namespace derpd::ipc
