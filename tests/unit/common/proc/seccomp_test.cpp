// The per-role seccomp allow-lists (common/proc/seccomp): what each list
// holds, and what an installed filter lets through or kills. Filters are
// installed in a forked child (PR_SET_NO_NEW_PRIVS, no root needed), which
// reports through its exit status: 0 when everything allowed worked, killed
// by SIGSYS when a forbidden call was made.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <seccomp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

#include "common/proc/seccomp.hpp"

namespace derpd::proc {
namespace {

using ipc::Role;

bool has(const std::vector<std::string>& names, const std::string& n) {
  return std::find(names.begin(), names.end(), n) != names.end();
}

// Runs body in a forked child after installing role's filter; the child's
// wait status. body returns the exit code (0 = all as expected).
int runFiltered(Role role, const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(90);
    auto r = installSeccomp(role);
    if (!r) ::_exit(91);
    ::_exit(body());
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

bool killedBySigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }
bool exitedZero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

class SeccompFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kSeccompBuild) GTEST_SKIP() << "sanitizer build: filters are not installed";
  }
};

TEST(SeccompPolicy, EveryChildRoleHasAList) {
  for (Role r : ipc::kChildRoles) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    auto names = seccompPolicyNames(r);
    EXPECT_GT(names.size(), 50u);
    for (const char* n : {"read", "write", "close", "futex", "epoll_wait", "poll", "mmap", "munmap", "brk",
                          "getrandom", "exit_group", "rt_sigreturn", "signalfd4", "eventfd2", "clone",
                          "sendto", "recvfrom", "sendmsg", "recvmsg", "timerfd_create"}) {
      EXPECT_TRUE(has(names, n)) << n;
    }
  }
  EXPECT_TRUE(seccompPolicy(Role::Supervisor).empty());
}

TEST(SeccompPolicy, NoListHasDangerousCalls) {
  for (Role r : ipc::kChildRoles) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    auto names = seccompPolicyNames(r);
    for (const char* n : {"execve", "execveat", "fork", "vfork", "ptrace", "mount", "umount2", "pivot_root",
                          "chroot", "setuid", "setresuid", "setgid", "setresgid", "setgroups", "capset",
                          "init_module", "finit_module", "kexec_load", "bpf", "perf_event_open", "personality",
                          "process_vm_readv", "process_vm_writev", "unshare", "setns", "keyctl", "add_key",
                          "userfaultfd", "kill", "chmod", "chown", "symlink", "link", "reboot", "swapon",
                          "io_uring_setup", "open_by_handle_at", "name_to_handle_at", "seccomp"}) {
      EXPECT_FALSE(has(names, n)) << n;
    }
  }
}

// What sets the roles apart: who may dial, accept, open and write files.
TEST(SeccompPolicy, RolesDifferWhereTheyShould) {
  auto stun = seccompPolicyNames(Role::StunWorker);
  auto derp = seccompPolicyNames(Role::DerpWorker);
  auto cert = seccompPolicyNames(Role::CertAgent);
  auto mesh = seccompPolicyNames(Role::MeshHelper);
  auto mon = seccompPolicyNames(Role::Monitor);
  for (const char* n : {"socket", "connect", "accept4", "bind", "listen", "renameat", "unlinkat", "inotify_add_watch"})
    EXPECT_FALSE(has(stun, n)) << n;
  EXPECT_TRUE(has(derp, "accept4"));
  EXPECT_TRUE(has(derp, "connect"));
  EXPECT_FALSE(has(derp, "bind"));
  EXPECT_FALSE(has(derp, "listen"));
  EXPECT_FALSE(has(derp, "renameat"));
  for (const auto* l : {&cert, &mesh, &mon}) {
    EXPECT_TRUE(has(*l, "connect"));
    EXPECT_TRUE(has(*l, "openat"));
  }
  EXPECT_TRUE(has(cert, "renameat"));
  EXPECT_TRUE(has(cert, "fsync"));
  EXPECT_FALSE(has(mesh, "renameat"));
  EXPECT_FALSE(has(mon, "unlinkat"));
  EXPECT_TRUE(has(mon, "listen"));
  EXPECT_FALSE(has(mesh, "listen"));
}

TEST(SeccompPolicy, EnterSeccompSaysWhyNot) {
  if (kSeccompBuild) {
    auto off = enterSeccomp(Role::StunWorker, false, true);
    ASSERT_TRUE(off.ok());
    EXPECT_EQ(*off, "seccomp: off (seccomp = false)");
    auto notDropped = enterSeccomp(Role::StunWorker, true, false);
    ASSERT_TRUE(notDropped.ok());
    EXPECT_NE(notDropped->find("seccomp: off (no privilege drop"), std::string::npos) << *notDropped;
  } else {
    auto r = enterSeccomp(Role::StunWorker, true, true);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, "seccomp: off (sanitizer build)");
  }
}

#if defined(__x86_64__)
// Every name is a system call libseccomp knows here: a typo would silently
// allow nothing (names unknown to an architecture are skipped).
TEST(SeccompPolicy, EveryNameResolvesOnX8664) {
  for (Role r : ipc::kChildRoles) {
    for (const std::string& n : seccompPolicyNames(r)) {
      EXPECT_GE(seccomp_syscall_resolve_name(n.c_str()), 0) << ipc::roleName(r) << ": " << n;
    }
  }
}
#endif

TEST_F(SeccompFilterTest, EveryRoleRunsItsBasicsWithTheFilter) {
  for (Role r : ipc::kChildRoles) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    int st = runFiltered(r, [] {
      if (::syscall(SYS_getpid) <= 0) return 1;
      if (::write(STDERR_FILENO, "", 0) != 0) return 2;
      unsigned char rnd[8];
      if (::getrandom(rnd, sizeof rnd, 0) != ssize_t(sizeof rnd)) return 3;
      int ep = ::epoll_create1(EPOLL_CLOEXEC);
      int ev = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      int tf = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
      if (ep < 0 || ev < 0 || tf < 0) return 4;
      ::close(ep);
      ::close(ev);
      ::close(tf);
      // A thread: clone3 answers ENOSYS, glibc falls back to clone with
      // CLONE_THREAD.
      std::atomic<int> ran{0};
      std::thread t([&ran] { ran = 1; });
      t.join();
      if (ran != 1) return 5;
      void* m = std::malloc(1 << 20);  // mmap'd
      if (!m) return 6;
      std::free(m);
      rlimit rl{};
      if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 7;
      return 0;
    });
    EXPECT_TRUE(exitedZero(st)) << "wait status " << st;
  }
}

TEST_F(SeccompFilterTest, ForbiddenCallsKillTheProcess) {
  for (Role r : ipc::kChildRoles) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] { return int(::syscall(SYS_personality, 0xffffffffUL) >= 0 ? 0 : 1); })));
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] { return int(::syscall(SYS_ptrace, 0 /* TRACEME */, 0, 0, 0)); })));
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] {
      char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
      ::execv("/bin/true", argv);
      return 3;
    })));
    // fork is clone without CLONE_THREAD.
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] {
      pid_t p = ::fork();
      if (p == 0) ::_exit(0);
      return 4;
    })));
    // Limits may be read, not set.
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] {
      rlimit rl{};
      ::getrlimit(RLIMIT_NOFILE, &rl);
      return ::setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 5 : 6;
    })));
    // Signals only to itself.
    EXPECT_TRUE(killedBySigsys(runFiltered(r, [] { return int(::syscall(SYS_tgkill, 1, 1, 0)); })));
  }
}

// TSYNC: a thread that existed before the filter (like libzmq's) is
// filtered too.
TEST_F(SeccompFilterTest, ThreadsStartedBeforeAreFiltered) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) ::_exit(90);
    std::thread t([fd = p[0]] {
      char c;
      if (::read(fd, &c, 1) != 1) ::_exit(92);
      ::syscall(SYS_personality, 0xffffffffUL);
      ::_exit(93);  // not reached: the filter kills the process
    });
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(94);
    if (!installSeccomp(Role::StunWorker)) ::_exit(91);
    if (::write(p[1], "x", 1) != 1) ::_exit(95);
    t.join();
    ::_exit(96);
  }
  ASSERT_GT(pid, 0);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(killedBySigsys(st)) << "wait status " << st;
}

TEST_F(SeccompFilterTest, SocketFamiliesPerRole) {
  auto sock = [](int family, int type) { return [=] { return ::socket(family, type | SOCK_CLOEXEC, 0) >= 0 ? 0 : 1; }; };
  // stun-worker makes no sockets at all; derp-worker only IP ones.
  EXPECT_TRUE(killedBySigsys(runFiltered(Role::StunWorker, sock(AF_INET, SOCK_DGRAM))));
  EXPECT_TRUE(exitedZero(runFiltered(Role::DerpWorker, sock(AF_INET, SOCK_STREAM))));
  EXPECT_TRUE(exitedZero(runFiltered(Role::DerpWorker, sock(AF_INET6, SOCK_DGRAM))));
  EXPECT_TRUE(killedBySigsys(runFiltered(Role::DerpWorker, sock(AF_UNIX, SOCK_STREAM))));
  for (Role r : {Role::CertAgent, Role::MeshHelper, Role::Monitor}) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    EXPECT_TRUE(exitedZero(runFiltered(r, sock(AF_UNIX, SOCK_STREAM))));
    EXPECT_TRUE(exitedZero(runFiltered(r, sock(AF_INET, SOCK_DGRAM))));
    EXPECT_TRUE(exitedZero(runFiltered(r, sock(AF_NETLINK, SOCK_RAW))));
    EXPECT_TRUE(killedBySigsys(runFiltered(r, sock(AF_PACKET, SOCK_RAW))));
  }
}

// derp-worker alone resolves its -mesh-with hosts itself: getaddrinfo's
// nscd socket, netlink and the resolver's files come with the extra.
TEST_F(SeccompFilterTest, NameResolutionExtra) {
  SeccompExtras resolver;
  resolver.resolveNames = true;
  auto names = seccompPolicyNames(Role::DerpWorker, resolver);
  EXPECT_TRUE(has(names, "bind"));
  EXPECT_FALSE(has(seccompPolicyNames(Role::DerpWorker), "bind"));
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(90);
    if (!installSeccomp(Role::DerpWorker, resolver)) ::_exit(91);
    for (int family : {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}) {
      int fd = ::socket(family, (family == AF_NETLINK ? SOCK_RAW : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
      if (fd < 0) ::_exit(92);
      ::close(fd);
    }
    int fd = ::openat(AT_FDCWD, "/etc/hosts", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(exitedZero(st)) << "wait status " << st;
}

TEST_F(SeccompFilterTest, FilesPerRole) {
  char tmpl[] = "/tmp/derpd-seccomp-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string file = dir + "/f";
  auto readRoot = [] {
    int fd = ::openat(AT_FDCWD, "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 1;
    ::close(fd);
    return 0;
  };
  auto create = [file] {
    int fd = ::openat(AT_FDCWD, file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return 1;
    ::close(fd);
    return 0;
  };
  // stun-worker: openat fails as in its empty chroot, nothing is opened.
  EXPECT_TRUE(exitedZero(runFiltered(Role::StunWorker, [] {
    errno = 0;
    int fd = ::openat(AT_FDCWD, "/", O_RDONLY | O_CLOEXEC);
    return fd < 0 && errno == ENOENT ? 0 : 1;
  })));
  // Read-only opens for derp-worker (/proc/self/fd), mesh-helper, monitor.
  for (Role r : {Role::DerpWorker, Role::MeshHelper, Role::Monitor}) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    EXPECT_TRUE(exitedZero(runFiltered(r, readRoot)));
    EXPECT_TRUE(killedBySigsys(runFiltered(r, create)));
  }
  // cert-agent writes its certificates.
  EXPECT_TRUE(exitedZero(runFiltered(Role::CertAgent, readRoot)));
  EXPECT_TRUE(exitedZero(runFiltered(Role::CertAgent, create)));
  EXPECT_TRUE(exitedZero(runFiltered(Role::CertAgent, [dir, file] {
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return 1;
    if (::renameat(d, "f", d, "g") != 0) return 2;
    if (::unlinkat(d, "g", 0) != 0) return 3;
    ::close(d);
    return 0;
  })));
  ::unlink(file.c_str());
  ::unlink((dir + "/g").c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace derpd::proc
