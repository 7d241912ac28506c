// DNS message codec (RFC 1035), just enough for a client-side resolver: build one
// query (A, AAAA or TXT, RD set) and parse the answer to it strictly. Pure
// functions, no I/O. Every length is checked against the message; names are
// decoded with compression pointers that must point strictly backwards
// (so no loop is possible) and with a bound on jumps and on the name length.
// Included by common/net/dns_client (derp-worker, unprivileged, chrooted);
// fuzzed by tests/fuzz/dns_fuzz.cpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::dns {

// Header, 12 bytes, all fields big-endian:
//   id(2) || flags(2): QR(1) OPCODE(4) AA(1) TC(1) RD(1) | RA(1) Z(3) RCODE(4)
//   || qdcount(2) || ancount(2) || nscount(2) || arcount(2)
// Question: qname (labels) || qtype(2) || qclass(2)
// RR: owner name || type(2) || class(2) || ttl(4) || rdlength(2) || rdata
// Label: len(1, 1..63) || bytes; 0 ends a name; 11xxxxxx xxxxxxxx is a
// pointer to the 14-bit offset; 01xxxxxx / 10xxxxxx are reserved (rejected).
inline constexpr size_t kHeaderLen = 12;
inline constexpr uint16_t kFlagQr = 0x8000;
inline constexpr uint16_t kFlagTc = 0x0200;
inline constexpr uint16_t kFlagRd = 0x0100;
inline constexpr uint16_t kOpcodeMask = 0x7800;
inline constexpr uint16_t kRcodeMask = 0x000f;
inline constexpr uint16_t kClassIn = 1;
// Wire length of a name (length octets + labels + the root octet).
inline constexpr size_t kMaxNameWireLen = 255;
inline constexpr size_t kMaxLabelLen = 63;
// A name of at most 255 octets has at most 127 labels, so more jumps than
// that can only come from a malicious message.
inline constexpr size_t kMaxPointerJumps = 127;
// CNAMEs followed from the question name; a longer chain (or a loop) is an
// error.
inline constexpr size_t kMaxCnameChain = 10;
// A UDP answer without EDNS0 is at most 512 bytes; over TCP at most 65535.
inline constexpr size_t kMaxUdpMessage = 512;
inline constexpr size_t kMaxMessage = 65535;

enum class RrType : uint16_t { A = 1, Cname = 5, Txt = 16, Aaaa = 28 };

enum class Rcode : uint8_t {
  NoError = 0,
  FormErr = 1,
  ServFail = 2,
  NxDomain = 3,
  NotImp = 4,
  Refused = 5,
};

// Go's net.isDomainName (the check its resolver applies before any query):
// 1..253 bytes (254 with a trailing dot), labels 1..63 of [A-Za-z0-9_-], no
// label starts with '-', none ends with '-', and not all-numeric. "." is
// valid.
bool isValidQueryName(std::string_view name);

// The query: header {id, RD, qdcount 1} || question {name, type, IN}.
// Error when !isValidQueryName(name) (a trailing dot is optional).
Result<Bytes> buildQuery(uint16_t id, std::string_view name, RrType type);

struct Response {
  uint16_t id = 0;
  bool truncated = false;  // TC: nothing past the question was read
  Rcode rcode = Rcode::NoError;
  uint8_t rawRcode = 0;    // the 4-bit value (Rcode may not name it)
  // Records of the asked type owned by the question name or by the end of a
  // CNAME chain from it (only CNAMEs in this message are followed). Filled
  // only when !truncated and rcode == NoError.
  std::vector<std::array<uint8_t, 4>> a;
  std::vector<std::array<uint8_t, 16>> aaaa;
  std::vector<std::vector<std::string>> txt;  // one entry per record: its character-strings
  size_t cnameHops = 0;                       // CNAMEs followed to reach the owner
};

// Parses the response to the query (id, name, type). Errors ("dns: ..."):
// short or overlong message, QR clear, opcode not QUERY, id mismatch,
// qdcount != 1, question not {name (ASCII case-insensitive), type, IN},
// a name that overruns, loops, jumps forwards, uses a reserved label type or
// exceeds 255 octets, an RR whose rdata overruns the message, an A/AAAA
// rdata of the wrong length, a TXT rdata not made of whole strings, a CNAME
// rdata that is not exactly one name, a CNAME chain longer than
// kMaxCnameChain or looping. Only the answer section is read; authority and
// additional records are ignored. Records of class other than IN are
// skipped.
Result<Response> parseResponse(ByteView msg, uint16_t id, std::string_view name, RrType type);

// Go's net.IP.String(): dotted quad; IPv6 in RFC 5952 form (lowercase, the
// first longest run of >= 2 zero groups as "::"); an IPv4-mapped IPv6
// address as its dotted quad.
std::string formatIpv4(const std::array<uint8_t, 4>& a);
std::string formatIpv6(const std::array<uint8_t, 16>& a);

// "NXDOMAIN", "SERVFAIL", ... or "RCODE<n>".
std::string rcodeName(uint8_t rcode);

}  // namespace derpd::dns
