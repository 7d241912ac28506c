// ACME JSON documents through POCO JSON. The CA is untrusted: size and depth
// are checked before POCO sees the text, every member's type is checked, and
// every exception (POCO's, the standard library's, and the internal BadDoc
// used to unwind a failed check) is caught here and returned as an error.
#include "common/proto/acme/acme_json.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <exception>
#include <limits>
#include <typeinfo>
#include <utility>

#include "common/util/go_json.hpp"

namespace derpd::acme {

namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

// Unwinds a parser to its boundary with the message to return. Never leaves
// this file.
struct BadDoc {
  std::string message;
};

[[noreturn]] void bad(std::string msg) { throw BadDoc{std::move(msg)}; }

// Parser messages may quote input bytes: no control characters, bounded.
std::string printable(std::string s) {
  constexpr size_t kMax = 200;
  if (s.size() > kMax) s.replace(kMax, std::string::npos, "...");
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return s;
}

// Object/array nesting depth, outside strings. Stops counting once the limit
// is crossed; malformed text is left for the parser to reject.
bool depthWithin(std::string_view s, int limit) {
  int depth = 0;
  bool inString = false;
  bool escaped = false;
  for (char c : s) {
    if (inString) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        inString = false;
      }
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

Object::Ptr parseObject(std::string_view json, const char* what) {
  if (json.size() > kMaxJsonBytes) {
    bad(std::string(what) + ": document larger than " + std::to_string(kMaxJsonBytes) + " bytes");
  }
  if (!depthWithin(json, kMaxJsonDepth)) {
    bad(std::string(what) + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth));
  }
  Poco::JSON::Parser parser;
  parser.setAllowComments(false);
  parser.setAllowNullByte(false);
  // The pre-scan above is the real limit; POCO's is a second fence.
  parser.setDepth(size_t(kMaxJsonDepth) + 1);
  Var v;
  try {
    v = parser.parse(std::string(json));
  } catch (const Poco::Exception& e) {
    bad(std::string(what) + ": not JSON: " + printable(e.displayText()));
  }
  if (v.type() != typeid(Object::Ptr)) bad(std::string(what) + ": not a JSON object");
  Object::Ptr obj = v.extract<Object::Ptr>();
  if (obj.isNull()) bad(std::string(what) + ": not a JSON object");
  return obj;
}

// Typed access to one object's members; `where` prefixes error messages.
class Members {
 public:
  Members(Object::Ptr obj, std::string where) : obj_(std::move(obj)), where_(std::move(where)) {}

  const std::string& where() const { return where_; }

  // Absent and null are the same; callers choose whether that is allowed.
  bool present(const std::string& key) const { return obj_->has(key) && !obj_->isNull(key); }

  std::optional<std::string> optString(const std::string& key) const {
    if (!present(key)) return std::nullopt;
    Var v = obj_->get(key);
    if (v.type() != typeid(std::string)) bad(field(key) + " is not a string");
    return v.extract<std::string>();
  }
  std::string string(const std::string& key) const {
    auto s = optString(key);
    if (!s) bad(field(key) + " is missing");
    return *s;
  }

  std::optional<bool> optBool(const std::string& key) const {
    if (!present(key)) return std::nullopt;
    Var v = obj_->get(key);
    if (v.type() != typeid(bool)) bad(field(key) + " is not a boolean");
    return v.extract<bool>();
  }

  std::optional<int64_t> optInt(const std::string& key) const {
    if (!present(key)) return std::nullopt;
    Var v = obj_->get(key);
    // POCO counts a bool as an integer; JSON does not.
    if (v.isBoolean() || !v.isInteger()) bad(field(key) + " is not an integer");
    try {
      return v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
      bad(field(key) + " is out of range");
    }
  }

  std::optional<Members> optObject(const std::string& key) const {
    if (!present(key)) return std::nullopt;
    Var v = obj_->get(key);
    if (v.type() != typeid(Object::Ptr)) bad(field(key) + " is not an object");
    Object::Ptr o = v.extract<Object::Ptr>();
    if (o.isNull()) bad(field(key) + " is not an object");
    return Members(o, where_ + "." + key);
  }
  Members object(const std::string& key) const {
    auto o = optObject(key);
    if (!o) bad(field(key) + " is missing");
    return *o;
  }

  std::optional<Array::Ptr> optArray(const std::string& key) const {
    if (!present(key)) return std::nullopt;
    Var v = obj_->get(key);
    if (v.type() != typeid(Array::Ptr)) bad(field(key) + " is not an array");
    Array::Ptr a = v.extract<Array::Ptr>();
    if (a.isNull()) bad(field(key) + " is not an array");
    return a;
  }
  Array::Ptr array(const std::string& key) const {
    auto a = optArray(key);
    if (!a) bad(field(key) + " is missing");
    return *a;
  }

  std::string field(const std::string& key) const { return where_ + ": \"" + key + "\""; }

 private:
  Object::Ptr obj_;
  std::string where_;
};

Members element(const Array::Ptr& a, size_t i, const std::string& where) {
  Var v = a->get(unsigned(i));
  const std::string at = where + "[" + std::to_string(i) + "]";
  if (v.type() != typeid(Object::Ptr)) bad(at + " is not an object");
  Object::Ptr o = v.extract<Object::Ptr>();
  if (o.isNull()) bad(at + " is not an object");
  return Members(o, at);
}

std::string stringElement(const Array::Ptr& a, size_t i, const std::string& where) {
  Var v = a->get(unsigned(i));
  if (v.type() != typeid(std::string)) {
    bad(where + "[" + std::to_string(i) + "] is not a string");
  }
  return v.extract<std::string>();
}

Identifier readIdentifier(const Members& m) {
  Identifier id;
  id.type = m.string("type");
  id.value = m.string("value");
  return id;
}

Problem readProblem(const Members& m) {
  Problem p;
  if (auto t = m.optString("type")) p.type = *t;
  if (auto d = m.optString("detail")) p.detail = *d;
  if (auto s = m.optInt("status")) {
    if (*s < 0 || *s > 999) bad(m.field("status") + " is not an HTTP status");
    p.status = int(*s);
  }
  if (auto subs = m.optArray("subproblems")) {
    const std::string where = m.where() + ".subproblems";
    for (size_t i = 0; i < (*subs)->size(); ++i) {
      Members sub = element(*subs, i, where);
      std::string line;
      if (auto ident = sub.optObject("identifier")) {
        line = ident->string("value") + ": ";
      }
      line += sub.optString("type").value_or("about:blank");
      if (auto d = sub.optString("detail")) line += ": " + *d;
      p.subproblems.push_back(std::move(line));
    }
  }
  return p;
}

ChallengeInfo readChallenge(const Members& m) {
  ChallengeInfo c;
  c.type = m.string("type");
  c.url = m.string("url");
  c.status = m.string("status");
  if (auto t = m.optString("token")) c.token = *t;
  if (auto e = m.optObject("error")) c.error = readProblem(*e);
  return c;
}

// Runs `body` at the parser boundary: no exception leaves.
template <typename T, typename F>
Result<T> guarded(F&& body) {
  try {
    return body();
  } catch (const BadDoc& e) {
    return makeError(e.message);
  } catch (const Poco::Exception& e) {
    return makeError("acme json: " + printable(e.displayText()));
  } catch (const std::exception& e) {
    return makeError("acme json: " + printable(e.what()));
  } catch (...) {
    return makeError("acme json: unexpected exception");
  }
}

}  // namespace

std::string Problem::toString() const {
  std::string out = type;
  if (!detail.empty()) out += ": " + detail;
  for (const std::string& s : subproblems) out += "; " + s;
  // The text ends up in log lines: no control characters, bounded length.
  constexpr size_t kMax = 1024;
  if (out.size() > kMax) out.replace(kMax, std::string::npos, "...");
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return out;
}

Result<Directory> parseDirectory(std::string_view json) {
  return guarded<Directory>([&] {
    Members m(parseObject(json, "directory"), "directory");
    Directory d;
    d.newNonce = m.string("newNonce");
    d.newAccount = m.string("newAccount");
    d.newOrder = m.string("newOrder");
    d.revokeCert = m.optString("revokeCert").value_or("");
    d.keyChange = m.optString("keyChange").value_or("");
    if (auto meta = m.optObject("meta")) {
      d.termsOfService = meta->optString("termsOfService").value_or("");
      d.externalAccountRequired = meta->optBool("externalAccountRequired").value_or(false);
    }
    return d;
  });
}

Result<Order> parseOrder(std::string_view json) {
  return guarded<Order>([&] {
    Members m(parseObject(json, "order"), "order");
    Order o;
    o.status = m.string("status");
    o.expires = m.optString("expires").value_or("");
    Array::Ptr ids = m.array("identifiers");
    for (size_t i = 0; i < ids->size(); ++i) {
      o.identifiers.push_back(readIdentifier(element(ids, i, "order.identifiers")));
    }
    Array::Ptr authzs = m.array("authorizations");
    for (size_t i = 0; i < authzs->size(); ++i) {
      o.authorizations.push_back(stringElement(authzs, i, "order.authorizations"));
    }
    o.finalize = m.string("finalize");
    o.certificate = m.optString("certificate").value_or("");
    if (auto e = m.optObject("error")) o.error = readProblem(*e);
    return o;
  });
}

Result<Authorization> parseAuthorization(std::string_view json) {
  return guarded<Authorization>([&] {
    Members m(parseObject(json, "authorization"), "authorization");
    Authorization a;
    a.status = m.string("status");
    a.expires = m.optString("expires").value_or("");
    a.identifier = readIdentifier(m.object("identifier"));
    a.wildcard = m.optBool("wildcard").value_or(false);
    Array::Ptr chals = m.array("challenges");
    for (size_t i = 0; i < chals->size(); ++i) {
      a.challenges.push_back(readChallenge(element(chals, i, "authorization.challenges")));
    }
    return a;
  });
}

Result<Problem> parseProblem(std::string_view json) {
  return guarded<Problem>([&] { return readProblem(Members(parseObject(json, "problem"), "problem")); });
}

std::string jsonString(std::string_view s) {
  std::string out;
  appendGoJsonString(out, s);
  return out;
}

std::string newAccountPayload(const std::vector<std::string>& contacts, const std::string& eabJws) {
  std::string out = "{\"termsOfServiceAgreed\":true";
  if (!contacts.empty()) {
    out += ",\"contact\":[";
    for (size_t i = 0; i < contacts.size(); ++i) {
      if (i > 0) out += ',';
      appendGoJsonString(out, contacts[i]);
    }
    out += ']';
  }
  if (!eabJws.empty()) {
    out += ",\"externalAccountBinding\":";
    out += eabJws;
  }
  out += '}';
  return out;
}

std::string newOrderPayload(const std::vector<Identifier>& identifiers) {
  std::string out = "{\"identifiers\":[";
  for (size_t i = 0; i < identifiers.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"type\":";
    appendGoJsonString(out, identifiers[i].type);
    out += ",\"value\":";
    appendGoJsonString(out, identifiers[i].value);
    out += '}';
  }
  out += "]}";
  return out;
}

std::string finalizePayload(std::string_view csrB64url) {
  std::string out = "{\"csr\":";
  appendGoJsonString(out, csrB64url);
  out += '}';
  return out;
}

}  // namespace derpd::acme
