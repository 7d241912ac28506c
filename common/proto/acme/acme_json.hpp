// ACME (RFC 8555) JSON documents: parsers for what the CA sends (untrusted:
// pure functions, no I/O, fuzzed) and serializers for the request payloads.
// Included by cert-agent and tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::acme {

// Limits on any document from the CA (bodies are capped before parsing too).
inline constexpr size_t kMaxJsonBytes = 64 * 1024;
inline constexpr int kMaxJsonDepth = 32;

// Fields the parsers read. Unknown members are ignored; a JSON null counts as
// an absent member; a present member of the wrong type is an error.

// RFC 8555 §7.1.1. newNonce, newAccount and newOrder are required.
struct Directory {
  std::string newNonce;
  std::string newAccount;
  std::string newOrder;
  std::string revokeCert;  // optional
  std::string keyChange;   // optional
  std::string termsOfService;            // meta.termsOfService, optional
  bool externalAccountRequired = false;  // meta.externalAccountRequired
};

// RFC 8555 §7.1.3 "identifiers" / §7.1.4 "identifier": type and value required.
struct Identifier {
  std::string type;   // "dns" or "ip" (RFC 8738); others are kept as sent
  std::string value;
};

// RFC 7807 problem document as RFC 8555 §6.7 uses it. Every member optional
// ("type" defaults to "about:blank").
struct Problem {
  std::string type = "about:blank";
  std::string detail;
  int status = 0;  // HTTP status the CA put in the document, 0 when absent
  // §6.7.1: each subproblem as "<identifier value>: <type>: <detail>"
  // (parts that are absent left out).
  std::vector<std::string> subproblems;

  // "<type>: <detail>[; <subproblem>…]" — for error messages and logs:
  // control characters become spaces, cut after 1024 bytes.
  std::string toString() const;
};

// RFC 8555 §7.1.3. status, identifiers, authorizations and finalize are
// required; expires, certificate and error are optional.
struct Order {
  std::string status;  // pending | ready | processing | valid | invalid
  std::string expires;
  std::vector<Identifier> identifiers;
  std::vector<std::string> authorizations;
  std::string finalize;
  std::string certificate;
  std::optional<Problem> error;
};

// RFC 8555 §8: type, url and status are required; token and error optional.
struct ChallengeInfo {
  std::string type;
  std::string url;
  std::string status;  // pending | processing | valid | invalid
  std::string token;
  std::optional<Problem> error;
};

// RFC 8555 §7.1.4. status, identifier and challenges are required.
struct Authorization {
  std::string status;  // pending | valid | invalid | deactivated | expired | revoked
  std::string expires;
  Identifier identifier;
  bool wildcard = false;
  std::vector<ChallengeInfo> challenges;
};

// Each parser: a JSON object of at most kMaxJsonBytes, nested at most
// kMaxJsonDepth deep; anything else (not JSON, trailing data, wrong types,
// missing required members) is an error. Never throws.
Result<Directory> parseDirectory(std::string_view json);
Result<Order> parseOrder(std::string_view json);
Result<Authorization> parseAuthorization(std::string_view json);
Result<Problem> parseProblem(std::string_view json);

// A JSON string literal (quoted, escaped) for `s`.
std::string jsonString(std::string_view s);

// newAccount (§7.3): {"termsOfServiceAgreed":true[,"contact":["mailto:…"]]
// [,"externalAccountBinding":<eabJws>]}. `eabJws` is a complete JSON object
// (crypto::makeEabJws) or empty.
std::string newAccountPayload(const std::vector<std::string>& contacts, const std::string& eabJws);
// newOrder (§7.4): {"identifiers":[{"type":…,"value":…},…]}.
std::string newOrderPayload(const std::vector<Identifier>& identifiers);
// finalize (§7.4): {"csr":"<base64url DER>"}.
std::string finalizePayload(std::string_view csrB64url);

}  // namespace derpd::acme
