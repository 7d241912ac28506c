#include "common/proto/derpmap/derpmap.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "support/vectors.hpp"

namespace derpd::derpmap {
namespace {

DerpMap mustParse(std::string_view json) {
  auto r = parse(json);
  EXPECT_TRUE(r.ok()) << json << ": " << (r.ok() ? "" : r.error());
  return r.ok() ? *r : DerpMap{};
}

// The error for `json`, which must not parse.
std::string parseError(std::string_view json) {
  auto r = parse(json);
  EXPECT_FALSE(r.ok()) << "accepted: " << json;
  return r.ok() ? "" : r.error();
}

// A map with one region 1 whose body is `region`.
std::string inRegion(const std::string& region) {
  return R"({"Regions":{"1":)" + region + "}}";
}

const Region& region(const DerpMap& m, int id) {
  static const Region kNone;
  auto it = m.regions.find(id);
  EXPECT_NE(it, m.regions.end()) << "no region " << id;
  return it == m.regions.end() ? kNone : it->second;
}

// --- The captured vectors ----------------------------------------------------

TEST(DerpMapVectors, ParseDerpmapJson) {
  const DerpMap m = mustParse(test::readVectorFile("derpmap/derpmap.json"));
  EXPECT_FALSE(m.hasHomeParams);
  EXPECT_TRUE(m.regionScore.empty());
  EXPECT_FALSE(m.omitDefaultRegions);
  ASSERT_EQ(m.regions.size(), 1u);
  const Region& r = region(m, 900);
  EXPECT_EQ(r.regionId, 900);
  EXPECT_EQ(r.regionCode, "loc");
  EXPECT_EQ(r.regionName, "Local loopback test");
  EXPECT_EQ(r.latitude, 0);
  EXPECT_FALSE(r.avoid);
  ASSERT_EQ(r.nodes.size(), 2u);

  const Node& a = r.nodes[0];
  EXPECT_EQ(a.name, "900a");
  EXPECT_EQ(a.regionId, 900);
  EXPECT_EQ(a.hostName, "localhost");
  EXPECT_EQ(a.ipv4, "127.0.0.1");
  EXPECT_EQ(a.ipv6, "");
  EXPECT_EQ(a.stunPort, 3479);
  EXPECT_EQ(a.derpPort, 8443);
  EXPECT_EQ(a.effectiveStunPort(), 3479);
  EXPECT_EQ(a.effectiveDerpPort(), 8443);
  EXPECT_FALSE(a.stunOnly);
  EXPECT_FALSE(a.canPort80);

  const Node& b = r.nodes[1];
  EXPECT_EQ(b.name, "900b");
  EXPECT_EQ(b.hostName, "localhost");
  EXPECT_EQ(b.ipv4, "127.0.0.1");
  EXPECT_EQ(b.stunPort, 3481);
  EXPECT_EQ(b.derpPort, 8444);
  EXPECT_TRUE(validateForProbe(m).ok());
}

TEST(DerpMapVectors, ParseIpv6None) {
  const DerpMap m = mustParse(test::readVectorFile("derpmap/derpmap-ipv6-none.json"));
  const Region& r = region(m, 900);
  ASSERT_EQ(r.nodes.size(), 2u);
  for (const Node& n : r.nodes) {
    EXPECT_EQ(n.ipv4, "127.0.0.1");
    EXPECT_EQ(n.ipv6, "none");
  }
  EXPECT_EQ(r.nodes[0].name, "900a");
  EXPECT_EQ(r.nodes[1].name, "900b");
}

// Go's MarshalIndent writes no trailing newline; the vector files end with
// exactly one (they were saved with one), so the comparison adds it.
TEST(DerpMapVectors, EncodeIndentedIsByteExact) {
  for (const char* file : {"derpmap/derpmap.json", "derpmap/derpmap-ipv6-none.json"}) {
    const std::string text = test::readVectorFile(file);
    ASSERT_GE(text.size(), 2u);
    ASSERT_EQ(text.back(), '\n') << file;
    ASSERT_NE(text[text.size() - 2], '\n') << file;
    const std::string enc = encodeIndented(mustParse(text));
    EXPECT_NE(enc.back(), '\n');
    EXPECT_EQ(enc + "\n", text) << file;
  }
}

// --- Parsing as Go's json.Unmarshal does --------------------------------------

TEST(DerpMapParse, KeysMatchCaseInsensitively) {
  const DerpMap m = mustParse(
      R"({"regions":{"7":{"regionid":7,"REGIONCODE":"c","nodes":[{"name":"a","ipV4":"x",)"
      R"("stunport":5,"derpPORT":6,"stunonly":true,"stuntestip":"t","canport80":true}]}},)"
      R"("OMITDEFAULTREGIONS":true,"homeparams":{"regionscore":{"1":2}}})");
  EXPECT_TRUE(m.omitDefaultRegions);
  EXPECT_TRUE(m.hasHomeParams);
  EXPECT_EQ(m.regionScore.at(1), 2);
  const Region& r = region(m, 7);
  EXPECT_EQ(r.regionId, 7);
  EXPECT_EQ(r.regionCode, "c");
  ASSERT_EQ(r.nodes.size(), 1u);
  EXPECT_EQ(r.nodes[0].name, "a");
  EXPECT_EQ(r.nodes[0].ipv4, "x");
  EXPECT_EQ(r.nodes[0].stunPort, 5);
  EXPECT_EQ(r.nodes[0].derpPort, 6);
  EXPECT_TRUE(r.nodes[0].stunOnly);
  EXPECT_EQ(r.nodes[0].stunTestIp, "t");
  EXPECT_TRUE(r.nodes[0].canPort80);
}

TEST(DerpMapParse, KeysFoldLikeGoNotJustAscii) {
  // Go folds with unicode.SimpleFold: LATIN SMALL LETTER LONG S matches 's'
  // and 'S'; KELVIN SIGN would match 'k'. Dotless i does not match 'I'.
  const DerpMap m = mustParse(
      "{\"Region\xC5\xBF\":{\"1\":{\"Nodes\":[{\"\xC5\xBFTUNPort\":9,\"\xC4\xB1Pv4\":\"x\"}]}}}");
  const Region& r = region(m, 1);
  ASSERT_EQ(r.nodes.size(), 1u);
  EXPECT_EQ(r.nodes[0].stunPort, 9);
  EXPECT_EQ(r.nodes[0].ipv4, "");
  // Escaped keys are matched after unescaping.
  EXPECT_EQ(mustParse(R"({"\u0052egions":{"3":{}}})").regions.count(3), 1u);
}

TEST(DerpMapParse, UnknownKeysAreIgnored) {
  const DerpMap m = mustParse(
      R"({"x":[1e400,{"a":[true,null,"s"]}],"Regions":{"1":{"foo":1.5,"RegionCode":"c",)"
      R"("Nodes":[{"bar":{"Name":"no"},"Name":"n"}]}},"HomeParams":{"y":-1}})");
  EXPECT_TRUE(m.hasHomeParams);
  EXPECT_TRUE(m.regionScore.empty());
  EXPECT_EQ(region(m, 1).regionCode, "c");
  ASSERT_EQ(region(m, 1).nodes.size(), 1u);
  EXPECT_EQ(region(m, 1).nodes[0].name, "n");
}

TEST(DerpMapParse, NullsDecodeAsGo) {
  EXPECT_EQ(mustParse("null"), DerpMap{});
  EXPECT_EQ(mustParse(" {} "), DerpMap{});

  const DerpMap m = mustParse(
      R"({"HomeParams":null,"Regions":{"1":null,"2":{"RegionCode":null,"Latitude":null,)"
      R"("Nodes":[null,{"Name":"x","DERPPort":null,"STUNOnly":null}]},"3":{"Nodes":null}},)"
      R"("omitDefaultRegions":null})");
  EXPECT_FALSE(m.hasHomeParams);
  EXPECT_FALSE(m.omitDefaultRegions);
  ASSERT_EQ(m.regions.size(), 3u);
  EXPECT_EQ(region(m, 1), Region{});  // a nil *DERPRegion
  const Region& r2 = region(m, 2);
  EXPECT_EQ(r2.regionCode, "");
  ASSERT_EQ(r2.nodes.size(), 2u);
  EXPECT_EQ(r2.nodes[0], Node{});  // a nil *DERPNode
  EXPECT_EQ(r2.nodes[1].name, "x");
  EXPECT_EQ(r2.nodes[1].derpPort, 0);
  EXPECT_TRUE(region(m, 3).nodes.empty());

  // null leaves a scalar as it was.
  EXPECT_EQ(region(mustParse(inRegion(R"({"RegionCode":"a","RegionCode":null})")), 1).regionCode,
            "a");
  // null as a map value stores the zero value; null for a map or pointer
  // field drops what an earlier key put there.
  const DerpMap s = mustParse(R"({"HomeParams":{"RegionScore":{"1":5,"1":null,"2":3}}})");
  EXPECT_EQ(s.regionScore, (std::map<int, double>{{1, 0}, {2, 3}}));
  EXPECT_FALSE(mustParse(R"({"HomeParams":{"RegionScore":{"1":5}},"HomeParams":null})").hasHomeParams);
  EXPECT_TRUE(mustParse(R"({"Regions":{"1":{}},"Regions":null})").regions.empty());
}

TEST(DerpMapParse, WrongTypesNameTheField) {
  struct Case {
    std::string json;
    std::string error;
  };
  const Case cases[] = {
      {R"({"Regions":{"900":{"Nodes":[{},{"DERPPort":"8443"}]}}})",
       "Regions.900.Nodes[1].DERPPort: want a number, got string"},
      {R"({"Regions":{"900":{"Nodes":[{"Name":1}]}}})", "Regions.900.Nodes[0].Name: want a string"},
      {R"({"Regions":{"900":{"Nodes":[{"STUNOnly":"true"}]}}})",
       "Regions.900.Nodes[0].STUNOnly: want a bool, got string"},
      {R"({"Regions":{"900":{"Nodes":[5]}}})", "Regions.900.Nodes[0]: want an object, got number"},
      {R"({"Regions":{"1":{"Nodes":{}}}})", "Regions.1.Nodes: want an array, got object"},
      {R"({"Regions":{"1":{"RegionCode":5}}})", "Regions.1.RegionCode: want a string, got number"},
      {R"({"Regions":{"1":{"Latitude":"1"}}})", "Regions.1.Latitude: want a number, got string"},
      {R"({"Regions":{"1":{"Avoid":[]}}})", "Regions.1.Avoid: want a bool, got array"},
      {R"({"Regions":{"1":"x"}})", "Regions.1: want an object, got string"},
      {R"({"Regions":[]})", "Regions: want an object, got array"},
      {R"({"regions":true})", "Regions: want an object, got bool"},
      {R"({"HomeParams":[]})", "HomeParams: want an object, got array"},
      {R"({"HomeParams":{"RegionScore":{"1":"x"}}})", "HomeParams.RegionScore.1: want a number"},
      {R"({"HomeParams":{"RegionScore":[]}})", "HomeParams.RegionScore: want an object"},
      {R"({"omitDefaultRegions":1})", "omitDefaultRegions: want a bool, got number"},
      {"[]", "DERP map: want an object, got array"},
      {"5", "DERP map: want an object, got number"},
      {R"("x")", "DERP map: want an object, got string"},
      {"true", "DERP map: want an object, got bool"},
      // Go reports the first type error.
      {R"({"Regions":{"1":{"RegionCode":5,"RegionName":6}}})", "Regions.1.RegionCode:"},
  };
  for (const Case& c : cases) {
    const std::string err = parseError(c.json);
    EXPECT_EQ(err.substr(0, c.error.size()), c.error) << c.json;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
}

TEST(DerpMapParse, SyntaxErrorWinsOverTypeError) {
  // json.Unmarshal validates the whole input before decoding.
  EXPECT_EQ(parseError(R"({"Regions":5,})").rfind("invalid JSON", 0), 0u);
  EXPECT_EQ(parseError(R"({"Regions":5} x)").rfind("invalid JSON", 0), 0u);
}

TEST(DerpMapParse, IntFieldsTakeOnlyIntegerLiterals) {
  // Go's strconv.ParseInt: no fraction, no exponent, no overflow.
  for (const char* v : {"1.5", "1.0", "1e2", "1E0", "-0.0", "1e400", "2147483648", "-2147483649",
                        "99999999999999999999", "-99999999999999999999"}) {
    const std::string err = parseError(inRegion(std::string(R"({"RegionID":)") + v + "}"));
    EXPECT_EQ(err.rfind("Regions.1.RegionID: ", 0), 0u) << v << ": " << err;
  }
  EXPECT_EQ(region(mustParse(inRegion(R"({"RegionID":-0})")), 1).regionId, 0);
  EXPECT_EQ(region(mustParse(inRegion(R"({"RegionID":2147483647})")), 1).regionId, 2147483647);
  EXPECT_EQ(region(mustParse(inRegion(R"({"RegionID":-2147483648})")), 1).regionId, -2147483648);
  const DerpMap m = mustParse(inRegion(R"({"Nodes":[{"STUNPort":-1,"DERPPort":0}]})"));
  EXPECT_EQ(region(m, 1).nodes[0].stunPort, -1);
}

TEST(DerpMapParse, FloatFields) {
  const DerpMap m = mustParse(
      R"({"Regions":{"1":{"Latitude":40.7128,"Longitude":-74.006},"2":{"Latitude":1e-400,)"
      R"("Longitude":12345678901234567890123},"3":{"Latitude":-0,"Longitude":1E+2}}})");
  EXPECT_EQ(region(m, 1).latitude, 40.7128);
  EXPECT_EQ(region(m, 1).longitude, -74.006);
  EXPECT_EQ(region(m, 2).latitude, 0);  // underflow is 0 in Go too
  EXPECT_EQ(region(m, 2).longitude, 12345678901234567890123.0);
  EXPECT_TRUE(std::signbit(region(m, 3).latitude));
  EXPECT_EQ(region(m, 3).longitude, 100);
  // Overflowing a float64 is an error for a float64 field.
  EXPECT_EQ(parseError(inRegion(R"({"Latitude":1e400})")), "Regions.1.Latitude: number out of range");
  EXPECT_EQ(parseError(R"({"HomeParams":{"RegionScore":{"1":-1e309}}})"),
            "HomeParams.RegionScore.1: number out of range");
}

TEST(DerpMapParse, MapKeysAreDecimalIntegers) {
  // Go parses map[int] keys with strconv.ParseInt(key, 10, 64).
  const DerpMap m = mustParse(R"({"Regions":{"-5":{},"+7":{},"007":{"RegionCode":"x"}}})");
  EXPECT_EQ(m.regions.size(), 2u);
  EXPECT_EQ(m.regions.count(-5), 1u);
  EXPECT_EQ(m.regions.count(7), 1u);
  // "007" and "+7" are the same key: the later value replaces the earlier.
  EXPECT_EQ(region(m, 7).regionCode, "x");

  for (const char* k : {"abc", "", " 1", "1 ", "1.0", "0x10", "1e3", "+", "-", "1_000", "2147483648",
                        "-2147483649", "\xEF\xBC\x91"}) {
    const std::string want = std::string("Regions: key \"") + k + "\" is not a decimal integer";
    const std::string err = parseError(std::string(R"({"Regions":{")") + k + R"(":{}}})");
    EXPECT_EQ(err.substr(0, want.size()), want) << k;
  }
  EXPECT_EQ(parseError(R"({"HomeParams":{"RegionScore":{"x":1}}})"),
            "HomeParams.RegionScore: key \"x\" is not a decimal integer (int32)");
  // A key with control characters stays on one line in the error.
  EXPECT_EQ(parseError(R"({"Regions":{"a\nb":{}}})"),
            "Regions: key \"a\\x0ab\" is not a decimal integer (int32)");
}

TEST(DerpMapParse, RepeatedKeysAsGo) {
  // A scalar: the last one wins.
  EXPECT_EQ(region(mustParse(inRegion(R"({"RegionCode":"a","regioncode":"b"})")), 1).regionCode,
            "b");
  // A repeated map key: the later value replaces the whole entry.
  const DerpMap rm =
      mustParse(R"({"Regions":{"1":{"RegionCode":"a","RegionName":"n"},"1":{"RegionCode":"b"}}})");
  const Region& r = region(rm, 1);
  EXPECT_EQ(r.regionCode, "b");
  EXPECT_EQ(r.regionName, "");
  // A repeated map or pointer field: Go decodes into what is there.
  const DerpMap m = mustParse(
      R"({"Regions":{"1":{}},"Regions":{"2":{}},)"
      R"("HomeParams":{"RegionScore":{"1":1}},"HomeParams":{"RegionScore":{"2":2}}})");
  EXPECT_EQ(m.regions.size(), 2u);
  EXPECT_EQ(m.regionScore, (std::map<int, double>{{1, 1}, {2, 2}}));
  // A repeated slice: element i decodes into the old element i, and a
  // shorter array keeps the old elements for a later longer one.
  const DerpMap nm =
      mustParse(inRegion(R"({"Nodes":[{"Name":"a","HostName":"h"},{"Name":"b"},{"Name":"c"}],)"
                         R"("Nodes":[{"Name":"x"}],"Nodes":[{"Name":"y"},{"HostName":"hz"}]})"));
  const Region& n = region(nm, 1);
  ASSERT_EQ(n.nodes.size(), 2u);
  EXPECT_EQ(n.nodes[0].name, "y");
  EXPECT_EQ(n.nodes[0].hostName, "h");
  EXPECT_EQ(n.nodes[1].name, "b");
  EXPECT_EQ(n.nodes[1].hostName, "hz");
  // ... but an empty array or null starts a new slice.
  for (const char* reset : {"[]", "null"}) {
    const DerpMap em = mustParse(inRegion(std::string(R"({"Nodes":[{"Name":"a"}],"Nodes":)") +
                                          reset + R"(,"Nodes":[{"HostName":"h"}]})"));
    const Region& e = region(em, 1);
    ASSERT_EQ(e.nodes.size(), 1u);
    EXPECT_EQ(e.nodes[0].name, "");
    EXPECT_EQ(e.nodes[0].hostName, "h");
  }
}

TEST(DerpMapParse, StringsAsGo) {
  const DerpMap m = mustParse(
      "{\"Regions\":{\"1\":{\"RegionName\":\"a\xFF" "b\xE2\x82\",\"RegionCode\":"
      "\"\\ud800|\\ud83d\\ude00|\\udc00\\ud800x|\\u00e9\\/\"}}}");
  EXPECT_EQ(region(m, 1).regionName, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(region(m, 1).regionCode,
            "\xEF\xBF\xBD|\xF0\x9F\x98\x80|\xEF\xBF\xBD\xEF\xBF\xBDx|\xC3\xA9/");
  // Go rejects what nlohmann would let through.
  EXPECT_EQ(parseError("\xEF\xBB\xBF{}").rfind("invalid JSON", 0), 0u);
  EXPECT_EQ(parseError(std::string("{}\0", 3)).rfind("invalid JSON", 0), 0u);
  EXPECT_EQ(parseError(std::string("{\"x\":\"a\0\"}", 10)).rfind("invalid JSON", 0), 0u);
  EXPECT_EQ(parseError("{\"x\":\"a\tb\"}").rfind("invalid JSON", 0), 0u);
}

TEST(DerpMapParse, TrailingBytes) {
  mustParse("{} \t\r\n");
  for (const char* bad : {"{} x", "{}{}", "{},", "{}]", "{} //", "{}\x01", "", "   ", "{"}) {
    EXPECT_EQ(parseError(bad).rfind("invalid JSON", 0), 0u) << bad;
  }
}

TEST(DerpMapParse, NestingIsBounded) {
  // The top-level object is one level; an unknown member nests the rest.
  auto nested = [](int depth) {
    return R"({"x":)" + std::string(size_t(depth - 1), '[') + std::string(size_t(depth - 1), ']') +
           "}";
  };
  mustParse(nested(kMaxDepth));
  EXPECT_NE(parseError(nested(kMaxDepth + 1)).find("nesting"), std::string::npos);
  EXPECT_NE(parseError(std::string(100000, '[')).find("nesting"), std::string::npos);
}

TEST(DerpMapParse, SizeIsBounded) {
  const std::string body = R"({"Regions":{"1":{}}})";
  std::string atLimit = body + std::string(kMaxMapBytes - body.size(), ' ');
  EXPECT_EQ(mustParse(atLimit).regions.size(), 1u);
  atLimit += ' ';
  EXPECT_NE(parseError(atLimit).find("too large"), std::string::npos);
}

// --- Encoding as Go's json.MarshalIndent(m, "", "  ") -------------------------

TEST(DerpMapEncode, EmptyMap) {
  EXPECT_EQ(encodeIndented(DerpMap{}), "{\n  \"Regions\": null\n}");
  DerpMap m;
  m.hasHomeParams = true;
  m.omitDefaultRegions = true;
  m.regions[5];
  EXPECT_EQ(encodeIndented(m),
            "{\n"
            "  \"HomeParams\": {},\n"
            "  \"Regions\": {\n"
            "    \"5\": {\n"
            "      \"RegionID\": 0,\n"
            "      \"RegionCode\": \"\",\n"
            "      \"RegionName\": \"\",\n"
            "      \"Nodes\": null\n"
            "    }\n"
            "  },\n"
            "  \"omitDefaultRegions\": true\n"
            "}");
}

TEST(DerpMapEncode, AllFieldsInStructOrder) {
  const std::string text =
      "{\n"
      "  \"Regions\": {\n"
      "    \"900\": {\n"
      "      \"RegionID\": 900,\n"
      "      \"RegionCode\": \"c\",\n"
      "      \"RegionName\": \"n\",\n"
      "      \"Latitude\": 1.5,\n"
      "      \"Longitude\": -2,\n"
      "      \"Avoid\": true,\n"
      "      \"Nodes\": [\n"
      "        {\n"
      "          \"Name\": \"n\",\n"
      "          \"RegionID\": 900,\n"
      "          \"HostName\": \"h\",\n"
      "          \"CertName\": \"c\",\n"
      "          \"IPv4\": \"1.2.3.4\",\n"
      "          \"IPv6\": \"::1\",\n"
      "          \"STUNPort\": -1,\n"
      "          \"STUNOnly\": true,\n"
      "          \"DERPPort\": 1,\n"
      "          \"InsecureForTests\": true,\n"
      "          \"STUNTestIP\": \"t\",\n"
      "          \"CanPort80\": true\n"
      "        },\n"
      "        {\n"
      "          \"Name\": \"\",\n"
      "          \"RegionID\": 0,\n"
      "          \"HostName\": \"\"\n"
      "        }\n"
      "      ]\n"
      "    }\n"
      "  }\n"
      "}";
  const DerpMap m = mustParse(text);
  EXPECT_EQ(region(m, 900).nodes.size(), 2u);
  EXPECT_EQ(encodeIndented(m), text);
}

TEST(DerpMapEncode, HomeParamsRoundTrip) {
  const DerpMap m = mustParse(
      R"({"HomeParams":{"RegionScore":{"10":0.5,"9":1e21,"-1":1e-7,"100":100,"2":-0,)"
      R"("3":123456789012345678,"4":0.000001,"5":5e-324,"6":1.7976931348623157e308,)"
      R"("7":1152921504606846976,"8":-1e-10}}})");
  EXPECT_TRUE(m.hasHomeParams);
  EXPECT_EQ(m.regionScore.size(), 11u);
  // Go sorts integer map keys as strings; floats as ES6 does.
  const std::string want =
      "{\n"
      "  \"HomeParams\": {\n"
      "    \"RegionScore\": {\n"
      "      \"-1\": 1e-7,\n"
      "      \"10\": 0.5,\n"
      "      \"100\": 100,\n"
      "      \"2\": -0,\n"
      "      \"3\": 123456789012345680,\n"
      "      \"4\": 0.000001,\n"
      "      \"5\": 5e-324,\n"
      "      \"6\": 1.7976931348623157e+308,\n"
      "      \"7\": 1152921504606847000,\n"
      "      \"8\": -1e-10,\n"
      "      \"9\": 1e+21\n"
      "    }\n"
      "  },\n"
      "  \"Regions\": null\n"
      "}";
  const std::string enc = encodeIndented(m);
  EXPECT_EQ(enc, want);
  EXPECT_EQ(mustParse(enc), m);
}

TEST(DerpMapEncode, RegionsSortAsStrings) {
  const DerpMap m = mustParse(R"({"Regions":{"9":{},"10":{},"-3":{},"100":{}}})");
  const std::string enc = encodeIndented(m);
  const size_t a = enc.find("\"-3\""), b = enc.find("\"10\""), c = enc.find("\"100\""),
               d = enc.find("\"9\"");
  EXPECT_TRUE(a < b && b < c && c < d) << enc;
}

TEST(DerpMapEncode, OmitDefaultRegions) {
  DerpMap m = mustParse(R"({"omitDefaultRegions":true})");
  EXPECT_TRUE(m.omitDefaultRegions);
  EXPECT_EQ(encodeIndented(m), "{\n  \"Regions\": null,\n  \"omitDefaultRegions\": true\n}");
  m.omitDefaultRegions = false;
  EXPECT_EQ(encodeIndented(m), "{\n  \"Regions\": null\n}");
}

TEST(DerpMapEncode, StringsEscapeAsGo) {
  DerpMap m;
  Region& r = m.regions[1];
  r.regionName = "<a&b> \xC3\xA9 \"\\ \t\b\f\x01\x7f \xE2\x80\xA8 \xFF";
  const std::string enc = encodeIndented(m);
  EXPECT_NE(enc.find(R"("RegionName": "\u003ca\u0026b\u003e )" "\xC3\xA9" R"( \"\\ \t\b\f\u0001)" "\x7f"
                     R"( \u2028 \ufffd",)"),
            std::string::npos)
      << enc;
  // What parses back is the same apart from the invalid byte.
  r.regionName.back() = '!';
  EXPECT_EQ(mustParse(encodeIndented(m)), m);
}

TEST(DerpMapEncode, FloatsAsGo) {
  struct Case {
    double v;
    const char* go;
  };
  const Case cases[] = {
      {0.1, "0.1"},          {1e20, "100000000000000000000"}, {1e21, "1e+21"},
      {1e-6, "0.000001"},    {std::nextafter(1e-6, 0.0), "9.999999999999997e-7"},
      {std::nextafter(1e21, 0.0), "999999999999999900000"},
      {1.5e-7, "1.5e-7"},    {-12.5, "-12.5"},                {40.7128, "40.7128"},
      {1e-10, "1e-10"},      {123456.789, "123456.789"},      {-74.006, "-74.006"},
  };
  for (const Case& c : cases) {
    DerpMap m;
    m.regions[1].latitude = c.v;
    const std::string enc = encodeIndented(m);
    EXPECT_NE(enc.find(std::string("\"Latitude\": ") + c.go + ",\n"), std::string::npos)
        << c.go << "\n" << enc;
    EXPECT_EQ(mustParse(enc), m);
  }
}

// --- What the prober needs ----------------------------------------------------

TEST(DerpMapProbe, NodeNamesMustBeUnique) {
  EXPECT_TRUE(validateForProbe(DerpMap{}).ok());
  DerpMap m = mustParse(
      R"({"Regions":{"900":{"Nodes":[{"Name":"900a"},{"Name":"900b"}]},)"
      R"("901":{"Nodes":[{"Name":"901a"}]}}})");
  EXPECT_TRUE(validateForProbe(m).ok());

  m.regions[901].nodes[0].name = "900a";
  auto r = validateForProbe(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "duplicate node name \"900a\" in regions 900 and 901");

  m.regions[901].nodes[0].name = "901a";
  m.regions[900].nodes[1].name = "900a";
  r = validateForProbe(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "duplicate node name \"900a\" in region 900");

  // Names are quoted as JSON, so the error stays on one line.
  m.regions[900].nodes[0].name = m.regions[900].nodes[1].name = "a\nb";
  r = validateForProbe(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "duplicate node name \"a\\nb\" in region 900");
}

TEST(DerpMapProbe, EffectivePorts) {
  Node n;
  EXPECT_EQ(n.effectiveStunPort(), 3478);
  EXPECT_EQ(n.effectiveDerpPort(), 443);
  n.stunPort = 3479;
  n.derpPort = 8443;
  EXPECT_EQ(n.effectiveStunPort(), 3479);
  EXPECT_EQ(n.effectiveDerpPort(), 8443);
  for (int off : {-1, -2, -65535, 65536}) {
    n.stunPort = off;
    EXPECT_FALSE(n.effectiveStunPort().has_value()) << off;
  }
  n.stunPort = 65535;
  EXPECT_EQ(n.effectiveStunPort(), 65535);
}

}  // namespace
}  // namespace derpd::derpmap
