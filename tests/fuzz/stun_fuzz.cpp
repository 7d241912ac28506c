// libFuzzer target: the STUN codec (stun-worker's only parser of network data).
//
// Input = one datagram. Checks, beyond not crashing:
//  - parseBindingRequest agrees with a straightforward reference written from
//    PROTOCOL.md §9 (verdict and txid);
//  - an accepted datagram has the binding-request type, the cookie, bytes
//    8-19 as txid, and "tailnode" somewhere in it;
//  - the response to an accepted request, for an IPv4 and an IPv6 source
//    derived from the input, decodes back to the same txid and source, has
//    the right length and family, and is not itself a binding request;
//  - Tailscale's request rebuilt from that txid parses to the same txid;
//  - parseBindingResponse of the raw input never crashes, and one that
//    succeeds yields the txid of bytes 8-19.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/proto/stun/stun.hpp"

using namespace derpd;
using namespace derpd::stun;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

uint16_t be16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }

// §9 written out again, independently of stun.cpp's structure.
RequestError reference(ByteView b) {
  if (b.size() < 20 || (b[0] >> 6) != 0 || b[4] != 0x21 || b[5] != 0x12 || b[6] != 0xa4 || b[7] != 0x42)
    return RequestError::NotStun;
  if (b[0] != 0x00 || b[1] != 0x01) return RequestError::NotBindingRequest;
  bool software = false;
  bool any = false;
  uint16_t last = 0;
  uint32_t fp = 0;
  size_t off = 20;
  while (off < b.size()) {
    if (b.size() - off < 4) return RequestError::MalformedAttrs;
    uint16_t type = be16(&b[off]);
    size_t len = be16(&b[off + 2]);
    size_t padded = len % 4 ? len + 4 - len % 4 : len;
    if (b.size() - off - 4 < padded) return RequestError::MalformedAttrs;
    const uint8_t* v = &b[off + 4];
    if (type == 0x8022 && len == 8 && std::memcmp(v, "tailnode", 8) == 0) software = true;
    if (type == 0x8028 && len == 4) fp = getU32BE(v);
    last = type;
    any = true;
    off += 4 + padded;
  }
  if (!software) return RequestError::WrongSoftware;
  if (!any || last != 0x8028) return RequestError::NoFingerprint;
  if (fp != (crc32Ieee(b.first(b.size() - 8)) ^ 0x5354554eu)) return RequestError::WrongFingerprint;
  return RequestError::None;
}

void checkResponse(const TxId& txid, const Endpoint& from) {
  std::array<uint8_t, kMaxResponseLen> buf{};
  const size_t n = writeBindingResponse(buf, txid, from);
  check(n == (from.family == Endpoint::Family::V4 ? kResponseLenV4 : kResponseLenV6));
  const ByteView resp(buf.data(), n);
  check(resp[kHeaderLen + 5] == uint8_t(from.family));
  auto dec = parseBindingResponse(resp);
  check(dec.ok());
  check(dec->txid == txid);
  check(dec->mapped == from);
  check(!parseBindingRequest(resp).ok());
  Bytes appended;
  appendBindingResponse(appended, txid, from);
  check(appended.size() == n && std::memcmp(appended.data(), buf.data(), n) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ByteView in(data, size);
  const BindingRequest req = parseBindingRequest(in);
  check(req.error == reference(in));
  check(req.ok() == requestErrorText(req.error).empty());

  if (req.ok()) {
    // header + SOFTWARE "tailnode" + at least an empty FINGERPRINT last.
    check(size >= kHeaderLen + 4 + kSoftware.size() + 4);
    check(data[0] == 0x00 && data[1] == 0x01);
    check(std::memcmp(data + 4, kMagicCookie.data(), 4) == 0);
    check(std::memcmp(data + 8, req.txid.data(), kTxIdLen) == 0);
    check(std::string_view(reinterpret_cast<const char*>(data), size).find(kSoftware) != std::string_view::npos);

    // Sources taken from the input's own bytes (the last ones: the CRC).
    std::array<uint8_t, 4> a4{};
    std::array<uint8_t, 16> a16{};
    std::memcpy(a4.data(), data + size - 4, 4);
    std::memcpy(a16.data(), data + size - 16, 16);
    const uint16_t port = be16(data + size - 6);
    checkResponse(req.txid, Endpoint::v4(a4, port));
    const Endpoint v6 = Endpoint::v6(a16, port);  // may unmap to IPv4: fine
    checkResponse(req.txid, v6);
    // IPv4-mapped IPv6 always answers with family 1.
    std::array<uint8_t, 16> mapped{};
    mapped[10] = mapped[11] = 0xff;
    std::memcpy(mapped.data() + 12, a4.data(), 4);
    check(Endpoint::v6(mapped, port) == Endpoint::v4(a4, port));

    Bytes again;
    appendBindingRequest(again, req.txid);
    const BindingRequest re = parseBindingRequest(again);
    check(re.ok() && re.txid == req.txid);
  }

  auto resp = parseBindingResponse(in);
  if (resp.ok()) {
    check(size >= kHeaderLen && data[0] == 0x01 && data[1] == 0x01);
    check(std::memcmp(data + 8, resp->txid.data(), kTxIdLen) == 0);
    (void)resp->mapped.toString();
  }
  return 0;
}
