#include "common/ipc/channel.hpp"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/ipc/policy.hpp"

namespace derpd::ipc {
namespace {

std::string errnoText(int err) { return std::strerror(err); }

ByteView viewOf(const zmq::message_t& m) {
  return ByteView(static_cast<const uint8_t*>(m.data()), m.size());
}

PeerFault fault(std::optional<Role> peer, std::optional<MsgType> type, std::string reason) {
  return PeerFault{peer, type, std::move(reason)};
}

}  // namespace

std::optional<std::pair<Role, int>> parseIdentity(std::string_view id) {
  const size_t colon = id.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const auto role = roleFromName(id.substr(0, colon));
  const std::string_view digits = id.substr(colon + 1);
  if (!role || digits.empty() || digits.size() > 9 || digits[0] == '0') return std::nullopt;
  int pid = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    pid = pid * 10 + (c - '0');
  }
  return std::make_pair(*role, pid);
}

Result<void> ensureRuntimeDir(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') return makeError("runtime dir '" + dir + "' is not absolute");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return makeError("mkdir " + dir + ": " + errnoText(errno));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return makeError("lstat " + dir + ": " + errnoText(errno));
  if (!S_ISDIR(st.st_mode)) return makeError("runtime dir " + dir + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    return makeError("runtime dir " + dir + " is owned by uid " + std::to_string(st.st_uid) +
                     ", not " + std::to_string(::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    return makeError("runtime dir " + dir + " has mode " + mode + ", want no group/other bits");
  }
  return okResult();
}

Result<std::string> ipcEndpoint(const std::string& dir, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return makeError("bad endpoint name '" + name + "'");
  }
  const std::string path = dir + "/" + name + ".sock";
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return makeError("socket path " + path + " is too long for AF_UNIX");
  }
  return "ipc://" + path;
}

std::string PeerFault::describe() const {
  std::string s = "peer fault from ";
  s += peer ? std::string(roleName(*peer)) : std::string("unknown peer");
  if (type) s += " (" + msgTypeName(static_cast<uint16_t>(*type)) + ")";
  s += ": " + reason;
  return s;
}

Channel::Channel(zmq::context_t& ctx, zmq::socket_type type, Role self, Role peer,
                 const ChannelOptions& opts)
    : sock_(ctx, type),
      router_(type == zmq::socket_type::router),
      self_(self),
      peer_(peer),
      opts_(opts) {}

Channel::~Channel() = default;

void Channel::configure() {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::sndhwm, opts_.sendHwm);
  sock_.set(zmq::sockopt::rcvhwm, opts_.recvHwm);
  // The envelope's own cap, not the policy's per-type one: a message over
  // its policy size must reach checkPolicy() and be a peer fault, not make
  // libzmq drop the connection silently.
  sock_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxEnvelopeBytes));
  if (router_) {
    sock_.set(zmq::sockopt::router_mandatory, 1);
    sock_.set(zmq::sockopt::router_handover, 1);
  } else {
    const std::string id = std::string(roleName(self_)) + ":" +
                           std::to_string(opts_.pid > 0 ? opts_.pid : int(::getpid()));
    sock_.set(zmq::sockopt::routing_id, zmq::buffer(id.data(), id.size()));
    // One connection for the life of the process (see the header).
    sock_.set(zmq::sockopt::reconnect_ivl, -1);
  }
}

Result<std::unique_ptr<Channel>> Channel::bind(zmq::context_t& ctx, Role self,
                                               const std::string& runtimeDir,
                                               const std::string& name,
                                               const ChannelOptions& opts) {
  if (auto r = ensureRuntimeDir(runtimeDir); !r.ok()) return std::move(r).takeError();
  auto ep = ipcEndpoint(runtimeDir, name);
  if (!ep.ok()) return std::move(ep).takeError();
  try {
    std::unique_ptr<Channel> ch(new Channel(ctx, zmq::socket_type::router, self, self, opts));
    ch->configure();
    ch->sock_.bind(*ep);
    ch->endpoint_ = *ep;
    ch->fd_ = ch->sock_.get(zmq::sockopt::fd);
    return ch;
  } catch (const std::exception& e) {
    return makeError("bind " + *ep + ": " + e.what());
  }
}

Result<std::unique_ptr<Channel>> Channel::connect(zmq::context_t& ctx, Role self, Role peer,
                                                  const std::string& endpoint,
                                                  const ChannelOptions& opts) {
  try {
    std::unique_ptr<Channel> ch(new Channel(ctx, zmq::socket_type::dealer, self, peer, opts));
    ch->configure();
    ch->sock_.connect(endpoint);
    ch->endpoint_ = endpoint;
    ch->fd_ = ch->sock_.get(zmq::sockopt::fd);
    const SendResult hello = ch->send(peer, Hello{self, opts.buildId, kIpcVersion});
    if (!hello.ok()) return makeError("connect " + endpoint + ": Hello: " + hello.error);
    return ch;
  } catch (const std::exception& e) {
    return makeError("connect " + endpoint + ": " + e.what());
  }
}

SendResult Channel::sendBody(Role to, MsgType type, uint64_t requestId, ByteView body) {
  if (!router_ && to != peer_) {
    return {SendStatus::NoPeer, "not connected to " + std::string(roleName(to))};
  }
  if (auto p = checkPolicy(type, self_, to, body.size()); !p.ok()) {
    return {SendStatus::Refused, p.error()};
  }
  if (router_ && type != MsgType::Hello && !peers_[roleIndex(to)].ready) {
    return {SendStatus::NoPeer, std::string(roleName(to)) + " has not said Hello"};
  }
  return sendFrames(to, encodeEnvelope(type, requestId, body));
}

SendResult Channel::sendFrames(Role to, ByteView envelope) {
  try {
    if (router_) {
      const std::string& id = peers_[roleIndex(to)].identity;
      if (id.empty()) return {SendStatus::NoPeer, std::string(roleName(to)) + " is not connected"};
      if (!sock_.send(zmq::buffer(id.data(), id.size()),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        return {SendStatus::QueueFull, std::string(roleName(to)) + ": queue full"};
      }
    }
    if (!sock_.send(zmq::buffer(envelope.data(), envelope.size()), zmq::send_flags::dontwait)) {
      return {SendStatus::QueueFull, std::string(roleName(to)) + ": queue full"};
    }
    return {};
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) {
      return {SendStatus::NoPeer, std::string(roleName(to)) + " is not connected"};
    }
    return {SendStatus::Failed, std::string("send: ") + e.what()};
  } catch (const std::exception& e) {
    return {SendStatus::Failed, std::string("send: ") + e.what()};
  }
}

PollResult Channel::poll(const Handler& handler, size_t budget) {
  PollResult res;
  try {
    std::vector<zmq::message_t> parts;
    while (true) {
      const bool readable = (sock_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
      if (!readable) break;
      if (res.handled >= budget) {
        res.more = true;
        break;
      }
      parts.clear();
      parts.emplace_back();
      if (!sock_.recv(parts.back(), zmq::recv_flags::dontwait)) break;
      // The rest of a multipart message is already here (atomic delivery).
      while (parts.back().more()) {
        parts.emplace_back();
        if (!sock_.recv(parts.back(), zmq::recv_flags::dontwait)) break;
      }
      ++res.handled;
      if (auto f = handleOne(parts, handler)) {
        if (f->peer) peers_[roleIndex(*f->peer)] = PeerState{};
        res.fault = std::move(f);
        break;
      }
    }
  } catch (const std::exception& e) {
    res.fault = fault(std::nullopt, std::nullopt, std::string("local: ") + e.what());
  }
  return res;
}

std::optional<PeerFault> Channel::handleOne(const std::vector<zmq::message_t>& parts,
                                            const Handler& handler) {
  Role from = peer_;
  std::string identity;
  if (router_) {
    // [routing id][envelope]
    const ByteView id = parts.empty() ? ByteView() : viewOf(parts[0]);
    const auto who = parseIdentity(asChars(id));
    if (!who) {
      return fault(std::nullopt, std::nullopt, "routing id '" + toHex(id) + "' is not <role>:<pid>");
    }
    from = who->first;
    const int want = expectedPid_[roleIndex(from)];
    if (want != 0 && who->second != want) {
      return fault(std::nullopt, std::nullopt,
                   "a process claiming to be " + std::string(roleName(from)) + " (pid " +
                       std::to_string(who->second) + ") is not the current one (pid " +
                       std::to_string(want) + "): a stale or forged connection");
    }
    identity.assign(asChars(id));
    if (parts.size() != 2) {
      return fault(from, std::nullopt, std::to_string(parts.size()) + " frames, want 2");
    }
  } else if (parts.size() != 1) {
    return fault(from, std::nullopt, std::to_string(parts.size()) + " frames, want 1");
  }

  auto env = decodeEnvelope(viewOf(parts.back()));
  if (!env.ok()) return fault(from, std::nullopt, env.error());
  const MsgType type = env->type;
  if (auto p = checkPolicy(type, from, self_, env->body.size()); !p.ok()) {
    return fault(from, type, p.error());
  }
  if (type == MsgType::Hello) return onHello(from, *env, std::move(identity));
  const PeerState& st = peers_[roleIndex(from)];
  if (!st.ready) return fault(from, type, "message before Hello");
  if (router_ && identity != st.identity) {
    // Only reachable without expectPeer(): two processes sharing a role.
    return fault(from, type, "message from " + identity + ", whose session is " + st.identity);
  }
  if (auto r = handler(from, *env); !r.ok()) return fault(from, type, r.error());
  return std::nullopt;
}

std::optional<PeerFault> Channel::onHello(Role from, const Envelope& env, std::string identity) {
  auto hello = decodeBody<Hello>(env);
  if (!hello.ok()) return fault(from, MsgType::Hello, hello.error());
  if (hello->role != from) {
    return fault(from, MsgType::Hello,
                 "Hello claims role " + std::string(roleName(hello->role)));
  }
  if (hello->ipcVersion != kIpcVersion) {
    return fault(from, MsgType::Hello,
                 "ipc_version " + std::to_string(hello->ipcVersion) + ", want " +
                     std::to_string(kIpcVersion) + " (peer build " + hello->buildId + ")");
  }
  PeerState& st = peers_[roleIndex(from)];
  st.ready = true;
  st.buildId = hello->buildId;
  st.identity = std::move(identity);
  if (router_) {
    const SendResult r = send(from, Hello{self_, opts_.buildId, kIpcVersion});
    if (!r.ok()) return fault(from, MsgType::Hello, "answering Hello: " + r.error);
  }
  return std::nullopt;
}

}  // namespace derpd::ipc
