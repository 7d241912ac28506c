// seccomp-bpf system call allow-lists, one per child role (STYLE.md §3: the
// last step of a role's sandbox, after chroot, the uid/gid drop and
// PR_SET_NO_NEW_PRIVS, before the event loop). Built with libseccomp; the
// default action kills the whole process (SIGSYS, "Bad system call"), which
// derpd logs and answers with a restart like any other death. The filter is
// installed on every thread at once (TSYNC): libzmq's threads exist before
// the sandbox. Each role's list is in seccomp_policy_<role>.cpp.
// Included by the role binaries (unprivileged by the time they install the
// filter), by derpd (only to log the build's setting) and by tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/ipc/role.hpp"
#include "common/util/result.hpp"

namespace derpd::proc {

// Sanitizer builds never install a filter: LeakSanitizer stops the world
// with ptrace and ASan/UBSan/TSan make system calls of their own (their
// runtimes' reports, shadow memory, symbolization) that no role lists.
#ifdef DERPD_SANITIZED
inline constexpr bool kSeccompBuild = false;
#else
inline constexpr bool kSeccompBuild = true;
#endif

// One entry of an allow-list: a system call by libseccomp's name, allowed
// for any arguments, or only when argument `arg` masked with `mask` equals
// one of `values`. A non-zero `errnoValue` makes the call fail with that
// errno instead of running it (clone3: glibc then falls back to clone, whose
// flags a filter can see).
struct SyscallRule {
  std::string_view name;
  int arg = -1;                     // -1: any arguments
  uint64_t mask = ~uint64_t(0);
  std::vector<uint64_t> values;     // allowed values of (arg & mask)
  int errnoValue = 0;               // 0: allow
};

using SeccompPolicy = std::vector<SyscallRule>;

// What a process does beyond its role's usual work under derpd.
struct SeccompExtras {
  // Name resolution with getaddrinfo (files, nscd, DNS, netlink): for
  // derp-worker run alone, which resolves its -mesh-with hosts itself.
  bool resolveNames = false;
};

// The allow-list of `role` (the shared base plus the role's own entries,
// plus `extras`). Role::Supervisor has none: derpd is never filtered (it
// forks, execs and stays root).
SeccompPolicy seccompPolicy(ipc::Role role, const SeccompExtras& extras = {});

// Names a policy mentions (sorted, unique), for tests and docs.
std::vector<std::string> seccompPolicyNames(ipc::Role role, const SeccompExtras& extras = {});

// Installs `role`'s filter on every thread of the calling process. Needs
// PR_SET_NO_NEW_PRIVS (or CAP_SYS_ADMIN). Once it returns, a system call
// outside the list kills the process. Returns the number of system calls
// the list names.
Result<size_t> installSeccomp(ipc::Role role, const SeccompExtras& extras = {});

// The end of a role's sandbox: installs the filter when `wanted` (the
// `seccomp` setting, --seccomp), the privileges were dropped (`dropped`:
// started as root with --user) and this is not a sanitizer build. Returns
// the line to log either way: "seccomp: <role> allow-list in force (N
// system calls; ...)" or "seccomp: off (<why>)".
Result<std::string> enterSeccomp(ipc::Role role, bool wanted, bool dropped, const SeccompExtras& extras = {});

}  // namespace derpd::proc
