// derpd's supervisor: opens the listening sockets, the server key and the
// mesh key while privileged, fork+execs each role binary from one spawn table
// (sockets as inherited fds, secrets over pipes), serves the control plane
// (ZeroMQ ROUTER in the runtime dir, docs/IPC.md), restarts children that die
// with capped exponential backoff, and turns signals into control messages.
// It never parses network data. Included by derpd only.
#pragma once

#include <sys/types.h>

#include <zmq.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <set>
#include <vector>

#include "common/config/config.hpp"
#include "common/ipc/channel.hpp"
#include "common/ipc/messages.hpp"
#include "common/ipc/role.hpp"
#include "common/proc/notify.hpp"
#include "common/util/result.hpp"

namespace derpd::supervisor {

using Clock = std::chrono::steady_clock;

struct Child;

// A secret handed to a child through a pipe: "--key-fd" + the bytes.
struct Secret {
  std::string flag;
  std::string bytes;
};

// Test-only behaviour, set by derpd's --...-for-test flags (not config keys,
// not in --help; see main.cpp).
struct TestHooks {
  // --stun-forbidden-syscall-after-for-test MS: passed to stun-worker's
  // first start as --forbidden-syscall-after-for-test, so its seccomp filter
  // kills it (and the restarted one runs normally).
  int stunForbiddenSyscallAfterMs = 0;
  // --stall-derp-loop-for-test MS: passed to derp-worker's first start as
  // --stall-loop-for-test, so that its event loop 0 blocks (child-watchdog).
  int stallDerpLoopForTestMs = 0;
};

// One row of the spawn table.
struct RoleSpec {
  ipc::Role role;
  bool required;  // derpd exits when it cannot keep this role running
  // argv[1..] for the role (the supervisor adds --control and the secret fds).
  std::function<std::vector<std::string>()> args;
  // Secrets piped to the role at each start.
  std::function<std::vector<Secret>()> secrets;
  // Inherited fds (listeners) the role keeps across exec.
  std::function<std::vector<int>()> fds;
  // Whether this run needs the role (decided in prepare()); null = always.
  std::function<bool()> enabled;
};

struct Child {
  const RoleSpec* spec = nullptr;
  pid_t pid = -1;
  bool ready = false;             // said Ready since its last start
  Clock::time_point startedAt{};
  Clock::time_point restartAt{};  // when pid == -1 and a restart is due
  int quickFailures = 0;          // consecutive exits soon after start
  uint64_t restarts = 0;
  std::vector<ipc::Metric> metrics;  // its last MetricsReport
  int logFd = -1;                 // read end of its stderr pipe
  std::string logPartial;         // an unfinished line from logFd
  std::string lastError;          // its last error-level log line's message, for "gives up"
  Clock::time_point lastHeard{};  // its last control message (child-watchdog)
  std::vector<uint64_t> loopTicks;              // derp-worker: each loop's count, as last reported
  std::vector<Clock::time_point> loopProgress;  // when each last advanced
  std::string watchdogReason;     // why the watchdog killed it (for the exit line); "" = it did not
  std::string name() const;
};

class Supervisor {
 public:
  Supervisor(config::Config cfg, std::vector<std::string> args, TestHooks hooks = {});
  ~Supervisor();

  // Opens listeners, key files, the runtime dir and the control socket;
  // fatal errors are returned.
  Result<void> prepare();
  // Spawns every role and runs until SIGTERM/SIGINT (exit code 0) or until a
  // required role cannot start (non-zero).
  int run();

  // Control-plane handlers (the dispatch table in supervisor.cpp).
  Result<void> onReady(ipc::Role from, const ipc::Ready& msg);
  Result<void> onMetricsReport(ipc::Role from, const ipc::MetricsReport& msg);
  Result<void> onSnapshotRequest(ipc::Role from, const ipc::MetricsSnapshotRequest& msg);
  // Certificates: relayed cert-agent -> derp-worker (kept for a restarted
  // derp-worker) and the challenge answers back; never looked into.
  Result<void> onCertUpdate(ipc::Role from, const ipc::CertUpdate& msg);
  Result<void> onAcmeChallenge(ipc::Role from, const ipc::AcmeChallenge& msg);
  Result<void> onAcmeChallengeReady(ipc::Role from, const ipc::AcmeChallengeReady& msg);
  // Admission questions derp-worker -> mesh-helper and the answers back;
  // derpd answers "unavailable" for a mesh-helper that is down.
  Result<void> onVerifyRequest(ipc::Role from, const ipc::VerifyRequest& msg);
  Result<void> onVerifyReply(ipc::Role from, const ipc::VerifyReply& msg);
  // mesh-helper's resolved -mesh-with addresses (kept for a restarted derp-worker).
  Result<void> onMeshPeers(ipc::Role from, const ipc::MeshPeers& msg);
  // cert-agent's watch saw the manual certificate files change.
  Result<void> onManualCertFilesRequest(ipc::Role from, const ipc::ManualCertFilesRequest& msg);

  // The exit status for a failed prepare(): kExitConfig for a configuration
  // error (the unit's RestartPreventExitStatus), 1 otherwise.
  int prepareExitCode() const { return prepareExit_; }

 private:
  Result<void> lockRuntimeDir();
  Result<void> prepareRuntimeDir();
  // Checks before anything is forked (a config error, exit 78): the users
  // exist, the manual certificate files are readable and valid.
  Result<void> checkUsers();
  Result<void> checkManualCert();
  // Reads the manual certificate files with derpd's privileges.
  ipc::ManualCertFiles readManualCertFiles(const std::string& reason) const;
  void sendManualCertFiles(const std::string& reason);
  // sd_notify: READY=1 once every required child is ready, STATUS= lines.
  void notifyState();
  // child-watchdog: SIGKILL for a child (or a derp-worker loop) silent too
  // long; and systemd's WATCHDOG=1 while every required child answers.
  void checkWatchdog(Clock::time_point now);
  Result<void> prepareCertDir();
  Result<void> spawn(Child& c);
  void reap();
  void onChildExit(Child& c, int status);
  void reload();
  void reopenLogs();
  void stopAll();
  void pollControl();
  void readChildLog(Child& c);
  void sendToChildren(const std::function<ipc::SendResult(Child&)>& send, const char* what);
  Child* childFor(ipc::Role role);
  // Sends `msg` to `role` when it is running and ready; false otherwise.
  template <typename Msg>
  bool sendIfReady(ipc::Role role, const Msg& msg);
  std::string binaryPath(const std::string& role) const;
  // A message to a running child could not be sent: SIGKILL it (restart),
  // unless derpd is stopping anyway.
  void onSendFailure(Child& c, std::string_view what, const std::string& why);
  std::string selfDerpMap() const;

  config::Config cfg_;
  std::vector<std::string> args_;  // the command line, for reloads
  TestHooks hooks_;
  std::vector<RoleSpec> table_;
  std::vector<Child> children_;
  std::string libexecDir_;
  std::string keyBytes_;   // derper key file contents, piped to derp-worker
  std::string meshKey_;    // -mesh-psk-file's key, piped to derp-worker
  std::string eabKey_;     // -acme-eab-key, piped to cert-agent
  std::optional<ipc::CertUpdate> cert_;             // the last certificate from cert-agent
  std::map<std::string, ipc::AcmeChallenge> challenges_;  // in force, by token
  std::optional<ipc::MeshPeers> meshPeers_;         // the last MeshPeers from mesh-helper
  std::set<uint64_t> verifyPending_;                // questions mesh-helper has not answered
  std::vector<ipc::VerifyRequest> verifyWaiting_;   // for a mesh-helper still starting
  bool meshHelper_ = false;  // this run needs mesh-helper (mesh or client verification)
  bool tls_ = false;
  std::string selfMap_;  // the monitor's one-node DERP map (when monitor-derp-map is empty)
  bool dropPrivileges_ = false;
  std::string runDir_;     // the runtime dir in use (0700)
  int lockFd_ = -1;        // runDir_/derpd.lock, flock'ed for derpd's life
  bool ownSocket_ = false; // this derpd bound runDir_/control.sock (and may remove it)
  int prepareExit_ = 1;
  proc::Notifier notifier_ = proc::Notifier::fromEnvironment();  // $NOTIFY_SOCKET
  bool notifiedReady_ = false;
  std::string notifiedStatus_;
  uint64_t clients_ = 0;  // derp-worker's last count (MetricsSnapshotRequest)
  std::chrono::microseconds systemdWatchdog_{0};  // $WATCHDOG_USEC; 0 = systemd does not watch derpd
  Clock::time_point lastWatchdogPing_{};
  bool ownRunDir_ = false; // a private temp dir made for this run, removed at exit
  std::string emptyDir_;   // chroot for children that need no files
  int listenFd_ = -1;
  int port80Fd_ = -1;
  std::vector<int> udpFds_;  // STUN sockets (-stun), for stun-worker
  int sigFd_ = -1;
  zmq::context_t zmq_{1};
  std::unique_ptr<ipc::Channel> control_;
  uint64_t requestId_ = 0;  // of the message being dispatched
  bool stopping_ = false;
  int exitCode_ = 0;
};

// sysexits.h EX_CONFIG: a configuration error; derpd.service does not
// restart on it (RestartPreventExitStatus=78).
inline constexpr int kExitConfig = 78;

// The runtime dir derpd uses for `cfg` when --runtime-dir is not given:
// -dev as root gets one per address (/run/derpd-dev.<host>_<port>), so dev
// relays on different ports and the packaged derpd never share one; port 0
// or not root: "" (a private mkdtemp dir for the run).
std::string devRuntimeDir(const config::Config& cfg);

// Backoff before restart number `failures` (0-based): 100 ms doubling, capped at 10 s.
std::chrono::milliseconds restartDelay(int failures);

}  // namespace derpd::supervisor
