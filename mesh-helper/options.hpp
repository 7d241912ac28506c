// mesh-helper's command line: derper's flag names where derper has them, Go
// flag syntax (-x / --x, -x=v or -x v; bools take a value only with '=').
// mesh-helper runs only under derpd (it answers derp-worker through the
// control plane), so --control is required. Included by mesh-helper only.
#pragma once

#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::mesh {

struct Options {
  std::string meshWith;                  // -mesh-with: hosts to resolve for derp-worker
  bool verifyClients = false;            // -verify-clients
  std::string verifyClientsSocket = "/var/run/tailscale/tailscaled.sock";  // --verify-clients-socket
  std::string verifyClientUrl;           // -verify-client-url
  bool verifyClientUrlFailOpen = true;   // -verify-client-url-fail-open
  int workers = 8;                       // --workers: questions answered at once
  std::string logLevel = "info";         // --log-level
  bool version = false;                  // -version
  bool help = false;                     // -h / --help
  std::string user;                      // --user: drop to this user (when root)
  std::string chrootDir;                 // --chroot: refused (resolver files, tailscaled's socket)
  std::string control;                   // --control: derpd's control endpoint (ipc://...)
  bool seccomp = true;                   // --seccomp=false: no syscall filter after the drop
};

// Parses argv (without argv[0]). Errors name the flag.
Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();

}  // namespace derpd::mesh
