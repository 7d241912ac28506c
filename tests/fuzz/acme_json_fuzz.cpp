// libFuzzer target: every ACME JSON parser (directory, order, authorization,
// problem) on the same input, and the strict base64url decoder. Parsers must
// return errors, never throw or crash. Whatever parses must survive being
// serialized again with acme::jsonString and re-parsed; the strict base64url
// decoder must round-trip whatever it accepts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/crypto/jws.hpp"
#include "common/proto/acme/acme_json.hpp"
#include "common/util/go_json.hpp"

using namespace derpd;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool validUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8SeqLen(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// The order re-encoded with the project's own JSON writer.
std::string encodeOrder(const acme::Order& o) {
  std::string out = "{\"status\":" + acme::jsonString(o.status) + ",\"identifiers\":[";
  for (size_t i = 0; i < o.identifiers.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"type\":" + acme::jsonString(o.identifiers[i].type) +
           ",\"value\":" + acme::jsonString(o.identifiers[i].value) + "}";
  }
  out += "],\"authorizations\":[";
  for (size_t i = 0; i < o.authorizations.size(); ++i) {
    if (i > 0) out += ',';
    out += acme::jsonString(o.authorizations[i]);
  }
  out += "],\"finalize\":" + acme::jsonString(o.finalize) + "}";
  return out;
}

bool orderUtf8(const acme::Order& o) {
  if (!validUtf8(o.status) || !validUtf8(o.finalize)) return false;
  for (const auto& id : o.identifiers) {
    if (!validUtf8(id.type) || !validUtf8(id.value)) return false;
  }
  for (const auto& a : o.authorizations) {
    if (!validUtf8(a)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  const bool fits = size <= acme::kMaxJsonBytes;

  if (auto d = acme::parseDirectory(json); d.ok()) check(fits);

  if (auto o = acme::parseOrder(json); o.ok()) {
    check(fits);
    if (o->error) (void)o->error->toString();
    const std::string again = encodeOrder(*o);
    if (again.size() <= acme::kMaxJsonBytes) {
      auto o2 = acme::parseOrder(again);
      check(o2.ok());
      check(o2->identifiers.size() == o->identifiers.size());
      check(o2->authorizations.size() == o->authorizations.size());
      if (orderUtf8(*o)) {
        check(o2->status == o->status && o2->finalize == o->finalize);
        for (size_t i = 0; i < o->identifiers.size(); ++i) {
          check(o2->identifiers[i].type == o->identifiers[i].type);
          check(o2->identifiers[i].value == o->identifiers[i].value);
        }
        for (size_t i = 0; i < o->authorizations.size(); ++i) {
          check(o2->authorizations[i] == o->authorizations[i]);
        }
      }
    }
  }

  if (auto a = acme::parseAuthorization(json); a.ok()) {
    check(fits);
    for (const auto& c : a->challenges) {
      if (c.error) (void)c.error->toString();
    }
  }

  if (auto p = acme::parseProblem(json); p.ok()) {
    check(fits);
    check(!p->type.empty() || json.find("type") != std::string_view::npos);
    (void)p->toString();
  }

  if (auto b = crypto::base64UrlDecode(json); b.has_value()) {
    check(crypto::base64UrlEncode(*b) == json);
  }
  return 0;
}
