// Entering a role's sandbox (STYLE.md §3): chroot to an empty directory,
// setgroups/setresgid/setresuid to an unprivileged user, PR_SET_NO_NEW_PRIVS.
// Called by each child after it has loaded what it needs and before its
// event loop. Run as non-root, the drop is skipped with one warning line.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/util/result.hpp"

namespace derpd::proc {

struct SandboxSpec {
  std::string user;        // system user to become (required when root)
  std::string chrootDir;   // empty: no chroot
};

struct UserIds {
  uid_t uid = 0;
  gid_t gid = 0;
};

// The uid and primary gid of a system user (getpwnam); root is refused.
Result<UserIds> lookupUser(const std::string& user);

struct Sandboxed {
  std::string what;      // e.g. "uid 65534 gid 65534, chroot /run/derpd/empty"
  bool dropped = false;  // the privileges were dropped (started as root)
};

// Chroot, drop, PR_SET_NO_NEW_PRIVS. The role's seccomp filter
// (seccomp.hpp) comes after this, once the role has nothing left to do that
// its allow-list leaves out (PR_SET_PDEATHSIG).
Result<Sandboxed> enterSandbox(const SandboxSpec& spec);

// Raises the soft RLIMIT_NOFILE to the hard limit (Go's runtime does the same
// for derper), so a relay is bounded by max-connections rather than by a
// 1024-descriptor default. When the hard limit is below `want` and the
// process may raise it (root: CAP_SYS_RESOURCE), it raises both to `want`,
// capped by /proc/sys/fs/nr_open. Returns the limits in force afterwards.
struct FdLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};
Result<FdLimit> raiseFdLimit(uint64_t want = 0);

// Creates (or checks) an empty directory owned by root, mode 0755, to chroot
// into. Refuses an existing one that is not a directory, not root-owned, or
// writable by others.
Result<void> prepareEmptyDir(const std::string& path);

}  // namespace derpd::proc
