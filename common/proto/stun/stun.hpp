// STUN codec (PROTOCOL.md §9): Tailscale binding requests in, binding
// responses with one XOR-MAPPED-ADDRESS out. Pure functions, no I/O, no
// allocation on the request/response path. Mirrors tailscale.com/net/stun.
// Included by stun-worker (unprivileged), later probe and bench; fuzzed.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::stun {

// Header (RFC 5389 §6), 20 bytes:
//   type(2) || length(2, attributes only) || cookie 21 12 a4 42 || txid(12)
// Attribute: type(2) || length(2, unpadded) || value padded to 4 bytes.
inline constexpr size_t kHeaderLen = 20;
inline constexpr size_t kTxIdLen = 12;
inline constexpr std::array<uint8_t, 4> kMagicCookie = {0x21, 0x12, 0xa4, 0x42};
inline constexpr uint16_t kBindingRequest = 0x0001;
inline constexpr uint16_t kBindingSuccess = 0x0101;
inline constexpr uint16_t kAttrMappedAddress = 0x0001;
inline constexpr uint16_t kAttrXorMappedAddress = 0x0020;
// Not in the RFC; some servers send it and Tailscale clients accept it.
inline constexpr uint16_t kAttrXorMappedAddressAlt = 0x8020;
inline constexpr uint16_t kAttrSoftware = 0x8022;
inline constexpr uint16_t kAttrFingerprint = 0x8028;
// SOFTWARE value of every Tailscale request (8 bytes, so no padding).
inline constexpr std::string_view kSoftware = "tailnode";
// FINGERPRINT value = CRC-32/IEEE(message before the attribute) ^ this.
inline constexpr uint32_t kFingerprintXor = 0x5354554e;
// FINGERPRINT attribute: type(2) || length(2) = 4 || crc(4).
inline constexpr size_t kFingerprintAttrLen = 8;
// Tailscale's request: header || SOFTWARE "tailnode" (12) || FINGERPRINT (8).
inline constexpr size_t kRequestLen = kHeaderLen + 4 + kSoftware.size() + kFingerprintAttrLen;
// Response: header || 00 20 len(2) || 00 family(1) port(2) address(4 | 16).
inline constexpr size_t kResponseLenV4 = kHeaderLen + 8 + 4;
inline constexpr size_t kResponseLenV6 = kHeaderLen + 8 + 16;
inline constexpr size_t kMaxResponseLen = kResponseLenV6;

using TxId = std::array<uint8_t, kTxIdLen>;

// Why a datagram is not a Tailscale binding request (Go's error values).
enum class RequestError : uint8_t {
  None = 0,
  NotStun,            // < 20 bytes, top two bits of byte 0 set, or wrong cookie
  NotBindingRequest,  // bytes 0-1 are not 00 01
  MalformedAttrs,     // < 4 bytes left for an attribute header, or a padded value overruns
  WrongSoftware,      // no SOFTWARE attribute whose value is exactly "tailnode"
  NoFingerprint,      // the last attribute is not FINGERPRINT
  WrongFingerprint,   // CRC mismatch
};
// Go's error text ("STUN request had bogus fingerprint", ...); "" for None.
std::string_view requestErrorText(RequestError e);

struct BindingRequest {
  RequestError error = RequestError::None;
  TxId txid{};  // set only when ok()
  bool ok() const { return error == RequestError::None; }
};

// derper's stun.ParseBindingRequest, check for check:
//  1. len >= 20, top 2 bits of byte 0 zero, bytes 4-7 = cookie;
//  2. bytes 0-1 = 00 01;
//  3. attributes from offset 20 to the datagram end (the header's length
//     field is ignored): < 4 bytes left or a padded value overrunning the
//     datagram rejects;
//  4. some SOFTWARE value is exactly "tailnode";
//  5. the last attribute is FINGERPRINT, and the value of the last 4-byte
//     FINGERPRINT attribute (0 if none) = CRC-32(datagram minus its last 8
//     bytes) ^ 0x5354554e.
// The datagram must be whole: a caller that truncated it must not ask.
BindingRequest parseBindingRequest(ByteView datagram);

// A transport address as seen by the server. IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) are IPv4 here.
struct Endpoint {
  enum class Family : uint8_t { V4 = 1, V6 = 2 };  // = the STUN family byte
  Family family = Family::V4;
  std::array<uint8_t, 16> ip{};  // V4: the first 4 bytes, the rest zero
  uint16_t port = 0;             // host order

  static Endpoint v4(const std::array<uint8_t, 4>& a, uint16_t port);
  static Endpoint v6(const std::array<uint8_t, 16>& a, uint16_t port);  // unmaps ::ffff:a.b.c.d
  // AF_INET or AF_INET6 (unmapped); nullopt for any other family.
  static std::optional<Endpoint> fromSockaddr(const sockaddr_storage& ss);
  // "1.2.3.4:5" or "[::1]:5" (no zone).
  std::string toString() const;
  bool operator==(const Endpoint&) const = default;
};

// Writes the binding success response for `from` into out (which must hold
// kMaxResponseLen bytes) and returns its length: 01 01, length 8+A, cookie,
// txid, XOR-MAPPED-ADDRESS 00 20, length 4+A, 00, family (01 with A=4 for
// IPv4 and IPv4-mapped sources | 02 with A=16), port ^ 0x2112, address ^
// (cookie || txid). No SOFTWARE, no FINGERPRINT.
size_t writeBindingResponse(std::span<uint8_t, kMaxResponseLen> out, const TxId& txid,
                            const Endpoint& from);
void appendBindingResponse(Bytes& out, const TxId& txid, const Endpoint& from);
// Same for a socket address; false (nothing appended) unless AF_INET/AF_INET6.
bool appendBindingResponse(Bytes& out, const TxId& txid, const sockaddr_storage& from);

// Tailscale's request (stun.Request): 40 bytes. For clients and tests.
void appendBindingRequest(Bytes& out, const TxId& txid);

// A decoded binding success response (Go's stun.ParseResponse): the txid and
// the mapped address from XOR-MAPPED-ADDRESS (0x0020 or 0x8020), else from
// MAPPED-ADDRESS. Header length is honoured; trailing bytes are ignored.
struct BindingResponse {
  TxId txid{};
  Endpoint mapped;
};
Result<BindingResponse> parseBindingResponse(ByteView datagram);

// CRC-32/IEEE (zlib's crc32, Go's crc32.ChecksumIEEE).
uint32_t crc32Ieee(ByteView data);

}  // namespace derpd::stun
