// Building blocks of the per-role seccomp allow-lists (seccomp_policy_*.cpp):
// rule constructors and the groups several roles share. Private to
// common/proc; see seccomp.hpp for what the lists are for.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "common/proc/seccomp.hpp"

namespace derpd::proc::policy {

// Any arguments.
SyscallRule allow(std::string_view name);
// Only when argument `arg` (the low 32 bits, as the kernel sees an int) is
// one of `values`.
SyscallRule allowArgIn(std::string_view name, int arg, std::initializer_list<uint64_t> values);
// Only when (argument `arg` & mask) == value.
SyscallRule allowMasked(std::string_view name, int arg, uint64_t mask, uint64_t value);
// The call fails with `err` and does nothing.
SyscallRule failWith(std::string_view name, int err);

void append(SeccompPolicy& to, const SeccompPolicy& from);

// Every role: memory, threads (clone with CLONE_THREAD only; clone3 answers
// ENOSYS so glibc falls back to clone), futexes, clocks and sleeps, signals
// (signalfd, masks, tgkill to itself), epoll/poll, eventfd, timerfd,
// getrandom, I/O on descriptors it already holds (the control socket:
// sendto/recvfrom/sendmsg/recvmsg...), a few harmless ioctls and prctls,
// exit.
SeccompPolicy base();

// Reading files by path: openat without write access or O_CREAT/O_TRUNC,
// stat, directory listing, readlink. For glibc's resolver files, the CA
// bundle and directory, openssl.cnf, NSS modules.
SeccompPolicy readFiles();

// Outbound connections and name resolution: socket() for AF_UNIX (nscd,
// tailscaled's LocalAPI), AF_INET, AF_INET6 and AF_NETLINK (getaddrinfo's
// AI_ADDRCONFIG), connect, bind (netlink, and DNS clients' source ports).
SeccompPolicy dialAndResolve();

// The roles' own lists: base() plus what each needs.
SeccompPolicy derpWorker();
SeccompPolicy stunWorker();
SeccompPolicy certAgent();
SeccompPolicy meshHelper();
SeccompPolicy monitor();

}  // namespace derpd::proc::policy
