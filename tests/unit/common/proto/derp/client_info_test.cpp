#include "common/proto/derp/client_info.hpp"

#include <gtest/gtest.h>

#include "support/vectors.hpp"

namespace derpd::derp {
namespace {

ClientInfo mustParse(std::string_view json) {
  auto r = parseClientInfo(json);
  EXPECT_TRUE(r.ok()) << json << ": " << (r.ok() ? "" : r.error());
  return r.ok() ? *r : ClientInfo{};
}

void expectReject(std::string_view json) {
  auto r = parseClientInfo(json);
  EXPECT_FALSE(r.ok()) << "accepted: " << json;
}

const char* kMeshKey = "d5c9c87c76f24ca6f7e4b0169a455714d3eb90a83520caeb2c5143ea1163504d";

TEST(ClientInfo, RealClientOutputs) {
  // tailscaled
  ClientInfo ts = mustParse(R"({"version":2,"CanAckPings":true})");
  EXPECT_EQ(ts.version, 2);
  EXPECT_TRUE(ts.canAckPings);
  EXPECT_FALSE(ts.isProber);
  EXPECT_TRUE(ts.meshKey.empty());
  EXPECT_EQ(encodeClientInfo(ts), R"({"version":2,"CanAckPings":true})");

  // derpprobe
  ClientInfo pr = mustParse(R"({"version":2,"CanAckPings":false,"IsProber":true})");
  EXPECT_EQ(pr.version, 2);
  EXPECT_FALSE(pr.canAckPings);
  EXPECT_TRUE(pr.isProber);
  EXPECT_EQ(encodeClientInfo(pr), R"({"version":2,"CanAckPings":false,"IsProber":true})");

  // mesh
  const std::string mesh =
      std::string(R"({"meshKey":")") + kMeshKey + R"(","version":2,"CanAckPings":false})";
  ClientInfo m = mustParse(mesh);
  EXPECT_EQ(m.meshKey, kMeshKey);
  EXPECT_EQ(m.version, 2);
  EXPECT_EQ(encodeClientInfo(m), mesh);

  // default derphttp client
  ClientInfo d = mustParse(R"({"version":2,"CanAckPings":false})");
  EXPECT_EQ(encodeClientInfo(d), R"({"version":2,"CanAckPings":false})");
}

TEST(ClientInfo, VectorPlaintexts) {
  auto j = test::loadVectorJson("frames.json");
  int n = 0;
  for (const auto& fr : j["frames"]) {
    if (!fr["fields"].contains("plaintext_json") || fr["type"] != 2) continue;
    const std::string json = fr["fields"]["plaintext_json"];
    ClientInfo ci = mustParse(json);
    EXPECT_EQ(encodeClientInfo(ci), json);
    ++n;
  }
  EXPECT_EQ(n, 6);
}

TEST(ClientInfo, EncodeOmitEmpty) {
  ClientInfo ci;
  EXPECT_EQ(encodeClientInfo(ci), R"({"CanAckPings":false})");
  ci.appName = "derpd";
  ci.isProber = true;
  ci.meshKey = "k";
  ci.version = -3;
  EXPECT_EQ(encodeClientInfo(ci),
            R"({"meshKey":"k","version":-3,"CanAckPings":false,"IsProber":true,"AppName":"derpd"})");
}

TEST(ClientInfo, EncodeStringsAsGo) {
  ClientInfo ci;
  ci.appName = std::string("a\"b\\c\n\r\t\b\f\x01\x1f<>&\x7f") + "\xE2\x80\xA8\xE2\x80\xA9" +
               "\xC3\xA9" + "\xFF" + "\xE2\x82";
  EXPECT_EQ(encodeClientInfo(ci),
            R"({"CanAckPings":false,"AppName":"a\"b\\c\n\r\t\b\f\u0001\u001f\u003c\u003e\u0026)"
            "\x7f"
            R"(\u2028\u2029)"
            "\xC3\xA9"
            R"(\ufffd\ufffd\ufffd"})");
}

TEST(ClientInfo, CaseInsensitiveKeys) {
  ClientInfo a = mustParse(R"({"VERSION":2,"canackpings":true,"isprober":true,"MESHKEY":"x","appname":"y"})");
  EXPECT_EQ(a.version, 2);
  EXPECT_TRUE(a.canAckPings);
  EXPECT_TRUE(a.isProber);
  EXPECT_EQ(a.meshKey, "x");
  EXPECT_EQ(a.appName, "y");
  // Go's EqualFold: KELVIN SIGN ~ k, LONG S ~ s.
  ClientInfo b = mustParse("{\"mesh\xE2\x84\xAA" "ey\":\"k\",\"I\xC5\xBFProber\":true}");
  EXPECT_EQ(b.meshKey, "k");
  EXPECT_TRUE(b.isProber);
  // Escaped key names are unescaped before matching.
  ClientInfo c = mustParse(R"({"\u0076ersion":7})");
  EXPECT_EQ(c.version, 7);
  // Near misses are unknown keys and ignored.
  ClientInfo d = mustParse(R"({"version ":"x","ver_sion":"x","CanAckPing":"x","IsProberr":1})");
  EXPECT_EQ(d.version, 0);
  EXPECT_FALSE(d.isProber);
}

TEST(ClientInfo, DuplicatesLastWins) {
  ClientInfo a = mustParse(R"({"version":1,"VERSION":3,"Version":2})");
  EXPECT_EQ(a.version, 2);
  ClientInfo b = mustParse(R"({"CanAckPings":true,"canAckPings":false})");
  EXPECT_FALSE(b.canAckPings);
  // null leaves the earlier value (Go: null is a no-op).
  ClientInfo c = mustParse(R"({"version":5,"version":null,"meshKey":"m","meshKey":null,"IsProber":true,"IsProber":null})");
  EXPECT_EQ(c.version, 5);
  EXPECT_EQ(c.meshKey, "m");
  EXPECT_TRUE(c.isProber);
}

TEST(ClientInfo, UnknownKeysIgnored) {
  ClientInfo a = mustParse(
      R"({"future":{"a":[1,2,{"b":null}],"c":"d"},"version":2,"x":[],"y":{},"z":1.5e300,)"
      R"("w":-0.0,"big":123456789012345678901234567890,"huge":1e400,"neg":-1e999,"s":"\ud800",)"
      R"("t":true,"f":false,"n":null,"CanAckPings":true})");
  EXPECT_EQ(a.version, 2);
  EXPECT_TRUE(a.canAckPings);
  // Long digit strings are just skipped too.
  std::string longNum(400, '9');
  ClientInfo b = mustParse(R"({"x":)" + longNum + R"(,"y":)" + longNum + ".5e3" + R"(,"version":2})");
  EXPECT_EQ(b.version, 2);
}

TEST(ClientInfo, VersionMustBeInt64) {
  EXPECT_EQ(mustParse(R"({"version":-0})").version, 0);
  EXPECT_EQ(mustParse(R"({"version":9223372036854775807})").version, INT64_MAX);
  EXPECT_EQ(mustParse(R"({"version":-9223372036854775808})").version, INT64_MIN);
  expectReject(R"({"version":9223372036854775808})");
  expectReject(R"({"version":-9223372036854775809})");
  expectReject(R"({"version":18446744073709551616})");
  expectReject(R"({"version":2.0})");
  expectReject(R"({"version":2.5})");
  expectReject(R"({"version":2e0})");
  expectReject(R"({"version":1e400})");
  expectReject(R"({"version":"2"})");
  expectReject(R"({"version":true})");
  expectReject(R"({"version":[2]})");
  expectReject(R"({"version":{}})");
}

TEST(ClientInfo, WrongTypesRejected) {
  expectReject(R"({"CanAckPings":1})");
  expectReject(R"({"CanAckPings":"true"})");
  expectReject(R"({"canackpings":[]})");
  expectReject(R"({"IsProber":0})");
  expectReject(R"({"meshKey":1})");
  expectReject(R"({"meshKey":true})");
  expectReject(R"({"meshKey":["a"]})");
  expectReject(R"({"meshKey":{"a":"b"}})");
  expectReject(R"({"AppName":false})");
}

TEST(ClientInfo, NonObjectRejected) {
  for (const char* s : {"", " ", "null", "true", "2", "\"x\"", "[]", "[{}]", "[{\"version\":2}]"}) {
    expectReject(s);
  }
}

TEST(ClientInfo, SyntaxErrorsRejected) {
  for (const char* s : {
           R"({"version":2} x)", R"({"version":2}{})", R"({"version":2},)", R"({"version":2)",
           R"({"version":02})", R"({"version":2,})", R"({'version':2})", R"({version:2})",
           R"({"version":2 /* c */})", R"({"a":tru})", R"({"a":"\x"})", R"({"a":"tab	"})",
           R"({"a":NaN})", R"({"a":-})", R"({"a":.5})", R"({"a":1.})", R"({"a":+1})",
       }) {
    expectReject(s);
  }
  // Whitespace around is fine.
  EXPECT_EQ(mustParse(" \t\r\n{ \"version\" : 2 } \n").version, 2);
  // NUL bytes: nlohmann would stop there, Go rejects.
  expectReject(std::string_view("{\"version\":2}\0junk", 18));
  expectReject(std::string_view("{\"version\":2}\0", 14));
  expectReject(std::string_view("{\"a\":\"\0\"}", 9));
  // A UTF-8 BOM: nlohmann would skip it, Go rejects.
  expectReject("\xEF\xBB\xBF{\"version\":2}");
}

TEST(ClientInfo, DepthLimit) {
  auto nested = [](int depth) {
    // depth containers in total, the outermost being the top-level object.
    std::string s = "{\"x\":";
    for (int i = 1; i < depth - 1; ++i) s += (i % 2) ? "[" : "{\"y\":";
    s += (depth > 1) ? "[]" : "1";
    for (int i = depth - 2; i >= 1; --i) s += (i % 2) ? "]" : "}";
    s += ",\"version\":2}";
    return s;
  };
  EXPECT_EQ(mustParse(nested(64)).version, 2);
  expectReject(nested(65));
  expectReject(nested(1000));
  expectReject(std::string(100000, '[') + std::string(100000, ']'));
}

TEST(ClientInfo, SizeLimit) {
  std::string pad(256 * 1024 - 40, ' ');
  EXPECT_EQ(mustParse("{\"version\":2}" + pad).version, 2);
  expectReject("{\"version\":2}" + std::string(256 * 1024, ' '));
}

TEST(ClientInfo, InvalidUtf8ReplacedNotRejected) {
  // Go replaces each invalid byte with U+FFFD.
  ClientInfo a = mustParse("{\"AppName\":\"a\xFF" "b\xC0\xAF" "c\xED\xA0\x80\",\"version\":2}");
  EXPECT_EQ(a.appName,
            "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(a.version, 2);
  // Truncated sequence at the end of a string.
  ClientInfo b = mustParse("{\"meshKey\":\"\xE2\x82\"}");
  EXPECT_EQ(b.meshKey, "\xEF\xBF\xBD\xEF\xBF\xBD");
  // Invalid UTF-8 in an unknown key and value.
  EXPECT_EQ(mustParse("{\"\xFE\":\"\xFF\",\"version\":2}").version, 2);
  // Valid multi-byte text passes through.
  EXPECT_EQ(mustParse("{\"AppName\":\"\xF0\x9F\x94\x91 \xC3\xA9\"}").appName,
            "\xF0\x9F\x94\x91 \xC3\xA9");
  // Invalid bytes outside strings are still syntax errors.
  expectReject("{\"version\":2}\xFF");
  expectReject("{\xFF:1}");
}

TEST(ClientInfo, SurrogateEscapes) {
  EXPECT_EQ(mustParse(R"({"AppName":"\ud83d\udd11"})").appName, "\xF0\x9F\x94\x91");
  EXPECT_EQ(mustParse(R"({"AppName":"\ud83d"})").appName, "\xEF\xBF\xBD");
  EXPECT_EQ(mustParse(R"({"AppName":"\udd11x"})").appName, "\xEF\xBF\xBDx");
  EXPECT_EQ(mustParse(R"({"AppName":"\ud83d\u0041"})").appName, "\xEF\xBF\xBD" "A");
  EXPECT_EQ(mustParse(R"({"AppName":"\ud83d\ud83d\udd11"})").appName,
            "\xEF\xBF\xBD\xF0\x9F\x94\x91");
  EXPECT_EQ(mustParse(R"({"AppName":"\\ud83d"})").appName, "\\ud83d");  // escaped backslash
  EXPECT_EQ(mustParse(R"({"AppName":"\"\ud800"})").appName, "\"\xEF\xBF\xBD");
  EXPECT_EQ(mustParse(R"({"AppName":"\u00e9\u0000"})").appName, std::string("\xC3\xA9\0", 3));
}

TEST(ClientInfo, RoundTripThroughEncoding) {
  ClientInfo ci;
  ci.meshKey = "m\"\\<>&\n\xE2\x80\xA8";
  ci.version = INT64_MIN;
  ci.canAckPings = true;
  ci.isProber = true;
  ci.appName = "\xF0\x9F\x94\x91\x01";
  auto r = parseClientInfo(encodeClientInfo(ci));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->meshKey, ci.meshKey);
  EXPECT_EQ(r->version, ci.version);
  EXPECT_EQ(r->canAckPings, ci.canAckPings);
  EXPECT_EQ(r->isProber, ci.isProber);
  EXPECT_EQ(r->appName, ci.appName);
}

TEST(ServerInfo, EncodeAndParse) {
  ServerInfo si;
  EXPECT_EQ(encodeServerInfo(si), "{}");
  si.version = 2;
  EXPECT_EQ(encodeServerInfo(si), R"({"version":2})");
  si.tokenBucketBytesPerSecond = 1000;
  si.tokenBucketBytesBurst = 2000;
  EXPECT_EQ(encodeServerInfo(si),
            R"({"version":2,"TokenBucketBytesPerSecond":1000,"TokenBucketBytesBurst":2000})");
  auto r = parseServerInfo(encodeServerInfo(si));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->version, 2);
  EXPECT_EQ(r->tokenBucketBytesPerSecond, 1000);
  EXPECT_EQ(r->tokenBucketBytesBurst, 2000);
  auto ci = parseServerInfo(R"({"VERSION":2,"tokenbucketbytesburst":5,"other":[1]})");
  ASSERT_TRUE(ci.ok());
  EXPECT_EQ(ci->version, 2);
  EXPECT_EQ(ci->tokenBucketBytesBurst, 5);
  EXPECT_FALSE(parseServerInfo(R"({"version":"2"})").ok());
  EXPECT_FALSE(parseServerInfo(R"({"TokenBucketBytesPerSecond":1.5})").ok());
  EXPECT_FALSE(parseServerInfo("[]").ok());
}

}  // namespace
}  // namespace derpd::derp
