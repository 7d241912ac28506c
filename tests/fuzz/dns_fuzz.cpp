// libFuzzer target: the DNS response parser (what derp-worker's resolver
// reads from the network).
//
// Input byte 0 picks the question type (A, AAAA, TXT); the rest is used
// three ways:
//  1. as a whole message answering (id = its bytes 0-1, "fuzz.example");
//  2. as the answer section behind a valid header + question (ancount from
//     input byte 1, flags from byte 2), so the RR and name code is reached;
//  3. as the source of records for a well-formed response built here by an
//     independent encoder, which must parse back to exactly those records.
// Checks, beyond not crashing: an accepted message has the expected id, TC
// and RCODE bits; records only of the asked type and only for NOERROR
// without TC; every A/AAAA value and TXT string is a byte run of the
// message; the record count fits the message size; the CNAME hop bound;
// another id is refused; parsing is deterministic; the Go-style IP strings
// read back (inet_pton) to the same address.
#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/proto/dns/dns.hpp"

using namespace derpd;
using namespace derpd::dns;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr std::string_view kName = "fuzz.example";
constexpr uint16_t kId = 0x1234;

bool contains(ByteView hay, const uint8_t* needle, size_t n) {
  if (n == 0) return true;
  return std::search(hay.begin(), hay.end(), needle, needle + n) != hay.end();
}

void checkIpStrings(const Response& r) {
  for (const auto& a : r.a) {
    uint8_t back[4];
    check(inet_pton(AF_INET, formatIpv4(a).c_str(), back) == 1 && std::memcmp(back, a.data(), 4) == 0);
  }
  for (const auto& a : r.aaaa) {
    const std::string s = formatIpv6(a);
    uint8_t back[16];
    if (inet_pton(AF_INET6, s.c_str(), back) == 1) {
      check(std::memcmp(back, a.data(), 16) == 0);
    } else {  // v4-mapped prints as IPv4
      uint8_t v4[4];
      check(inet_pton(AF_INET, s.c_str(), v4) == 1 && std::memcmp(v4, a.data() + 12, 4) == 0);
      static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
      check(std::memcmp(a.data(), kPrefix, 12) == 0);
    }
  }
}

bool sameResponse(const Response& x, const Response& y) {
  return x.id == y.id && x.truncated == y.truncated && x.rawRcode == y.rawRcode && x.a == y.a &&
         x.aaaa == y.aaaa && x.txt == y.txt && x.cnameHops == y.cnameHops;
}

void checkAccepted(ByteView msg, uint16_t id, RrType type) {
  auto r = parseResponse(msg, id, kName, type);
  auto again = parseResponse(msg, id, kName, type);
  check(r.ok() == again.ok());
  if (!r.ok()) {
    check(r.error() == again.error() && r.error().rfind("dns: ", 0) == 0);
    return;
  }
  check(sameResponse(*r, *again));
  check(msg.size() >= kHeaderLen);
  const uint16_t flags = uint16_t((msg[2] << 8) | msg[3]);
  check(r->id == id && ((msg[0] << 8) | msg[1]) == id);
  check(flags & kFlagQr);
  check(r->truncated == ((flags & kFlagTc) != 0));
  check(r->rawRcode == (flags & kRcodeMask));
  const size_t records = r->a.size() + r->aaaa.size() + r->txt.size();
  if (r->truncated || r->rawRcode != 0) check(records == 0 && r->cnameHops == 0);
  if (type != RrType::A) check(r->a.empty());
  if (type != RrType::Aaaa) check(r->aaaa.empty());
  if (type != RrType::Txt) check(r->txt.empty());
  // Each RR takes at least 11 bytes (1-byte name + 10-byte header).
  check(records <= (msg.size() - kHeaderLen) / 11);
  check(r->cnameHops <= kMaxCnameChain);
  for (const auto& a : r->a) check(contains(msg, a.data(), 4));
  for (const auto& a : r->aaaa) check(contains(msg, a.data(), 16));
  for (const auto& rec : r->txt) {
    for (const auto& s : rec) {
      check(s.size() <= 255);
      check(contains(msg, reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }
  }
  checkIpStrings(*r);
  check(!parseResponse(msg, uint16_t(id + 1), kName, type).ok());
}

void putU16(Bytes& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}

// Header + question for kName, written out independently of buildQuery.
Bytes prefix(uint16_t flags, uint16_t ancount, RrType type) {
  Bytes b;
  putU16(b, kId);
  putU16(b, flags);
  putU16(b, 1);
  putU16(b, ancount);
  putU16(b, 0);
  putU16(b, 0);
  for (char c : std::string_view("\x04" "fuzz" "\x07" "example")) b.push_back(uint8_t(c));
  b.push_back(0);
  putU16(b, uint16_t(type));
  putU16(b, kClassIn);
  return b;
}

// Mode 3: records cut from the input, encoded with owner = pointer to the
// question name; the parse must return them all, in order.
void roundTrip(ByteView in, RrType type) {
  Response want;
  Bytes body;
  size_t n = 0;
  size_t off = 0;
  while (off < in.size() && n < 40) {
    putU16(body, 0xc00c);
    putU16(body, uint16_t(type));
    putU16(body, kClassIn);
    putU16(body, 0);
    putU16(body, 60);
    if (type == RrType::A) {
      std::array<uint8_t, 4> a{};
      for (auto& x : a) x = off < in.size() ? in[off++] : 0;
      putU16(body, 4);
      body.insert(body.end(), a.begin(), a.end());
      want.a.push_back(a);
    } else if (type == RrType::Aaaa) {
      std::array<uint8_t, 16> a{};
      for (auto& x : a) x = off < in.size() ? in[off++] : 0;
      putU16(body, 16);
      body.insert(body.end(), a.begin(), a.end());
      want.aaaa.push_back(a);
    } else {
      // Strings: length from the next byte (mod 8), content from what follows.
      const size_t count = in[off++] % 4;
      std::vector<std::string> strings;
      Bytes rdata;
      for (size_t i = 0; i < count; i++) {
        const size_t len = off < in.size() ? in[off++] % 8 : 0;
        std::string s;
        for (size_t k = 0; k < len && off < in.size(); k++) s.push_back(char(in[off++]));
        rdata.push_back(uint8_t(s.size()));
        rdata.insert(rdata.end(), s.begin(), s.end());
        strings.push_back(std::move(s));
      }
      putU16(body, uint16_t(rdata.size()));
      body.insert(body.end(), rdata.begin(), rdata.end());
      want.txt.push_back(std::move(strings));
    }
    n++;
  }
  Bytes msg = prefix(0x8180, uint16_t(n), type);
  msg.insert(msg.end(), body.begin(), body.end());
  auto r = parseResponse(msg, kId, "FUZZ.Example.", type);
  check(r.ok());
  check(r->a == want.a && r->aaaa == want.aaaa && r->txt == want.txt && r->cnameHops == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static constexpr RrType kTypes[] = {RrType::A, RrType::Aaaa, RrType::Txt};
  const RrType type = kTypes[data[0] % 3];
  const ByteView in(data + 1, size - 1);

  // 1. The input as a whole message.
  if (in.size() >= 2) checkAccepted(in, uint16_t((in[0] << 8) | in[1]), type);

  // 2. The input as the answer section.
  if (in.size() >= 2) {
    const uint16_t flags = uint16_t(kFlagQr | kFlagRd | (in[1] & 0x8f) | ((in[1] & 0x10) ? kFlagTc : 0));
    Bytes msg = prefix(flags, in[0] % 64, type);
    msg.insert(msg.end(), in.begin() + 2, in.end());
    checkAccepted(msg, kId, type);
  }

  // 3. Round trip through an independent encoder.
  roundTrip(in, type);
  return 0;
}
