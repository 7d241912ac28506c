// ClientInfo / ServerInfo JSON with Go encoding/json semantics.
//
// Parsing goes through nlohmann's SAX interface (no DOM for untrusted input,
// nesting depth bounded). nlohmann is stricter than Go in a few places and
// laxer in others, so the input first goes through normalizeForGo():
//  - Go replaces invalid UTF-8 (per byte) and unpaired surrogate escapes with
//    U+FFFD; nlohmann rejects both. The pre-pass does Go's replacement.
//  - Go accepts numbers of any magnitude in values it skips; nlohmann rejects
//    those that overflow a double. The pre-pass rewrites such a number to
//    0.0, which keeps every decision (skipped: accepted; into an int:
//    rejected, as Go's ParseInt fails too).
//  - nlohmann stops at a NUL byte and skips a leading UTF-8 BOM; Go rejects
//    both. The pre-pass rejects them.
#include "common/util/go_json.hpp"
#include "common/proto/derp/client_info.hpp"

#include <clocale>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>

namespace derpd::derp {

namespace {

constexpr size_t kMaxJsonLen = 256 * 1024;
constexpr int kMaxDepth = 64;

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The code unit of a "\uXXXX" escape at s[i], or -1.
int uEscape(std::string_view s, size_t i) {
  if (i + 6 > s.size() || s[i] != '\\' || s[i + 1] != 'u') return -1;
  int v = 0;
  for (size_t k = 2; k < 6; ++k) {
    int d = hexDigit(s[i + k]);
    if (d < 0) return -1;
    v = v << 4 | d;
  }
  return v;
}

bool isJsonNumber(std::string_view t) {
  size_t i = 0;
  auto digit = [&](size_t k) { return k < t.size() && t[k] >= '0' && t[k] <= '9'; };
  if (i < t.size() && t[i] == '-') ++i;
  if (!digit(i)) return false;
  if (t[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == t.size();
}

// Whether nlohmann would reject this number token as overflowing a double.
// Mirrors its lexer: '.' becomes the locale's decimal point, then strtod.
bool overflowsDouble(std::string_view t) {
  const bool hasExp = t.find_first_of("eE") != std::string_view::npos;
  if (!hasExp && t.size() <= 300) return false;  // < 1e300 without an exponent
  std::string buf(t);
  const lconv* lc = std::localeconv();
  const char dp = (lc && lc->decimal_point && *lc->decimal_point) ? *lc->decimal_point : '.';
  for (char& c : buf) {
    if (c == '.') c = dp;
  }
  return !std::isfinite(std::strtod(buf.c_str(), nullptr));
}

// See the file comment. Returns the (possibly rewritten) text in `out` and
// sets `changed`; fails on a NUL byte or a leading BOM.
Result<void> normalizeForGo(std::string_view in, std::string& out, bool& changed) {
  changed = false;
  if (in.substr(0, 3) == "\xEF\xBB\xBF") return makeError("invalid character (BOM)");
  auto ensureCopy = [&](size_t upTo) {
    if (!changed) {
      out.assign(in.data(), upTo);
      changed = true;
    }
  };
  bool inString = false;
  size_t i = 0;
  while (i < in.size()) {
    const char c = in[i];
    if (c == '\0') return makeError("invalid character (NUL)");
    if (static_cast<unsigned char>(c) >= 0x80) {
      const size_t n = utf8SeqLen(in, i);
      if (n == 0) {
        ensureCopy(i);
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        if (changed) out.append(in.data() + i, n);
        i += n;
      }
      continue;
    }
    if (inString) {
      if (c == '"') {
        inString = false;
      } else if (c == '\\' && i + 1 < in.size()) {
        const int u = uEscape(in, i);
        if (u >= 0xD800 && u <= 0xDFFF) {
          const int lo = uEscape(in, i + 6);
          if (u <= 0xDBFF && lo >= 0xDC00 && lo <= 0xDFFF) {
            if (changed) out.append(in.data() + i, 12);
            i += 12;
          } else {
            ensureCopy(i);
            out += "\\ufffd";
            i += 6;
          }
          continue;
        }
        // Any other escape: keep both bytes so an escaped quote is skipped.
        if (changed) out.append(in.data() + i, 2);
        i += 2;
        continue;
      }
    } else if (c == '"') {
      inString = true;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i;
      while (j < in.size() && in[j] != '\0' && std::strchr("0123456789.eE+-", in[j]) != nullptr) {
        ++j;
      }
      const std::string_view tok = in.substr(i, j - i);
      if (isJsonNumber(tok) && overflowsDouble(tok)) {
        ensureCopy(i);
        out += "0.0";
      } else if (changed) {
        out.append(tok);
      }
      i = j;
      continue;
    }
    if (changed) out += c;
    ++i;
  }
  return okResult();
}


// One known field of the target struct.
struct FieldSpec {
  std::string_view name;
  std::string* str = nullptr;
  int64_t* i64 = nullptr;
  bool* boolean = nullptr;
};

// SAX handler decoding one JSON object into a fixed set of fields. Any error
// stops the parse (Go would finish decoding, but the result is an error
// either way).
class FieldsHandler {
 public:
  using json = nlohmann::json;

  explicit FieldsHandler(std::span<const FieldSpec> fields) : fields_(fields) {}
  const std::string& error() const { return err_; }

  bool null() {
    if (!scalarAllowed()) return false;
    take();  // null leaves a known field unchanged, as Go
    return true;
  }
  bool boolean(bool v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->boolean) return typeError("bool");
      *f->boolean = v;
    }
    return true;
  }
  bool number_integer(json::number_integer_t v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->i64) return typeError("number");
      *f->i64 = v;
    }
    return true;
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->i64) return typeError("number");
      if (v > json::number_unsigned_t(std::numeric_limits<int64_t>::max())) {
        return typeError("number out of int64 range");
      }
      *f->i64 = int64_t(v);
    }
    return true;
  }
  bool number_float(json::number_float_t, const json::string_t& raw) {
    if (!scalarAllowed()) return false;
    // Go decodes an int with strconv.ParseInt: "2.0" and "2e0" are errors.
    if (take()) return typeError("number " + raw.substr(0, 32));
    return true;
  }
  bool string(json::string_t& v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->str) return typeError("string");
      *f->str = std::move(v);
    }
    return true;
  }
  bool binary(json::binary_t&) { return fail("unexpected binary value"); }

  bool start_object(std::size_t) { return open(); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) {
    if (depth_ == 0) return fail("not a JSON object");
    return open();
  }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    if (depth_ == 1) {
      pending_ = nullptr;
      // Field names are distinct under folding, so the first match is the
      // only one; a repeated key simply overwrites (last one wins, as Go).
      for (const FieldSpec& f : fields_) {
        if (goJsonNameMatches(k, f.name)) {
          pending_ = &f;
          break;
        }
      }
    }
    return true;
  }

  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
    if (err_.empty()) err_ = "invalid JSON at byte " + std::to_string(pos) + ": " + ex.what();
    return false;
  }

 private:
  bool scalarAllowed() {
    if (depth_ == 0) return fail("not a JSON object");
    return true;
  }
  // The known field this value belongs to, if it is a top-level member value.
  const FieldSpec* take() {
    if (depth_ != 1) return nullptr;
    const FieldSpec* f = pending_;
    pending_ = nullptr;
    return f;
  }
  bool open() {
    if (take()) return typeError("object or array");
    if (++depth_ > kMaxDepth) return fail("nesting deeper than " + std::to_string(kMaxDepth));
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool typeError(const std::string& what) { return fail("wrong type for a field: " + what); }
  bool fail(std::string msg) {
    if (err_.empty()) err_ = std::move(msg);
    return false;
  }

  std::span<const FieldSpec> fields_;
  const FieldSpec* pending_ = nullptr;
  int depth_ = 0;
  std::string err_;
};

Result<void> decodeObject(std::string_view json, std::span<const FieldSpec> fields) {
  if (json.size() > kMaxJsonLen) return makeError("JSON too large");
  std::string normalized;
  bool changed = false;
  if (auto r = normalizeForGo(json, normalized, changed); !r) return r;
  const std::string_view text = changed ? std::string_view(normalized) : json;
  FieldsHandler handler(fields);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text.begin(), text.end(), &handler,
                                   nlohmann::json::input_format_t::json, /*strict=*/true,
                                   /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return makeError(std::string("invalid JSON: ") + e.what());
  }
  if (!ok) return makeError(handler.error().empty() ? "invalid JSON" : handler.error());
  return okResult();
}


// Appends `"name":` with the separating comma when needed.
void appendKey(std::string& out, std::string_view name) {
  if (out.size() > 1) out += ',';
  out += '"';
  out += name;
  out += "\":";
}

}  // namespace

std::string encodeClientInfo(const ClientInfo& ci) {
  std::string out = "{";
  if (!ci.meshKey.empty()) {
    appendKey(out, "meshKey");
    appendGoJsonString(out, ci.meshKey);
  }
  if (ci.version != 0) {
    appendKey(out, "version");
    out += std::to_string(ci.version);
  }
  appendKey(out, "CanAckPings");
  out += ci.canAckPings ? "true" : "false";
  if (ci.isProber) {
    appendKey(out, "IsProber");
    out += "true";
  }
  if (!ci.appName.empty()) {
    appendKey(out, "AppName");
    appendGoJsonString(out, ci.appName);
  }
  out += '}';
  return out;
}

Result<ClientInfo> parseClientInfo(std::string_view json) {
  ClientInfo ci;
  const FieldSpec fields[] = {
      {.name = "meshKey", .str = &ci.meshKey},
      {.name = "version", .i64 = &ci.version},
      {.name = "CanAckPings", .boolean = &ci.canAckPings},
      {.name = "IsProber", .boolean = &ci.isProber},
      {.name = "AppName", .str = &ci.appName},
  };
  if (auto r = decodeObject(json, fields); !r) return std::move(r).takeError();
  return ci;
}

std::string encodeServerInfo(const ServerInfo& si) {
  std::string out = "{";
  if (si.version != 0) {
    appendKey(out, "version");
    out += std::to_string(si.version);
  }
  if (si.tokenBucketBytesPerSecond != 0) {
    appendKey(out, "TokenBucketBytesPerSecond");
    out += std::to_string(si.tokenBucketBytesPerSecond);
  }
  if (si.tokenBucketBytesBurst != 0) {
    appendKey(out, "TokenBucketBytesBurst");
    out += std::to_string(si.tokenBucketBytesBurst);
  }
  out += '}';
  return out;
}

Result<ServerInfo> parseServerInfo(std::string_view json) {
  ServerInfo si;
  const FieldSpec fields[] = {
      {.name = "version", .i64 = &si.version},
      {.name = "TokenBucketBytesPerSecond", .i64 = &si.tokenBucketBytesPerSecond},
      {.name = "TokenBucketBytesBurst", .i64 = &si.tokenBucketBytesBurst},
  };
  if (auto r = decodeObject(json, fields); !r) return std::move(r).takeError();
  return si;
}

}  // namespace derpd::derp
