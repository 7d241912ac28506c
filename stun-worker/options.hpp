// stun-worker's command line: derper's flag names where derper has them, Go
// flag syntax (-x / --x, -x=v or -x v; bools take a value only with '=').
// Included by stun-worker only.
#pragma once

#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::stun_worker {

struct Options {
  std::string addr = ":443";      // -a: only the host is used (empty = all addresses)
  int stunPort = 3478;            // -stun-port (0 = kernel-chosen)
  std::string logLevel = "info";  // --log-level
  bool version = false;           // -version
  bool help = false;              // -h / --help
  // Set by derpd when it starts this process (not for interactive use):
  std::vector<int> udpFds;        // --udp-fd (repeatable): sockets bound by derpd
  std::string user;               // --user: drop to this user (when root)
  std::string chrootDir;          // --chroot: empty directory to chroot into
  std::string control;            // --control: derpd's control endpoint (ipc://...)
  bool seccomp = true;            // --seccomp=false: no syscall filter after the drop
  // --forbidden-syscall-after-for-test MS (tests only): see main.cpp.
  int forbiddenSyscallAfterMsForTest = 0;
};

// Parses argv (without argv[0]). Errors name the flag.
Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();

}  // namespace derpd::stun_worker
