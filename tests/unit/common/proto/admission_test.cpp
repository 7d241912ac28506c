// Admission wire formats (common/proto/admission): the request body byte for
// byte as Go's json.Marshal writes it, and the answer parser against Go's
// json.Decoder rules (derper: json.NewDecoder(io.LimitReader(body, 4<<10))).
#include "common/proto/admission/admission.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>

namespace derpd::admission {
namespace {

crypto::NodePublic keyFromCounter() {
  std::array<uint8_t, crypto::kKeyLen> raw{};
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = uint8_t(i);
  return crypto::NodePublic::fromRaw(ByteView(raw.data(), raw.size()));
}

constexpr char kKeyText[] = "nodekey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

bool allowOf(std::string_view body) {
  auto r = parseAdmitResponse(body);
  EXPECT_TRUE(r.ok()) << "body: " << body << " error: " << r.error();
  return r.ok() && *r;
}

std::string errorOf(std::string_view body) {
  auto r = parseAdmitResponse(body);
  EXPECT_FALSE(r.ok()) << "body: " << body;
  return r.ok() ? std::string() : r.error();
}

std::string nested(int levels, std::string_view inner) {
  return std::string(size_t(levels), '[') + std::string(inner) + std::string(size_t(levels), ']');
}

// --------------------------------------------------------------- encode --

// tailcfg.DERPAdmitClientRequest{NodePublic, Source netip.Addr} through
// json.Marshal: fields in declaration order, both as MarshalText strings.
TEST(AdmissionEncode, Ipv4ByteExact) {
  EXPECT_EQ(encodeAdmitRequest(keyFromCounter(), "1.2.3.4"),
            std::string("{\"NodePublic\":\"") + kKeyText + "\",\"Source\":\"1.2.3.4\"}");
}

TEST(AdmissionEncode, Ipv6ByteExact) {
  EXPECT_EQ(encodeAdmitRequest(keyFromCounter(), "2001:db8::1"),
            std::string("{\"NodePublic\":\"") + kKeyText + "\",\"Source\":\"2001:db8::1\"}");
  EXPECT_EQ(encodeAdmitRequest(keyFromCounter(), "::ffff:192.0.2.1"),
            std::string("{\"NodePublic\":\"") + kKeyText + "\",\"Source\":\"::ffff:192.0.2.1\"}");
}

TEST(AdmissionEncode, ZeroAddrAndZoneAreQuotedAsGoDoes) {
  // netip.Addr{}.MarshalText is empty; a zone is part of the text.
  EXPECT_EQ(encodeAdmitRequest(keyFromCounter(), ""),
            std::string("{\"NodePublic\":\"") + kKeyText + "\",\"Source\":\"\"}");
  EXPECT_EQ(encodeAdmitRequest(keyFromCounter(), "fe80::1%eth0"),
            std::string("{\"NodePublic\":\"") + kKeyText + "\",\"Source\":\"fe80::1%eth0\"}");
}

// ---------------------------------------------------------------- parse --

TEST(AdmissionParse, TrueAndFalse) {
  EXPECT_TRUE(allowOf(R"({"Allow":true})"));
  EXPECT_FALSE(allowOf(R"({"Allow":false})"));
  EXPECT_FALSE(allowOf("{}"));
}

TEST(AdmissionParse, NullMeansFalse) {
  EXPECT_FALSE(allowOf("null"));
  EXPECT_FALSE(allowOf(R"({"Allow":null})"));
  // Go leaves the field alone on null: an earlier true stands.
  EXPECT_TRUE(allowOf(R"({"Allow":true,"Allow":null})"));
}

TEST(AdmissionParse, KeyMatchIsCaseInsensitive) {
  EXPECT_TRUE(allowOf(R"({"allow":true})"));
  EXPECT_TRUE(allowOf(R"({"ALLOW":true})"));
  EXPECT_TRUE(allowOf(R"({"aLlOw":true})"));
  EXPECT_TRUE(allowOf(R"({"\u0041llow":true})"));  // keys are unescaped first
  EXPECT_FALSE(allowOf(R"({"Allowed":true})"));
  EXPECT_FALSE(allowOf(R"({"Allow ":true})"));
}

TEST(AdmissionParse, LastMatchWins) {
  EXPECT_FALSE(allowOf(R"({"Allow":true,"allow":false})"));
  EXPECT_TRUE(allowOf(R"({"ALLOW":false,"Allow":true})"));
}

TEST(AdmissionParse, UnknownKeysAndNestedValuesIgnored) {
  EXPECT_TRUE(allowOf(R"({"x":1,"Allow":true,"y":[1,{"z":null}],"s":"\"}"})"));
  // An "Allow" below the top level is some other struct's field.
  EXPECT_TRUE(allowOf(R"({"meta":{"a":{"Allow":false,"b":[{"Allow":"no"}]}},"Allow":true})"));
  EXPECT_FALSE(allowOf(R"({"meta":{"Allow":true}})"));
}

TEST(AdmissionParse, BytesAfterTheFirstValueIgnored) {
  EXPECT_TRUE(allowOf(R"({"Allow":true} trailing garbage)"));
  EXPECT_TRUE(allowOf(R"({"Allow":true}{"Allow":false})"));
  EXPECT_TRUE(allowOf("{\"Allow\":true}\n\x01\xff"));
  EXPECT_FALSE(allowOf("null nonsense"));
}

TEST(AdmissionParse, WhiteSpaceAnywhere) {
  EXPECT_TRUE(allowOf(" \t\r\n{ \"Allow\" \n:\ttrue\r} \n"));
  EXPECT_TRUE(allowOf("{\n  \"Allow\": true,\n  \"Reason\": \"ok\"\n}\n"));
}

TEST(AdmissionParse, EmptyAndTruncated) {
  EXPECT_EQ(errorOf(""), "EOF");
  EXPECT_EQ(errorOf(" \n\t"), "EOF");
  EXPECT_EQ(errorOf("{"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"Allow")"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"Allow":)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"Allow":tru)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"Allow":true)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"Allow":true,)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"k":"abc)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"k":"\u00)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"k":-)"), "unexpected EOF");
  EXPECT_EQ(errorOf(R"({"k":[1,2)"), "unexpected EOF");
}

TEST(AdmissionParse, AllowOfTheWrongTypeIsAnError) {
  const std::string want =
      "json: cannot unmarshal string into Go struct field DERPAdmitClientResponse.Allow of type bool";
  EXPECT_EQ(errorOf(R"({"Allow":"true"})"), want);
  EXPECT_NE(errorOf(R"({"Allow":1})").find("cannot unmarshal number"), std::string::npos);
  EXPECT_NE(errorOf(R"({"Allow":0})").find("cannot unmarshal number"), std::string::npos);
  EXPECT_NE(errorOf(R"({"Allow":[true]})").find("cannot unmarshal array"), std::string::npos);
  EXPECT_NE(errorOf(R"({"Allow":{}})").find("cannot unmarshal object"), std::string::npos);
  // A type error stands even when a later key is fine (Go reports the first).
  EXPECT_EQ(errorOf(R"({"Allow":"x","Allow":true})"), want);
  // ...but a syntax error anywhere in the value outranks it.
  EXPECT_EQ(errorOf(R"({"Allow":"x","k":tru})"), "invalid character '}' in literal true (expecting 'e')");
}

TEST(AdmissionParse, TopLevelMustBeAnObjectOrNull) {
  EXPECT_EQ(errorOf("[true]"), "json: cannot unmarshal array into Go value of type tailcfg.DERPAdmitClientResponse");
  EXPECT_NE(errorOf(R"("Allow")").find("cannot unmarshal string"), std::string::npos);
  EXPECT_NE(errorOf("1").find("cannot unmarshal number"), std::string::npos);
  EXPECT_NE(errorOf("true").find("cannot unmarshal bool"), std::string::npos);
  EXPECT_NE(errorOf("-0.5e+3 ").find("cannot unmarshal number"), std::string::npos);
}

TEST(AdmissionParse, SyntaxErrorsReadLikeGo) {
  EXPECT_EQ(errorOf("not json at all"), "invalid character 'o' in literal null (expecting 'u')");
  EXPECT_EQ(errorOf("<html>"), "invalid character '<' looking for beginning of value");
  EXPECT_EQ(errorOf(R"({Allow:true})"), "invalid character 'A' looking for beginning of object key string");
  EXPECT_EQ(errorOf(R"({"Allow" true})"), "invalid character 't' after object key");
  EXPECT_EQ(errorOf(R"({"Allow":true "k":1})"), "invalid character '\"' after object key:value pair");
  EXPECT_EQ(errorOf(R"({"k":[1 2]})"), "invalid character '2' after array element");
  EXPECT_EQ(errorOf(R"({"Allow":True})"), "invalid character 'T' looking for beginning of value");
  EXPECT_EQ(errorOf("\xef\xbb\xbf{}"), "invalid character '\xc3\xaf' looking for beginning of value");  // 'ï'
  EXPECT_EQ(errorOf("\x85"), "invalid character '\\u0085' looking for beginning of value");
  EXPECT_EQ(errorOf(std::string_view("{\0}", 3)),
            "invalid character '\\x00' looking for beginning of object key string");
}

TEST(AdmissionParse, NumbersFollowGoGrammar) {
  EXPECT_TRUE(allowOf(R"({"n":-0.5e+10,"m":0,"o":123.456E-7,"Allow":true})"));
  EXPECT_EQ(errorOf(R"({"n":01})"), "invalid character '1' after object key:value pair");
  EXPECT_EQ(errorOf(R"({"n":-a})"), "invalid character 'a' in numeric literal");
  EXPECT_EQ(errorOf(R"({"n":1.})"), "invalid character '}' after decimal point in numeric literal");
  EXPECT_EQ(errorOf(R"({"n":1e})"), "invalid character '}' in exponent of numeric literal");
  EXPECT_EQ(errorOf(R"({"n":1e+})"), "invalid character '}' in exponent of numeric literal");
  EXPECT_EQ(errorOf(R"({"n":.5})"), "invalid character '.' looking for beginning of value");
  EXPECT_EQ(errorOf(R"({"n":+1})"), "invalid character '+' looking for beginning of value");
  // Any magnitude is syntactically fine in a value Go skips.
  EXPECT_TRUE(allowOf(R"({"big":1e999999,"Allow":true})"));
}

TEST(AdmissionParse, StringEscapesAreValidated) {
  EXPECT_TRUE(allowOf(R"({"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800","Allow":true})"));
  EXPECT_EQ(errorOf(R"({"s":"\x"})"), "invalid character 'x' in string escape code");
  EXPECT_EQ(errorOf(R"({"s":"\u12G4"})"), "invalid character 'G' in \\u hexadecimal character escape");
  EXPECT_EQ(errorOf(R"({"s":"\U0041"})"), "invalid character 'U' in string escape code");
  EXPECT_EQ(errorOf("{\"s\":\"a\nb\"}"), "invalid character '\\n' in string literal");
  EXPECT_EQ(errorOf("{\"s\":\"a\tb\"}"), "invalid character '\\t' in string literal");
  EXPECT_EQ(errorOf("{\"s\":\"a\x1f\"}"), "invalid character '\\x1f' in string literal");
  // Go accepts invalid UTF-8 inside strings (it substitutes U+FFFD).
  EXPECT_TRUE(allowOf("{\"s\":\"\xff\xfe\",\"Allow\":true}"));
  EXPECT_TRUE(allowOf("{\"\xc0\xaf" "Allow\":false,\"Allow\":true}"));
}

TEST(AdmissionParse, LiteralsMustBeExact) {
  EXPECT_EQ(errorOf(R"({"Allow":trUe})"), "invalid character 'U' in literal true (expecting 'u')");
  EXPECT_EQ(errorOf(R"({"Allow":fals})"), "invalid character '}' in literal false (expecting 'e')");
  EXPECT_EQ(errorOf(R"({"Allow":nul})"), "invalid character '}' in literal null (expecting 'l')");
}

TEST(AdmissionParse, NestingIsBoundedAt64) {
  // The top-level object is level 1; 63 arrays inside it make 64.
  EXPECT_TRUE(allowOf(R"({"x":)" + nested(63, "1") + R"(,"Allow":true})"));
  EXPECT_EQ(errorOf(R"({"x":)" + nested(64, "1") + R"(,"Allow":true})"), "exceeded max depth");
  EXPECT_EQ(errorOf(nested(100000, "")), "exceeded max depth");
  std::string objects;
  for (int i = 0; i < 70; ++i) objects += R"({"a":)";
  EXPECT_EQ(errorOf(objects), "exceeded max depth");
}

TEST(AdmissionParse, OnlyTheFirst4KiBCount) {
  // The object completes only after byte 4096: LimitReader cut it short.
  const std::string pad(5000, 'a');
  const std::string late = R"({"pad":")" + pad + R"(","Allow":true})";
  EXPECT_EQ(errorOf(late), "unexpected EOF");

  // Completing exactly at the limit is fine, and so is anything after it.
  const std::string head = R"({"Allow":true,"pad":")";
  const std::string tail = "\"}";
  std::string exact = head + std::string(kMaxAdmitResponseBytes - head.size() - tail.size(), 'b') + tail;
  ASSERT_EQ(exact.size(), kMaxAdmitResponseBytes);
  EXPECT_TRUE(allowOf(exact));
  EXPECT_TRUE(allowOf(exact + std::string(10000, 'x')));
  exact.insert(exact.size() - tail.size(), "b");
  EXPECT_EQ(errorOf(exact), "unexpected EOF");

  EXPECT_TRUE(allowOf(R"({"Allow":true})" + std::string(100000, ' ')));
}

// ---------------------------------------------------- checkJsonDocument --

TEST(AdmissionJsonDocument, TypeOfAWholeDocument) {
  auto type = [](std::string_view s) {
    auto r = checkJsonDocument(s);
    EXPECT_TRUE(r.ok()) << s << ": " << r.error();
    return r.ok() ? *r : JsonType::Null;
  };
  EXPECT_EQ(type(R"({"Node":{"ID":1}} )"), JsonType::Object);
  EXPECT_EQ(type(" null\n"), JsonType::Null);
  EXPECT_EQ(type("[1,2]"), JsonType::Array);
  EXPECT_EQ(type("\"s\""), JsonType::String);
  EXPECT_EQ(type("12"), JsonType::Number);
  EXPECT_EQ(type("false"), JsonType::Bool);
}

TEST(AdmissionJsonDocument, RejectsWhatUnmarshalRejects) {
  EXPECT_EQ(checkJsonDocument("").error(), "unexpected end of JSON input");
  EXPECT_EQ(checkJsonDocument("{\"a\":").error(), "unexpected end of JSON input");
  EXPECT_EQ(checkJsonDocument("{} {}").error(), "invalid character '{' after top-level value");
  EXPECT_EQ(checkJsonDocument("peer not found\n").error(), "invalid character 'p' looking for beginning of value");
  EXPECT_FALSE(checkJsonDocument(nested(65, "")).ok());
}

}  // namespace
}  // namespace derpd::admission
