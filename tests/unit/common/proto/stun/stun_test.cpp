#include "common/proto/stun/stun.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

#include "support/vectors.hpp"

namespace derpd::stun {
namespace {

using test::hexBytes;
using test::loadVectorJson;

TxId txidFromHex(const std::string& hex) {
  Bytes b = hexBytes(hex);
  TxId t{};
  EXPECT_EQ(b.size(), t.size());
  std::memcpy(t.data(), b.data(), std::min(b.size(), t.size()));
  return t;
}

// "127.0.0.1:34780" / "[::1]:34781" from the vectors.
Endpoint endpointFromString(const std::string& s) {
  auto colon = s.rfind(':');
  uint16_t port = uint16_t(std::stoi(s.substr(colon + 1)));
  std::string host = s.substr(0, colon);
  if (!host.empty() && host.front() == '[') {
    std::array<uint8_t, 16> a{};
    EXPECT_EQ(inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), a.data()), 1) << s;
    return Endpoint::v6(a, port);
  }
  std::array<uint8_t, 4> a{};
  EXPECT_EQ(inet_pton(AF_INET, host.c_str(), a.data()), 1) << s;
  return Endpoint::v4(a, port);
}

Bytes response(const TxId& txid, const Endpoint& ep) {
  Bytes out;
  appendBindingResponse(out, txid, ep);
  return out;
}

Bytes tailscaleRequest(const TxId& txid) {
  Bytes out;
  appendBindingRequest(out, txid);
  return out;
}

const TxId kTx1 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

// Appends an attribute (value padded with zeros to 4 bytes).
void appendAttr(Bytes& b, uint16_t type, ByteView value, size_t declaredLen = SIZE_MAX) {
  size_t len = declaredLen == SIZE_MAX ? value.size() : declaredLen;
  b.push_back(uint8_t(type >> 8));
  b.push_back(uint8_t(type));
  b.push_back(uint8_t(len >> 8));
  b.push_back(uint8_t(len));
  b.insert(b.end(), value.begin(), value.end());
  while (b.size() % 4) b.push_back(0);
}

// Header (length field = attrs that follow, filled in by finish()) + txid.
Bytes header(uint16_t type = kBindingRequest, const TxId& txid = kTx1) {
  Bytes b = {uint8_t(type >> 8), uint8_t(type), 0, 0};
  b.insert(b.end(), kMagicCookie.begin(), kMagicCookie.end());
  b.insert(b.end(), txid.begin(), txid.end());
  return b;
}

// Sets the header length and appends a correct FINGERPRINT.
Bytes withFingerprint(Bytes b) {
  size_t attrs = b.size() - kHeaderLen + kFingerprintAttrLen;
  b[2] = uint8_t(attrs >> 8);
  b[3] = uint8_t(attrs);
  uint32_t fp = crc32Ieee(b) ^ kFingerprintXor;
  uint8_t v[4];
  putU32BE(v, fp);
  appendAttr(b, kAttrFingerprint, ByteView(v, 4));
  return b;
}

RequestError verdict(const Bytes& b) { return parseBindingRequest(b).error; }

TEST(StunCrc, CheckValue) {
  EXPECT_EQ(crc32Ieee(asBytes("123456789")), 0xcbf43926u);
  EXPECT_EQ(crc32Ieee(ByteView()), 0u);
}

// Every request in both vector files gets Go's verdict, error and txid.
TEST(StunVectors, ParseBindingRequestMatchesGo) {
  int n = 0;
  for (const char* file : {"stun/stun.json", "stun/stun-dualstack-netns.json"}) {
    auto j = loadVectorJson(file);
    for (const auto& r : j["requests"]) {
      SCOPED_TRACE(std::string(file) + " " + r["name"].get<std::string>());
      Bytes b = hexBytes(r["hex"]);
      ASSERT_EQ(b.size(), r["len"].get<size_t>());
      auto got = parseBindingRequest(b);
      const auto& go = r["go_ParseBindingRequest"];
      EXPECT_EQ(got.ok(), go["ok"].get<bool>());
      if (go["ok"].get<bool>()) {
        EXPECT_EQ(toHex(got.txid), go["txid_hex"].get<std::string>());
      } else {
        EXPECT_EQ(requestErrorText(got.error), go["go_error"].get<std::string>());
      }
      n++;
    }
  }
  EXPECT_EQ(n, 28);
}

// appendBindingRequest == Go's stun.Request for the three txids.
TEST(StunVectors, BindingRequestBytes) {
  auto j = loadVectorJson("stun/stun.json");
  int n = 0;
  for (const auto& r : j["requests"]) {
    if (r["how"] != "stun.Request(txid)") continue;
    Bytes want = hexBytes(r["hex"]);
    TxId tx = txidFromHex(r["go_ParseBindingRequest"]["txid_hex"]);
    EXPECT_EQ(toHex(tailscaleRequest(tx)), toHex(want)) << r["name"];
    n++;
  }
  EXPECT_EQ(n, 3);
  EXPECT_EQ(tailscaleRequest(kTx1).size(), kRequestLen);
}

// Where derper answered with family 1 (IPv4 socket) or family 2 (real IPv6),
// our response is byte-for-byte derper's; it decodes to the client source.
TEST(StunVectors, ResponsesMatchDerper) {
  auto j = loadVectorJson("stun/stun.json");
  int n = 0;
  for (const auto& x : j["exchanges"]) {
    if (!x.contains("response_hex")) continue;
    SCOPED_TRACE(x["target"].get<std::string>() + " " + x["request"].get<std::string>());
    Bytes req = hexBytes([&] {
      for (const auto& r : j["requests"])
        if (r["name"] == x["request"]) return r["hex"].get<std::string>();
      return std::string();
    }());
    auto parsed = parseBindingRequest(req);
    ASSERT_TRUE(parsed.ok());
    Endpoint client = endpointFromString(x["client_src"]);
    Bytes ours = response(parsed.txid, client);
    EXPECT_EQ(toHex(ours), x["response_hex"].get<std::string>());
    EXPECT_EQ(ours.size(), x["response_len"].get<size_t>());
    EXPECT_EQ(ours[kHeaderLen + 5], x["target"] == "v4" ? 1 : 2);

    auto dec = parseBindingResponse(ours);
    ASSERT_TRUE(dec.ok()) << dec.error();
    EXPECT_EQ(toHex(dec->txid), x["go_ParseResponse"]["txid_hex"].get<std::string>());
    EXPECT_EQ(dec->mapped.toString(), x["go_ParseResponse"]["mapped_addr"].get<std::string>());
    n++;
  }
  EXPECT_EQ(n, 8);  // 4 answered requests x {v4, v6}
}

// derper's dual-stack socket answered IPv4 clients with family 2 and
// ::ffff:a.b.c.d; derpd answers family 1 (§9). Both decode to the client.
TEST(StunVectors, DualStackIpv4ClientGetsFamily1) {
  auto j = loadVectorJson("stun/stun-dualstack-netns.json");
  int n = 0;
  for (const auto& x : j["exchanges"]) {
    if (!x.contains("response_hex")) continue;
    SCOPED_TRACE(x["target"].get<std::string>() + " " + x["request"].get<std::string>());
    Bytes derper = hexBytes(x["response_hex"]);
    auto derperDec = parseBindingResponse(derper);
    ASSERT_TRUE(derperDec.ok()) << derperDec.error();
    Endpoint client = endpointFromString(x["client_src"]);
    EXPECT_EQ(derperDec->mapped, client);
    EXPECT_EQ(derperDec->mapped.toString(), x["go_ParseResponse"]["mapped_addr"].get<std::string>());

    Bytes ours = response(derperDec->txid, client);
    auto oursDec = parseBindingResponse(ours);
    ASSERT_TRUE(oursDec.ok());
    EXPECT_EQ(oursDec->txid, derperDec->txid);
    EXPECT_EQ(oursDec->mapped, client);
    if (x["target"] == "v4_to_dualstack") {
      EXPECT_EQ(derper[kHeaderLen + 5], 2);
      EXPECT_EQ(ours.size(), kResponseLenV4);
      // 34782 = 0x87de ^ 0x2112 = 0xa6cc; 127.0.0.1 ^ 2112a442 = 5e12a443.
      EXPECT_EQ(toHex(ours), "0101000c2112a442" + toHex(derperDec->txid) + "002000080001a6cc5e12a443");
    } else {
      EXPECT_EQ(toHex(ours), toHex(derper));  // real IPv6: identical to derper
    }
    n++;
  }
  EXPECT_EQ(n, 8);
}

TEST(StunResponse, FromSockaddr) {
  // An IPv4-mapped source on an IPv6 socket is answered with family 1.
  sockaddr_storage ss{};
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(34782);
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6->sin6_addr), 1);
  Bytes out;
  ASSERT_TRUE(appendBindingResponse(out, kTx1, ss));
  EXPECT_EQ(toHex(out), "0101000c2112a442000102030405060708090a0b002000080001a6cc5e12a443");

  // Plain IPv4 and IPv6 sources.
  sockaddr_storage s4{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&s4);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(34780);
  ASSERT_EQ(inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr), 1);
  out.clear();
  ASSERT_TRUE(appendBindingResponse(out, kTx1, s4));
  EXPECT_EQ(toHex(out), "0101000c2112a442000102030405060708090a0b002000080001a6ce5e12a443");

  sockaddr_storage s6{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&s6);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(34781);
  v6->sin6_addr = in6addr_loopback;
  out.clear();
  ASSERT_TRUE(appendBindingResponse(out, kTx1, s6));
  EXPECT_EQ(toHex(out),
            "010100182112a442000102030405060708090a0b002000140002a6cf2112a442000102030405060708090a0a");

  sockaddr_storage unix{};
  unix.ss_family = AF_UNIX;
  out.clear();
  EXPECT_FALSE(appendBindingResponse(out, kTx1, unix));
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(Endpoint::fromSockaddr(unix).has_value());
}

TEST(StunResponse, WriteIntoFixedBuffer) {
  std::array<uint8_t, kMaxResponseLen> buf{};
  Endpoint v4 = Endpoint::v4({192, 0, 2, 1}, 1);
  Endpoint v6 = endpointFromString("[2001:db8::1]:65535");
  EXPECT_EQ(writeBindingResponse(buf, kTx1, v4), kResponseLenV4);
  EXPECT_EQ(writeBindingResponse(buf, kTx1, v6), kResponseLenV6);
  auto dec = parseBindingResponse(ByteView(buf.data(), kResponseLenV6));
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(dec->mapped, v6);
  EXPECT_EQ(dec->mapped.toString(), "[2001:db8::1]:65535");
  EXPECT_EQ(v4.toString(), "192.0.2.1:1");
}

// ---- Each way of not being a Tailscale binding request ----

TEST(StunMalformed, Short) {
  Bytes b = tailscaleRequest(kTx1);
  for (size_t n = 0; n < kHeaderLen; n++) {
    EXPECT_EQ(verdict(Bytes(b.begin(), b.begin() + long(n))), RequestError::NotStun) << n;
  }
  // A bare header has no attributes: no SOFTWARE.
  EXPECT_EQ(verdict(Bytes(b.begin(), b.begin() + kHeaderLen)), RequestError::WrongSoftware);
}

TEST(StunMalformed, TopBitsSet) {
  for (uint8_t bits : {0x40, 0x80, 0xc0}) {
    Bytes b = tailscaleRequest(kTx1);
    b[0] |= bits;
    EXPECT_EQ(verdict(b), RequestError::NotStun) << int(bits);
  }
}

TEST(StunMalformed, WrongCookie) {
  for (size_t i = 4; i < 8; i++) {
    Bytes b = tailscaleRequest(kTx1);
    b[i] ^= 0x01;
    EXPECT_EQ(verdict(b), RequestError::NotStun) << i;
  }
  // RFC 3489 requests (no cookie: 16-byte txid), as the Debian stun client sends.
  Bytes old = hexBytes("000100080189a32d81747a0de18c9f4068283e270003000400000000");
  EXPECT_EQ(verdict(old), RequestError::NotStun);
}

TEST(StunMalformed, NotBindingRequest) {
  for (uint16_t type : {0x0000, 0x0002, 0x0011, 0x0101, 0x0111, 0x0100, 0x3fff}) {
    Bytes b = header(type);
    appendAttr(b, kAttrSoftware, asBytes(kSoftware));
    b = withFingerprint(b);
    EXPECT_EQ(verdict(b), RequestError::NotBindingRequest) << type;
    b[0] = 0;
    b[1] = 1;
    b.resize(b.size() - kFingerprintAttrLen);
    EXPECT_TRUE(parseBindingRequest(withFingerprint(b)).ok());
  }
}

TEST(StunMalformed, TruncatedAttributeHeader) {
  for (size_t extra = 1; extra <= 3; extra++) {
    Bytes b = tailscaleRequest(kTx1);
    b.insert(b.end(), extra, 0x80);
    EXPECT_EQ(verdict(b), RequestError::MalformedAttrs) << extra;
  }
  Bytes h = header();
  h.push_back(0x80);
  h.push_back(0x22);
  EXPECT_EQ(verdict(h), RequestError::MalformedAttrs);
}

TEST(StunMalformed, PaddedValueOverrun) {
  // A 6-byte value needs 8 bytes with padding; only 6 are there.
  Bytes b = header();
  appendAttr(b, kAttrSoftware, asBytes(kSoftware));
  b = withFingerprint(b);
  const uint8_t odd[] = {0x80, 0x70, 0x00, 0x06, 1, 2, 3, 4, 5, 6};
  b.insert(b.end(), odd, odd + sizeof odd);
  EXPECT_EQ(verdict(b), RequestError::MalformedAttrs);
  // Same value with its 2 padding bytes is well formed (then not FINGERPRINT last).
  b.push_back(0);
  b.push_back(0);
  EXPECT_EQ(verdict(b), RequestError::NoFingerprint);
  // SOFTWARE length 17 (padded 20) with 16 bytes after its header: 4 short.
  Bytes c = tailscaleRequest(kTx1);
  c[kHeaderLen + 3] = 17;
  EXPECT_EQ(verdict(c), RequestError::MalformedAttrs);
  c[kHeaderLen + 3] = 16;  // fits exactly: well formed, but no longer "tailnode"
  EXPECT_EQ(verdict(c), RequestError::WrongSoftware);
}

TEST(StunMalformed, NoSoftware) {
  Bytes b = withFingerprint(header());
  EXPECT_EQ(verdict(b), RequestError::WrongSoftware);
  Bytes c = header();
  appendAttr(c, 0x8070, asBytes("tailnode"));  // right value, wrong type
  EXPECT_EQ(verdict(withFingerprint(c)), RequestError::WrongSoftware);
}

TEST(StunMalformed, SoftwareNotExactlyTailnode) {
  for (const char* sw : {"tailnod", "tailnode2", "Tailnode", "tailnodX", "", " tailnode"}) {
    Bytes b = header();
    std::string v(sw);
    appendAttr(b, kAttrSoftware, asBytes(v));
    EXPECT_EQ(verdict(withFingerprint(b)), RequestError::WrongSoftware) << v;
  }
  // Exactly "tailnode" plus a 0 in the padding of a 9-byte length is still 9 bytes.
  Bytes b = header();
  const char nine[] = "tailnode";
  appendAttr(b, kAttrSoftware, ByteView(reinterpret_cast<const uint8_t*>(nine), 9));
  EXPECT_EQ(verdict(withFingerprint(b)), RequestError::WrongSoftware);
  // Any one SOFTWARE being right is enough (Go accepts the request).
  Bytes c = header();
  appendAttr(c, kAttrSoftware, asBytes("other"));
  appendAttr(c, kAttrSoftware, asBytes(kSoftware));
  EXPECT_TRUE(parseBindingRequest(withFingerprint(c)).ok());
}

TEST(StunMalformed, LastAttributeNotFingerprint) {
  Bytes b = header();
  appendAttr(b, kAttrSoftware, asBytes(kSoftware));
  EXPECT_EQ(verdict(b), RequestError::NoFingerprint);
  Bytes c = withFingerprint(b);
  appendAttr(c, 0x8070, asBytes("abcd"));
  EXPECT_EQ(verdict(c), RequestError::NoFingerprint);
}

TEST(StunMalformed, BadCrc) {
  for (size_t i = 0; i < 4; i++) {
    Bytes b = tailscaleRequest(kTx1);
    b[kRequestLen - 4 + i] ^= 0x80;
    EXPECT_EQ(verdict(b), RequestError::WrongFingerprint) << i;
  }
  // A changed txid breaks the CRC too.
  Bytes b = tailscaleRequest(kTx1);
  b[10] ^= 1;
  EXPECT_EQ(verdict(b), RequestError::WrongFingerprint);
  // A FINGERPRINT value of the wrong length counts as 0.
  Bytes c = header();
  appendAttr(c, kAttrSoftware, asBytes(kSoftware));
  appendAttr(c, kAttrFingerprint, asBytes("abc"));
  EXPECT_EQ(verdict(c), RequestError::WrongFingerprint);
}

// ---- Go's quirks, kept on purpose (§9: derper's exact behaviour) ----

TEST(StunQuirks, HeaderLengthIgnored) {
  Bytes b = tailscaleRequest(kTx1);
  b[2] = 0;
  b[3] = 0;
  // The length field is part of the CRC: recompute it.
  b.resize(b.size() - kFingerprintAttrLen);
  uint32_t fp = crc32Ieee(b) ^ kFingerprintXor;
  uint8_t v[4];
  putU32BE(v, fp);
  appendAttr(b, kAttrFingerprint, ByteView(v, 4));
  auto r = parseBindingRequest(b);
  ASSERT_TRUE(r.ok()) << requestErrorText(r.error);
  EXPECT_EQ(r.txid, kTx1);
}

TEST(StunQuirks, ExtraAttributesAccepted) {
  Bytes b = header();
  appendAttr(b, 0x8070, asBytes("12345"));
  appendAttr(b, kAttrSoftware, asBytes(kSoftware));
  appendAttr(b, 0x0006, asBytes("user"));
  auto r = parseBindingRequest(withFingerprint(b));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.txid, kTx1);
}

// The last FINGERPRINT may be empty: Go then compares the CRC of all but the
// last 8 bytes with the value of an earlier 4-byte FINGERPRINT.
TEST(StunQuirks, EmptyLastFingerprintUsesEarlierValue) {
  Bytes b = header();
  appendAttr(b, kAttrSoftware, asBytes(kSoftware));
  b.insert(b.end(), {0x80, 0x28, 0x00, 0x04});  // FINGERPRINT header; value below
  b[3] = uint8_t(b.size() + 4 + 4 - kHeaderLen);  // attrs incl. both FINGERPRINTs
  uint32_t fp = crc32Ieee(b) ^ kFingerprintXor;  // all but the last 8 bytes
  uint8_t v[4];
  putU32BE(v, fp);
  b.insert(b.end(), v, v + 4);
  b.insert(b.end(), {0x80, 0x28, 0x00, 0x00});  // empty, last
  EXPECT_TRUE(parseBindingRequest(b).ok());
  b[b.size() - 5] ^= 1;
  EXPECT_EQ(verdict(b), RequestError::WrongFingerprint);
}

// ---- Response decoder ----

TEST(StunParseResponse, Errors) {
  Bytes ok = response(kTx1, Endpoint::v4({1, 2, 3, 4}, 5));
  ASSERT_TRUE(parseBindingResponse(ok).ok());
  EXPECT_FALSE(parseBindingResponse(ByteView(ok.data(), 19)).ok());
  Bytes notSuccess = ok;
  notSuccess[1] = 0x11;
  EXPECT_FALSE(parseBindingResponse(notSuccess).ok());
  Bytes longer = ok;
  longer[3] += 4;  // header claims more than there is
  EXPECT_FALSE(parseBindingResponse(longer).ok());
  Bytes badFamily = ok;
  badFamily[kHeaderLen + 5] = 3;
  EXPECT_FALSE(parseBindingResponse(badFamily).ok());
  Bytes none = header(kBindingSuccess);
  EXPECT_FALSE(parseBindingResponse(none).ok());
  // Trailing bytes after the header's length are ignored.
  Bytes trailing = ok;
  trailing.insert(trailing.end(), {1, 2, 3});
  EXPECT_TRUE(parseBindingResponse(trailing).ok());
}

TEST(StunParseResponse, AltAndMappedAddressFallback) {
  // 0x8020 is read like 0x0020.
  Bytes alt = response(kTx1, Endpoint::v4({10, 0, 0, 1}, 4242));
  alt[kHeaderLen] = 0x80;
  auto a = parseBindingResponse(alt);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mapped.toString(), "10.0.0.1:4242");
  // MAPPED-ADDRESS (not XORed) when there is no XOR-MAPPED-ADDRESS.
  Bytes m = header(kBindingSuccess);
  const uint8_t v[] = {0, 1, 0x10, 0x92, 192, 0, 2, 7};  // port 4242
  appendAttr(m, kAttrMappedAddress, ByteView(v, sizeof v));
  m[3] = uint8_t(m.size() - kHeaderLen);
  auto r = parseBindingResponse(m);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->mapped.toString(), "192.0.2.7:4242");
}

}  // namespace
}  // namespace derpd::stun
