// STUN codec: see stun.hpp. Byte-exact with tailscale.com/net/stun.
#include "common/proto/stun/stun.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

namespace derpd::stun {

namespace {

// zlib's table for the reflected polynomial 0xedb88320, built at compile time.
constexpr std::array<uint32_t, 256> makeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = makeCrcTable();

inline uint16_t getU16BE(const uint8_t* p) { return uint16_t((uint16_t(p[0]) << 8) | p[1]); }
inline void putU16BE(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}

// Go's stun.Is.
bool isStun(ByteView b) {
  return b.size() >= kHeaderLen && (b[0] & 0xc0) == 0 &&
         std::memcmp(b.data() + 4, kMagicCookie.data(), kMagicCookie.size()) == 0;
}

// Go's foreachAttr over b (everything after the header). fn(type, value)
// gets the unpadded value. False when the attributes are malformed.
template <typename Fn>
bool forEachAttr(ByteView b, Fn&& fn) {
  // Each round consumes >= 4 bytes, so at most b.size()/4 rounds.
  while (!b.empty()) {
    if (b.size() < 4) return false;
    const uint16_t type = getU16BE(b.data());
    const size_t len = getU16BE(b.data() + 2);
    const size_t padded = (len + 3) & ~size_t(3);
    b = b.subspan(4);
    if (padded > b.size()) return false;
    if (!fn(type, b.first(len))) return false;
    b = b.subspan(padded);
  }
  return true;
}

size_t familyAddrLen(uint8_t family) {
  if (family == 0x01) return 4;
  if (family == 0x02) return 16;
  return 0;
}

// XOR-MAPPED-ADDRESS / MAPPED-ADDRESS value: 00 family port(2) address.
std::optional<Endpoint> decodeAddress(ByteView v, const TxId& txid, bool xored) {
  if (v.size() < 4) return std::nullopt;
  const size_t alen = familyAddrLen(v[1]);
  if (alen == 0 || v.size() - 4 < alen) return std::nullopt;
  uint16_t port = getU16BE(v.data() + 2);
  std::array<uint8_t, 16> ip{};
  for (size_t i = 0; i < alen; i++) {
    uint8_t mask = 0;
    if (xored) mask = i < 4 ? kMagicCookie[i] : txid[i - 4];
    ip[i] = v[4 + i] ^ mask;
  }
  if (xored) port ^= 0x2112;
  if (alen == 4) return Endpoint::v4({ip[0], ip[1], ip[2], ip[3]}, port);
  return Endpoint::v6(ip, port);
}

}  // namespace

uint32_t crc32Ieee(ByteView data) {
  uint32_t c = 0xffffffffu;
  for (uint8_t b : data) c = kCrcTable[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::string_view requestErrorText(RequestError e) {
  switch (e) {
    case RequestError::None: return "";
    case RequestError::NotStun: return "response is not a STUN packet";
    case RequestError::NotBindingRequest: return "STUN request not a binding request";
    case RequestError::MalformedAttrs: return "STUN response has malformed attributes";
    case RequestError::WrongSoftware: return "STUN request came from non-Tailscale software";
    case RequestError::NoFingerprint: return "STUN request didn't end in fingerprint";
    case RequestError::WrongFingerprint: return "STUN request had bogus fingerprint";
  }
  return "unknown";
}

BindingRequest parseBindingRequest(ByteView b) {
  BindingRequest r;
  if (!isStun(b)) {
    r.error = RequestError::NotStun;
    return r;
  }
  if (getU16BE(b.data()) != kBindingRequest) {
    r.error = RequestError::NotBindingRequest;
    return r;
  }
  bool softwareOk = false;
  uint16_t lastAttr = 0;
  uint32_t gotFp = 0;
  const bool wellFormed = forEachAttr(b.subspan(kHeaderLen), [&](uint16_t type, ByteView v) {
    lastAttr = type;
    if (type == kAttrSoftware && asChars(v) == kSoftware) softwareOk = true;
    if (type == kAttrFingerprint && v.size() == 4) gotFp = getU32BE(v.data());
    return true;
  });
  if (!wellFormed) {
    r.error = RequestError::MalformedAttrs;
    return r;
  }
  if (!softwareOk) {
    r.error = RequestError::WrongSoftware;
    return r;
  }
  if (lastAttr != kAttrFingerprint) {
    r.error = RequestError::NoFingerprint;
    return r;
  }
  // A last attribute exists, so b.size() >= 24 > kFingerprintAttrLen.
  if (gotFp != (crc32Ieee(b.first(b.size() - kFingerprintAttrLen)) ^ kFingerprintXor)) {
    r.error = RequestError::WrongFingerprint;
    return r;
  }
  std::memcpy(r.txid.data(), b.data() + 8, kTxIdLen);
  return r;
}

Endpoint Endpoint::v4(const std::array<uint8_t, 4>& a, uint16_t port) {
  Endpoint e;
  e.family = Family::V4;
  std::memcpy(e.ip.data(), a.data(), 4);
  e.port = port;
  return e;
}

Endpoint Endpoint::v6(const std::array<uint8_t, 16>& a, uint16_t port) {
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.data(), kMappedPrefix, sizeof kMappedPrefix) == 0) {
    return v4({a[12], a[13], a[14], a[15]}, port);
  }
  Endpoint e;
  e.family = Family::V6;
  e.ip = a;
  e.port = port;
  return e;
}

std::optional<Endpoint> Endpoint::fromSockaddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, &ss, sizeof sin);
    std::array<uint8_t, 4> a;
    std::memcpy(a.data(), &sin.sin_addr, 4);
    return v4(a, ntohs(sin.sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, &ss, sizeof sin6);
    std::array<uint8_t, 16> a;
    std::memcpy(a.data(), &sin6.sin6_addr, 16);
    return v6(a, ntohs(sin6.sin6_port));
  }
  return std::nullopt;
}

std::string Endpoint::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == Family::V4) {
    ::inet_ntop(AF_INET, ip.data(), buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  ::inet_ntop(AF_INET6, ip.data(), buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

size_t writeBindingResponse(std::span<uint8_t, kMaxResponseLen> out, const TxId& txid,
                            const Endpoint& from) {
  const size_t alen = from.family == Endpoint::Family::V4 ? 4 : 16;
  uint8_t* p = out.data();
  putU16BE(p, kBindingSuccess);
  putU16BE(p + 2, uint16_t(8 + alen));
  std::memcpy(p + 4, kMagicCookie.data(), 4);
  std::memcpy(p + 8, txid.data(), kTxIdLen);
  p += kHeaderLen;
  putU16BE(p, kAttrXorMappedAddress);
  putU16BE(p + 2, uint16_t(4 + alen));
  p[4] = 0;
  p[5] = uint8_t(from.family);
  putU16BE(p + 6, from.port ^ 0x2112);
  for (size_t i = 0; i < alen; i++) {
    p[8 + i] = from.ip[i] ^ (i < 4 ? kMagicCookie[i] : txid[i - 4]);
  }
  return kHeaderLen + 8 + alen;
}

void appendBindingResponse(Bytes& out, const TxId& txid, const Endpoint& from) {
  std::array<uint8_t, kMaxResponseLen> buf;
  const size_t n = writeBindingResponse(buf, txid, from);
  out.insert(out.end(), buf.begin(), buf.begin() + n);
}

bool appendBindingResponse(Bytes& out, const TxId& txid, const sockaddr_storage& from) {
  auto ep = Endpoint::fromSockaddr(from);
  if (!ep) return false;
  appendBindingResponse(out, txid, *ep);
  return true;
}

void appendBindingRequest(Bytes& out, const TxId& txid) {
  std::array<uint8_t, kRequestLen> b{};
  uint8_t* p = b.data();
  putU16BE(p, kBindingRequest);
  putU16BE(p + 2, uint16_t(kRequestLen - kHeaderLen));
  std::memcpy(p + 4, kMagicCookie.data(), 4);
  std::memcpy(p + 8, txid.data(), kTxIdLen);
  p += kHeaderLen;
  putU16BE(p, kAttrSoftware);
  putU16BE(p + 2, uint16_t(kSoftware.size()));
  std::memcpy(p + 4, kSoftware.data(), kSoftware.size());
  p += 4 + kSoftware.size();
  const uint32_t fp = crc32Ieee(ByteView(b.data(), kRequestLen - kFingerprintAttrLen)) ^ kFingerprintXor;
  putU16BE(p, kAttrFingerprint);
  putU16BE(p + 2, 4);
  putU32BE(p + 4, fp);
  out.insert(out.end(), b.begin(), b.end());
}

Result<BindingResponse> parseBindingResponse(ByteView b) {
  if (!isStun(b)) return makeError("not a STUN packet");
  BindingResponse r;
  std::memcpy(r.txid.data(), b.data() + 8, kTxIdLen);
  if (getU16BE(b.data()) != kBindingSuccess) return makeError("STUN packet is not a success response");
  const size_t attrsLen = getU16BE(b.data() + 2);
  ByteView attrs = b.subspan(kHeaderLen);
  if (attrsLen > attrs.size()) return makeError("STUN response has malformed attributes");
  attrs = attrs.first(attrsLen);
  std::optional<Endpoint> xorMapped, mapped;
  const bool wellFormed = forEachAttr(attrs, [&](uint16_t type, ByteView v) {
    if (type == kAttrXorMappedAddress || type == kAttrXorMappedAddressAlt) {
      auto e = decodeAddress(v, r.txid, true);
      if (!e) return false;
      xorMapped = e;
    } else if (type == kAttrMappedAddress) {
      auto e = decodeAddress(v, r.txid, false);
      if (!e) return false;
      mapped = e;
    }
    return true;
  });
  if (!wellFormed) return makeError("STUN response has malformed attributes");
  if (xorMapped) {
    r.mapped = *xorMapped;
  } else if (mapped) {
    r.mapped = *mapped;
  } else {
    return makeError("STUN response has no mapped address");
  }
  return r;
}

}  // namespace derpd::stun
