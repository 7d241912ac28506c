#include "common/proto/dns/dns.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace derpd::dns {
namespace {

// Hand-built messages: every byte spelled out by these small helpers.
void u16(Bytes& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void u32(Bytes& b, uint32_t v) {
  u16(b, uint16_t(v >> 16));
  u16(b, uint16_t(v));
}
// Uncompressed name "a.b.c" -> 01 'a' 01 'b' 01 'c' 00.
void name(Bytes& b, std::string_view n) {
  size_t start = 0;
  while (start < n.size()) {
    size_t dot = n.find('.', start);
    if (dot == std::string_view::npos) dot = n.size();
    b.push_back(uint8_t(dot - start));
    b.insert(b.end(), n.begin() + start, n.begin() + dot);
    start = dot + 1;
  }
  b.push_back(0);
}
void ptr(Bytes& b, uint16_t off) { u16(b, uint16_t(0xc000 | off)); }

constexpr uint16_t kId = 0x1234;
constexpr uint16_t kFlagsOk = 0x8180;  // QR, RD, RA, NOERROR

Bytes header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an) {
  Bytes b;
  u16(b, id);
  u16(b, flags);
  u16(b, qd);
  u16(b, an);
  u16(b, 0);
  u16(b, 0);
  return b;
}
// Header + question for (qname, type).
Bytes start(std::string_view qname, RrType type, uint16_t an, uint16_t flags = kFlagsOk, uint16_t id = kId) {
  Bytes b = header(id, flags, 1, an);
  name(b, qname);
  u16(b, uint16_t(type));
  u16(b, kClassIn);
  return b;
}
// RR header after the owner name; rdata appended by the caller.
void rrHead(Bytes& b, RrType type, uint16_t rdlen, uint16_t cls = kClassIn) {
  u16(b, uint16_t(type));
  u16(b, cls);
  u32(b, 300);
  u16(b, rdlen);
}
void rrA(Bytes& b, std::initializer_list<uint8_t> ip) {
  rrHead(b, RrType::A, uint16_t(ip.size()));
  b.insert(b.end(), ip.begin(), ip.end());
}

TEST(DnsQuery, ByteExact) {
  auto q = buildQuery(0xbeef, "Derp.Example.com", RrType::Aaaa);
  ASSERT_TRUE(q.ok()) << q.error();
  const Bytes want = {0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                      4,    'D',  'e',  'r',  'p',  7,    'E',  'x',  'a',  'm',  'p',  'l',
                      'e',  3,    'c',  'o',  'm',  0,    0x00, 0x1c, 0x00, 0x01};
  EXPECT_EQ(*q, want);
  // A trailing dot is the same name.
  auto q2 = buildQuery(0xbeef, "Derp.Example.com.", RrType::Aaaa);
  ASSERT_TRUE(q2.ok());
  EXPECT_EQ(*q2, want);
  auto t = buildQuery(1, "x", RrType::Txt);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->size(), 12u + 3 + 4);
  EXPECT_EQ((*t)[t->size() - 3], 16);
}

TEST(DnsQuery, RejectsInvalidNames) {
  for (const char* bad : {"", "..", "a..b", "-a.com", "a-.com", "a b.com", "a.com..", "123", "1.2.3.4",
                          "\xc3\xa9.com", "a/b"}) {
    EXPECT_FALSE(isValidQueryName(bad)) << bad;
    EXPECT_FALSE(buildQuery(1, bad, RrType::A).ok()) << bad;
  }
  EXPECT_FALSE(isValidQueryName(std::string(64, 'a') + ".com"));
  EXPECT_TRUE(isValidQueryName(std::string(63, 'a') + ".com"));
  // 253 characters is the longest name; 254 only with the trailing dot.
  std::string longName;
  while (longName.size() < 253) longName += "a.";
  longName.resize(253);
  if (longName.back() == '.') longName.back() = 'b';
  EXPECT_TRUE(isValidQueryName(longName));
  EXPECT_TRUE(isValidQueryName(longName + "."));
  EXPECT_FALSE(isValidQueryName(longName + "c"));
  for (const char* good : {"localhost", "derp1.tailscale.com", "_srv.x-y.example", "1a.com", "."})
    EXPECT_TRUE(isValidQueryName(good)) << good;
}

TEST(DnsParse, A) {
  Bytes m = start("derp.example.com", RrType::A, 2);
  ptr(m, 12);
  rrA(m, {192, 0, 2, 1});
  ptr(m, 12);
  rrA(m, {192, 0, 2, 2});
  auto r = parseResponse(m, kId, "DERP.example.COM.", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_FALSE(r->truncated);
  EXPECT_EQ(r->rcode, Rcode::NoError);
  ASSERT_EQ(r->a.size(), 2u);
  EXPECT_EQ(formatIpv4(r->a[0]), "192.0.2.1");
  EXPECT_EQ(formatIpv4(r->a[1]), "192.0.2.2");
  EXPECT_TRUE(r->aaaa.empty());
  EXPECT_EQ(r->cnameHops, 0u);
}

TEST(DnsParse, Aaaa) {
  Bytes m = start("v6.example", RrType::Aaaa, 1);
  name(m, "v6.example");  // uncompressed owner
  rrHead(m, RrType::Aaaa, 16);
  for (uint8_t b : {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}) m.push_back(b);
  auto r = parseResponse(m, kId, "v6.example", RrType::Aaaa);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->aaaa.size(), 1u);
  EXPECT_EQ(formatIpv6(r->aaaa[0]), "2001:db8::1");
}

TEST(DnsParse, TxtWithSeveralStrings) {
  Bytes m = start("pct.example", RrType::Txt, 2);
  ptr(m, 12);
  rrHead(m, RrType::Txt, 1 + 2 + 1 + 0 + 1 + 3);
  m.push_back(2), m.push_back('5'), m.push_back('0');
  m.push_back(0);
  m.push_back(3), m.push_back('a'), m.push_back('b'), m.push_back('c');
  ptr(m, 12);
  rrHead(m, RrType::Txt, 3);
  m.push_back(2), m.push_back('7'), m.push_back('5');
  auto r = parseResponse(m, kId, "pct.example", RrType::Txt);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->txt.size(), 2u);
  EXPECT_EQ(r->txt[0], (std::vector<std::string>{"50", "", "abc"}));
  EXPECT_EQ(r->txt[1], (std::vector<std::string>{"75"}));
}

TEST(DnsParse, CompressionInsideNames) {
  // Answer owner "www" + pointer to "example.com" inside the question.
  Bytes m = start("www.example.com", RrType::A, 1);
  m.push_back(3), m.push_back('w'), m.push_back('w'), m.push_back('w');
  ptr(m, 12 + 4);  // "example.com" of the question
  rrA(m, {10, 0, 0, 1});
  auto r = parseResponse(m, kId, "www.example.com", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->a.size(), 1u);
  EXPECT_EQ(formatIpv4(r->a[0]), "10.0.0.1");
}

TEST(DnsParse, CnameChainWithinMessage) {
  // www.example.com CNAME edge.example.net; edge.example.net CNAME e1.cdn.example;
  // e1.cdn.example A 198.51.100.7; an unrelated A for another owner.
  Bytes m = start("www.example.com", RrType::A, 4);
  // An unrelated record first: not ours.
  name(m, "other.example");
  rrA(m, {1, 1, 1, 1});
  // The A record before the CNAMEs: order does not matter.
  const size_t e1At = m.size();
  name(m, "e1.cdn.example");
  rrA(m, {198, 51, 100, 7});
  ptr(m, 12);
  const size_t edgeAt = m.size() + 10;
  Bytes edge;
  name(edge, "edge.example.net");
  rrHead(m, RrType::Cname, uint16_t(edge.size()));
  m.insert(m.end(), edge.begin(), edge.end());
  ptr(m, uint16_t(edgeAt));
  rrHead(m, RrType::Cname, 2);
  ptr(m, uint16_t(e1At));
  auto r = parseResponse(m, kId, "www.example.com", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->a.size(), 1u);
  EXPECT_EQ(formatIpv4(r->a[0]), "198.51.100.7");
  EXPECT_EQ(r->cnameHops, 2u);
}

TEST(DnsParse, CnameWithoutTargetRecordsIsEmpty) {
  Bytes m = start("a.example", RrType::A, 1);
  ptr(m, 12);
  Bytes t;
  name(t, "b.example");
  rrHead(m, RrType::Cname, uint16_t(t.size()));
  m.insert(m.end(), t.begin(), t.end());
  auto r = parseResponse(m, kId, "a.example", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r->a.empty());
  EXPECT_EQ(r->cnameHops, 1u);
}

TEST(DnsParse, CnameLoopIsAnError) {
  // a CNAME b, b CNAME a.
  Bytes m = start("a.example", RrType::A, 2);
  ptr(m, 12);
  const size_t bAt = m.size() + 10;
  Bytes t;
  name(t, "b.example");
  rrHead(m, RrType::Cname, uint16_t(t.size()));
  m.insert(m.end(), t.begin(), t.end());
  ptr(m, uint16_t(bAt));
  rrHead(m, RrType::Cname, 2);
  ptr(m, 12);
  auto r = parseResponse(m, kId, "a.example", RrType::A);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("CNAME"), std::string::npos) << r.error();
}

TEST(DnsParse, NxDomainAndServFail) {
  Bytes nx = start("nope.example", RrType::A, 0, 0x8183);
  auto r = parseResponse(nx, kId, "nope.example", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->rcode, Rcode::NxDomain);
  EXPECT_EQ(rcodeName(r->rawRcode), "NXDOMAIN");
  Bytes sf = start("nope.example", RrType::A, 1, 0x8182);
  ptr(sf, 12);
  rrA(sf, {9, 9, 9, 9});  // answers of an error response are not read
  r = parseResponse(sf, kId, "nope.example", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->rcode, Rcode::ServFail);
  EXPECT_TRUE(r->a.empty());
}

TEST(DnsParse, TruncatedReported) {
  // TC set and the answer cut short: reported, not an error.
  Bytes m = start("big.example", RrType::Txt, 5, 0x8380);
  ptr(m, 12);
  m.push_back(0x00);
  auto r = parseResponse(m, kId, "big.example", RrType::Txt);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r->truncated);
  EXPECT_TRUE(r->txt.empty());
}

TEST(DnsParse, WrongIdOrQuestion) {
  Bytes m = start("derp.example", RrType::A, 1);
  ptr(m, 12);
  rrA(m, {1, 2, 3, 4});
  EXPECT_FALSE(parseResponse(m, kId + 1, "derp.example", RrType::A).ok());
  EXPECT_FALSE(parseResponse(m, kId, "derp2.example", RrType::A).ok());
  EXPECT_FALSE(parseResponse(m, kId, "derp.example", RrType::Aaaa).ok());
  Bytes qd0 = header(kId, kFlagsOk, 0, 0);
  EXPECT_FALSE(parseResponse(qd0, kId, "derp.example", RrType::A).ok());
  Bytes notResponse = m;
  notResponse[2] &= 0x7f;
  EXPECT_FALSE(parseResponse(notResponse, kId, "derp.example", RrType::A).ok());
  Bytes wrongClass = start("derp.example", RrType::A, 0);
  wrongClass[wrongClass.size() - 1] = 3;  // CH
  EXPECT_FALSE(parseResponse(wrongClass, kId, "derp.example", RrType::A).ok());
  EXPECT_FALSE(parseResponse(Bytes(11, 0), kId, "derp.example", RrType::A).ok());
}

TEST(DnsParse, MalformedPointers) {
  const Bytes base = start("p.example", RrType::A, 1);
  // Pointer to itself.
  Bytes self = base;
  ptr(self, uint16_t(self.size()));
  rrA(self, {1, 2, 3, 4});
  EXPECT_FALSE(parseResponse(self, kId, "p.example", RrType::A).ok());
  // Forward pointer.
  Bytes fwd = base;
  ptr(fwd, uint16_t(fwd.size() + 20));
  rrA(fwd, {1, 2, 3, 4});
  EXPECT_FALSE(parseResponse(fwd, kId, "p.example", RrType::A).ok());
  // A two-pointer loop: label "x" then a pointer back to that label.
  Bytes loop = base;
  const size_t at = loop.size();
  loop.push_back(1), loop.push_back('x');
  ptr(loop, uint16_t(at));
  rrA(loop, {1, 2, 3, 4});
  EXPECT_FALSE(parseResponse(loop, kId, "p.example", RrType::A).ok());
  // Pointer past the end; a pointer cut in half.
  Bytes past = base;
  ptr(past, 0x3fff);
  EXPECT_FALSE(parseResponse(past, kId, "p.example", RrType::A).ok());
  Bytes half = base;
  half.push_back(0xc0);
  EXPECT_FALSE(parseResponse(half, kId, "p.example", RrType::A).ok());
  // Reserved label types 01xxxxxx and 10xxxxxx.
  for (uint8_t t : {0x40, 0x80}) {
    Bytes res = base;
    res.push_back(t);
    res.push_back(0);
    rrA(res, {1, 2, 3, 4});
    EXPECT_FALSE(parseResponse(res, kId, "p.example", RrType::A).ok());
  }
  // Question name pointing into the header (must be strictly before: 12 > 0,
  // but then the name read from the header is garbage and mismatches).
  Bytes qptr = header(kId, kFlagsOk, 1, 0);
  ptr(qptr, 0);
  u16(qptr, 1);
  u16(qptr, 1);
  EXPECT_FALSE(parseResponse(qptr, kId, "p.example", RrType::A).ok());
}

TEST(DnsParse, LongPointerChainIsBounded) {
  // 200 pointers each to the previous one, ending at a real name: more jumps
  // than a valid name can need.
  // The chain sits in the rdata of a record of an unknown type; the second
  // record's owner is a pointer to its last link.
  Bytes m = header(kId, kFlagsOk, 1, 2);
  name(m, "p.example");
  u16(m, 1);
  u16(m, 1);
  ptr(m, 12);
  rrHead(m, RrType(99), 400);
  uint16_t prev = 12;
  for (int i = 0; i < 200; i++) {
    const uint16_t here = uint16_t(m.size());
    ptr(m, prev);
    prev = here;
  }
  ptr(m, prev);
  rrA(m, {1, 2, 3, 4});
  auto r = parseResponse(m, kId, "p.example", RrType::A);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("pointer"), std::string::npos) << r.error();
}

TEST(DnsParse, OverrunsAndBadRdata) {
  const Bytes base = start("o.example", RrType::A, 1);
  // rdlength beyond the message.
  Bytes over = base;
  ptr(over, 12);
  rrHead(over, RrType::A, 4);
  over.push_back(1);
  EXPECT_FALSE(parseResponse(over, kId, "o.example", RrType::A).ok());
  // A with 5 bytes, AAAA with 4.
  Bytes a5 = base;
  ptr(a5, 12);
  rrHead(a5, RrType::A, 5);
  for (int i = 0; i < 5; i++) a5.push_back(1);
  EXPECT_FALSE(parseResponse(a5, kId, "o.example", RrType::A).ok());
  Bytes q6 = start("o.example", RrType::Aaaa, 1);
  ptr(q6, 12);
  rrHead(q6, RrType::Aaaa, 4);
  for (int i = 0; i < 4; i++) q6.push_back(1);
  EXPECT_FALSE(parseResponse(q6, kId, "o.example", RrType::Aaaa).ok());
  // TXT string running past its rdata.
  Bytes txt = start("o.example", RrType::Txt, 1);
  ptr(txt, 12);
  rrHead(txt, RrType::Txt, 2);
  txt.push_back(5), txt.push_back('a');
  txt.push_back('b'), txt.push_back('c'), txt.push_back('d'), txt.push_back('e');
  EXPECT_FALSE(parseResponse(txt, kId, "o.example", RrType::Txt).ok());
  // CNAME rdata longer than its name.
  Bytes cn = base;
  ptr(cn, 12);
  rrHead(cn, RrType::Cname, 3);
  ptr(cn, 12);
  cn.push_back(0);
  EXPECT_FALSE(parseResponse(cn, kId, "o.example", RrType::A).ok());
  // More answers announced than present.
  Bytes few = start("o.example", RrType::A, 3);
  ptr(few, 12);
  rrA(few, {1, 2, 3, 4});
  EXPECT_FALSE(parseResponse(few, kId, "o.example", RrType::A).ok());
  // Label running past the end.
  Bytes lab = header(kId, kFlagsOk, 1, 0);
  lab.push_back(10), lab.push_back('a');
  EXPECT_FALSE(parseResponse(lab, kId, "o.example", RrType::A).ok());
}

TEST(DnsParse, OtherTypesAndClassesSkipped) {
  Bytes m = start("s.example", RrType::A, 3);
  ptr(m, 12);
  rrHead(m, RrType(99), 3);  // unknown type, any rdata
  m.push_back(1), m.push_back(2), m.push_back(3);
  ptr(m, 12);
  rrHead(m, RrType::A, 4, 3);  // class CH
  m.push_back(6), m.push_back(6), m.push_back(6), m.push_back(6);
  ptr(m, 12);
  rrA(m, {5, 5, 5, 5});
  auto r = parseResponse(m, kId, "s.example", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->a.size(), 1u);
  EXPECT_EQ(formatIpv4(r->a[0]), "5.5.5.5");
}

TEST(DnsParse, RoundTripWithBuiltQuery) {
  // A response made by flipping QR on the query itself parses, with no answers.
  auto q = buildQuery(0x4242, "rt.example", RrType::A);
  ASSERT_TRUE(q.ok());
  Bytes m = *q;
  m[2] |= 0x80;
  auto r = parseResponse(m, 0x4242, "rt.example", RrType::A);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r->a.empty());
  EXPECT_EQ(r->id, 0x4242);
}

TEST(DnsFormat, GoIpStrings) {
  auto v6 = [](std::initializer_list<uint16_t> g) {
    std::array<uint8_t, 16> a{};
    size_t i = 0;
    for (uint16_t x : g) {
      a[i++] = uint8_t(x >> 8);
      a[i++] = uint8_t(x);
    }
    return formatIpv6(a);
  };
  EXPECT_EQ(v6({0, 0, 0, 0, 0, 0, 0, 1}), "::1");
  EXPECT_EQ(v6({0, 0, 0, 0, 0, 0, 0, 0}), "::");
  EXPECT_EQ(v6({0x2001, 0xdb8, 0, 0, 1, 0, 0, 1}), "2001:db8::1:0:0:1");
  EXPECT_EQ(v6({0x2001, 0xdb8, 0, 1, 1, 1, 1, 1}), "2001:db8:0:1:1:1:1:1");  // one zero group: no ::
  EXPECT_EQ(v6({0x2001, 0, 0, 1, 0, 0, 0, 1}), "2001:0:0:1::1");
  EXPECT_EQ(v6({0xfe80, 0, 0, 0, 0xabcd, 0, 0, 0}), "fe80::abcd:0:0:0");
  EXPECT_EQ(v6({0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304}), "1.2.3.4");       // v4-mapped: Go prints v4
  EXPECT_EQ(v6({0, 0, 0, 0, 0, 0, 0x0102, 0x0304}), "::102:304");          // not glibc's ::1.2.3.4
  EXPECT_EQ(formatIpv4({255, 0, 10, 1}), "255.0.10.1");
  EXPECT_EQ(rcodeName(2), "SERVFAIL");
  EXPECT_EQ(rcodeName(11), "RCODE11");
}

}  // namespace
}  // namespace derpd::dns
