#include "client_conn.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <random>

#include "common/crypto/box.hpp"
#include "common/log/log.hpp"
#include "admission.hpp"
#include "http_handlers.hpp"
#include "registry.hpp"
#include "server.hpp"

namespace derpd::worker {

using crypto::kKeyLen;

namespace {

constexpr auto kHttpDeadline = std::chrono::seconds(30);     // TLS + request head
constexpr auto kHandshakeDeadline = std::chrono::seconds(10);  // ServerKey -> ClientInfo
constexpr auto kWriteTimeout = std::chrono::seconds(2);
constexpr auto kLingerTime = std::chrono::seconds(2);
// mesh-helper asks tailscaled and the admission URL, 5 s each at most.
constexpr auto kAdmissionWait = std::chrono::seconds(12);
constexpr size_t kWsMaxFrame = 1 << 20;    // inbound WebSocket frame bound
constexpr size_t kWsOutChunk = 32000;      // outbound messages stay under Go's 32 KiB read limit

std::chrono::milliseconds keepAliveWithJitter() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int> jitter(0, 4999);
  return std::chrono::milliseconds(60000 + jitter(rng));
}

TlsVersionLabel tlsLabel(int v) {
  switch (v) {
    case TLS1_VERSION: return TlsVersionLabel::V10;
    case TLS1_1_VERSION: return TlsVersionLabel::V11;
    case TLS1_2_VERSION: return TlsVersionLabel::V12;
    case TLS1_3_VERSION: return TlsVersionLabel::V13;
    default: return TlsVersionLabel::Unknown;
  }
}

// Go's exact early errors for unreadable request heads.
const char* kGo400 =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";
const char* kGo431 =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Connection: close\r\n\r\n431 Request Header Fields Too Large";

}  // namespace

Conn::Conn(Loop& loop, int fd, const sockaddr_storage& peer, uint64_t connNum, SSL* ssl, bool port80)
    : loop_(loop),
      fd_(fd),
      ssl_(ssl),
      connNum_(connNum),
      port80_(port80),
      state_(ssl ? State::TlsHandshake : State::HttpHead),
      keepAlivePeriod_(keepAliveWithJitter()),
      connectedAt_(loop.now()) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (peer.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
    peerIp16_[10] = 0xff;
    peerIp16_[11] = 0xff;
    std::memcpy(&peerIp16_[12], &a->sin_addr, 4);
    peerPort_ = ntohs(a->sin_port);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
  } else if (peer.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
    std::memcpy(peerIp16_.data(), &a->sin6_addr, 16);
    peerPort_ = ntohs(a->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], buf, sizeof buf);
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    }
  }
  peerIpText_ = buf;
  if (ssl_ && loop_.server().tlsOwnRecords()) {
    tlsSecrets_ = std::make_unique<Tls13Secrets>();
    attachTls13Secrets(ssl_, tlsSecrets_.get());
  }
}

Conn::~Conn() {
  if (ssl_) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

uint8_t Conn::presentFlags() const {
  uint8_t f = 0;
  if (canMesh_) f |= derp::kPeerPresentIsMeshPeer;
  if (isProber_) f |= derp::kPeerPresentIsProber;
  return f ? f : derp::kPeerPresentIsRegular;
}

void Conn::start() {
  deadline_ = loop_.now() + kHttpDeadline;
  interest_ = EPOLLIN;
  if (!loop_.addFd(fd_, interest_, this)) {
    static log::Repeats repeats(std::chrono::seconds(1));  // per connection: bounded
    if (auto skipped = repeats.admit())
      LOG_WARN("conn {}: epoll add: {}{}", connNum_, std::strerror(errno),
               *skipped ? " (" + std::to_string(*skipped) + " more since the last line)" : "");
    close(CloseReason::ReadError);
    return;
  }
  rearmTimer();
}

void Conn::onIo(uint32_t events) {
  if (state_ == State::Closed) return;
  if (events & EPOLLOUT) handleWritable();
  if (state_ != State::Closed && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) handleReadable();
}

void Conn::handleWritable() {
  if (state_ == State::TlsHandshake) {
    if (tlsHandshake()) handleReadable();
    return;
  }
  if (readWantsWrite_) {
    readWantsWrite_ = false;
    handleReadable();
    if (state_ == State::Closed) return;
  }
  writeOut();
}

void Conn::handleReadable() {
  if (state_ == State::TlsHandshake && !tlsHandshake()) return;
  if (!readSome()) return;
  if (pendingOut() > 0) writeOut();
}

bool Conn::tlsHandshake() {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    state_ = State::HttpHead;
    tlsVersionIdx_ = int(tlsLabel(SSL_version(ssl_)));
    loop_.server().gauges().tlsActive[tlsVersionIdx_].fetch_add(1);
    if (!moveToOwnRecords()) SSL_set_read_ahead(ssl_, 1);  // see newServerCtx()
    updateInterest();
    return true;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    uint32_t want = EPOLLIN | (e == SSL_ERROR_WANT_WRITE ? uint32_t(EPOLLOUT) : 0u);
    if (want != interest_ && loop_.modFd(fd_, want, this)) interest_ = want;
    return false;
  }
  loop_.stats().tlsHandshakeErrors.add();
  LOG_DEBUG("conn {} from {}: TLS handshake failed: {}", connNum_, peerIpText_,
            e == SSL_ERROR_SYSCALL ? std::string(errno ? std::strerror(errno) : "EOF") : opensslErrors());
  ERR_clear_error();
  close(CloseReason::BadHandshake);
  return false;
}

bool Conn::moveToOwnRecords() {
  std::unique_ptr<Tls13Secrets> secrets = std::move(tlsSecrets_);
  if (!secrets) return false;
  attachTls13Secrets(ssl_, nullptr);
  // Read-ahead is off during the handshake, so OpenSSL holds nothing we
  // would lose; this is a check, not an expectation.
  if (SSL_version(ssl_) != TLS1_3_VERSION || SSL_has_pending(ssl_)) return false;
  auto rec = Tls13Records::fromServerHandshake(ssl_, *secrets);
  OPENSSL_cleanse(secrets.get(), sizeof *secrets);
  if (!rec) {
    LOG_DEBUG("conn {}: TLS 1.3 records stay with OpenSSL: {}", connNum_, rec.error());
    return false;
  }
  rec_ = std::move(*rec);
  SSL_free(ssl_);
  ssl_ = nullptr;
  return true;
}

ssize_t Conn::readSocket(uint8_t* buf) {
  for (;;) {
    const ssize_t n = ::read(fd_, buf, Loop::kReadBufSize);
    if (n > 0) return n;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    const CloseReason why = n == 0 ? CloseReason::Eof : CloseReason::ReadError;
    close(state_ == State::Lingering ? CloseReason::Http : why);
    return -1;
  }
}

// Whole records are opened in place in the read buffer as they come; the
// start of an incomplete one waits in recIn_ (at most one record: 16 KiB +
// 261 bytes) and is completed from the front of the next read.
bool Conn::readRecords() {
  uint8_t* buf = loop_.readBuf();
  constexpr int kReadsPerWakeup = 16;
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    // EOF without close_notify closes as OpenSSL's SSL_OP_IGNORE_UNEXPECTED_EOF.
    const ssize_t n = readSocket(buf);
    if (n <= 0) return n == 0;
    uint8_t* rest = buf;
    size_t left = size_t(n);
    if (!recIn_.empty()) {
      // Complete the waiting record from the front of this read: only the
      // bytes it still lacks are copied (recIn_ stays within one record).
      size_t want = Tls13Records::kHeaderLen;
      if (recIn_.size() >= Tls13Records::kHeaderLen) {
        want = size_t(recIn_[3]) << 8 | recIn_[4];
        want += Tls13Records::kHeaderLen;
      }
      for (int step = 0; step < 2 && left > 0 && recIn_.size() < want; ++step) {
        const size_t take = std::min(left, want - recIn_.size());
        recIn_.insert(recIn_.end(), rest, rest + take);
        rest += take, left -= take;
        if (recIn_.size() == Tls13Records::kHeaderLen && want == Tls13Records::kHeaderLen) {
          auto len = Tls13Records::recordLength(recIn_);
          if (!len) return openRecords(recIn_.data(), recIn_.size());  // logs and closes
          want = Tls13Records::kHeaderLen + (size_t(recIn_[3]) << 8 | recIn_[4]);
        }
      }
      if (recIn_.size() < want) continue;  // still incomplete: all of this read is in it
      Bytes whole;
      whole.swap(recIn_);
      if (!openRecords(whole.data(), whole.size())) return false;
    }
    if (left > 0 && !openRecords(rest, left)) return false;
    if (readPaused_) return true;  // resumeReading() picks up the rest
    if (size_t(n) < Loop::kReadBufSize) return true;
  }
  return true;
}

bool Conn::openRecords(uint8_t* data, size_t n) {
  size_t off = 0;
  while (off < n) {
    auto len = Tls13Records::recordLength(ByteView(data + off, n - off));
    if (!len) {
      LOG_DEBUG("conn {}: TLS: {}", connNum_, len.error());
      close(state_ == State::Lingering ? CloseReason::Http : CloseReason::ReadError);
      return false;
    }
    if (*len == 0) break;
    auto rec = rec_->open(std::span<uint8_t>(data + off, *len));
    off += *len;
    if (!rec) {
      LOG_DEBUG("conn {}: TLS: {}", connNum_, rec.error());
      close(state_ == State::Lingering ? CloseReason::Http : CloseReason::ReadError);
      return false;
    }
    if (rec->kind == Tls13Records::Kind::CloseNotify) {
      close(state_ == State::Lingering ? CloseReason::Http : CloseReason::Eof);
      return false;
    }
    // A KeyUpdate that asks for ours: writeOut() seals it before the next
    // data (handleReadable() writes after reading whenever output is
    // pending, which includes it). Requests that come while it waits are
    // answered by that one KeyUpdate (RFC 8446 §4.6.3), so a peer that
    // floods them and never reads cannot grow our output.
    if (rec->kind == Tls13Records::Kind::Data && !rec->data.empty()) {
      onBytes(rec->data);
      if (state_ == State::Closed) return false;
    }
  }
  if (off < n) recIn_.assign(data + off, data + n);
  if (recIn_.empty() && recIn_.capacity() > 0) Bytes().swap(recIn_);
  return true;
}

bool Conn::readSome() {
  if (rec_) return readRecords();
  uint8_t* buf = loop_.readBuf();
  // A bounded number of reads per wake-up, so one fast sender cannot starve
  // the loop's other connections (and mesh links). Level-triggered epoll
  // comes back for what is left in the socket; what OpenSSL has already
  // decrypted would not wake it, so that is picked up by a posted task.
  constexpr int kReadsPerWakeup = 16;
  for (int i = 0;; ++i) {
    if (i == kReadsPerWakeup) {
      if (ssl_ && SSL_has_pending(ssl_)) {
        Loop* l = &loop_;
        uint64_t num = connNum_;
        loop_.post([l, num] {
          if (Conn* c = l->findConn(num)) c->onIo(EPOLLIN);
        });
      }
      return true;
    }
    ssize_t n;
    if (ssl_) {
      ERR_clear_error();
      int r = SSL_read(ssl_, buf, int(Loop::kReadBufSize));
      if (r <= 0) {
        int e = SSL_get_error(ssl_, r);
        if (e == SSL_ERROR_WANT_READ) return true;
        if (e == SSL_ERROR_WANT_WRITE) {
          readWantsWrite_ = true;
          updateInterest();
          return true;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
          close(state_ == State::Lingering ? CloseReason::Http : CloseReason::Eof);
        } else {
          LOG_DEBUG("conn {}: TLS read: {}", connNum_, opensslErrors());
          ERR_clear_error();
          close(CloseReason::ReadError);
        }
        return false;
      }
      n = r;
    } else {
      n = readSocket(buf);
      if (n <= 0) return n == 0;
    }
    onBytes(ByteView(buf, size_t(n)));
    if (state_ == State::Closed) return false;
    if (readPaused_) return true;  // resumeReading() picks up the rest
    // Nothing left in hand: rather than a read(2) that says EAGAIN, let the
    // (level-triggered) epoll say whether the socket has more. A short
    // plain read drained the socket; with TLS, SSL_has_pending() covers
    // both decrypted bytes and read-ahead ciphertext.
    if (!ssl_ && size_t(n) < Loop::kReadBufSize) return true;
    if (ssl_ && !SSL_has_pending(ssl_)) return true;
  }
  return true;
}

void Conn::onBytes(ByteView in) {
  switch (state_) {
    case State::HttpHead:
      onHttpBytes(in);
      break;
    case State::DerpHandshake:
    case State::Verifying:
    case State::Relay:
      if (ws_) {
        struct Sink final : http::WsDecoder::Events {
          Conn& c;
          explicit Sink(Conn& c) : c(c) {}
          void onData(ByteView d) override { c.onDerpStream(d); }
          void onControl(http::WsOpcode op, ByteView payload) override {
            if (c.state_ == State::Closed) return;
            if (op == http::WsOpcode::Ping) {
              http::appendWsFrame(c.out_, http::WsOpcode::Pong, payload, false);
            } else if (op == http::WsOpcode::Close) {
              c.loop_.stats().closes[size_t(CloseReason::Eof)].add();
              if (!c.wsCloseSent_) {
                c.sealOutput();
                http::appendWsClose(c.out_, http::kWsCloseNormal, "", false);
                c.wsCloseSent_ = true;
              }
              c.closeAfterFlush_ = true;
            }
          }
        } sink(*this);
        uint16_t code = 0;
        if (auto r = ws_->feed(in, sink, &code); !r && state_ != State::Closed) {
          LOG_DEBUG("conn {}: websocket: {}", connNum_, r.error());
          sealOutput();
          http::appendWsClose(out_, code, "", false);
          wsCloseSent_ = true;
          closeAfterFlush_ = true;
          loop_.stats().closes[size_t(CloseReason::BadFrame)].add();
        }
        if (closeAfterFlush_ && state_ != State::Closed) writeOut();
      } else {
        onDerpStream(in);
      }
      break;
    case State::Lingering:
    case State::TlsHandshake:
    case State::Closed:
      break;
  }
}

void Conn::onHttpBytes(ByteView in) {
  if (httpBuf_.size() + in.size() > http::kMaxRequestHead + 1) {
    // Keep only what the parser needs to see to say TooLarge.
    size_t room = http::kMaxRequestHead + 1 - httpBuf_.size();
    httpBuf_.append(asChars(in.first(std::min(room, in.size()))));
  } else {
    httpBuf_.append(asChars(in));
  }
  processHttpBuffer();
}

void Conn::processHttpBuffer() {
  while (state_ == State::HttpHead && !httpBuf_.empty()) {
    http::RequestParse p = http::parseRequestHead(httpBuf_, http::kMaxRequestHead);
    if (p.status == http::ParseStatus::Incomplete) return;
    if (p.status == http::ParseStatus::TooLarge) {
      loop_.stats().httpHeadTooLarge.add();
      LOG_DEBUG("conn {} from {}: request head too large", connNum_, peerIpText_);
      httpBuf_.clear();
      sendHttp(kGo431, true);
      return;
    }
    if (p.status == http::ParseStatus::Invalid) {
      LOG_DEBUG("conn {} from {}: bad request: {}", connNum_, peerIpText_, p.error);
      httpBuf_.clear();
      sendHttp(kGo400, true);
      return;
    }
    std::string rest = httpBuf_.substr(p.head.headLen);
    std::string().swap(httpBuf_);
    handleRequest(p.head);
    if (state_ == State::HttpHead) {
      httpBuf_ = std::move(rest);
      continue;
    }
    if ((state_ == State::DerpHandshake || state_ == State::Relay) && !rest.empty()) onBytes(asBytes(rest));
    return;
  }
}

void Conn::handleRequest(const http::RequestHead& req) {
  LoopStats& st = loop_.stats();
  st.httpRequests.add();
  if (tlsVersionIdx_ >= 0) st.tlsRequestVersion[size_t(tlsVersionIdx_)].add();
  HttpContext ctx;
  ctx.derpEnabled = loop_.server().derpEnabled();
  ctx.port80 = port80_;
  ctx.dev = loop_.server().dev();
  ctx.peerIp = peerIpText_;
  ctx.peerIp16 = peerIp16_;
  ctx.debugAccess = &loop_.server().debugAccess();
  ctx.nowUnix = long(std::time(nullptr));
  const Server* srv = &loop_.server();
  ctx.varz = [srv] { return srv->varz(); };
  ctx.vars = [srv] { return srv->vars(); };
  ctx.check = [srv] { return srv->consistencyCheck(); };
  ctx.debugInfo = [srv] { return srv->debugInfo(); };
  ctx.bootstrapDns = [srv](std::string_view q, const std::string& ip) { return srv->bootstrapDnsBody(q, ip); };
  if (port80_ && srv->acmeHttp01()) {
    ctx.acmeHostname = srv->hostname();
    ctx.acmeHttpToken = [srv](const std::string& token) { return srv->tls()->httpToken(token); };
  }
  HttpAction a = handleHttpRequest(req, ctx);
  switch (a.kind) {
    case HttpAction::Kind::DerpUpgrade:
      startDerp(req, false);
      return;
    case HttpAction::Kind::WebSocketUpgrade:
      startDerp(req, true);
      return;
    case HttpAction::Kind::Respond:
      break;
  }
  bool hasBody = (req.get("Content-Length") && *req.get("Content-Length") != "0") ||
                 req.get("Transfer-Encoding") != nullptr;
  bool closeAfter = a.close || hasBody || req.versionMinor == 0 || req.hasToken("Connection", "close");
  sendHttp(std::move(a.response), closeAfter);
}

void Conn::sendHttp(std::string bytes, bool closeAfter) {
  out_.insert(out_.end(), bytes.begin(), bytes.end());
  if (closeAfter) {
    closeAfterFlush_ = true;
    loop_.stats().closes[size_t(CloseReason::Http)].add();
  }
  deadline_ = loop_.now() + kHttpDeadline;
  writeOut();
}

void Conn::startDerp(const http::RequestHead& req, bool websocket) {
  LoopStats& st = loop_.stats();
  st.accepts.add();
  if (websocket) {
    const std::string* key = req.get("Sec-WebSocket-Key");
    if (!key || key->empty()) {
      sendHttp(plainTextResponse(400, "missing Sec-WebSocket-Key\n", long(std::time(nullptr)), true), true);
      return;
    }
    bool derpProto = req.hasToken("Sec-WebSocket-Protocol", "derp");
    std::string resp =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-Websocket-Accept: " +
        http::websocketAccept(*key) + "\r\n";
    if (derpProto) resp += "Sec-Websocket-Protocol: derp\r\n";
    resp += "Upgrade: websocket\r\nDate: " + http::httpDate(long(std::time(nullptr))) + "\r\n\r\n";
    out_.insert(out_.end(), resp.begin(), resp.end());
    st.websocketAccepts.add();
    ws_ = std::make_unique<http::WsDecoder>(true, kWsMaxFrame);
    if (!derpProto) {
      http::appendWsClose(out_, http::kWsClosePolicy, "client must speak the derp subprotocol", false);
      wsCloseSent_ = true;
      closeAfterFlush_ = true;
      st.closes[size_t(CloseReason::BadHandshake)].add();
      state_ = State::DerpHandshake;  // discard anything else until the close
      writeOut();
      return;
    }
  } else {
    const std::string* fs = req.get("Derp-Fast-Start");
    if (!(fs && *fs == "1")) {
      std::string resp =
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
          "Derp-Public-Key: " +
          loop_.server().publicKey().toHex() + "\r\n\r\n";
      out_.insert(out_.end(), resp.begin(), resp.end());
    }
  }
  state_ = State::DerpHandshake;
  deadline_ = loop_.now() + kHandshakeDeadline;
  reader_ = std::make_unique<derp::FrameReader>([this](const derp::FrameHeader& h) { return classify(h); });
  const NodePublic& serverKey = loop_.server().publicKey();
  appendDerp([&](Bytes& o) { derp::appendServerKey(o, serverKey); });
  writeOut();
}

void Conn::appendDerp(const std::function<void(Bytes&)>& enc) { enc(ws_ ? derpOut_ : out_); }

void Conn::sealOutput() {
  if (!ws_ || derpOut_.empty() || wsCloseSent_) {
    if (wsCloseSent_) derpOut_.clear();
    return;
  }
  for (size_t off = 0; off < derpOut_.size(); off += kWsOutChunk) {
    size_t n = std::min(kWsOutChunk, derpOut_.size() - off);
    http::appendWsFrame(out_, http::WsOpcode::Binary, ByteView(derpOut_.data() + off, n), false);
  }
  derpOut_.clear();
  if (derpOut_.capacity() > 4096) Bytes().swap(derpOut_);
}

// ---- DERP ----

derp::HeaderVerdict Conn::classify(const derp::FrameHeader& h) {
  using derp::FrameType;
  using derp::HeaderVerdict;
  if (state_ == State::DerpHandshake) {
    if (h.type != uint8_t(FrameType::ClientInfo)) {
      LOG_DEBUG("conn {} from {}: first frame is type {:#x}, not ClientInfo", connNum_, peerIpText_, h.type);
      return HeaderVerdict::Reject;
    }
    if (h.len < derp::kMinClientInfoLen || h.len > derp::kMaxClientInfoLen) {
      LOG_DEBUG("conn {} from {}: ClientInfo length {} out of range", connNum_, peerIpText_, h.len);
      return HeaderVerdict::Reject;
    }
    return HeaderVerdict::Deliver;
  }
  if (state_ != State::Relay) return HeaderVerdict::Reject;
  // Every frame counts as activity for the duplicate-key policy.
  if (isDup_.load(std::memory_order_relaxed)) loop_.server().registry().noteActivity(this);
  auto reject = [&](const char* why) {
    LOG_DEBUG("conn {} {}: {} (type {:#x}, len {})", connNum_, key_.shortString(), why, h.type, h.len);
    return HeaderVerdict::Reject;
  };
  switch (FrameType(h.type)) {
    case FrameType::SendPacket:
      if (h.len < kKeyLen) return reject("short SendPacket");
      if (h.len - kKeyLen > derp::kMaxPacketSize) return reject("SendPacket longer than 64 KiB");
      return HeaderVerdict::Deliver;
    case FrameType::ForwardPacket:
      if (!canMesh_) return reject("ForwardPacket from a non-mesh client");
      if (h.len < 2 * kKeyLen) return reject("short ForwardPacket");
      if (h.len - 2 * kKeyLen > derp::kMaxPacketSize) return reject("ForwardPacket longer than 64 KiB");
      return HeaderVerdict::Deliver;
    case FrameType::NotePreferred:
      if (h.len != 1) return reject("NotePreferred length is not 1");
      return HeaderVerdict::Deliver;
    case FrameType::WatchConns:
      if (h.len != 0) return reject("WatchConns with a payload");
      if (!canMesh_) return reject("WatchConns from a non-mesh client");
      return HeaderVerdict::Deliver;
    case FrameType::ClosePeer:
      if (h.len != kKeyLen) return reject("ClosePeer length is not 32");
      if (!canMesh_) return reject("ClosePeer from a non-mesh client");
      return HeaderVerdict::Deliver;
    case FrameType::Ping:
      if (h.len < 8 || h.len > 1000) return reject("Ping length out of 8..1000");
      return HeaderVerdict::Deliver;
    default:
      loop_.stats().unknownFrames.add();
      return HeaderVerdict::Skip;
  }
}

void Conn::onDerpStream(ByteView in) {
  if (state_ != State::DerpHandshake && state_ != State::Verifying && state_ != State::Relay) return;
  if (readPaused_) {
    stash_.insert(stash_.end(), in.begin(), in.end());
    return;
  }
  bool inHandshake = state_ == State::DerpHandshake;
  auto r = reader_->feed(in, [this](const derp::Frame& f) { return onFrame(f) && !readPaused_; });
  if (!r && state_ != State::Closed) {
    close(inHandshake && state_ == State::DerpHandshake ? CloseReason::BadHandshake : CloseReason::BadFrame);
    return;
  }
  if (readPaused_ && (state_ == State::Relay || state_ == State::Verifying)) {
    ByteView rest = in.subspan(reader_->consumed());
    stash_.insert(stash_.end(), rest.begin(), rest.end());
    pauseReading();
  }
}

void Conn::pauseReading() {
  // Stop taking bytes from the socket until resumeReading().
  updateInterest();
}

void Conn::resumeReading() {
  if (state_ != State::Relay || !readPaused_) return;
  readPaused_ = false;
  Bytes pending;
  pending.swap(stash_);
  onDerpStream(pending);
  if (state_ == State::Closed || readPaused_) return;
  updateInterest();
  // Bytes OpenSSL already decrypted would not wake epoll again.
  handleReadable();
}

bool Conn::onFrame(const derp::Frame& f) {
  using derp::FrameType;
  if (state_ == State::DerpHandshake) return onClientInfo(f.payload);
  if (state_ != State::Relay) return false;
  switch (f.type) {
    case FrameType::SendPacket: onSendPacket(f.payload); break;
    case FrameType::ForwardPacket: onForwardPacket(f.payload); break;
    case FrameType::NotePreferred: onNotePreferred(f.payload); break;
    case FrameType::Ping: onPing(f.payload); break;
    case FrameType::WatchConns: onWatchConns(); break;
    case FrameType::ClosePeer: onClosePeer(f.payload); break;
    default: break;  // classify() skips everything else
  }
  return state_ == State::Relay;
}

bool Conn::onClientInfo(ByteView payload) {
  Server& srv = loop_.server();
  NodePublic key = NodePublic::fromRaw(payload.first(kKeyLen));
  if (key.isZero()) {
    LOG_DEBUG("conn {} from {}: ClientInfo with the zero key", connNum_, peerIpText_);
    close(CloseReason::BadHandshake);
    return false;
  }
  auto plain = crypto::open(srv.privateKey(), key, payload.subspan(kKeyLen));
  if (!plain) {
    LOG_DEBUG("conn {} from {}: ClientInfo from {} does not open: {}", connNum_, peerIpText_,
              key.shortString(), plain.error());
    close(CloseReason::BadHandshake);
    return false;
  }
  auto ci = derp::parseClientInfo(asChars(*plain));
  if (!ci) {
    LOG_DEBUG("conn {} from {}: ClientInfo from {}: {}", connNum_, peerIpText_, key.shortString(), ci.error());
    close(CloseReason::BadHandshake);
    return false;
  }
  key_ = key;
  clientInfo_ = std::move(*ci);
  canMesh_ = srv.meshKeyMatches(clientInfo_.meshKey);
  isProber_ = clientInfo_.isProber;
  deadline_ = {};
  // Admission (PROTOCOL.md §5.9): mesh peers are trusted; anyone else waits
  // for mesh-helper's answer, reading nothing more meanwhile.
  if (const auto& asker = srv.verifier(); asker && !canMesh_) {
    state_ = State::Verifying;
    readPaused_ = true;
    deadline_ = loop_.now() + kAdmissionWait;
    admissionId_ = asker->ask(loop_, connNum_, key_, peerIpText_);
    if (!admissionId_) {
      readPaused_ = false;  // decided inside this frame's callback: nothing to resume
      onAdmission("unavailable", "too many admission questions pending");
      return state_ == State::Relay;
    }
    updateInterest();
    rearmTimer();
    return false;
  }
  finishHandshake();
  return state_ == State::Relay;
}

void Conn::onAdmission(const std::string& verdict, const std::string& reason) {
  if (state_ != State::Verifying) return;
  admissionId_.reset();
  const bool resume = readPaused_;
  LoopStats& st = loop_.stats();
  const bool failOpen = loop_.server().verifier()->failOpen();
  bool allow = verdict == "allow";
  if (verdict == "allow") {
    st.admissionAllow.add();
  } else if (verdict == "deny") {
    st.admissionDeny.add();
  } else {
    allow = failOpen;
    (allow ? st.admissionFailOpen : st.admissionFailClosed).add();
    // Per connection while mesh-helper is down: bounded (the counters have
    // every one).
    static log::Repeats repeats(std::chrono::seconds(1));
    if (auto skipped = repeats.admit())
      LOG_WARN("conn {}: client {} from {}: no admission answer ({}); {} (-verify-client-url-fail-open={}){}",
               connNum_, key_.toText(), peerIpText_, reason, allow ? "admitting it" : "refusing it",
               failOpen ? "true" : "false",
               *skipped ? " (" + std::to_string(*skipped) + " more since the last line)" : "");
  }
  if (!allow) {
    if (verdict == "deny") LOG_INFO("conn {}: client {} from {} rejected: {}", connNum_, key_.toText(), peerIpText_, reason);
    close(CloseReason::Rejected);  // no frame, as derper
    return;
  }
  if (!reason.empty() && verdict == "allow") LOG_INFO("conn {}: client {}: {}", connNum_, key_.toText(), reason);
  deadline_ = {};
  finishHandshake();
  // The frames that arrived while it waited, then the socket again.
  if (state_ == State::Relay && resume) resumeReading();
}

void Conn::markPending() {
  if (pending_) return;
  pending_ = true;
  loop_.notePending(this);
}

void Conn::leavePending() {
  if (!pending_) return;
  pending_ = false;
  loop_.leftPending();
}

void Conn::finishHandshake() {
  Server& srv = loop_.server();
  state_ = State::Relay;
  leavePending();
  nextKeepAlive_ = loop_.now() + keepAlivePeriod_;
  // ServerInfo must be the first frame after ServerKey: it goes into the
  // output before this connection becomes visible to other loops.
  derp::ServerInfo si;
  si.version = derp::kProtocolVersion;
  std::string siJson = derp::encodeServerInfo(si);
  Bytes sealed = crypto::seal(srv.privateKey(), key_, asBytes(siJson));
  appendDerp([&](Bytes& o) { derp::appendServerInfo(o, sealed); });
  registered_ = true;
  srv.registry().add(this);
  LOG_DEBUG("conn {}: client {} connected from {}:{}{}{}{}", connNum_, key_.toText(), peerIpText_, peerPort_,
            canMesh_ ? " (mesh peer)" : "", isProber_ ? " (prober)" : "", ws_ ? " (websocket)" : "");
  writeOut();
}

bool Conn::notHereAllowed() {
  TimePoint now = loop_.now();
  if (notHereLast_ != TimePoint{}) {
    double secs = std::chrono::duration<double>(now - notHereLast_).count();
    notHereTokens_ = std::min(3.0, notHereTokens_ + secs);
  }
  notHereLast_ = now;
  if (notHereTokens_ < 1.0) return false;
  notHereTokens_ -= 1.0;
  return true;
}

void Conn::deliver(const NodePublic& dst, const NodePublic& src, ByteView packet, bool disco,
                   DropReason unknownReason) {
  LoopStats& st = loop_.stats();
  // SendPacket records sentTo on this connection; a ForwardPacket's remote
  // source is recorded in the registry (PeerGone when it leaves the region).
  bool recordSentTo = unknownReason == DropReason::UnknownDest;
  Registry& reg = loop_.server().registry();
  Conn* flushNow = nullptr;
  {
    std::shared_lock lk(reg.mu);
    Registry::Route r = reg.lookupLocked(dst);
    if (r.dupNoActive) {
      st.drop(DropReason::DupClient, disco);
      return;
    }
    if (!r.dst && r.forwarder && unknownReason == DropReason::UnknownDest) {
      // Elsewhere in the region (PROTOCOL.md §6): one hop over our own link.
      // A ForwardPacket is never forwarded again.
      st.forwardedOut.add();
      if (r.forwarder->forward(src, dst, packet, loop_, connNum_) == MeshLink::Forward::Paused) {
        readPaused_ = true;  // resumed by the link once its backlog has gone out
      }
      return;
    }
    if (!r.dst) {
      lk.unlock();
      st.drop(unknownReason, disco);
      // PeerGone(NotHere) back to the sender, for disco only, rate-limited.
      if (disco && notHereAllowed()) enqueuePeerGone(dst, derp::PeerGoneReason::NotHere);
      return;
    }
    if (recordSentTo) {
      sentTo_[dst] = r.dst->connNum();
    } else {
      reg.noteForwardedSendLocked(src, dst, r.dst->connNum());
    }
    if (r.dst->enqueuePacket(src, packet, disco, st)) {
      if (&r.dst->loop() == &loop_) {
        flushNow = r.dst;
      } else if (!r.dst->backlogged_.load(std::memory_order_relaxed)) {
        // The destination keeps up but its loop has not run yet: wait for
        // it to flush rather than overrun its queue.
        Loop* dstLoop = &r.dst->loop();
        Loop* myLoop = &loop_;
        uint64_t dstNum = r.dst->connNum(), myNum = connNum_;
        dstLoop->post([dstLoop, dstNum, myLoop, myNum] {
          if (Conn* d = dstLoop->findConn(dstNum)) d->onScheduled();
          myLoop->post([myLoop, myNum] {
            if (Conn* c = myLoop->findConn(myNum)) c->resumeReading();
          });
        });
        readPaused_ = true;
      }
    }
  }
  // A destination on this loop cannot drain while we are still reading: when
  // its queue fills, write it out now instead of dropping its head (derper's
  // writer goroutine drains concurrently). Outside the registry lock, since a
  // write error closes the destination, which takes the lock; it cannot be
  // freed before this loop iteration ends.
  if (flushNow) flushNow->onScheduled();
}

void Conn::onSendPacket(ByteView payload) {
  LoopStats& st = loop_.stats();
  NodePublic dst = NodePublic::fromRaw(payload.first(kKeyLen));
  ByteView packet = payload.subspan(kKeyLen);
  bool disco = derp::looksLikeDisco(packet);
  st.packetsReceived.add();
  st.bytesReceived.add(packet.size());
  (disco ? st.packetsReceivedDisco : st.packetsReceivedOther).add();
  deliver(dst, key_, packet, disco, DropReason::UnknownDest);
}

void Conn::onForwardPacket(ByteView payload) {
  LoopStats& st = loop_.stats();
  NodePublic src = NodePublic::fromRaw(payload.first(kKeyLen));
  NodePublic dst = NodePublic::fromRaw(payload.subspan(kKeyLen, kKeyLen));
  ByteView packet = payload.subspan(2 * kKeyLen);
  bool disco = derp::looksLikeDisco(packet);
  st.forwardedIn.add();
  // Local delivery only: a forwarded packet is never forwarded again.
  deliver(dst, src, packet, disco, DropReason::UnknownDestOnFwd);
}

void Conn::onNotePreferred(ByteView payload) {
  bool v = payload[0] != 0;
  if (v == preferred_) return;
  preferred_ = v;
  loop_.server().gauges().currentHomeConnections.fetch_add(v ? 1 : -1);
  if (loop_.now() - connectedAt_ > std::chrono::seconds(5)) {
    (v ? loop_.stats().homeMovesIn : loop_.stats().homeMovesOut).add();
  }
}

void Conn::onPing(ByteView payload) {
  loop_.stats().gotPing.add();
  // One Pong may be pending; a client that pings without reading gets no
  // more than that.
  if (pendingOut() >= kOutHighWater) return;
  std::array<uint8_t, 8> data;
  std::memcpy(data.data(), payload.data(), 8);
  appendDerp([&](Bytes& o) { derp::appendPong(o, data); });
  loop_.stats().sentPong.add();
  writeOut();
}

void Conn::onWatchConns() {
  if (key_ == loop_.server().publicKey()) return;  // our own mesh dial
  loop_.server().registry().addWatcher(this);
}

void Conn::onClosePeer(ByteView payload) {
  NodePublic k = NodePublic::fromRaw(payload);
  if (!loop_.server().registry().closePeer(k)) {
    LOG_INFO("ClosePeer from mesh peer {} for {}: not connected here", key_.shortString(), k.shortString());
  }
}

// ---- cross-thread queues ----

bool Conn::enqueuePacket(const NodePublic& src, ByteView packet, bool disco, LoopStats& stats) {
  QueuedPacket qp{src, Bytes(packet.begin(), packet.end()), Clock::now()};
  bool sched = false;
  bool full = false;
  {
    std::lock_guard lk(qmu_);
    if (qClosed_) {
      stats.drop(DropReason::GoneDisconnected, disco);
      return false;
    }
    const QueuePush r = pushDroppingHead(disco ? discoQ_ : dataQ_, std::move(qp));
    if (r.droppedHead) stats.drop(DropReason::QueueHead, disco);
    full = r.full;
    sched = !scheduled_;
    scheduled_ = true;
  }
  if (sched) loop_.schedule(this);
  return full;
}

void Conn::enqueuePeerGone(const NodePublic& peer, derp::PeerGoneReason reason) {
  bool sched = false;
  {
    std::lock_guard lk(qmu_);
    if (qClosed_) return;
    peerGoneQ_.emplace_back(peer, reason);
    if (peerGoneQ_.size() > kMaxPendingMeshUpdates) closeRequested_ = CloseReason::WriteTimeout;
    sched = !scheduled_;
    scheduled_ = true;
  }
  if (sched) loop_.schedule(this);
}

void Conn::enqueuePeerPresent(const NodePublic& peer, const std::array<uint8_t, 16>& ip16, uint16_t port,
                              uint8_t flags) {
  bool sched = false;
  {
    std::lock_guard lk(qmu_);
    if (qClosed_) return;
    meshQ_.push_back(MeshUpdate{peer, ip16, port, flags, true});
    if (meshQ_.size() > kMaxPendingMeshUpdates) closeRequested_ = CloseReason::WriteTimeout;
    sched = !scheduled_;
    scheduled_ = true;
  }
  if (sched) loop_.schedule(this);
}

bool Conn::sendSideClosed() {
  std::lock_guard lk(qmu_);
  return qClosed_;
}

void Conn::requestClose(CloseReason why) {
  bool sched = false;
  {
    std::lock_guard lk(qmu_);
    if (qClosed_) return;
    closeRequested_ = why;
    sched = !scheduled_;
    scheduled_ = true;
  }
  if (sched) loop_.schedule(this);
}

void Conn::onScheduled() {
  if (state_ == State::Closed) return;
  std::optional<CloseReason> why;
  {
    std::lock_guard lk(qmu_);
    why = closeRequested_;
  }
  if (why) {
    close(*why);
    return;
  }
  pullQueues();
  writeOut();
}

void Conn::pullQueues() {
  if (state_ != State::Relay) return;
  std::vector<QueuedPacket> disco, data;
  std::vector<std::pair<NodePublic, derp::PeerGoneReason>> gone;
  std::vector<MeshUpdate> mesh;
  {
    std::lock_guard lk(qmu_);
    scheduled_ = false;
    gone.swap(peerGoneQ_);
    mesh.swap(meshQ_);
    if (pendingOut() < kOutHighWater) {
      disco.swap(discoQ_);
      data.swap(dataQ_);
    }
  }
  LoopStats& st = loop_.stats();
  Bytes& o = ws_ ? derpOut_ : out_;
  for (const auto& [k, reason] : gone) {
    derp::appendPeerGone(o, k, reason);
    (reason == derp::PeerGoneReason::NotHere ? st.peerGoneNotHereFrames : st.peerGoneDisconnectedFrames).add();
  }
  for (const MeshUpdate& m : mesh) {
    if (m.present) {
      derp::appendPeerPresent(o, m.key, m.ip16, m.port, m.flags);
    } else {
      derp::appendPeerGone(o, m.key, derp::PeerGoneReason::Disconnected);
    }
  }
  if (disco.empty() && data.empty()) return;
  // One allocation for the whole batch rather than a doubling chain (and
  // its copies) as 32 packets are appended.
  size_t need = 0;
  for (const auto* q : {&disco, &data}) {
    for (const QueuedPacket& p : *q) need += derp::kFrameHeaderLen + kKeyLen + p.data.size();
  }
  o.reserve(o.size() + need);
  TimePoint now = Clock::now();
  double ema = st.avgQueueMs.load(std::memory_order_relaxed);
  auto emit = [&](std::vector<QueuedPacket>& q) {
    for (QueuedPacket& p : q) {
      derp::appendRecvPacket(o, p.src, p.data);
      st.packetsSent.add();
      st.bytesSent.add(p.data.size());
      double ms = std::chrono::duration<double, std::milli>(now - p.enqueued).count();
      ema = 0.9 * ema + 0.1 * ms;
    }
  };
  emit(disco);
  emit(data);
  st.avgQueueMs.store(ema, std::memory_order_relaxed);
}

// ---- output ----

ssize_t Conn::sendSome(const uint8_t* p, size_t n) {
  for (;;) {
    ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (w > 0) return w;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    LOG_DEBUG("conn {}: write: {}", connNum_, w == 0 ? "wrote nothing" : std::strerror(errno));
    close(CloseReason::WriteError);
    return -1;
  }
}

void Conn::writeOut() {
  if (state_ == State::Closed) return;
  for (int round = 0; round < 16; ++round) {
    sealOutput();
    bool progress = false;
    bool blocked = false;
    while (outOff_ < out_.size() || recOutOff_ < recOut_.size() || (rec_ && rec_->wantKeyUpdate())) {
      size_t n = std::min<size_t>(out_.size() - outOff_, INT_MAX);
      ssize_t w;
      if (rec_) {
        // Seal at most kOutHighWater at a time, only once the records
        // before have gone, so that what waits for the socket stays
        // plaintext in out_ (and counts against kOutHighWater there).
        if (recOutOff_ == recOut_.size()) {
          recOut_.clear();
          recOutOff_ = 0;
          if (rec_->wantKeyUpdate()) rec_->sealKeyUpdate(recOut_);
          const size_t take = std::min(n, kOutHighWater);
          rec_->seal(ByteView(out_.data() + outOff_, take), recOut_);
          outOff_ += take;
        }
        w = sendSome(recOut_.data() + recOutOff_, recOut_.size() - recOutOff_);
        if (w < 0) return;
        if (w == 0) {
          blocked = true;
          break;
        }
        recOutOff_ += size_t(w);
        progress = true;
        continue;
      }
      if (ssl_) {
        if (state_ == State::TlsHandshake) { blocked = true; break; }
        ERR_clear_error();
        int r = SSL_write(ssl_, out_.data() + outOff_, int(n));
        if (r <= 0) {
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            blocked = true;
            break;
          }
          LOG_DEBUG("conn {}: TLS write: {}", connNum_,
                    e == SSL_ERROR_SYSCALL ? std::string(std::strerror(errno)) : opensslErrors());
          ERR_clear_error();
          close(CloseReason::WriteError);
          return;
        }
        w = r;
      } else {
        w = sendSome(out_.data() + outOff_, n);
        if (w < 0) return;
        if (w == 0) {
          blocked = true;
          break;
        }
      }
      outOff_ += size_t(w);
      progress = true;
    }
    if (blocked) {
      if (progress || writeStallSince_ == TimePoint{}) writeStallSince_ = loop_.now();
      break;
    }
    // Everything written.
    out_.clear();
    outOff_ = 0;
    if (out_.capacity() > 4096) Bytes().swap(out_);
    recOut_.clear();
    recOutOff_ = 0;
    if (recOut_.capacity() > 4096) Bytes().swap(recOut_);
    writeStallSince_ = {};
    if (closeAfterFlush_) {
      linger();
      return;
    }
    // Pull what the backlog held back, then write again.
    bool more;
    {
      std::lock_guard lk(qmu_);
      more = !discoQ_.empty() || !dataQ_.empty() || !peerGoneQ_.empty() || !meshQ_.empty();
    }
    if (!more || state_ != State::Relay) break;
    pullQueues();
  }
  updateInterest();
  rearmTimer();
}

// Everything else has been written (linger() runs after the flush): one
// non-blocking attempt, as OpenSSL's SSL_shutdown() makes.
void Conn::sendCloseNotify() {
  if (ssl_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);
    ERR_clear_error();
  } else if (rec_) {
    Bytes alert;
    rec_->sealCloseNotify(alert);
    [[maybe_unused]] ssize_t w = ::send(fd_, alert.data(), alert.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
}

void Conn::linger() {
  if (state_ == State::Relay) {
    // A drained DERP connection (Restarting written): no response can be
    // lost, so close now. Unread input is discarded first so the close is a
    // FIN, not a reset that could destroy the frame in flight.
    sendCloseNotify();
    ::shutdown(fd_, SHUT_WR);
    uint8_t* buf = loop_.readBuf();
    for (int i = 0; i < 16 && ::recv(fd_, buf, Loop::kReadBufSize, MSG_DONTWAIT) > 0; ++i) {
    }
    close(CloseReason::Shutdown);
    return;
  }
  // The response is out: stop writing, then read and discard until the peer
  // closes (or kLingerTime), so unread request bytes do not turn our close
  // into a reset that destroys the response in flight.
  sendCloseNotify();
  ::shutdown(fd_, SHUT_WR);
  state_ = State::Lingering;
  deadline_ = loop_.now() + kLingerTime;
  closeAfterFlush_ = false;
  updateInterest();
  rearmTimer();
}

void Conn::updateInterest() {
  if (state_ == State::Closed) return;
  uint32_t want = readPaused_ ? 0u : uint32_t(EPOLLIN);
  // Sealed records waiting count as output: out_ may be all sealed.
  // Sealed records waiting count as output: out_ may be all sealed.
  if (outOff_ < out_.size() || recOutOff_ < recOut_.size() || readWantsWrite_) want |= EPOLLOUT;
  backlogged_.store(pendingOut() >= kOutHighWater, std::memory_order_relaxed);
  if (want != interest_ && loop_.modFd(fd_, want, this)) interest_ = want;
}

void Conn::rearmTimer() {
  if (state_ == State::Closed) return;
  TimePoint t{};
  auto consider = [&](TimePoint c) {
    if (c != TimePoint{} && (t == TimePoint{} || c < t)) t = c;
  };
  consider(deadline_);
  if (writeStallSince_ != TimePoint{}) consider(writeStallSince_ + kWriteTimeout);
  if (state_ == State::Relay) consider(nextKeepAlive_);
  if (t == TimePoint{} || t == armedAt_) return;
  armedAt_ = t;
  loop_.armTimer(this, t);
}

void Conn::onTimer() {
  TimePoint now = loop_.now();
  armedAt_ = {};
  if (deadline_ != TimePoint{} && now >= deadline_) {
    if (state_ == State::Lingering) {
      close(CloseReason::Http);
    } else if (state_ == State::Verifying) {
      if (admissionId_) loop_.server().verifier()->forget(*admissionId_);
      onAdmission("unavailable", "mesh-helper did not answer within " +
                                     std::to_string(std::chrono::seconds(kAdmissionWait).count()) + " s");
    } else {
      LOG_DEBUG("conn {} from {}: deadline passed in state {}", connNum_, peerIpText_, int(state_));
      close(CloseReason::HandshakeTimeout);
    }
    return;
  }
  if (writeStallSince_ != TimePoint{} && now - writeStallSince_ >= kWriteTimeout) {
    LOG_DEBUG("conn {} {}: no write progress for 2 s", connNum_, key_.shortString());
    close(CloseReason::WriteTimeout);
    return;
  }
  if (state_ == State::Relay && now >= nextKeepAlive_) {
    nextKeepAlive_ = now + keepAlivePeriod_;
    if (pendingOut() < kOutHighWater) {
      appendDerp([](Bytes& o) { derp::appendKeepAlive(o); });
      writeOut();
    }
  }
  rearmTimer();
}

void Conn::drain(uint32_t reconnectInMs, uint32_t tryForMs) {
  if (state_ != State::Relay) {
    if (state_ != State::Closed && state_ != State::Lingering) close(CloseReason::Shutdown);
    return;
  }
  appendDerp([&](Bytes& o) { derp::appendRestarting(o, reconnectInMs, tryForMs); });
  if (ws_) {
    sealOutput();
    http::appendWsClose(out_, http::kWsCloseNormal, "server restarting", false);
    wsCloseSent_ = true;
  }
  closeAfterFlush_ = true;
  writeOut();
}

void Conn::close(CloseReason why) {
  if (state_ == State::Closed) return;
  State prev = state_;
  state_ = State::Closed;
  leavePending();
  if (admissionId_) {
    loop_.server().verifier()->forget(*admissionId_);
    admissionId_.reset();
  }
  LoopStats& st = loop_.stats();
  if (!(why == CloseReason::Http && prev == State::Lingering)) st.closes[size_t(why)].add();
  Server& srv = loop_.server();
  if (registered_) {
    srv.registry().remove(this);
    registered_ = false;
    if (preferred_) srv.gauges().currentHomeConnections.fetch_sub(1);
    LOG_DEBUG("conn {}: client {} disconnected ({})", connNum_, key_.toText(), closeReasonName(why));
  }
  {
    std::lock_guard lk(qmu_);
    qClosed_ = true;
    for (size_t i = 0; i < discoQ_.size(); ++i) st.drop(DropReason::GoneDisconnected, true);
    for (size_t i = 0; i < dataQ_.size(); ++i) st.drop(DropReason::GoneDisconnected, false);
    discoQ_.clear();
    dataQ_.clear();
    peerGoneQ_.clear();
    meshQ_.clear();
  }
  if (tlsVersionIdx_ >= 0) {
    srv.gauges().tlsActive[tlsVersionIdx_].fetch_sub(1);
    tlsVersionIdx_ = -1;
  }
  loop_.delFd(fd_);
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  ::close(fd_);
  fd_ = -1;
  loop_.deferDelete(this);
}

}  // namespace derpd::worker
