// The rule constructors and the groups of system calls several roles share
// (see seccomp_policy.hpp). Each role's own list is in
// seccomp_policy_<role>.cpp. The lists come from strace -f of every role
// through the integration tests (started as root, so after the drop), plus
// what glibc, OpenSSL, libzmq, POCO and spdlog may call on paths the tests
// do not reach (error paths, abort, qsort, thread start).
#include <fcntl.h>
#include <linux/sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>

#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

namespace {
// An int argument as the kernel reads it: the register's low 32 bits.
constexpr uint64_t kInt = 0xffffffffu;
}  // namespace

SyscallRule allow(std::string_view name) { return SyscallRule{name, -1, ~uint64_t(0), {}, 0}; }

SyscallRule allowArgIn(std::string_view name, int arg, std::initializer_list<uint64_t> values) {
  return SyscallRule{name, arg, kInt, std::vector<uint64_t>(values), 0};
}

SyscallRule allowMasked(std::string_view name, int arg, uint64_t mask, uint64_t value) {
  return SyscallRule{name, arg, mask, {value}, 0};
}

SyscallRule failWith(std::string_view name, int err) { return SyscallRule{name, -1, ~uint64_t(0), {}, err}; }

void append(SeccompPolicy& to, const SeccompPolicy& from) { to.insert(to.end(), from.begin(), from.end()); }

SeccompPolicy base() {
  return {
      // Memory (malloc arenas, thread stacks and their guard pages).
      allow("brk"), allow("mmap"), allow("munmap"), allow("mremap"), allow("mprotect"), allow("madvise"),
      // Threads: pthread_create's clone must carry CLONE_THREAD, so no fork
      // and no new process. clone3 passes its flags in memory a filter
      // cannot read: it answers ENOSYS and glibc (2.34+) falls back to clone.
      allowMasked("clone", 0, CLONE_THREAD, CLONE_THREAD), failWith("clone3", ENOSYS),
      allow("set_robust_list"), allow("rseq"), allow("futex"), allow("sched_yield"),
      allow("sched_getaffinity"), allow("sched_getparam"), allow("sched_getscheduler"),
      allow("sched_get_priority_min"), allow("sched_get_priority_max"), allow("exit"), allow("exit_group"),
      allow("getpid"), allow("gettid"), allow("getppid"), allow("getuid"), allow("geteuid"),
      allow("getgid"), allow("getegid"),
      // Thread names (libzmq's threads, pthread_setname_np on itself).
      allowArgIn("prctl", 0, {PR_SET_NAME, PR_GET_NAME}),
      // Clocks and sleeps (the vDSO answers most clock reads without a call).
      allow("clock_gettime"), allow("clock_getres"), allow("gettimeofday"), allow("time"),
      allow("nanosleep"), allow("clock_nanosleep"),
      // Signals: masks, signalfd, handlers (abort resets SIGABRT's), and
      // tgkill only to this process (raise/abort, glibc's setxid broadcast).
      allow("rt_sigreturn"), allow("rt_sigprocmask"), allow("rt_sigaction"), allow("sigaltstack"),
      allow("rt_sigtimedwait"), allow("signalfd4"), allow("restart_syscall"),
      allowArgIn("tgkill", 0, {uint64_t(::getpid())}),
      // Waiting: epoll (libzmq, the roles' loops, POCO's epoll_create),
      // poll (the control channel, POCO), select (POCO's fallback).
      allow("epoll_create1"), allow("epoll_create"), allow("epoll_ctl"), allow("epoll_wait"), allow("epoll_pwait"),
      allow("epoll_pwait2"), allow("poll"), allow("ppoll"), allow("select"), allow("pselect6"),
      allow("eventfd2"), allow("timerfd_create"), allow("timerfd_settime"), allow("timerfd_gettime"),
      allow("getrandom"),
      // I/O on descriptors the process already holds: the log (stderr), the
      // control socket (libzmq), its listeners and connections.
      allow("read"), allow("write"), allow("readv"), allow("writev"), allow("pread64"), allow("close"),
      allow("fcntl"), allow("dup"), allow("dup2"), allow("dup3"), allow("lseek"), allow("fstat"),
      allow("newfstatat"),
      allow("sendto"), allow("recvfrom"), allow("sendmsg"), allow("recvmsg"), allow("sendmmsg"),
      allow("recvmmsg"), allow("getsockopt"), allow("setsockopt"), allow("getsockname"),
      allow("getpeername"), allow("shutdown"),
      allowArgIn("ioctl", 1, {FIONREAD, FIONBIO, TCGETS, FIOCLEX, FIONCLEX}),
      // Read-only process information: limits (never set: new_limit must
      // be NULL), usage, uname, sysinfo (glibc's qsort asks for the memory
      // size).
      allowMasked("prlimit64", 2, ~uint64_t(0), 0), allow("getrusage"), allow("uname"), allow("sysinfo"),
  };
}

SeccompPolicy readFiles() {
  return {
      // O_RDONLY, neither O_CREAT nor O_TRUNC.
      allowMasked("openat", 2, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY),
      allow("stat"), allow("lstat"), allow("statx"), allow("access"), allow("faccessat"),
      allow("faccessat2"), allow("readlink"), allow("readlinkat"), allow("getdents64"),
      allow("fadvise64"), allow("getcwd"),
  };
}

SeccompPolicy dialAndResolve() {
  return {
      allowArgIn("socket", 0, {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}),
      allow("connect"), allow("bind"),
      // POCO's wake-up pipes.
      allow("pipe2"),
  };
}

}  // namespace derpd::proc::policy
