#include "mesh_link.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <climits>
#include <cstring>

#include "common/crypto/box.hpp"
#include "common/log/log.hpp"
#include "common/net/listener.hpp"
#include "common/proto/derp/client_info.hpp"
#include "common/proto/http/http.hpp"
#include "common/tls/certs.hpp"
#include "client_conn.hpp"
#include "registry.hpp"
#include "server.hpp"

namespace derpd::worker {

namespace {

constexpr size_t kMaxResponseHead = 16 * 1024;
constexpr uint32_t kMaxControlFrame = 4096;      // ServerKey, ServerInfo, PeerPresent, PeerGone, ...
constexpr size_t kOutHighWater = 256 * 1024;     // pull more ForwardPackets below this
constexpr int kReadsPerWakeup = 16;              // fairness towards the loop's other work

bool parseDialAddr(const std::string& s, sockaddr_storage& ss, socklen_t& len) {
  auto hp = net::splitHostPort(s);
  if (!hp || hp->port <= 0 || hp->port > 65535) return false;
  std::memset(&ss, 0, sizeof ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (::inet_pton(AF_INET, hp->host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(uint16_t(hp->port));
    len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET6, hp->host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(uint16_t(hp->port));
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

std::string tlsError(SSL* ssl, int r) {
  int e = SSL_get_error(ssl, r);
  std::string msg;
  if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    msg = errno ? std::strerror(errno) : "connection closed";
  } else {
    msg = opensslErrors();
  }
  ERR_clear_error();
  long vr = SSL_get_verify_result(ssl);
  if (vr != X509_V_OK) msg += " (certificate verify failed: " + std::string(X509_verify_cert_error_string(vr)) + ")";
  return msg;
}

}  // namespace

Result<std::shared_ptr<SSL_CTX>> makeMeshTlsContext(const std::string& caFile, bool logIt) {
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return makeError("SSL_CTX_new: " + opensslErrors());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  std::string file = caFile;
  if (file.empty()) {
    const char* env = std::getenv(X509_get_default_cert_file_env());
    file = env && *env ? env : X509_get_default_cert_file();
  }
  if (X509_STORE_load_file(SSL_CTX_get_cert_store(ctx.get()), file.c_str()) != 1) {
    return makeError("loading the CA certificates for mesh peers from " + file + ": " + opensslErrors());
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  int n = sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx.get())));
  if (logIt) LOG_INFO("mesh: peers' certificates are verified against {} CA certificate(s) from {}", n, file);
  return ctx;
}

const char* meshLinkStateName(MeshLinkState s) {
  switch (s) {
    case MeshLinkState::NoAddress: return "no_address";
    case MeshLinkState::Waiting: return "waiting";
    case MeshLinkState::Dialing: return "dialing";
    case MeshLinkState::Up: return "up";
    case MeshLinkState::Self: return "self";
    case MeshLinkState::Stopped: return "stopped";
  }
  return "unknown";
}

struct MeshLink::SockHandler final : IoHandler {
  explicit SockHandler(MeshLink& l) : link(l) {}
  void onIo(uint32_t events) override { link.onSocket(events); }
  MeshLink& link;
};

struct MeshLink::TimerHandler final : IoHandler {
  explicit TimerHandler(MeshLink& l) : link(l) {}
  void onIo(uint32_t) override {
    uint64_t expirations;
    ssize_t n = ::read(link.timerFd_, &expirations, sizeof expirations);
    (void)n;  // EAGAIN: re-armed meanwhile
    link.onTimer();
  }
  MeshLink& link;
};

MeshLink::MeshLink(Loop& loop, net::MeshHost spec, SSL_CTX* sslCtx)
    : loop_(loop),
      spec_(std::move(spec)),
      name_("mesh(" + spec_.entry + ")"),
      sslCtx_(sslCtx),
      sockHandler_(std::make_unique<SockHandler>(*this)),
      timerHandler_(std::make_unique<TimerHandler>(*this)) {}

MeshLink::~MeshLink() {
  if (ssl_) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
  if (timerFd_ >= 0) ::close(timerFd_);
}

void MeshLink::setState(MeshLinkState s) {
  state_ = s;
  stateMirror_.store(s, std::memory_order_relaxed);
}

void MeshLink::start() {
  timerFd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timerFd_< 0 || !loop_.addFd(timerFd_, EPOLLIN, timerHandler_.get())) {
    LOG_ERR("{}: timerfd: {}; this mesh link is off", name_, std::strerror(errno));
    setState(MeshLinkState::Stopped);
    return;
  }
  if (addrs_.empty()) {
    LOG_INFO("{}: waiting for the addresses of {}", name_, spec_.dialHost);
    return;
  }
  beginDial();
}

void MeshLink::setAddresses(std::vector<std::string> addrs, const std::string& error) {
  if (state_ == MeshLinkState::Self || state_ == MeshLinkState::Stopped) return;
  if (addrs.empty()) {
    LOG_WARN("{}: cannot resolve {}: {}{}", name_, spec_.dialHost, error,
             addrs_.empty() ? "" : "; keeping the addresses it had");
    return;
  }
  if (addrs == addrs_) return;
  addrs_ = std::move(addrs);
  LOG_INFO("{}: {} is at {}", name_, spec_.dialHost, [&] {
    std::string all;
    for (const auto& a : addrs_) all += (all.empty() ? "" : ", ") + a;
    return all;
  }());
  // A link that works keeps its connection; the next dial uses the new list.
  if (state_ == MeshLinkState::NoAddress && timerFd_ >= 0) beginDial();
}

void MeshLink::stop() {
  if (state_ == MeshLinkState::Stopped) return;
  closeSocket();
  dropLearned();
  setState(MeshLinkState::Stopped);
  if (timerFd_ >= 0) {
    loop_.delFd(timerFd_);
    ::close(timerFd_);
    timerFd_ = -1;
  }
}

void MeshLink::armTimer(TimePoint when) {
  if (timerFd_ < 0) return;
  itimerspec its{};
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  if (ns <= 0) ns = 1;
  its.it_value.tv_sec = time_t(ns / 1000000000);
  its.it_value.tv_nsec = long(ns % 1000000000);
  ::timerfd_settime(timerFd_, TFD_TIMER_ABSTIME, &its, nullptr);
}

void MeshLink::onTimer() {
  TimePoint now = Clock::now();
  switch (state_) {
    case MeshLinkState::Waiting:
      if (now >= retryAt_) {
        beginDial();
        return;
      }
      armTimer(retryAt_);
      return;
    case MeshLinkState::Dialing:
      if (now >= dialDeadline_) {
        fail("no answer within " + std::to_string(kDialTimeout.count()) + " s (dialling " + currentAddr_ + ")");
        return;
      }
      armTimer(dialDeadline_);
      return;
    case MeshLinkState::Up: {
      if (writeStallSince_ != TimePoint{} && now - writeStallSince_ >= kWriteTimeout) {
        fail("no write progress for " + std::to_string(kWriteTimeout.count()) + " s");
        return;
      }
      if (now - lastRead_ >= kReadIdleTimeout) {
        fail("nothing read for " + std::to_string(kReadIdleTimeout.count()) + " s");
        return;
      }
      TimePoint next = lastRead_ + kReadIdleTimeout;
      if (writeStallSince_ != TimePoint{}) next = std::min(next, writeStallSince_ + kWriteTimeout);
      armTimer(next);
      return;
    }
    default:
      return;
  }
}

void MeshLink::beginDial() {
  if (addrs_.empty()) {
    setState(MeshLinkState::NoAddress);
    return;
  }
  setState(MeshLinkState::Dialing);
  addrIdx_ = 0;
  dialDeadline_ = Clock::now() + kDialTimeout;
  armTimer(dialDeadline_);
  if (!dialNext()) fail("no address of " + spec_.dialHost + " could be dialled");
}

bool MeshLink::dialNext() {
  closeSocket();
  while (addrIdx_ < addrs_.size()) {
    currentAddr_ = addrs_[addrIdx_++];
    sockaddr_storage ss;
    socklen_t len = 0;
    if (!parseDialAddr(currentAddr_, ss, len)) {
      LOG_WARN("{}: bad address {}", name_, currentAddr_);
      continue;
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      LOG_WARN("{}: socket: {}", name_, std::strerror(errno));
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    unsigned int userTimeout = 15000;  // as the accepted side: unacknowledged data gives up in 15 s
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &userTimeout, sizeof userTimeout);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
      LOG_DEBUG("{}: connect {}: {}", name_, currentAddr_, std::strerror(errno));
      lastFailure_ = "connect " + currentAddr_ + ": " + std::strerror(errno);
      ::close(fd);
      continue;
    }
    fd_ = fd;
    phase_ = Phase::TcpConnect;
    interest_ = EPOLLOUT;
    if (!loop_.addFd(fd_, interest_, sockHandler_.get())) {
      LOG_WARN("{}: epoll: {}", name_, std::strerror(errno));
      ::close(fd_);
      fd_ = -1;
      continue;
    }
    return true;
  }
  return false;
}

void MeshLink::closeSocket() {
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    loop_.delFd(fd_);
    ::close(fd_);
    fd_ = -1;
  }
  interest_ = 0;
  readWantsWrite_ = false;
  httpBuf_.clear();
  // reader_ stays: this may run inside its feed(); the next dial replaces it.
  out_.clear();
  outOff_ = 0;
  writeStallSince_ = {};
  std::vector<std::pair<Loop*, uint64_t>> senders;
  {
    std::lock_guard g(qmu_);
    accepting_ = false;
    backlog_.clear();
    senders.swap(pausedSenders_);
  }
  resume(senders);  // their next packets for this link are dropped
}

void MeshLink::applyAnnouncements() {
  if (announcements_.empty()) return;
  loop_.server().registry().applyAnnouncements(announcements_, this);
  announcements_.clear();
}

void MeshLink::dropLearned() {
  applyAnnouncements();  // so that what learned_ says is what the registry holds
  if (learned_.empty()) return;
  LOG_INFO("{}: dropping the {} forwarding entr{} learned on this link", name_, learned_.size(),
           learned_.size() == 1 ? "y" : "ies");
  std::vector<NodePublic> keys(learned_.begin(), learned_.end());
  learned_.clear();
  learnedCount_.store(0, std::memory_order_relaxed);
  loop_.server().registry().removeForwarders(keys, this);
}

void MeshLink::fail(const std::string& why) {
  const bool wasUp = state_ == MeshLinkState::Up;
  closeSocket();
  dropLearned();
  if (state_ == MeshLinkState::Stopped || state_ == MeshLinkState::Self) return;
  std::string line = wasUp ? "link lost: " + why : why;
  if (wasUp || why != lastFailure_) {
    LOG_WARN("{}: {}; retrying every {} s", name_, line, kRetryInterval.count());
  } else {
    LOG_DEBUG("{}: {}; retrying in {} s", name_, line, kRetryInterval.count());
  }
  lastFailure_ = why;
  setState(MeshLinkState::Waiting);
  retryAt_ = Clock::now() + kRetryInterval;
  armTimer(retryAt_);
}

void MeshLink::onSocket(uint32_t events) {
  if (fd_ < 0) return;
  if (phase_ == Phase::TcpConnect) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      lastFailure_ = "connect " + currentAddr_ + ": " + std::strerror(err ? err : ECONNREFUSED);
      LOG_DEBUG("{}: {}", name_, lastFailure_);
      if (!dialNext()) fail(lastFailure_);
      return;
    }
    if (!(events & EPOLLOUT)) return;
    ssl_ = SSL_new(sslCtx_);
    if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) {
      fail("SSL_new: " + opensslErrors());
      return;
    }
    const bool ip = tls::isIpLiteral(spec_.host);
    if (!ip) SSL_set_tlsext_host_name(ssl_, spec_.host.c_str());
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, spec_.host.c_str())
            : X509_VERIFY_PARAM_set1_host(param, spec_.host.c_str(), 0)) != 1) {
      fail("cannot verify the name " + spec_.host + ": " + opensslErrors());
      return;
    }
    SSL_set_connect_state(ssl_);
    phase_ = Phase::TlsHandshake;
  }
  if (phase_ == Phase::TlsHandshake) {
    if (!tlsStep()) return;
  }
  if ((events & EPOLLOUT) || readWantsWrite_) flushOut();
  if (fd_ < 0) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (!readAvailable()) return;
  }
  updateInterest();
}

bool MeshLink::tlsStep() {
  ERR_clear_error();
  int r = SSL_connect(ssl_);
  if (r != 1) {
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      uint32_t want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
      if (want != interest_ && loop_.modFd(fd_, want, sockHandler_.get())) interest_ = want;
      return false;
    }
    fail("TLS handshake with " + currentAddr_ + ": " + tlsError(ssl_, r));
    return false;
  }
  // The upgrade request; the 101 and the DERP frames follow on the stream.
  std::string req = "GET /derp HTTP/1.1\r\nHost: " + spec_.authority +
                    "\r\nUser-Agent: derpd-mesh\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n";
  out_.insert(out_.end(), req.begin(), req.end());
  phase_ = Phase::HttpResponse;
  reader_ = std::make_unique<derp::FrameReader>([](const derp::FrameHeader& h) {
    using derp::FrameType;
    switch (FrameType(h.type)) {
      case FrameType::ServerKey:
      case FrameType::ServerInfo:
      case FrameType::PeerPresent:
      case FrameType::PeerGone:
      case FrameType::Restarting:
        return h.len <= kMaxControlFrame ? derp::HeaderVerdict::Deliver : derp::HeaderVerdict::Reject;
      default:
        return derp::HeaderVerdict::Skip;  // KeepAlive, Ping, Health, packets: nothing to do
    }
  }, kMaxControlFrame);
  flushOut();
  if (fd_ >= 0) updateInterest();
  return fd_ >= 0;
}

bool MeshLink::readAvailable() {
  uint8_t* buf = loop_.readBuf();
  for (int i = 0; i < kReadsPerWakeup && fd_ >= 0; ++i) {
    ERR_clear_error();
    size_t got = 0;
    int r = SSL_read_ex(ssl_, buf, Loop::kReadBufSize, &got);
    if (r != 1) {
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ) {
        readWantsWrite_ = false;
        return true;
      }
      if (e == SSL_ERROR_WANT_WRITE) {
        readWantsWrite_ = true;
        return true;
      }
      fail(e == SSL_ERROR_ZERO_RETURN ? "the peer closed the connection" : "read: " + tlsError(ssl_, r));
      return false;
    }
    lastRead_ = Clock::now();
    ByteView in(buf, got);
    if (phase_ == Phase::HttpResponse) {
      httpBuf_.append(reinterpret_cast<const char*>(in.data()), in.size());
      if (!handleHttpResponse()) return false;
      if (phase_ == Phase::HttpResponse) continue;
      Bytes rest(httpBuf_.begin(), httpBuf_.end());
      httpBuf_.clear();
      if (!feedFrames(rest)) return false;
      continue;
    }
    if (!feedFrames(in)) return false;
  }
  return fd_ >= 0;
}

bool MeshLink::feedFrames(ByteView in) {
  auto fr = reader_->feed(in, [this](const derp::Frame& f) {
    onFrame(f);
    return fd_ >= 0;
  });
  applyAnnouncements();
  if (fd_ < 0) return false;
  if (!fr) {
    fail("bad frame: " + fr.error());
    return false;
  }
  return true;
}

bool MeshLink::handleHttpResponse() {
  auto p = http::parseResponseHead(httpBuf_, kMaxResponseHead);
  switch (p.status) {
    case http::ParseStatus::Incomplete:
      if (httpBuf_.size() > kMaxResponseHead) {
        fail("HTTP response head too large");
        return false;
      }
      return true;
    case http::ParseStatus::Invalid: fail("bad HTTP response: " + p.error); return false;
    case http::ParseStatus::TooLarge: fail("HTTP response head too large"); return false;
    case http::ParseStatus::Complete: break;
  }
  if (p.head.status != 101) {
    fail("unexpected HTTP status " + std::to_string(p.head.status) + " " + p.head.reason +
         " to the DERP upgrade (is " + spec_.entry + " a DERP server?)");
    return false;
  }
  httpBuf_.erase(0, p.head.headLen);
  phase_ = Phase::ServerKey;
  return true;
}

void MeshLink::onFrame(const derp::Frame& f) {
  using derp::FrameType;
  Server& srv = loop_.server();
  switch (phase_) {
    case Phase::ServerKey: {
      if (f.type != FrameType::ServerKey) {
        fail("expected ServerKey, got " + derp::frameTypeName(uint8_t(f.type)));
        return;
      }
      auto k = derp::parseServerKey(f.payload);
      if (!k) {
        fail("bad ServerKey frame: " + k.error());
        return;
      }
      serverKey_ = *k;
      if (serverKey_ == srv.publicKey()) {
        LOG_INFO("{}: detected self-connect; ignoring host", name_);
        closeSocket();
        setState(MeshLinkState::Self);
        return;
      }
      derp::ClientInfo ci;
      ci.meshKey = srv.meshKey();
      ci.version = derp::kProtocolVersion;
      std::string json = derp::encodeClientInfo(ci);
      Bytes sealed = crypto::seal(srv.privateKey(), serverKey_, asBytes(json));
      derp::appendClientInfo(out_, srv.publicKey(), sealed);
      phase_ = Phase::ServerInfo;
      flushOut();
      return;
    }
    case Phase::ServerInfo: {
      if (f.type != FrameType::ServerInfo) {
        fail("expected ServerInfo, got " + derp::frameTypeName(uint8_t(f.type)));
        return;
      }
      derp::appendWatchConns(out_);
      phase_ = Phase::Up;
      setState(MeshLinkState::Up);
      connects_.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard g(qmu_);
        accepting_ = true;
      }
      LOG_INFO("{}: connected to {} (server key {}); watching its clients", name_, currentAddr_,
               serverKey_.shortString());
      lastFailure_.clear();
      armTimer(lastRead_ + kReadIdleTimeout);
      flushOut();
      return;
    }
    case Phase::Up: break;
    default: return;
  }
  switch (f.type) {
    case FrameType::PeerPresent: {
      auto p = derp::parsePeerPresent(f.payload);
      if (!p) {
        fail("bad PeerPresent frame: " + p.error());
        return;
      }
      if (learned_.insert(p->key).second) learnedCount_.store(learned_.size(), std::memory_order_relaxed);
      announcements_.emplace_back(p->key, true);
      return;
    }
    case FrameType::PeerGone: {
      auto g = derp::parsePeerGone(f.payload);
      if (!g) {
        fail("bad PeerGone frame: " + g.error());
        return;
      }
      if (g->reason == derp::PeerGoneReason::NotHere) {
        LOG_DEBUG("{}: peer {} not connected to {}", name_, g->key.shortString(), serverKey_.shortString());
      }
      if (learned_.erase(g->key)) learnedCount_.store(learned_.size(), std::memory_order_relaxed);
      announcements_.emplace_back(g->key, false);
      return;
    }
    case FrameType::Restarting:
      LOG_INFO("{}: the peer is restarting", name_);
      return;
    default:
      return;
  }
}

MeshLink::Forward MeshLink::forward(const NodePublic& src, const NodePublic& dst, ByteView packet,
                                    Loop& senderLoop, uint64_t senderNum) {
  bool post = false;
  bool paused = false;
  {
    std::lock_guard g(qmu_);
    if (!accepting_ || backlog_.size() + packet.size() > kMaxBacklogBytes) {
      forwardDrops_.fetch_add(1, std::memory_order_relaxed);
      return Forward::Dropped;
    }
    derp::appendForwardPacket(backlog_, src, dst, packet);
    if (backlog_.size() >= kBacklogHighWater) {
      pausedSenders_.emplace_back(&senderLoop, senderNum);
      paused = true;
    }
    post = !pullScheduled_;
    pullScheduled_ = true;
  }
  if (post) loop_.post([this] { pullBacklog(); });
  return paused ? Forward::Paused : Forward::Queued;
}

std::vector<std::pair<Loop*, uint64_t>> MeshLink::takeBacklogLocked() {
  if (out_.empty()) {
    out_.swap(backlog_);
  } else {
    out_.insert(out_.end(), backlog_.begin(), backlog_.end());
    backlog_.clear();
  }
  std::vector<std::pair<Loop*, uint64_t>> senders;
  senders.swap(pausedSenders_);
  return senders;
}

void MeshLink::resume(const std::vector<std::pair<Loop*, uint64_t>>& senders) {
  for (const auto& [loop, num] : senders) {
    Loop* l = loop;
    uint64_t n = num;
    l->post([l, n] {
      if (Conn* c = l->findConn(n)) c->resumeReading();
    });
  }
}

void MeshLink::pullBacklog() {
  std::vector<std::pair<Loop*, uint64_t>> senders;
  {
    std::lock_guard g(qmu_);
    pullScheduled_ = false;
    if (fd_ < 0 || phase_ != Phase::Up || out_.size() - outOff_ >= kOutHighWater) return;
    senders = takeBacklogLocked();
  }
  resume(senders);
  flushOut();
  if (fd_ >= 0) updateInterest();
}

void MeshLink::flushOut() {
  for (int round = 0; round < 16 && fd_ >= 0 && ssl_; ++round) {
    if (phase_ == Phase::TcpConnect || phase_ == Phase::TlsHandshake) return;
    bool progress = false;
    while (outOff_ < out_.size()) {
      ERR_clear_error();
      size_t n = std::min<size_t>(out_.size() - outOff_, INT_MAX);
      size_t wrote = 0;
      int r = SSL_write_ex(ssl_, out_.data() + outOff_, n, &wrote);
      if (r != 1) {
        int e = SSL_get_error(ssl_, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
          if (progress || writeStallSince_ == TimePoint{}) {
            writeStallSince_ = Clock::now();
            if (state_ == MeshLinkState::Up) armTimer(std::min(writeStallSince_ + kWriteTimeout,
                                                                lastRead_ + kReadIdleTimeout));
          }
          return;
        }
        fail("write: " + tlsError(ssl_, r));
        return;
      }
      outOff_ += wrote;
      progress = true;
    }
    out_.clear();
    outOff_ = 0;
    writeStallSince_ = {};
    if (phase_ != Phase::Up) return;
    std::vector<std::pair<Loop*, uint64_t>> senders;
    {
      std::lock_guard g(qmu_);
      if (backlog_.empty() && pausedSenders_.empty()) return;
      senders = takeBacklogLocked();
    }
    resume(senders);
  }
}

void MeshLink::updateInterest() {
  if (fd_ < 0 || phase_ == Phase::TcpConnect || phase_ == Phase::TlsHandshake) return;
  uint32_t want = EPOLLIN;
  if (outOff_ < out_.size() || readWantsWrite_) want |= EPOLLOUT;
  if (want != interest_ && loop_.modFd(fd_, want, sockHandler_.get())) interest_ = want;
}

}  // namespace derpd::worker
