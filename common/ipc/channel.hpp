// ZeroMQ control channel (DESIGN.md "Control plane"): the supervisor binds a
// ROUTER on ipc://<runtime dir>/<name>.sock, each child connects a DEALER
// whose routing identity is "<role name>:<pid>". Non-blocking, no threads of its
// own beyond libzmq's I/O thread: the owner's epoll loop drives it.
// Included by the supervisor (root, before and after spawning) and by every
// child (unprivileged, before the sandbox is entered: connect() needs the
// socket path).
//
// Handshake: each side's first message is Hello. The DEALER queues its Hello
// in connect(); the ROUTER answers a valid Hello with its own. A Hello whose
// role differs from the routing identity / expected peer, or whose
// ipc_version (envelope or body) differs from kIpcVersion, is a peer fault.
// Anything but Hello from a peer before its Hello is a peer fault. Hello is
// consumed by the channel (see peerReady()); handlers never see it. A new
// Hello for a known role (a restarted child) starts a new session.
//
// One process, one connection: a DEALER never reconnects (ZMQ_RECONNECT_IVL
// -1). A child outlives its supervisor only while it drains after SIGTERM
// (PR_SET_PDEATHSIG); if a new derpd has meanwhile bound the same socket
// path, the old child must not talk to it. The ROUTER side backs this up:
// the supervisor names each child's pid at spawn (expectPeer()), and a
// connection whose identity carries another pid is a fault with no peer
// (logged and ignored), so it can never displace or get killed the child
// that really holds the role.
//
// Receiving, in poll(): routing identity -> Role, decodeEnvelope, handshake
// state, checkPolicy(type, sender, self, body size) -- all *before* the
// handler runs. The first failure stops poll() and is returned as a PeerFault.
// A child logs it with role and type and exits(1). The supervisor kills and
// respawns the faulting child (PeerFault::peer); a fault with no peer (an
// identity that is not a role name, or a local socket error) is logged and
// the supervisor carries on.
//
// Queues (ZMQ_SNDHWM / ZMQ_RCVHWM, default kDefaultHwm messages per peer):
// send() never blocks and never drops silently. When the peer's queue is full
// libzmq refuses the message (EAGAIN; the ROUTER runs with
// ZMQ_ROUTER_MANDATORY so it does not drop) and send() returns
// SendStatus::QueueFull. Caller policy:
//   - periodic messages (MetricsReport): drop this one and count it; the next
//     report supersedes it.
//   - anything else from the supervisor: the child is wedged (it has not read
//     kDefaultHwm messages); kill and respawn it, as for a missed deadline.
//   - anything else from a child: log, drop, and let the supervisor's own
//     timeouts notice; a child never blocks its event loop on the supervisor.
// A message over its policy size is a peer fault like any other. One over
// ZMQ_MAXMSGSIZE (the envelope cap, kMaxEnvelopeBytes) makes libzmq drop the
// connection; only the supervisor could send one to a child (its own bug),
// and a child whose supervisor is gone dies of PR_SET_PDEATHSIG.
//
// Event-loop contract (libzmq's ZMQ_FD semantics): fd() is edge-like. Add it
// to epoll with EPOLLIN; when it wakes, call poll(), which reads with
// ZMQ_DONTWAIT while ZMQ_EVENTS has ZMQ_POLLIN. Also call poll() after every
// send() and whenever poll() returned more == true: libzmq may consume the
// fd's notification during send() or leave messages queued, and the fd will
// not wake again for them.
//
// Known limitation (docs/IPC.md, docs/SECURITY.md to come): the identity is
// asserted by the connecting process; only the 0700 runtime directory limits
// it to derpd's uid (root when packaged). libzmq 4.3's public API does not
// expose the peer's SO_PEERCRED; per-child endpoints checked with it are the
// way to close this (issue 9, hardening).
#pragma once

#include <zmq.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ipc/envelope.hpp"
#include "common/ipc/messages.hpp"
#include "common/ipc/role.hpp"
#include "common/util/version.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::ipc {

inline constexpr int kDefaultHwm = 1000;

// Creates `dir` (absolute; its parent must exist) with mode 0700, or accepts
// an existing one only if it is a directory (not a symlink) owned by our
// effective uid with no group/other permission bits.
Result<void> ensureRuntimeDir(const std::string& dir);

// "ipc://<dir>/<name>.sock"; an error when the path does not fit sun_path.
Result<std::string> ipcEndpoint(const std::string& dir, const std::string& name);

struct ChannelOptions {
  std::string buildId = std::string(DERPD_VERSION "+") + gitRev();
  int sendHwm = kDefaultHwm;
  int recvHwm = kDefaultHwm;
  // DEALER: the pid in the routing identity; 0 means getpid().
  int pid = 0;
};

// "<role>:<pid>" -> (role, pid); nullopt for anything else.
std::optional<std::pair<Role, int>> parseIdentity(std::string_view id);

enum class SendStatus {
  Sent,
  QueueFull,  // peer's HWM reached (EAGAIN); see the policy above
  NoPeer,     // no such connected peer, or its Hello not seen yet
  Refused,    // checkPolicy refused (our bug)
  Failed,     // other libzmq error
};

struct SendResult {
  SendStatus status = SendStatus::Sent;
  std::string error;
  bool ok() const { return status == SendStatus::Sent; }
};

struct PeerFault {
  std::optional<Role> peer;      // nullopt: unknown identity or a local error
  std::optional<MsgType> type;   // when the envelope decoded
  std::string reason;
  // "peer fault from stun-worker (MetricsReport): <reason>"
  std::string describe() const;
};

struct PollResult {
  size_t handled = 0;  // messages read, including Hello
  bool more = false;   // stopped at the budget with input left: poll() again
  std::optional<PeerFault> fault;
};

// Gets every message that passed the checks, except Hello. An error return is
// a peer fault for `from`.
using Handler = std::function<Result<void>(Role from, const Envelope& env)>;

class Channel {
 public:
  // Supervisor side: ensureRuntimeDir(runtimeDir), then a ROUTER bound on
  // ipcEndpoint(runtimeDir, name). `ctx` must outlive the channel.
  static Result<std::unique_ptr<Channel>> bind(zmq::context_t& ctx, Role self,
                                               const std::string& runtimeDir,
                                               const std::string& name,
                                               const ChannelOptions& opts = {});
  // Child side: a DEALER with identity roleName(self) connected to `endpoint`
  // (served by `peer`), with our Hello already queued.
  static Result<std::unique_ptr<Channel>> connect(zmq::context_t& ctx, Role self, Role peer,
                                                  const std::string& endpoint,
                                                  const ChannelOptions& opts = {});

  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  Role self() const { return self_; }
  const std::string& endpoint() const { return endpoint_; }
  // ZMQ_FD, for epoll (see the contract above). Owned by libzmq: never close it.
  int fd() const { return fd_; }
  // True once `peer`'s valid Hello has been received in this session.
  bool peerReady(Role peer) const { return peers_[roleIndex(peer)].ready; }
  const std::string& peerBuildId(Role peer) const { return peers_[roleIndex(peer)].buildId; }
  // Ends `peer`'s session (it exited): sends to it fail with NoPeer until its
  // next Hello.
  void forgetPeer(Role peer) { peers_[roleIndex(peer)] = PeerState{}; }
  // ROUTER: only process `pid` may speak for `peer` from now on (the
  // supervisor calls this right after fork). Until the first call for a
  // role, any pid may.
  void expectPeer(Role peer, int pid) { expectedPid_[roleIndex(peer)] = pid; }

  template <typename T>
  SendResult send(Role to, const T& msg, uint64_t requestId = 0) {
    return sendBody(to, T::kType, requestId, encodeBody(msg));
  }
  SendResult sendBody(Role to, MsgType type, uint64_t requestId, ByteView body);

  // Reads until ZMQ_EVENTS has no POLLIN, `budget` messages were read, or a
  // fault. Never blocks, never throws.
  PollResult poll(const Handler& handler,
                  size_t budget = std::numeric_limits<size_t>::max());

  // Sends raw envelope bytes, skipping encode, policy and handshake checks.
  SendResult sendRawForTest(Role to, ByteView envelope) { return sendFrames(to, envelope); }

 private:
  struct PeerState {
    bool ready = false;
    std::string buildId;
    std::string identity;  // ROUTER: the routing id its Hello came from
  };

  Channel(zmq::context_t& ctx, zmq::socket_type type, Role self, Role peer,
          const ChannelOptions& opts);
  void configure();
  SendResult sendFrames(Role to, ByteView envelope);
  std::optional<PeerFault> handleOne(const std::vector<zmq::message_t>& parts,
                                     const Handler& handler);
  std::optional<PeerFault> onHello(Role from, const Envelope& env, std::string identity);

  // All owned by the loop thread that owns the channel.
  zmq::socket_t sock_;
  bool router_;
  Role self_;
  Role peer_;  // DEALER: the one peer; ROUTER: unused
  ChannelOptions opts_;
  std::string endpoint_;
  int fd_ = -1;
  std::array<PeerState, kRoleCount> peers_{};
  std::array<int, kRoleCount> expectedPid_{};  // ROUTER; 0: any
};

}  // namespace derpd::ipc
