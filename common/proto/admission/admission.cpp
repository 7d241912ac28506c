// Admission wire formats. The answer parser is a small hand-written JSON
// scanner rather than nlohmann or POCO: it has to reproduce Go's
// json.Decoder exactly (what counts as a syntax error, that bytes after the
// first value are ignored, that a truncated value is an error) on at most
// 4 KiB of untrusted input, and it never builds a DOM.
#include "common/proto/admission/admission.hpp"

#include <cstdint>
#include <functional>

#include "common/util/go_json.hpp"

namespace derpd::admission {

namespace {

// Go's scanner allows 10000 levels. Ours recurses once per level, so the
// bound keeps the stack small; no admission controller nests its answer.
constexpr int kMaxDepth = 64;

// The words Go's UnmarshalTypeError uses for the JSON side.
const char* typeWord(JsonType t) {
  switch (t) {
    case JsonType::Null: return "null";
    case JsonType::Bool: return "bool";
    case JsonType::Number: return "number";
    case JsonType::String: return "string";
    case JsonType::Array: return "array";
    case JsonType::Object: return "object";
  }
  return "value";
}

// Go's quoteChar: the byte as strconv.Quote shows the rune of that value.
std::string quoteChar(char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  if (c == '\'') return "'\\''";
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  switch (c) {
    case '\a': return "'\\a'";
    case '\b': return "'\\b'";
    case '\f': return "'\\f'";
    case '\n': return "'\\n'";
    case '\r': return "'\\r'";
    case '\t': return "'\\t'";
    case '\v': return "'\\v'";
    default: break;
  }
  if (u < 0x80) return std::string("'\\x") + kHex[u >> 4] + kHex[u & 0xf] + "'";
  // U+0080..U+00FF: Latin-1, printed as UTF-8 unless Go deems it unprintable.
  if (u <= 0xA0 || u == 0xAD) return std::string("'\\u00") + kHex[u >> 4] + kHex[u & 0xf] + "'";
  return std::string("'") + char(0xC0 | (u >> 6)) + char(0x80 | (u & 0x3F)) + "'";
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// The code unit of the (already validated) "\uXXXX" at raw[i], or -1 when
// raw[i] does not start one.
int codeUnitAt(std::string_view raw, size_t i) {
  if (i + 6 > raw.size() || raw[i] != '\\' || raw[i + 1] != 'u') return -1;
  int v = 0;
  for (size_t k = 2; k < 6; ++k) v = v << 4 | hexValue(raw[i + k]);
  return v;
}

// A string body the scanner validated, decoded as Go's unquote does:
// escapes resolved, surrogate pairs joined, lone surrogates and invalid
// UTF-8 bytes replaced by U+FFFD. Keys must be decoded before matching:
// "\u0041llow" is the Allow field to Go.
std::string unquote(std::string_view raw) {
  constexpr uint32_t kReplacement = 0xFFFD;
  std::string out;
  size_t i = 0;
  while (i < raw.size()) {
    const char c = raw[i];
    if (c != '\\') {
      const size_t n = utf8SeqLen(raw, i);
      if (n == 0) {
        appendUtf8(out, kReplacement);
        ++i;
      } else {
        out.append(raw.substr(i, n));
        i += n;
      }
      continue;
    }
    const char e = raw[i + 1];
    if (e != 'u') {
      static constexpr std::string_view kFrom = "\"\\/bfnrt";
      static constexpr std::string_view kTo = "\"\\/\b\f\n\r\t";
      out += kTo[kFrom.find(e)];
      i += 2;
      continue;
    }
    uint32_t cp = uint32_t(codeUnitAt(raw, i));
    i += 6;
    if (cp >= 0xD800 && cp < 0xDC00) {
      const int lo = codeUnitAt(raw, i);
      if (lo >= 0xDC00 && lo < 0xE000) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (uint32_t(lo) - 0xDC00);
        i += 6;
      } else {
        cp = kReplacement;
      }
    } else if (cp >= 0xDC00 && cp < 0xE000) {
      cp = kReplacement;
    }
    appendUtf8(out, cp);
  }
  return out;
}

// Reports each member of the object it is handed to (the top level only).
using MemberFn = std::function<void(std::string_view rawKey, JsonType type, bool boolean)>;

// A recursive-descent validator with Go's grammar: RFC 8259 plus Go's
// acceptance of any byte >= 0x20 inside strings. On failure it says whether
// the input ran out (Go: "unexpected EOF") or which byte was wrong.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  void skipSpace() {
    while (i_ < s_.size() && isSpace(s_[i_])) ++i_;
  }
  bool atEnd() const { return i_ >= s_.size(); }
  char peek() const { return s_[i_]; }
  bool truncated() const { return truncated_; }
  const std::string& error() const { return err_; }

  // One value at the cursor (leading white space allowed). `depth` is the
  // number of enclosing arrays and objects.
  bool value(int depth, JsonType& type, bool& boolean, const MemberFn* onMember) {
    skipSpace();
    if (atEnd()) return eof();
    const char c = peek();
    switch (c) {
      case '{': type = JsonType::Object; return object(depth + 1, onMember);
      case '[': type = JsonType::Array; return array(depth + 1);
      case '"': type = JsonType::String; return string(nullptr);
      case 't': type = JsonType::Bool; boolean = true; return literal("true");
      case 'f': type = JsonType::Bool; boolean = false; return literal("false");
      case 'n': type = JsonType::Null; return literal("null");
      default:
        if (c == '-' || isDigit(c)) {
          type = JsonType::Number;
          return number();
        }
        return bad(c, "looking for beginning of value");
    }
  }

 private:
  bool eof() {
    truncated_ = true;
    return false;
  }
  bool bad(char c, const char* context) {
    err_ = "invalid character " + quoteChar(c) + " " + context;
    return false;
  }
  bool enter(int depth) {
    if (depth <= kMaxDepth) return true;
    err_ = "exceeded max depth";
    return false;
  }

  bool object(int depth, const MemberFn* onMember) {
    if (!enter(depth)) return false;
    ++i_;  // '{'
    skipSpace();
    if (atEnd()) return eof();
    if (peek() == '}') {
      ++i_;
      return true;
    }
    while (true) {
      skipSpace();
      if (atEnd()) return eof();
      if (peek() != '"') return bad(peek(), "looking for beginning of object key string");
      std::string_view key;
      if (!string(&key)) return false;
      skipSpace();
      if (atEnd()) return eof();
      if (peek() != ':') return bad(peek(), "after object key");
      ++i_;
      JsonType type = JsonType::Null;
      bool boolean = false;
      if (!value(depth, type, boolean, nullptr)) return false;
      if (onMember != nullptr) (*onMember)(key, type, boolean);
      skipSpace();
      if (atEnd()) return eof();
      if (peek() == '}') {
        ++i_;
        return true;
      }
      if (peek() != ',') return bad(peek(), "after object key:value pair");
      ++i_;
    }
  }

  bool array(int depth) {
    if (!enter(depth)) return false;
    ++i_;  // '['
    skipSpace();
    if (atEnd()) return eof();
    if (peek() == ']') {
      ++i_;
      return true;
    }
    while (true) {
      JsonType type = JsonType::Null;
      bool boolean = false;
      if (!value(depth, type, boolean, nullptr)) return false;
      skipSpace();
      if (atEnd()) return eof();
      if (peek() == ']') {
        ++i_;
        return true;
      }
      if (peek() != ',') return bad(peek(), "after array element");
      ++i_;
    }
  }

  // The cursor is on the opening quote. `raw` (optional) gets the bytes
  // between the quotes, escapes still encoded.
  bool string(std::string_view* raw) {
    const size_t start = ++i_;
    while (true) {
      if (atEnd()) return eof();
      const char c = s_[i_];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) return bad(c, "in string literal");
      if (c != '\\') {
        ++i_;
        continue;
      }
      if (++i_ >= s_.size()) return eof();
      const char e = s_[i_++];
      if (e == 'u') {
        for (int k = 0; k < 4; ++k, ++i_) {
          if (atEnd()) return eof();
          if (hexValue(s_[i_]) < 0) return bad(s_[i_], "in \\u hexadecimal character escape");
        }
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return bad(e, "in string escape code");
      }
    }
    if (raw != nullptr) *raw = s_.substr(start, i_ - start);
    ++i_;  // closing quote
    return true;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  The byte after it is
  // the caller's to judge, as in Go ("01" fails on the '1' as a stray byte).
  bool number() {
    if (peek() == '-') ++i_;
    if (atEnd()) return eof();
    if (!isDigit(peek())) return bad(peek(), "in numeric literal");
    if (peek() == '0') {
      ++i_;
    } else {
      digits();
    }
    if (!atEnd() && peek() == '.') {
      ++i_;
      if (!requireDigits("after decimal point in numeric literal")) return false;
    }
    if (!atEnd() && (peek() == 'e' || peek() == 'E')) {
      ++i_;
      if (!atEnd() && (peek() == '+' || peek() == '-')) ++i_;
      if (!requireDigits("in exponent of numeric literal")) return false;
    }
    return true;
  }
  void digits() {
    while (!atEnd() && isDigit(peek())) ++i_;
  }
  bool requireDigits(const char* context) {
    if (atEnd()) return eof();
    if (!isDigit(peek())) return bad(peek(), context);
    digits();
    return true;
  }

  bool literal(std::string_view word) {
    for (size_t k = 0; k < word.size(); ++k, ++i_) {
      if (atEnd()) return eof();
      if (s_[i_] != word[k]) {
        err_ = "invalid character " + quoteChar(s_[i_]) + " in literal " + std::string(word) +
               " (expecting " + quoteChar(word[k]) + ")";
        return false;
      }
    }
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
  bool truncated_ = false;
  std::string err_;
};

}  // namespace

std::string encodeAdmitRequest(const crypto::NodePublic& node, std::string_view sourceIp) {
  // Field order and spelling of tailcfg.DERPAdmitClientRequest; no spaces.
  std::string out = "{\"NodePublic\":";
  appendGoJsonString(out, node.toText());
  out += ",\"Source\":";
  appendGoJsonString(out, sourceIp);
  out += '}';
  return out;
}

Result<bool> parseAdmitResponse(std::string_view body) {
  // io.LimitReader(res.Body, 4<<10): the decoder never sees more.
  if (body.size() > kMaxAdmitResponseBytes) body = body.substr(0, kMaxAdmitResponseBytes);

  Scanner sc(body);
  sc.skipSpace();
  if (sc.atEnd()) return makeError(std::string(kErrEmpty));  // Decode on an empty stream

  // Go decodes into the struct as it goes: each key that folds to "Allow"
  // sets the field (the last one wins), null leaves it as it was, and any
  // other type is an UnmarshalTypeError. Decode still reads the whole value
  // first, so a syntax error anywhere outranks a type error.
  bool allow = false;
  std::string typeError;
  const MemberFn onMember = [&](std::string_view rawKey, JsonType type, bool boolean) {
    if (!goJsonNameMatches(unquote(rawKey), "Allow")) return;
    if (type == JsonType::Bool) {
      allow = boolean;
    } else if (type != JsonType::Null && typeError.empty()) {
      typeError = std::string("json: cannot unmarshal ") + typeWord(type) +
                  " into Go struct field DERPAdmitClientResponse.Allow of type bool";
    }
  };
  JsonType top = JsonType::Null;
  bool boolean = false;
  if (!sc.value(0, top, boolean, &onMember)) {
    return makeError(sc.truncated() ? std::string(kErrTruncated) : sc.error());
  }
  if (top != JsonType::Object && top != JsonType::Null) {
    return makeError(std::string("json: cannot unmarshal ") + typeWord(top) +
                     " into Go value of type tailcfg.DERPAdmitClientResponse");
  }
  if (!typeError.empty()) return makeError(typeError);
  return allow;
}

Result<JsonType> checkJsonDocument(std::string_view text) {
  Scanner sc(text);
  JsonType type = JsonType::Null;
  bool boolean = false;
  if (!sc.value(0, type, boolean, nullptr)) {
    return makeError(sc.truncated() ? "unexpected end of JSON input" : sc.error());
  }
  sc.skipSpace();
  if (!sc.atEnd()) {
    return makeError("invalid character " + quoteChar(sc.peek()) + " after top-level value");
  }
  return type;
}

}  // namespace derpd::admission
