// derpd's supervisor: opens the listening sockets and the server key while
// privileged, fork+execs each role binary from one spawn table (sockets as
// inherited fds, the key over a pipe), restarts children that die with capped
// exponential backoff, and turns signals into actions. It never parses
// network data. Included by derpd only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/config/config.hpp"
#include "common/util/result.hpp"

namespace derpd::supervisor {

using Clock = std::chrono::steady_clock;

struct Child;

// One row of the spawn table.
struct RoleSpec {
  std::string name;    // role and binary name, e.g. "derp-worker"
  bool required;       // derpd exits when it cannot keep this role running
  // argv[1..] for the role, given the fds the supervisor hands down.
  std::function<std::vector<std::string>(const Child&)> args;
};

struct Child {
  const RoleSpec* spec = nullptr;
  pid_t pid = -1;
  Clock::time_point startedAt{};
  Clock::time_point restartAt{};  // when pid == -1 and a restart is due
  int quickFailures = 0;          // consecutive exits soon after start
  uint64_t restarts = 0;
  int keyFd = -1;                 // read end of the key pipe, in the child only
};

class Supervisor {
 public:
  Supervisor(config::Config cfg, std::vector<std::string> args);
  ~Supervisor();

  // Opens listeners, key file and runtime dirs; fatal errors are returned.
  Result<void> prepare();
  // Spawns every role and runs until SIGTERM/SIGINT (exit code 0) or until a
  // required role cannot start (non-zero).
  int run();

 private:
  Result<void> spawn(Child& c);
  void reap();
  void onChildExit(Child& c, int status);
  void reload();
  void stopAll();
  std::string binaryPath(const std::string& role) const;

  config::Config cfg_;
  std::vector<std::string> args_;   // the command line, for reloads
  std::vector<RoleSpec> table_;
  std::vector<Child> children_;
  std::string libexecDir_;
  std::string keyBytes_;            // derper key file contents, piped to derp-worker
  bool tls_ = false;
  bool dropPrivileges_ = false;
  std::string emptyDir_;
  int listenFd_ = -1;
  int port80Fd_ = -1;
  int sigFd_ = -1;
  bool stopping_ = false;
  int exitCode_ = 0;
};

// Backoff before restart number `failures` (0-based): 100 ms doubling, capped at 10 s.
std::chrono::milliseconds restartDelay(int failures);

}  // namespace derpd::supervisor
