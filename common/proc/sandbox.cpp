#include "common/proc/sandbox.hpp"

#include <sys/resource.h>

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/log/log.hpp"

namespace derpd::proc {

static std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

Result<UserIds> lookupUser(const std::string& user) {
  if (user.empty()) return makeError("no unprivileged user configured");
  errno = 0;
  passwd* pw = ::getpwnam(user.c_str());
  if (!pw) return makeError("unknown user \"" + user + "\"");
  if (pw->pw_uid == 0) return makeError("user \"" + user + "\" is root");
  return UserIds{pw->pw_uid, pw->pw_gid};
}

Result<FdLimit> raiseFdLimit(uint64_t want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return makeError(std::string("getrlimit: ") + std::strerror(errno));
  if (want > 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    uint64_t cap = want;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
      unsigned long long nrOpen = 0;
      if (std::fscanf(f, "%llu", &nrOpen) == 1 && nrOpen > 0 && nrOpen < cap) cap = nrOpen;
      std::fclose(f);
    }
    if (cap > rl.rlim_max) {
      rlimit up{rlim_t(cap), rlim_t(cap)};
      // Fails without the privilege; the soft limit is raised below anyway.
      if (::setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return makeError(std::string("setrlimit: ") + std::strerror(errno));
  }
  return FdLimit{uint64_t(rl.rlim_cur), uint64_t(rl.rlim_max)};
}

Result<Sandboxed> enterSandbox(const SandboxSpec& spec) {
  if (::geteuid() != 0) {
    LOG_WARN("running as uid {} (not root): privilege drop and chroot skipped", ::geteuid());
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return makeError(errnoText("PR_SET_NO_NEW_PRIVS"));
    return Sandboxed{"not root: no drop", false};
  }
  // Look the user up before chroot: /etc is not there afterwards.
  auto ids = lookupUser(spec.user);
  if (!ids) return std::move(ids).takeError();
  uid_t uid = ids->uid;
  gid_t gid = ids->gid;
  if (!spec.chrootDir.empty()) {
    if (::chroot(spec.chrootDir.c_str()) != 0) return makeError(errnoText(("chroot " + spec.chrootDir).c_str()));
    if (::chdir("/") != 0) return makeError(errnoText("chdir /"));
  }
  if (::setgroups(1, &gid) != 0) return makeError(errnoText("setgroups"));
  if (::setresgid(gid, gid, gid) != 0) return makeError(errnoText("setresgid"));
  if (::setresuid(uid, uid, uid) != 0) return makeError(errnoText("setresuid"));
  // Regaining root must be impossible.
  if (::setuid(0) == 0) return makeError("privilege drop failed: setuid(0) succeeded");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return makeError(errnoText("PR_SET_NO_NEW_PRIVS"));
  std::string what = "uid " + std::to_string(uid) + " gid " + std::to_string(gid);
  if (!spec.chrootDir.empty()) what += ", chroot " + spec.chrootDir;
  return Sandboxed{what, true};
}

Result<void> prepareEmptyDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return makeError(errnoText(("mkdir " + path).c_str()));
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return makeError(errnoText(("stat " + path).c_str()));
  if (!S_ISDIR(st.st_mode)) return makeError(path + " is not a directory");
  if (::geteuid() == 0 && st.st_uid != 0) return makeError(path + " is not owned by root");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return makeError(path + " is writable by group or others");
  return {};
}

}  // namespace derpd::proc
