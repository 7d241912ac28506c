// Client verification verdicts, in derper's order and words
// (derpserver.verifyClient, tailscale.LocalClient.WhoIsNodeKey). The HTTP
// exchanges themselves live in verifier_localapi.cpp and verifier_url.cpp.
#include "verifier.hpp"

#include "common/proto/admission/admission.hpp"
#include "verifier_internal.hpp"

namespace derpd::mesh {

namespace {

// Bounded, single-line excerpt of a body for a log line.
constexpr size_t kBodyExcerpt = 200;

bool isAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Go's bytes.TrimSpace (ASCII white space is what tailscaled sends), then
// cut to kBodyExcerpt bytes with control characters blanked.
std::string trimmedExcerpt(std::string_view body) {
  while (!body.empty() && isAsciiSpace(body.front())) body.remove_prefix(1);
  while (!body.empty() && isAsciiSpace(body.back())) body.remove_suffix(1);
  std::string out(body.substr(0, kBodyExcerpt));
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  if (body.size() > kBodyExcerpt) out += "...";
  return out;
}

// url.QueryEscape of "nodekey:<hex>": only the colon needs escaping.
std::string whoisTarget(const crypto::NodePublic& node) {
  return "/localapi/v0/whois?addr=nodekey%3A" + node.toHex();
}

// Go's UnmarshalTypeError words for the JSON side.
std::string jsonTypeWord(admission::JsonType t) {
  switch (t) {
    case admission::JsonType::Bool: return "bool";
    case admission::JsonType::Number: return "number";
    case admission::JsonType::String: return "string";
    case admission::JsonType::Array: return "array";
    default: return "object";
  }
}

Verdict deny(std::string reason) { return Verdict{false, std::move(reason)}; }

}  // namespace

Verifier::Verifier(VerifierOptions opts) : opts_(std::move(opts)) {
  if (!opts_.url.empty()) url_ = detail::UrlClient::make(opts_.url, opts_.caFile);
}

Verdict Verifier::check(const crypto::NodePublic& node, const std::string& sourceIp) const {
  if (opts_.localApi) {
    Verdict v = checkLocalApi(node);
    if (!v.allow) return v;
  }
  if (!opts_.url.empty()) return checkUrl(node, sourceIp);
  return Verdict{true, ""};
}

// WhoIsNodeKey: 200 with a body Go can unmarshal into *WhoIsResponse, 404
// is ErrPeerNotFound, anything else an error. None of it is fail-open.
Verdict Verifier::checkLocalApi(const crypto::NodePublic& node) const {
  const std::string key = node.toText();
  const std::string failed = "failed to query local tailscaled status for " + key + ": ";
  auto answer = detail::localApiGet(opts_.localApiSocket, whoisTarget(node),
                                    detail::Clock::now() + opts_.timeout);
  if (!answer) return deny(failed + answer.error());
  if (answer->status == 404) return deny("peer " + key + " not authorized (not found in local tailscaled)");
  if (answer->status != 200) {
    // Go tests the whole error text, "<status>: <trimmed body>".
    if (answer->body.find("invalid 'addr' parameter") != std::string::npos) {
      return deny("tailscaled version is too old (out of sync with derper binary)");
    }
    return deny(failed + answer->statusText + ": " + trimmedExcerpt(answer->body));
  }
  // json.Unmarshal into a struct pointer: an object or null. (Go would also
  // reject an object whose known fields have the wrong types; tailscaled
  // does not send those, so only the document's shape is checked.)
  auto type = admission::checkJsonDocument(answer->body);
  if (!type) return deny(failed + "failed to unmarshal JSON into *apitype.WhoIsResponse: " + type.error());
  if (*type != admission::JsonType::Object && *type != admission::JsonType::Null) {
    return deny(failed + "failed to unmarshal JSON into *apitype.WhoIsResponse: json: cannot unmarshal " +
                jsonTypeWord(*type) + " into Go value of type apitype.WhoIsResponse");
  }
  return Verdict{true, ""};
}

Verdict Verifier::checkUrl(const crypto::NodePublic& node, const std::string& sourceIp) const {
  if (!url_) return Verdict{true, ""};
  using Kind = detail::UrlClient::Outcome::Kind;
  const std::string key = node.toText();
  // Stop reading once the answer parses, or fails for a reason more bytes
  // cannot fix.
  auto enough = [](std::string_view body) {
    auto r = admission::parseAdmitResponse(body);
    return r.ok() || (r.error() != admission::kErrEmpty && r.error() != admission::kErrTruncated);
  };
  const auto out = url_->post(admission::encodeAdmitRequest(node, sourceIp),
                              detail::Clock::now() + opts_.timeout, admission::kMaxAdmitResponseBytes, enough);
  switch (out.kind) {
    case Kind::BadRequest: return deny(out.error);
    case Kind::Transport:
      if (opts_.failOpen) return Verdict{true, "admission controller unreachable; allowing client " + key};
      return deny(out.error);
    case Kind::Answered: break;
  }
  if (out.answer.status != 200) return deny("admission controller: " + out.answer.statusText);
  auto allow = admission::parseAdmitResponse(out.answer.body);
  // A read error is what the decoder would have reported, unless the bytes
  // read before it already decided the answer.
  if (!allow && !out.bodyError.empty()) return deny("admission controller: bad answer: " + out.bodyError);
  if (!allow) return deny("admission controller: bad answer: " + allow.error());
  if (!*allow) return deny("admission controller: " + key + "/" + sourceIp + " not allowed");
  return Verdict{true, ""};
}

}  // namespace derpd::mesh
