#include "common/client/derp_client.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <algorithm>
#include <deque>
#include <exception>
#include <string_view>

#include "common/client/transport.hpp"
#include "common/crypto/box.hpp"
#include "common/crypto/meta_cert.hpp"
#include "common/log/log.hpp"
#include "common/proto/derp/client_info.hpp"
#include "common/proto/http/http.hpp"
#include "common/proto/http/websocket.hpp"

namespace derpd::client {

namespace {

// Server->client WebSocket frames larger than this are refused. DERP bytes
// are streamed out of the decoder, so this only bounds a single frame header.
constexpr uint64_t kWsMaxFrameLen = uint64_t(derp::kClientMaxFrameLen) + 1024;
// Bytes read from the socket per call.
constexpr size_t kReadChunk = 64 * 1024;
// A non-101 response body is read up to this size for the error message.
constexpr size_t kMaxErrorBody = 4096;

struct RawFrame {
  uint8_t type;
  Bytes payload;
};

std::string base64(ByteView b) {
  std::string out(4 * ((b.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), b.data(), int(b.size()));
  out.resize(size_t(n));
  return out;
}

std::string hex8(uint8_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return std::string("0x") + kDigits[v >> 4] + kDigits[v & 0xf];
}

bool headerHasToken(const http::ResponseHead& h, std::string_view name, std::string_view token) {
  for (const auto& hdr : h.headers) {
    if (!http::iequals(hdr.name, name)) continue;
    std::string_view v = hdr.value;
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view part = v.substr(0, comma);
      while (!part.empty() && (part.front() == ' ' || part.front() == '\t')) part.remove_prefix(1);
      while (!part.empty() && (part.back() == ' ' || part.back() == '\t')) part.remove_suffix(1);
      if (http::iequals(part, token)) return true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return false;
}

template <typename F>
auto noThrow(F&& f, const char* what) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return makeError(std::string(what) + ": " + e.what());
  } catch (...) {
    return makeError(std::string(what) + ": unknown exception");
  }
}

}  // namespace

struct Client::Impl {
  ClientOptions opts;
  ParsedUrl url;
  std::unique_ptr<Transport> transport;  // owned by the client's thread, like everything here
  ConnInfo info;
  NodePublic myPub;
  NodePublic serverPub;

  // WebSocket state (opts.websocket).
  bool ws = false;
  std::unique_ptr<http::WsDecoder> wsDec;

  // DERP frame parsing and decoded-but-unreturned frames.
  derp::FrameReader reader;
  std::deque<RawFrame> queue;
  Bytes sendBuf;  // send()'s frame, kept between calls (its capacity)
  static constexpr size_t kKeptSendBuf = 128 * 1024;  // a larger one is freed after its send
  std::string rejectReason;  // set by the classifier on a refused frame

  bool eof = false;            // the server ended the stream (EOF or WebSocket Close)
  std::string readFailure;     // a fatal stream error; every later recv() returns it
  std::string writeFailure;    // a write failed part-way; every later send returns it
  bool closedByUs = false;
  Bytes readBuf;               // socket reads land here

  explicit Impl(const ClientOptions& o)
      : opts(o),
        reader([this](const derp::FrameHeader& h) { return classify(h); },
               derp::kClientMaxFrameLen) {}

  derp::HeaderVerdict classify(const derp::FrameHeader& h) {
    if (h.len > derp::kClientMaxFrameLen) {
      rejectReason = "frame too large: type " + hex8(h.type) + " length " + std::to_string(h.len) +
                     " > " + std::to_string(derp::kClientMaxFrameLen);
      return derp::HeaderVerdict::Reject;
    }
    return derp::HeaderVerdict::Deliver;
  }

  Deadline writeDeadline() const { return Clock::now() + opts.timeout; }

  // Writes DERP stream bytes (wrapped in one masked binary message for WebSocket).
  Result<void> writeDerp(ByteView bytes, Deadline deadline) {
    if (closedByUs) return makeError("closed");
    if (!writeFailure.empty()) return makeError(writeFailure);
    Result<void> r;
    if (ws) {
      Bytes msg;
      http::appendWsFrame(msg, http::WsOpcode::Binary, bytes, true);
      r = transport->writeAll(msg, deadline);
    } else {
      r = transport->writeAll(bytes, deadline);
    }
    if (!r) writeFailure = r.error();
    return r;
  }

  // WebSocket control frames from the server.
  struct WsEvents : http::WsDecoder::Events {
    Bytes data;
    std::vector<std::pair<http::WsOpcode, Bytes>> controls;
    void onData(ByteView d) override { data.insert(data.end(), d.begin(), d.end()); }
    void onControl(http::WsOpcode op, ByteView p) override {
      controls.emplace_back(op, Bytes(p.begin(), p.end()));
    }
  };

  // Feeds stream bytes (after the HTTP head) through the WebSocket layer and
  // the DERP frame reader into the queue.
  Result<void> ingest(ByteView in) {
    if (eof || in.empty()) return okResult();
    ByteView derpBytes = in;
    WsEvents ev;
    std::string wsError;
    if (ws) {
      uint16_t closeCode = 0;
      auto r = wsDec->feed(in, ev, &closeCode);
      if (!r) {
        if (closeCode && writeFailure.empty()) {
          Bytes out;
          http::appendWsClose(out, closeCode, "", true);
          (void)transport->writeAll(out, Clock::now() + std::chrono::milliseconds(200));
        }
        wsError = "websocket: " + r.error();
      }
      derpBytes = ev.data;
    }
    if (!derpBytes.empty()) {
      auto r = reader.feed(derpBytes, [this](const derp::Frame& f) {
        queue.push_back(RawFrame{uint8_t(f.type), Bytes(f.payload.begin(), f.payload.end())});
        return true;
      });
      if (!r) return makeError(rejectReason.empty() ? r.error() : rejectReason);
    }
    if (!wsError.empty()) return makeError(wsError);
    for (auto& [op, payload] : ev.controls) {
      if (op == http::WsOpcode::Ping) {
        Bytes out;
        http::appendWsFrame(out, http::WsOpcode::Pong, payload, true);
        if (writeFailure.empty()) {
          if (auto w = transport->writeAll(out, writeDeadline()); !w) {
            LOG_DEBUG("derp client: websocket pong: {}", w.error());
            writeFailure = w.error();
          }
        }
      } else if (op == http::WsOpcode::Close) {
        // Echo the close as RFC 6455 asks (best effort), then the stream is over.
        uint16_t code = payload.size() >= 2 ? uint16_t(payload[0] << 8 | payload[1]) : http::kWsCloseNormal;
        Bytes out;
        http::appendWsClose(out, code, "", true);
        if (writeFailure.empty()) {
          (void)transport->writeAll(out, Clock::now() + std::chrono::milliseconds(200));
        }
        LOG_DEBUG("derp client: websocket close {}", code);
        eof = true;
        break;
      }
    }
    return okResult();
  }

  // One read from the socket into the queue. Errors: kTimeoutError, "eof", or fatal.
  Result<void> readMore(Deadline deadline) {
    if (!readFailure.empty()) return makeError(readFailure);
    if (eof) return makeError("eof");
    readBuf.resize(kReadChunk);
    auto n = transport->readSome(readBuf.data(), readBuf.size(), deadline);
    if (!n) {
      if (n.error() == kTimeoutError) return std::move(n).takeError();
      readFailure = n.error();
      return makeError(readFailure);
    }
    if (*n == 0) {
      eof = true;
      return makeError("eof");
    }
    if (auto r = ingest(ByteView(readBuf.data(), *n)); !r) {
      readFailure = r.error();
      return r;
    }
    return okResult();
  }

  // Next raw frame, for the handshake.
  Result<RawFrame> nextFrame(Deadline deadline) {
    while (queue.empty()) {
      if (auto r = readMore(deadline); !r && queue.empty()) return std::move(r).takeError();
    }
    RawFrame f = std::move(queue.front());
    queue.pop_front();
    return f;
  }

  // ---- connect ----

  std::string buildRequest(const std::string& wsKey, bool fastStart) const {
    std::vector<std::pair<std::string, std::string>> hdrs;
    if (ws) {
      hdrs.emplace_back("Connection", "Upgrade");
      hdrs.emplace_back("Sec-Websocket-Key", wsKey);
      hdrs.emplace_back("Sec-Websocket-Protocol", "derp");
      hdrs.emplace_back("Sec-Websocket-Version", "13");
      hdrs.emplace_back("Upgrade", "websocket");
    } else {
      hdrs.emplace_back("Connection", "Upgrade");
      if (fastStart) hdrs.emplace_back("Derp-Fast-Start", "1");
      hdrs.emplace_back("Upgrade", "DERP");
    }
    for (const auto& h : opts.extraHeaders) hdrs.push_back(h);
    // Go writes the header map sorted by name after Host and User-Agent.
    std::stable_sort(hdrs.begin(), hdrs.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string req = "GET " + url.target + " HTTP/1.1\r\n";
    req += "Host: " + (opts.hostHeader.empty() ? url.authority : opts.hostHeader) + "\r\n";
    req += "User-Agent: Go-http-client/1.1\r\n";
    for (const auto& [k, v] : hdrs) req += k + ": " + v + "\r\n";
    // Go's transport adds this to the WebSocket dial (coder/websocket); the
    // DERP upgrade path writes the request itself without it.
    if (ws) req += "Accept-Encoding: gzip\r\n";
    req += "\r\n";
    return req;
  }

  // Reads the response head; bytes after it are fed to the DERP stream.
  Result<http::ResponseHead> readResponse(Deadline deadline) {
    std::string buf;
    uint8_t tmp[4096];
    for (;;) {
      auto n = transport->readSome(tmp, sizeof(tmp), deadline);
      if (!n) return makeError("reading HTTP response: " + n.error());
      if (*n == 0) {
        return makeError(buf.empty() ? "reading HTTP response: eof"
                                     : "reading HTTP response: eof inside the head");
      }
      buf.append(reinterpret_cast<const char*>(tmp), *n);
      auto p = http::parseResponseHead(buf);
      if (p.status == http::ParseStatus::Incomplete) continue;
      if (p.status == http::ParseStatus::Invalid) return makeError("bad HTTP response: " + p.error);
      if (p.status == http::ParseStatus::TooLarge) return makeError("HTTP response head too large");
      std::string rest = buf.substr(p.head.headLen);
      if (p.head.status != 101) {
        return makeError(statusError(p.head, std::move(rest), deadline));
      }
      pendingAfterHead = Bytes(rest.begin(), rest.end());
      return std::move(p.head);
    }
  }
  Bytes pendingAfterHead;

  std::string statusError(const http::ResponseHead& h, std::string body, Deadline deadline) {
    size_t want = kMaxErrorBody;
    if (const std::string* cl = h.get("Content-Length")) {
      size_t v = 0;
      bool ok = !cl->empty();
      for (char c : *cl) {
        if (c < '0' || c > '9' || v > kMaxErrorBody) {
          ok = false;
          break;
        }
        v = v * 10 + size_t(c - '0');
      }
      if (ok) want = std::min(v, kMaxErrorBody);
    }
    // Read a little more of the body, but never past the connect deadline
    // and never more than a short moment (a body without a length may never end).
    Deadline bodyDeadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(500));
    uint8_t tmp[1024];
    while (body.size() < want && body.find('\n') == std::string::npos) {
      auto n = transport->readSome(tmp, sizeof(tmp), bodyDeadline);
      if (!n || *n == 0) break;
      body.append(reinterpret_cast<const char*>(tmp), *n);
    }
    if (body.size() > want) body.resize(want);
    std::string msg = "unexpected HTTP status " + std::to_string(h.status);
    std::string line = body.substr(0, body.find('\n'));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) msg += ": " + line;
    return msg;
  }

  Result<void> checkWebSocketResponse(const http::ResponseHead& h, const std::string& wsKey) {
    if (!headerHasToken(h, "Connection", "upgrade")) {
      return makeError("websocket: response lacks Connection: Upgrade");
    }
    if (!headerHasToken(h, "Upgrade", "websocket")) {
      return makeError("websocket: response lacks Upgrade: websocket");
    }
    const std::string* accept = h.get("Sec-WebSocket-Accept");
    if (!accept || *accept != http::websocketAccept(wsKey)) {
      return makeError("websocket: bad Sec-WebSocket-Accept");
    }
    const std::string* proto = h.get("Sec-WebSocket-Protocol");
    if (!proto || *proto != "derp") {
      return makeError("websocket: server did not select the derp subprotocol");
    }
    return okResult();
  }

  Bytes clientInfoFrame() const {
    derp::ClientInfo ci;
    ci.meshKey = opts.meshKey;
    ci.version = derp::kProtocolVersion;
    ci.canAckPings = opts.canAckPings;
    ci.isProber = opts.isProber;
    std::string json = derp::encodeClientInfo(ci);
    Bytes sealed = crypto::seal(opts.key, serverPub, asBytes(json));
    Bytes out;
    derp::appendClientInfo(out, myPub, sealed);
    return out;
  }

  Result<void> connect() {
    const Deadline deadline = Clock::now() + opts.timeout;
    auto u = parseUrl(opts.url);
    if (!u) return std::move(u).takeError();
    url = std::move(*u);
    ws = opts.websocket;
    myPub = opts.key.publicKey();

    std::string dialHost = url.host;
    uint16_t dialPort = url.port;
    if (!opts.dialAddr.empty()) {
      auto hp = parseHostPort(opts.dialAddr);
      if (!hp) return makeError("dialAddr: " + hp.error());
      dialHost = hp->host;
      dialPort = hp->port;
    }
    auto t = Transport::dial(dialHost, dialPort, deadline);
    if (!t) return std::move(t).takeError();
    transport = std::move(*t);

    std::optional<NodePublic> metaKey;
    if (url.tls) {
      info.tls = true;
      TlsOptions to;
      to.serverName = opts.serverName.empty() ? url.host : opts.serverName;
      to.caFile = opts.caFile;
      to.insecureSkipVerify = opts.insecureSkipVerify;
      to.maxTls12 = opts.maxTls12;
      if (auto r = transport->startTls(to, deadline); !r) return r;
      SSL* ssl = transport->ssl();
      info.tlsVersion = SSL_get_version(ssl);
      STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
      int n = chain ? sk_X509_num(chain) : 0;
      if (n > 0) {
        auto mk = crypto::parseMetaCert(sk_X509_value(chain, n - 1));
        ERR_clear_error();
        if (mk) {
          info.gotMetaCert = true;
          if (SSL_version(ssl) >= TLS1_3_VERSION) metaKey = *mk;
        }
      }
    }
    bool fastStart = false;
    if (opts.fastStartKeyForTest) {
      fastStart = true;
      metaKey = *opts.fastStartKeyForTest;
    } else {
      fastStart = opts.fastStart && !ws && metaKey.has_value();
    }
    info.fastStart = fastStart;

    std::string wsKey;
    if (ws) {
      wsDec = std::make_unique<http::WsDecoder>(false, kWsMaxFrameLen);
      uint8_t nonce[16];
      if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        return makeError("websocket key: RAND_bytes: " + drainSslErrors());
      }
      wsKey = base64(ByteView(nonce, sizeof(nonce)));
    }
    Bytes out;
    std::string req = buildRequest(wsKey, fastStart);
    out.insert(out.end(), req.begin(), req.end());
    if (fastStart) {
      // As Go's derphttp: the request is not flushed on its own; ClientInfo,
      // sealed to the meta cert's key, goes out in the same write.
      serverPub = *metaKey;
      if (!opts.rawAfterUpgrade) {
        Bytes ci = clientInfoFrame();
        out.insert(out.end(), ci.begin(), ci.end());
      }
    }
    if (auto r = transport->writeAll(out, deadline); !r) return makeError("sending HTTP request: " + r.error());

    if (!fastStart) {
      auto head = readResponse(deadline);
      if (!head) return std::move(head).takeError();
      info.httpStatus = head->status;
      if (ws) {
        if (auto r = checkWebSocketResponse(*head, wsKey); !r) return r;
      }
      if (auto r = ingest(pendingAfterHead); !r) {
        readFailure = r.error();
        return r;
      }
      pendingAfterHead.clear();
    }
    if (opts.rawAfterUpgrade) {
      LOG_DEBUG("derp client: upgraded (raw mode)");
      return okResult();
    }

    // ServerKey first.
    auto sk = nextFrame(deadline);
    if (!sk) return makeError("reading ServerKey: " + sk.error());
    if (sk->type != uint8_t(derp::FrameType::ServerKey)) {
      return makeError("expected ServerKey frame, got " + derp::frameTypeName(sk->type));
    }
    auto key = derp::parseServerKey(sk->payload);
    if (!key) return makeError("bad ServerKey frame: " + key.error());
    if (fastStart) {
      if (*key != serverPub) return makeError("ServerKey does not match the meta certificate's key");
    } else {
      serverPub = *key;
      Bytes ci = clientInfoFrame();
      if (auto r = writeDerp(ci, deadline); !r) return makeError("sending ClientInfo: " + r.error());
    }

    // Then ServerInfo, before anything else.
    auto si = nextFrame(deadline);
    if (!si) return makeError("reading ServerInfo: " + si.error());
    if (si->type != uint8_t(derp::FrameType::ServerInfo)) {
      return makeError("expected ServerInfo frame, got " + derp::frameTypeName(si->type));
    }
    auto plain = crypto::open(opts.key, serverPub, si->payload);
    if (!plain) return makeError("cannot open ServerInfo: " + plain.error());
    info.serverInfoJson = std::string(asChars(*plain));
    LOG_DEBUG("derp client: connected, server info {}", info.serverInfoJson);
    return okResult();
  }

  // Encodes with `enc` and writes the frame, bounded by opts.timeout.
  template <typename Enc>
  Result<void> send(Enc&& enc) {
    return noThrow(
        [&]() -> Result<void> {
          sendBuf.clear();
          enc(sendBuf);
          auto r = writeDerp(sendBuf, writeDeadline());
          clearSslErrors();
          if (sendBuf.capacity() > kKeptSendBuf) Bytes().swap(sendBuf);
          return r;
        },
        "send");
  }

  // ---- recv ----

  // Decodes one frame; nullopt for frames the client drops (as Go does).
  Result<std::optional<Message>> decode(RawFrame& f) {
    ByteView p = f.payload;
    switch (derp::FrameType(f.type)) {
      case derp::FrameType::RecvPacket: {
        if (p.size() < crypto::kKeyLen) {
          LOG_DEBUG("derp client: dropping short RecvPacket ({} bytes)", p.size());
          return std::optional<Message>();
        }
        // The frame's own buffer becomes the packet's: the key moves out
        // of its front rather than the packet being copied into another.
        RecvPacket m{NodePublic::fromRaw(p.subspan(0, crypto::kKeyLen)), std::move(f.payload)};
        m.data.erase(m.data.begin(), m.data.begin() + crypto::kKeyLen);
        return std::optional<Message>(std::move(m));
      }
      case derp::FrameType::PeerGone: {
        auto pg = derp::parsePeerGone(p);
        if (!pg) return std::optional<Message>();
        return std::optional<Message>(PeerGone{pg->key, pg->reason});
      }
      case derp::FrameType::PeerPresent: {
        auto pp = derp::parsePeerPresent(p);
        if (!pp) return std::optional<Message>();
        return std::optional<Message>(PeerPresent{*pp});
      }
      case derp::FrameType::KeepAlive:
        return std::optional<Message>(KeepAlive{});
      case derp::FrameType::Ping:
      case derp::FrameType::Pong: {
        if (p.size() < 8) return std::optional<Message>();
        std::array<uint8_t, 8> d;
        std::copy(p.begin(), p.begin() + 8, d.begin());
        if (derp::FrameType(f.type) == derp::FrameType::Ping) return std::optional<Message>(Ping{d});
        return std::optional<Message>(Pong{d});
      }
      case derp::FrameType::Health:
        return std::optional<Message>(Health{std::string(asChars(p))});
      case derp::FrameType::Restarting: {
        if (p.size() < 8) return std::optional<Message>();
        return std::optional<Message>(Restarting{getU32BE(p.data()), getU32BE(p.data() + 4)});
      }
      case derp::FrameType::ServerInfo: {
        if (serverPub.isZero()) break;  // raw mode: no key to open it with
        auto plain = crypto::open(opts.key, serverPub, p);
        if (!plain) return makeError("invalid ServerInfo frame: " + plain.error());
        return std::optional<Message>(ServerInfoMsg{std::string(asChars(*plain))});
      }
      default:
        break;
    }
    return std::optional<Message>(OtherFrame{f.type, std::move(f.payload)});
  }

  Result<Message> recv(std::chrono::milliseconds timeout) {
    if (closedByUs) return makeError("closed");
    const Deadline deadline = Clock::now() + timeout;
    for (;;) {
      while (!queue.empty()) {
        RawFrame f = std::move(queue.front());
        queue.pop_front();
        auto m = decode(f);
        if (!m) return std::move(m).takeError();
        if (*m) return std::move(**m);
      }
      // Frames that arrived before a fatal error are still delivered first.
      if (auto r = readMore(deadline); !r && queue.empty()) return std::move(r).takeError();
    }
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() { close(); }

Result<std::unique_ptr<Client>> Client::connect(const ClientOptions& opts) {
  return noThrow(
      [&]() -> Result<std::unique_ptr<Client>> {
        auto impl = std::make_unique<Impl>(opts);
        auto r = impl->connect();
        ERR_clear_error();
        if (!r) {
          LOG_DEBUG("derp client: connect {}: {}", opts.url, r.error());
          return std::move(r).takeError();
        }
        return std::unique_ptr<Client>(new Client(std::move(impl)));
      },
      "connect");
}

const NodePublic& Client::serverKey() const { return impl_->serverPub; }
const NodePublic& Client::publicKey() const { return impl_->myPub; }
const ConnInfo& Client::info() const { return impl_->info; }

Result<void> Client::sendPacket(const NodePublic& dst, ByteView packet) {
  return impl_->send([&](Bytes& out) { derp::appendSendPacket(out, dst, packet); });
}

Result<void> Client::forwardPacket(const NodePublic& src, const NodePublic& dst, ByteView packet) {
  return impl_->send([&](Bytes& out) { derp::appendForwardPacket(out, src, dst, packet); });
}

Result<void> Client::notePreferred(bool preferred) {
  return impl_->send([&](Bytes& out) { derp::appendNotePreferred(out, preferred); });
}

Result<void> Client::ping(const std::array<uint8_t, 8>& data) {
  return impl_->send([&](Bytes& out) { derp::appendPing(out, data); });
}

Result<void> Client::requestTlsKeyUpdate() {
  SSL* ssl = impl_->transport ? impl_->transport->ssl() : nullptr;
  if (!ssl || SSL_version(ssl) != TLS1_3_VERSION) return makeError("KeyUpdate needs TLS 1.3");
  if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1) {
    ERR_clear_error();
    return makeError("SSL_key_update failed");
  }
  return okResult();
}

Result<void> Client::pong(const std::array<uint8_t, 8>& data) {
  return impl_->send([&](Bytes& out) { derp::appendPong(out, data); });
}

Result<void> Client::watchConns() {
  return impl_->send([&](Bytes& out) { derp::appendWatchConns(out); });
}

Result<void> Client::closePeer(const NodePublic& key) {
  return impl_->send([&](Bytes& out) { derp::appendClosePeer(out, key); });
}

Result<void> Client::sendRaw(ByteView bytes) {
  return impl_->send([&](Bytes& out) { out.assign(bytes.begin(), bytes.end()); });
}

Result<Message> Client::recv(std::chrono::milliseconds timeout) {
  return noThrow(
      [&]() -> Result<Message> {
        auto r = impl_->recv(timeout);
        clearSslErrors();
        return r;
      },
      "recv");
}

Result<RecvPacket> Client::recvPacket(std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    auto m = recv(left);
    if (!m) return std::move(m).takeError();
    if (auto* p = std::get_if<RecvPacket>(&*m)) return std::move(*p);
  }
}

bool Client::closed() const { return impl_->eof || impl_->closedByUs; }

void Client::close() {
  if (!impl_ || impl_->closedByUs) return;
  impl_->closedByUs = true;
  if (impl_->transport) {
    if (impl_->ws && !impl_->eof && impl_->writeFailure.empty()) {
      try {
        Bytes out;
        http::appendWsClose(out, http::kWsCloseNormal, "", true);
        (void)impl_->transport->writeAll(out, Clock::now() + std::chrono::milliseconds(200));
      } catch (...) {
      }
    }
    impl_->transport->close();
  }
  ERR_clear_error();
}

int Client::fd() const { return impl_->transport ? impl_->transport->fd() : -1; }

}  // namespace derpd::client
