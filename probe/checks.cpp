#include "checks.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/asn1.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <thread>

#include "common/client/transport.hpp"
#include "common/config/config.hpp"
#include "common/log/log.hpp"
#include "common/proto/stun/stun.hpp"

namespace derpd::probe {

namespace {

using std::chrono::milliseconds;

constexpr size_t kMaxPacket = 64 * 1024;  // derp.MaxPacketSize
constexpr int kMaxInFlight = 30;          // a little under derper's 32-deep queue

// A socket closed on scope exit.
struct SocketFd {
  int fd;
  explicit SocketFd(int f) : fd(f) {}
  ~SocketFd() {
    if (fd >= 0) ::close(fd);
  }
  SocketFd(const SocketFd&) = delete;
  SocketFd& operator=(const SocketFd&) = delete;
};

std::string shortKey(const crypto::NodePublic& k) { return k.shortString(); }

// X509 time -> seconds relative to now (positive: in the future).
Result<int64_t> secondsFromNow(const ASN1_TIME* t) {
  int days = 0, secs = 0;
  if (ASN1_TIME_diff(&days, &secs, nullptr, t) != 1) return makeError("unreadable certificate time");
  return int64_t(days) * 86400 + secs;
}

std::string subjectOf(X509* c) {
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(c), buf, sizeof buf);
  return buf;
}

bool sameKeyIds(X509* c) {
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(c);
  const ASN1_OCTET_STRING* aki = nullptr;
  if (AUTHORITY_KEYID* a = static_cast<AUTHORITY_KEYID*>(X509_get_ext_d2i(c, NID_authority_key_identifier, nullptr, nullptr))) {
    bool same = false;
    aki = a->keyid;
    if (!ski && !aki) {
      same = true;
    } else if (ski && aki) {
      same = ASN1_OCTET_STRING_cmp(ski, aki) == 0;
    }
    AUTHORITY_KEYID_free(a);
    return same;
  }
  return ski == nullptr;  // Go: bytes.Equal(nil, nil)
}

}  // namespace

// ---------------------------------------------------------------------------
// TLS

Result<void> checkTls(const ProbeContext& ctx, const std::string& host, int port, const DialSettings& ds,
                      bool insecure) {
  const auto deadline = ctx.deadline();
  auto t = client::Transport::dial(host, uint16_t(port), deadline);
  if (!t) return makeError("dial " + host + ":" + std::to_string(port) + ": " + t.error());
  client::TlsOptions to;
  to.serverName = host;
  to.caFile = ds.caFile;
  to.insecureSkipVerify = insecure;
  if (auto r = (*t)->startTls(to, deadline); !r) return makeError(r.error());
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain((*t)->ssl());
  if (!chain || sk_X509_num(chain) == 0) {
    (*t)->close();
    return makeError("no peer certificates");
  }
  std::string err;
  for (int i = 0; i < sk_X509_num(chain) && err.empty(); ++i) {
    X509* c = sk_X509_value(chain, i);
    if (sameKeyIds(c)) continue;  // derper's meta cert (and other self-signed certs without key ids)
    auto nb = secondsFromNow(X509_get0_notBefore(c));
    auto na = secondsFromNow(X509_get0_notAfter(c));
    if (!nb || !na) {
      err = "certificate " + subjectOf(c) + ": " + (!nb ? nb.error() : na.error());
    } else if (*nb > 0) {
      err = "one of the certs has NotBefore in the future (" + subjectOf(c) + ")";
    } else if (*na <= std::chrono::duration_cast<std::chrono::seconds>(kMinCertValidity).count()) {
      err = "one of the certs expires in " + config::formatGoDuration(std::chrono::seconds(*na)) + " (" +
            subjectOf(c) + "), less than 7 days";
    }
  }
  (*t)->close();
  if (!err.empty()) return makeError(err);
  return okResult();
}

// ---------------------------------------------------------------------------
// STUN

Result<void> checkStun(const ProbeContext& ctx, const std::string& ip, int port) {
  sockaddr_storage ss{};
  socklen_t slen = 0;
  if (port == 0) port = 3478;
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, ip.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(uint16_t(port));
    slen = sizeof *s4;
  } else if (::inet_pton(AF_INET6, ip.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(uint16_t(port));
    slen = sizeof *s6;
  } else {
    return makeError("not an IP address: \"" + ip + "\"");
  }
  SocketFd sock(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.fd < 0) return makeError(std::string("socket: ") + std::strerror(errno));
  stun::TxId tx;
  randombytes_buf(tx.data(), tx.size());
  Bytes req;
  stun::appendBindingRequest(req, tx);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    if (::sendto(sock.fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&ss), slen) < 0) {
      return makeError("write to " + ip + ": " + std::strerror(errno));
    }
    const auto t0 = Clock::now();
    const auto readUntil = std::min(ctx.deadline(), t0 + milliseconds(2000));
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(readUntil - Clock::now()).count();
      if (left <= 0 || ctx.stopping()) break;
      pollfd p{sock.fd, POLLIN, 0};
      int n = ::poll(&p, 1, int(std::min<int64_t>(left, 100)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      uint8_t buf[9000];
      ssize_t got = ::recv(sock.fd, buf, sizeof buf, 0);
      if (got < 0) {
        // ICMP port unreachable arrives as ECONNREFUSED on a later call.
        if (Clock::now() - t0 < milliseconds(1000)) {
          return makeError("error reading from " + ip + ": " + std::strerror(errno));
        }
        continue;
      }
      auto resp = stun::parseBindingResponse(ByteView(buf, size_t(got)));
      if (!resp) return makeError("parsing STUN response from " + ip + ": " + resp.error());
      if (resp->txid != tx) return makeError("read wrong tx back from " + ip);
      return okResult();
    }
    if (ctx.expired()) return makeError("timeout reading from " + ip);
  }
  return makeError("timeout reading from " + ip);
}

// ---------------------------------------------------------------------------
// DERP

Result<std::unique_ptr<client::Client>> connectNode(const ProbeContext& ctx, const derpmap::Node& n,
                                                    bool isProber, const DialSettings& ds) {
  client::ClientOptions o;
  const bool v6host = n.hostName.find(':') != std::string::npos;
  const std::string host = v6host ? "[" + n.hostName + "]" : n.hostName;
  o.url = std::string(ds.plainHttp ? "http://" : "https://") + host + ":" +
          std::to_string(n.effectiveDerpPort()) + "/derp";
  o.key = crypto::NodePrivate::generate();
  o.meshKey = ds.meshKey;
  o.isProber = isProber;
  o.caFile = ds.caFile;
  o.insecureSkipVerify = n.insecureForTests;
  o.serverName = n.hostName;
  if (client::isIpLiteral(n.ipv4) && n.ipv4.find(':') == std::string::npos) {
    o.dialAddr = n.ipv4 + ":" + std::to_string(n.effectiveDerpPort());
  } else if (client::isIpLiteral(n.ipv6)) {
    o.dialAddr = "[" + n.ipv6 + "]:" + std::to_string(n.effectiveDerpPort());
  }
  auto left = ctx.left();
  if (left.count() <= 0) return makeError("timeout before connecting to " + n.name);
  o.timeout = left;
  auto c = client::Client::connect(o);
  if (!c) return makeError("connecting to " + n.name + " (" + o.url + "): " + c.error());
  return std::move(c).value();
}

namespace {

// The payloads of a transfer of `size` bytes: one random packet, or 64 KiB
// packets (the last one shorter).
std::vector<Bytes> packetsForSize(int64_t size) {
  std::vector<Bytes> out;
  for (int64_t remaining = size; remaining > 0; remaining -= int64_t(kMaxPacket)) {
    Bytes p(size_t(std::min<int64_t>(remaining, int64_t(kMaxPacket))));
    randombytes_buf(p.data(), p.size());
    out.push_back(std::move(p));
  }
  if (out.empty()) out.emplace_back();
  return out;
}

// Gives the mesh a moment to hear about `to` on `from`'s node, as
// derpprobe's fixed pause does; ends early when stopping.
void meshPause(const ProbeContext& ctx, const derpmap::Node& from, const derpmap::Node& to) {
  if (from.name == to.name) return;
  auto until = Clock::now() + milliseconds(100);
  while (Clock::now() < until && !ctx.stopping()) std::this_thread::sleep_for(milliseconds(10));
}

}  // namespace

Result<void> checkPair(const ProbeContext& ctx, const derpmap::Node& from, const derpmap::Node& to, int64_t size,
                       bool isProber, const DialSettings& ds, double* transferSeconds) {
  auto fromc = connectNode(ctx, from, isProber, ds);
  if (!fromc) return makeError(fromc.error());
  auto toc = connectNode(ctx, to, isProber, ds);
  if (!toc) return makeError(toc.error());
  meshPause(ctx, from, to);
  client::Client& fc = **fromc;
  client::Client& tc = **toc;
  const auto prefix = shortKey(fc.publicKey()) + " -> " + shortKey(tc.publicKey()) + ": ";
  const std::vector<Bytes> pkts = packetsForSize(size);
  const auto t0 = Clock::now();
  auto record = [&] {
    if (transferSeconds) *transferSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
  };
  size_t sent = 0, got = 0;
  while (got < pkts.size()) {
    while (sent < pkts.size() && sent - got < size_t(kMaxInFlight)) {
      if (ctx.expired()) break;
      if (auto r = fc.sendPacket(tc.publicKey(), pkts[sent]); !r) {
        record();
        return makeError(prefix + "error sending via \"" + from.name + "\": sending packet " +
                         std::to_string(sent) + ": " + r.error());
      }
      ++sent;
    }
    auto left = ctx.left();
    if (left.count() <= 0) {
      record();
      return makeError(prefix + "timeout: context deadline exceeded (after " + std::to_string(got) + " of " +
                       std::to_string(pkts.size()) + " data packets)");
    }
    auto m = tc.recv(std::min(left, milliseconds(250)));
    if (!m) {
      if (client::kTimeoutError == m.error()) continue;
      record();
      return makeError(prefix + "error receiving from \"" + to.name + "\": after " + std::to_string(got) +
                       " data packets: " + m.error());
    }
    auto* rp = std::get_if<client::RecvPacket>(&*m);
    if (!rp) continue;  // keepalives, PeerPresent...
    if (!(rp->src == fc.publicKey())) {
      record();
      return makeError(prefix + "error receiving from \"" + to.name + "\": got data packet " +
                       std::to_string(got) + " from unexpected source, " + rp->src.shortString());
    }
    if (rp->data != pkts[got]) {
      record();
      return makeError(prefix + "error receiving from \"" + to.name + "\": unexpected data packet " +
                       std::to_string(got) + " (out of " + std::to_string(pkts.size()) + ")");
    }
    ++got;
  }
  record();
  return okResult();
}

// ---------------------------------------------------------------------------
// Queuing delay

constexpr double QdStats::kBounds[];

void QdStats::add(double seconds) {
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 0; i < std::size(kBounds); ++i) {
    if (seconds <= kBounds[i]) buckets[i]++;
  }
  count++;
  sum += seconds;
}

std::vector<MetricSample> QdStats::samples() {
  std::lock_guard<std::mutex> lock(mu);
  MetricSample dropped{"derp_qd_probe_dropped_packets", "Total packets dropped", MetricSample::Kind::Counter,
                       this->dropped, {}, {}, 0, 0};
  MetricSample h{"derp_qd_probe_delays_seconds", "Distribution of queuing delays", MetricSample::Kind::Histogram,
                 0, {}, {}, count, sum};
  h.bounds.assign(std::begin(kBounds), std::end(kBounds));
  h.bucketCounts.assign(std::begin(buckets), std::end(buckets));
  return {dropped, h};
}

Result<void> runQueuingDelay(const ProbeContext& ctx, const derpmap::Node& from, const derpmap::Node& to, int pps,
                             milliseconds packetTimeout, const DialSettings& ds, QdStats& stats, bool failOnDrop) {
  // Connections get their own budget: a continuous probe has no deadline.
  ProbeContext dialCtx(std::min(ctx.deadline(), Clock::now() + milliseconds(10000)), nullptr);
  auto fromc = connectNode(dialCtx, from, false, ds);
  if (!fromc) return makeError(fromc.error());
  auto toc = connectNode(dialCtx, to, false, ds);
  if (!toc) return makeError(toc.error());
  meshPause(ctx, from, to);
  client::Client& fc = **fromc;
  client::Client& tc = **toc;
  const auto prefix = shortKey(fc.publicKey()) + " -> " + shortKey(tc.publicKey()) + ": ";
  Bytes pkt(260);  // about a CallMeMaybe
  randombytes_buf(pkt.data(), pkt.size());
  const auto period = std::chrono::nanoseconds(1000000000LL / std::max(pps, 1));
  std::map<uint64_t, Clock::time_point> inFlight;  // seq -> sent at
  uint64_t seq = 0, drops = 0;
  auto nextSend = Clock::now();
  auto expire = [&](Clock::time_point now) {
    while (!inFlight.empty() && now - inFlight.begin()->second > packetTimeout) {
      inFlight.erase(inFlight.begin());
      drops++;
      std::lock_guard<std::mutex> lock(stats.mu);
      stats.dropped += 1;
    }
  };
  for (;;) {
    auto now = Clock::now();
    expire(now);
    if (failOnDrop && drops) {
      return makeError(prefix + std::to_string(drops) + " packet(s) not delivered within " +
                       config::formatGoDuration(packetTimeout));
    }
    if (ctx.expired()) {
      // --once: the window is over; what is still in flight must arrive.
      if (!failOnDrop || inFlight.empty()) return okResult();
    } else if (now >= nextSend) {
      uint8_t* p = pkt.data();
      for (int i = 0; i < 8; ++i) p[i] = uint8_t(seq >> (56 - 8 * i));
      inFlight[seq] = now;
      seq++;
      if (auto r = fc.sendPacket(tc.publicKey(), pkt); !r) {
        return makeError(prefix + "error sending via \"" + from.name + "\": sending packet " + r.error());
      }
      nextSend += period;
      if (nextSend < now) nextSend = now;
      continue;
    }
    auto wait = std::chrono::duration_cast<milliseconds>(nextSend - Clock::now());
    if (ctx.expired()) wait = milliseconds(20);
    wait = std::clamp(wait, milliseconds(1), milliseconds(100));
    auto m = tc.recv(wait);
    if (!m) {
      if (client::kTimeoutError == m.error()) continue;
      return makeError(prefix + "error receiving from \"" + to.name + "\": " + m.error());
    }
    auto* rp = std::get_if<client::RecvPacket>(&*m);
    if (!rp) continue;
    if (!(rp->src == fc.publicKey())) {
      return makeError(prefix + "error receiving from \"" + to.name +
                       "\": got data packet from unexpected source, " + rp->src.shortString());
    }
    if (rp->data.size() < 8) continue;
    uint64_t got = 0;
    for (int i = 0; i < 8; ++i) got = (got << 8) | rp->data[size_t(i)];
    auto it = inFlight.find(got);
    if (it == inFlight.end()) continue;  // late: already counted as dropped
    stats.add(std::chrono::duration<double>(Clock::now() - it->second).count());
    inFlight.erase(it);
  }
}

}  // namespace derpd::probe
