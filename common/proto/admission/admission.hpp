// Client admission wire formats (PROTOCOL.md §5.9): the body derper POSTs to
// -verify-client-url (tailcfg.DERPAdmitClientRequest) and the answer it
// decodes (tailcfg.DERPAdmitClientResponse). The answer is untrusted bytes
// from the network: parsing is bounded and fuzzed.
// Included by mesh-helper, tests and the fuzzer.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/crypto/keys.hpp"
#include "common/util/result.hpp"

namespace derpd::admission {

// derper reads at most this much of the admission controller's body.
inline constexpr size_t kMaxAdmitResponseBytes = 4 << 10;

// Byte-exact as Go's json.Marshal of DERPAdmitClientRequest:
//   {"NodePublic":"nodekey:<64 hex>","Source":"<ip>"}
// `sourceIp` is the client's address as text ("192.0.2.1", "2001:db8::1").
std::string encodeAdmitRequest(const crypto::NodePublic& node, std::string_view sourceIp);

// The Allow field of the answer, with Go's json.Decoder semantics as derper
// uses them: only the first `kMaxAdmitResponseBytes` are looked at; the first
// JSON value must be complete there; bytes after it are ignored; object keys
// match "Allow" case-insensitively (the last match wins); unknown keys are
// ignored; a JSON null (top level or as Allow) means false (as Allow, Go
// leaves the field as it was: false unless an earlier key set it); any other
// type for the top level or for Allow is an error. Nesting deeper than 64
// levels is an error (bounded recursion). Key matching is goJsonNameMatches
// (ASCII case folding plus Go's two non-ASCII folds), which for "Allow" is
// exactly Go's rule. Error texts follow Go's ("unexpected EOF", ...).
Result<bool> parseAdmitResponse(std::string_view body);

// parseAdmitResponse's errors when the body ends before its first value
// does (Go's io.EOF and io.ErrUnexpectedEOF): more bytes could still help.
inline constexpr std::string_view kErrEmpty = "EOF";
inline constexpr std::string_view kErrTruncated = "unexpected EOF";

// The type of a whole JSON document, for checkJsonDocument.
enum class JsonType { Null, Bool, Number, String, Array, Object };

// The type of `text` when it is exactly one valid JSON value (white space
// around it allowed), as Go's json.Unmarshal checks a document before it
// decodes it; the same syntax rules and nesting bound as parseAdmitResponse.
// mesh-helper uses it on the LocalAPI's WhoIs answer.
Result<JsonType> checkJsonDocument(std::string_view text);

}  // namespace derpd::admission
