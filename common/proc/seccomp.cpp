#include "common/proc/seccomp.hpp"

#include <seccomp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/log/log.hpp"
#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc {

namespace {

struct CtxFree {
  void operator()(scmp_filter_ctx c) const { seccomp_release(c); }
};
using FilterPtr = std::unique_ptr<void, CtxFree>;

std::string scmpError(const char* what, int rc) { return std::string(what) + ": " + std::strerror(-rc); }

// One seccomp_rule_add per allowed argument value (libseccomp ORs rules of
// the same system call).
Result<void> addRule(scmp_filter_ctx ctx, const SyscallRule& r) {
  const std::string name(r.name);
  int nr = seccomp_syscall_resolve_name(name.c_str());
  if (nr == __NR_SCMP_ERROR) {
    // Not a system call of this architecture (e.g. poll on arm64): nothing
    // to allow.
    LOG_DEBUG("seccomp: {} is not a system call here; skipped", name);
    return okResult();
  }
  const uint32_t action = r.errnoValue != 0 ? SCMP_ACT_ERRNO(uint32_t(r.errnoValue)) : SCMP_ACT_ALLOW;
  if (r.arg < 0) {
    int rc = seccomp_rule_add(ctx, action, nr, 0);
    if (rc < 0) return makeError(scmpError(("seccomp_rule_add " + name).c_str(), rc));
    return okResult();
  }
  for (uint64_t v : r.values) {
    scmp_arg_cmp cmp{};
    cmp.arg = unsigned(r.arg);
    cmp.op = SCMP_CMP_MASKED_EQ;
    cmp.datum_a = r.mask;
    cmp.datum_b = v & r.mask;
    int rc = seccomp_rule_add_array(ctx, action, nr, 1, &cmp);
    if (rc < 0) return makeError(scmpError(("seccomp_rule_add " + name).c_str(), rc));
  }
  return okResult();
}

std::vector<std::string> namesOf(const SeccompPolicy& p) {
  std::vector<std::string> names;
  for (const SyscallRule& r : p) names.emplace_back(r.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace

SeccompPolicy seccompPolicy(ipc::Role role, const SeccompExtras& extras) {
  SeccompPolicy p;
  switch (role) {
    case ipc::Role::DerpWorker: p = policy::derpWorker(); break;
    case ipc::Role::StunWorker: p = policy::stunWorker(); break;
    case ipc::Role::CertAgent: p = policy::certAgent(); break;
    case ipc::Role::MeshHelper: p = policy::meshHelper(); break;
    case ipc::Role::Monitor: p = policy::monitor(); break;
    case ipc::Role::Supervisor: return {};
  }
  if (extras.resolveNames) {
    policy::append(p, policy::readFiles());
    policy::append(p, policy::dialAndResolve());
  }
  return p;
}

std::vector<std::string> seccompPolicyNames(ipc::Role role, const SeccompExtras& extras) {
  return namesOf(seccompPolicy(role, extras));
}

Result<size_t> installSeccomp(ipc::Role role, const SeccompExtras& extras) {
  const SeccompPolicy rules = seccompPolicy(role, extras);
  if (rules.empty()) return makeError("no seccomp policy for " + std::string(ipc::roleName(role)));
  // SCMP_ACT_KILL_PROCESS needs API level 3 (kernel 4.14): without it a
  // forbidden call would kill one thread and leave the process half alive.
  if (seccomp_api_get() < 3) return makeError("libseccomp/kernel without SECCOMP_RET_KILL_PROCESS (API level < 3)");
  FilterPtr ctx(seccomp_init(SCMP_ACT_KILL_PROCESS));
  if (!ctx) return makeError("seccomp_init failed");
  // Every thread, not only the caller: libzmq's I/O threads were started
  // before the sandbox. The kernel gives them no_new_privs as well.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc < 0)
    return makeError(scmpError("seccomp TSYNC", rc));
  for (const SyscallRule& r : rules) {
    if (auto a = addRule(ctx.get(), r); !a) return std::move(a).takeError();
  }
  if (int rc = seccomp_load(ctx.get()); rc < 0) return makeError(scmpError("seccomp_load", rc));
  return namesOf(rules).size();
}

Result<std::string> enterSeccomp(ipc::Role role, bool wanted, bool dropped, const SeccompExtras& extras) {
  if (!kSeccompBuild) return std::string("seccomp: off (sanitizer build)");
  if (!wanted) return std::string("seccomp: off (seccomp = false)");
  if (!dropped) return std::string("seccomp: off (no privilege drop: not started as root with --user)");
  auto n = installSeccomp(role, extras);
  if (!n) return std::move(n).takeError();
  return "seccomp: " + std::string(ipc::roleName(role)) + " allow-list in force (" + std::to_string(*n) +
         " system calls" + (extras.resolveNames ? ", with name resolution" : "") +
         "; any other kills the process)";
}

}  // namespace derpd::proc
