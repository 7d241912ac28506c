// ACME JSON parsers: the RFC 8555 examples, then everything a hostile or
// broken CA could send instead.
#include "common/proto/acme/acme_json.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace derpd::acme {
namespace {

// RFC 8555 §7.1.1.
constexpr char kDirectory[] = R"({
  "newNonce": "https://example.com/acme/new-nonce",
  "newAccount": "https://example.com/acme/new-account",
  "newOrder": "https://example.com/acme/new-order",
  "newAuthz": "https://example.com/acme/new-authz",
  "revokeCert": "https://example.com/acme/revoke-cert",
  "keyChange": "https://example.com/acme/key-change",
  "meta": {
    "termsOfService": "https://example.com/acme/terms/2017-5-30",
    "website": "https://www.example.com/",
    "caaIdentities": ["example.com"],
    "externalAccountRequired": false
  }
})";

// RFC 8555 §7.1.3.
constexpr char kOrder[] = R"({
  "status": "valid",
  "expires": "2016-01-20T14:09:07.99Z",
  "identifiers": [
    { "type": "dns", "value": "www.example.org" },
    { "type": "dns", "value": "example.org" }
  ],
  "notBefore": "2016-01-01T00:00:00Z",
  "notAfter": "2016-01-08T00:00:00Z",
  "authorizations": [
    "https://example.com/acme/authz/PAniVnsZcis",
    "https://example.com/acme/authz/r4HqLzrSrpI"
  ],
  "finalize": "https://example.com/acme/order/TOlocE8rfgo/finalize",
  "certificate": "https://example.com/acme/cert/mAt3xBGaobw"
})";

// RFC 8555 §7.1.4 (with the challenge list of §7.5).
constexpr char kAuthz[] = R"({
  "status": "valid",
  "expires": "2015-03-01T14:09:07.99Z",
  "identifier": { "type": "dns", "value": "www.example.org" },
  "challenges": [
    {
      "url": "https://example.com/acme/chall/prV_B7yEyA4",
      "type": "http-01",
      "status": "valid",
      "token": "DGyRejmCefe7v4NfDGDKfA",
      "validated": "2014-12-01T12:05:58.16Z"
    },
    {
      "type": "tls-alpn-01",
      "url": "https://example.com/acme/chall/Rg5dV14Gh1Q",
      "status": "pending",
      "token": "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    }
  ],
  "wildcard": false
})";

// RFC 8555 §6.7.1.
constexpr char kProblem[] = R"({
  "type": "urn:ietf:params:acme:error:malformed",
  "detail": "Some of the identifiers requested were rejected",
  "subproblems": [
    {
      "type": "urn:ietf:params:acme:error:malformed",
      "detail": "Invalid underscore in DNS name \"_example.org\"",
      "identifier": { "type": "dns", "value": "_example.org" }
    },
    {
      "type": "urn:ietf:params:acme:error:rejectedIdentifier",
      "detail": "This CA will not issue for \"example.net\"",
      "identifier": { "type": "dns", "value": "example.net" }
    }
  ]
})";

// The example with one member replaced (or removed when `value` is null).
std::string with(const char* doc, const std::string& pointer, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(doc);
  auto ptr = nlohmann::json::json_pointer(pointer);
  if (value.is_null() && pointer.find('/', 1) == std::string::npos) {
    j.erase(pointer.substr(1));
  } else if (value.is_null()) {
    j[ptr.parent_pointer()].erase(ptr.back());
  } else {
    j[ptr] = value;
  }
  return j.dump();
}

TEST(AcmeJson, Rfc8555Directory) {
  auto d = parseDirectory(kDirectory);
  ASSERT_TRUE(d.ok()) << d.error();
  EXPECT_EQ(d->newNonce, "https://example.com/acme/new-nonce");
  EXPECT_EQ(d->newAccount, "https://example.com/acme/new-account");
  EXPECT_EQ(d->newOrder, "https://example.com/acme/new-order");
  EXPECT_EQ(d->revokeCert, "https://example.com/acme/revoke-cert");
  EXPECT_EQ(d->keyChange, "https://example.com/acme/key-change");
  EXPECT_EQ(d->termsOfService, "https://example.com/acme/terms/2017-5-30");
  EXPECT_FALSE(d->externalAccountRequired);

  auto eab = parseDirectory(with(kDirectory, "/meta/externalAccountRequired", true));
  ASSERT_TRUE(eab.ok()) << eab.error();
  EXPECT_TRUE(eab->externalAccountRequired);

  auto bare = parseDirectory(R"({"newNonce":"a","newAccount":"b","newOrder":"c"})");
  ASSERT_TRUE(bare.ok()) << bare.error();
  EXPECT_EQ(bare->revokeCert, "");
  EXPECT_EQ(bare->termsOfService, "");
}

TEST(AcmeJson, Rfc8555Order) {
  auto o = parseOrder(kOrder);
  ASSERT_TRUE(o.ok()) << o.error();
  EXPECT_EQ(o->status, "valid");
  EXPECT_EQ(o->expires, "2016-01-20T14:09:07.99Z");
  ASSERT_EQ(o->identifiers.size(), 2u);
  EXPECT_EQ(o->identifiers[0].type, "dns");
  EXPECT_EQ(o->identifiers[0].value, "www.example.org");
  EXPECT_EQ(o->identifiers[1].value, "example.org");
  ASSERT_EQ(o->authorizations.size(), 2u);
  EXPECT_EQ(o->authorizations[1], "https://example.com/acme/authz/r4HqLzrSrpI");
  EXPECT_EQ(o->finalize, "https://example.com/acme/order/TOlocE8rfgo/finalize");
  EXPECT_EQ(o->certificate, "https://example.com/acme/cert/mAt3xBGaobw");
  EXPECT_FALSE(o->error.has_value());

  auto invalid = parseOrder(with(kOrder, "/error", nlohmann::json::parse(kProblem)));
  ASSERT_TRUE(invalid.ok()) << invalid.error();
  ASSERT_TRUE(invalid->error.has_value());
  EXPECT_EQ(invalid->error->type, "urn:ietf:params:acme:error:malformed");

  auto pending = parseOrder(with(kOrder, "/certificate", nullptr));
  ASSERT_TRUE(pending.ok()) << pending.error();
  EXPECT_EQ(pending->certificate, "");
}

TEST(AcmeJson, Rfc8555Authorization) {
  auto a = parseAuthorization(kAuthz);
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(a->status, "valid");
  EXPECT_EQ(a->identifier.type, "dns");
  EXPECT_EQ(a->identifier.value, "www.example.org");
  EXPECT_FALSE(a->wildcard);
  ASSERT_EQ(a->challenges.size(), 2u);
  EXPECT_EQ(a->challenges[0].type, "http-01");
  EXPECT_EQ(a->challenges[0].url, "https://example.com/acme/chall/prV_B7yEyA4");
  EXPECT_EQ(a->challenges[0].status, "valid");
  EXPECT_EQ(a->challenges[0].token, "DGyRejmCefe7v4NfDGDKfA");
  EXPECT_EQ(a->challenges[1].type, "tls-alpn-01");
  EXPECT_EQ(a->challenges[1].status, "pending");

  auto failed = parseAuthorization(with(kAuthz, "/challenges/0/error",
                                        nlohmann::json::parse(R"({"type":"urn:ietf:params:acme:error:connection",
                                                                  "detail":"refused","status":400})")));
  ASSERT_TRUE(failed.ok()) << failed.error();
  ASSERT_TRUE(failed->challenges[0].error.has_value());
  EXPECT_EQ(failed->challenges[0].error->status, 400);
  EXPECT_EQ(failed->challenges[0].error->toString(), "urn:ietf:params:acme:error:connection: refused");

  // RFC 8738 IP identifier, wildcard flag.
  auto ip = parseAuthorization(with(with(kAuthz, "/identifier", {{"type", "ip"}, {"value", "192.0.2.1"}}).c_str(),
                                    "/wildcard", true));
  ASSERT_TRUE(ip.ok()) << ip.error();
  EXPECT_EQ(ip->identifier.type, "ip");
  EXPECT_TRUE(ip->wildcard);
}

TEST(AcmeJson, Rfc8555ProblemWithSubproblems) {
  auto p = parseProblem(kProblem);
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->type, "urn:ietf:params:acme:error:malformed");
  EXPECT_EQ(p->detail, "Some of the identifiers requested were rejected");
  ASSERT_EQ(p->subproblems.size(), 2u);
  EXPECT_EQ(p->subproblems[0],
            "_example.org: urn:ietf:params:acme:error:malformed: Invalid underscore in DNS name \"_example.org\"");
  EXPECT_EQ(p->toString(),
            "urn:ietf:params:acme:error:malformed: Some of the identifiers requested were rejected; " +
                p->subproblems[0] + "; " + p->subproblems[1]);

  auto plain = parseProblem(R"({"type":"urn:ietf:params:acme:error:badNonce","detail":"x","status":400})");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->status, 400);
  auto nasty = parseProblem(R"({"type":"t","detail":"line1\nINFO fake log line\u0007)" + std::string(5000, 'x') + "\"}");
  ASSERT_TRUE(nasty.ok()) << nasty.error();
  EXPECT_EQ(nasty->toString().find_first_of("\n\a"), std::string::npos);
  EXPECT_EQ(nasty->toString().rfind("t: line1 INFO fake log line ", 0), 0u);
  EXPECT_LE(nasty->toString().size(), 1030u);
  auto empty = parseProblem("{}");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->type, "about:blank");
}

TEST(AcmeJson, NullMeansAbsent) {
  auto o = parseOrder(with(kOrder, "/certificate", "x").replace(0, 1, "{\"error\":null,"));
  ASSERT_TRUE(o.ok()) << o.error();
  EXPECT_FALSE(o->error.has_value());
  // ...but not for a required member.
  auto j = nlohmann::json::parse(kOrder);
  j["finalize"] = nullptr;
  EXPECT_FALSE(parseOrder(j.dump()).ok());
}

TEST(AcmeJson, WrongTypesAreErrors) {
  const std::pair<const char*, nlohmann::json> kDirCases[] = {
      {"/newNonce", 5}, {"/newAccount", true}, {"/newOrder", {1, 2}}, {"/revokeCert", 1.5},
      {"/meta", "x"},   {"/meta/termsOfService", 3}, {"/meta/externalAccountRequired", "true"},
      {"/meta/externalAccountRequired", 1},
  };
  for (const auto& [ptr, v] : kDirCases) {
    auto r = parseDirectory(with(kDirectory, ptr, v));
    EXPECT_FALSE(r.ok()) << ptr;
  }
  const std::pair<const char*, nlohmann::json> kOrderCases[] = {
      {"/status", 1},
      {"/identifiers", "dns"},
      {"/identifiers/0", "www.example.org"},
      {"/identifiers/0/value", 7},
      {"/authorizations", "https://x"},
      {"/authorizations/0", {{"url", "x"}}},
      {"/finalize", false},
      {"/certificate", {"x"}},
      {"/error", "failed"},
      {"/error/status", "400"},
      {"/error/status", true},
      {"/error/status", 1e30},
      {"/error/subproblems", {{"type", "x"}}},
      {"/expires", 0},
  };
  for (const auto& [ptr, v] : kOrderCases) {
    auto r = parseOrder(with(kOrder, ptr, v));
    EXPECT_FALSE(r.ok()) << ptr;
  }
  const std::pair<const char*, nlohmann::json> kAuthzCases[] = {
      {"/identifier", "www.example.org"}, {"/identifier/type", 1}, {"/challenges", {{"a", 1}}},
      {"/challenges/0", 1},               {"/challenges/0/token", 5}, {"/challenges/1/url", {}},
      {"/wildcard", "false"},             {"/status", {{"s", 1}}},
  };
  for (const auto& [ptr, v] : kAuthzCases) {
    auto r = parseAuthorization(with(kAuthz, ptr, v));
    EXPECT_FALSE(r.ok()) << ptr;
  }
  EXPECT_FALSE(parseProblem(R"({"type":5})").ok());
  EXPECT_FALSE(parseProblem(R"({"detail":["a"]})").ok());
  EXPECT_FALSE(parseProblem(R"({"status":-1})").ok());
  EXPECT_FALSE(parseProblem(R"({"subproblems":[{"identifier":{"type":"dns"}}]})").ok());
}

TEST(AcmeJson, MissingRequiredMembersAreErrors) {
  for (const char* m : {"/newNonce", "/newAccount", "/newOrder"}) {
    auto r = parseDirectory(with(kDirectory, m, nullptr));
    ASSERT_FALSE(r.ok()) << m;
    EXPECT_NE(r.error().find("missing"), std::string::npos) << r.error();
  }
  for (const char* m : {"/status", "/identifiers", "/authorizations", "/finalize", "/identifiers/0/type"}) {
    EXPECT_FALSE(parseOrder(with(kOrder, m, nullptr)).ok()) << m;
  }
  for (const char* m : {"/status", "/identifier", "/challenges", "/challenges/0/url", "/challenges/1/type",
                        "/challenges/1/status", "/identifier/value"}) {
    EXPECT_FALSE(parseAuthorization(with(kAuthz, m, nullptr)).ok()) << m;
  }
  // Optional members may go.
  for (const char* m : {"/expires", "/certificate"}) {
    EXPECT_TRUE(parseOrder(with(kOrder, m, nullptr)).ok()) << m;
  }
  EXPECT_TRUE(parseAuthorization(with(kAuthz, "/challenges/0/token", nullptr)).ok());
}

TEST(AcmeJson, NotJsonOrNotAnObject) {
  for (const char* bad : {"", " ", "null", "[]", "[{}]", "\"str\"", "42", "true", "{", "{\"a\":}", "{\"a\" 1}",
                          "{}{}", "{} x", "{'a':1}", "<html>500</html>", "{\"a\":1,}", "{/*c*/}",
                          "{\"newNonce\":\"a\\u0000b\",\"newAccount\":\"b\",\"newOrder\":\"c\"}"}) {
    EXPECT_FALSE(parseDirectory(bad).ok()) << bad;
    EXPECT_FALSE(parseOrder(bad).ok()) << bad;
    EXPECT_FALSE(parseAuthorization(bad).ok()) << bad;
  }
  EXPECT_FALSE(parseProblem("[]").ok());
  EXPECT_FALSE(parseProblem("nope").ok());
  EXPECT_FALSE(parseDirectory(std::string_view("{\"a\":1}\0", 8)).ok());
}

TEST(AcmeJson, OversizedIsAnError) {
  // A valid directory padded past 64 KiB with an ignored member.
  auto j = nlohmann::json::parse(kDirectory);
  j["padding"] = std::string(kMaxJsonBytes, 'x');
  auto r = parseDirectory(j.dump());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("larger"), std::string::npos) << r.error();
  // Just under the limit is fine.
  j["padding"] = std::string(kMaxJsonBytes - std::string(kDirectory).size() - 64, 'x');
  EXPECT_TRUE(parseDirectory(j.dump()).ok());
}

TEST(AcmeJson, DeepNestingIsAnError) {
  auto nest = [](int depth) {
    std::string s = "{\"newNonce\":\"a\",\"newAccount\":\"b\",\"newOrder\":\"c\",\"x\":";
    for (int i = 1; i < depth; ++i) s += (i % 2) ? "[" : "{\"k\":";
    s += "1";
    for (int i = depth - 1; i >= 1; --i) s += (i % 2) ? "]" : "}";
    return s + "}";
  };
  EXPECT_TRUE(parseDirectory(nest(kMaxJsonDepth)).ok());
  auto r = parseDirectory(nest(kMaxJsonDepth + 1));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("deeper"), std::string::npos) << r.error();
  // Far deeper than any stack could take, unbalanced, and inside strings.
  EXPECT_FALSE(parseDirectory(std::string(1000000 / 16, '[')).ok());
  EXPECT_FALSE(parseOrder(std::string(60000, '{')).ok());
  std::string brackets = "{\"newNonce\":\"" + std::string(1000, '[') + "\",\"newAccount\":\"b\",\"newOrder\":\"c\"}";
  EXPECT_TRUE(parseDirectory(brackets).ok());
}

TEST(AcmeJson, UnicodeAndEscapes) {
  auto d = parseDirectory(R"({"newNonce":"https://x/\u00e9\"","newAccount":"b","newOrder":"c"})");
  ASSERT_TRUE(d.ok()) << d.error();
  EXPECT_EQ(d->newNonce, "https://x/\xc3\xa9\"");
}

TEST(AcmeJson, PayloadsAreValidJson) {
  auto acct = nlohmann::json::parse(newAccountPayload({"mailto:a\"b@example.org"}, R"({"protected":"p","payload":"q","signature":"s"})"));
  EXPECT_EQ(acct["termsOfServiceAgreed"], true);
  EXPECT_EQ(acct["contact"][0], "mailto:a\"b@example.org");
  EXPECT_EQ(acct["externalAccountBinding"]["payload"], "q");
  EXPECT_EQ(newAccountPayload({}, ""), R"({"termsOfServiceAgreed":true})");

  auto order = nlohmann::json::parse(newOrderPayload({{"dns", "relay.example.org"}, {"ip", "192.0.2.7"}}));
  EXPECT_EQ(order, nlohmann::json::parse(R"({"identifiers":[{"type":"dns","value":"relay.example.org"},
                                                            {"type":"ip","value":"192.0.2.7"}]})"));
  EXPECT_EQ(finalizePayload("MIIB-_x"), R"({"csr":"MIIB-_x"})");
  EXPECT_EQ(nlohmann::json::parse(jsonString("a\n\\\x01z")), "a\n\\\x01z");
}

}  // namespace
}  // namespace derpd::acme
