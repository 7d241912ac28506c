#include "common/util/go_json.hpp"

#include <clocale>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace derpd {

bool goJsonNameMatches(std::string_view key, std::string_view name) {
  size_t i = 0;
  for (char want : name) {
    const char up = (want >= 'a' && want <= 'z') ? char(want - 32) : want;
    if (i >= key.size()) return false;
    unsigned char c = static_cast<unsigned char>(key[i]);
    if (c < 0x80) {
      const char got = (c >= 'a' && c <= 'z') ? char(c - 32) : char(c);
      if (got != up) return false;
      ++i;
    } else if (up == 'K' && key.substr(i, 3) == "\xE2\x84\xAA") {
      i += 3;
    } else if (up == 'S' && key.substr(i, 2) == "\xC5\xBF") {
      i += 2;
    } else {
      return false;
    }
  }
  return i == key.size();
}

size_t utf8SeqLen(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> unsigned { return i + k < s.size() ? uint8_t(s[i + k]) : 0x100u; };
  auto in = [](unsigned c, unsigned lo, unsigned hi) { return c >= lo && c <= hi; };
  const unsigned c = at(0);
  if (c < 0x80) return 1;
  if (in(c, 0xC2, 0xDF)) return in(at(1), 0x80, 0xBF) ? 2 : 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (c == 0xE0) lo = 0xA0;
  if (c == 0xED) hi = 0x9F;
  if (in(c, 0xE0, 0xEF)) return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) ? 3 : 0;
  if (c == 0xF0) lo = 0x90;
  if (c == 0xF4) hi = 0x8F;
  if (in(c, 0xF0, 0xF4)) {
    return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

void appendGoJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
          } else {
            out += char(c);
          }
      }
      ++i;
      continue;
    }
    const size_t n = utf8SeqLen(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else if (n == 3 && c == 0xE2 && uint8_t(s[i + 1]) == 0x80 &&
               (uint8_t(s[i + 2]) == 0xA8 || uint8_t(s[i + 2]) == 0xA9)) {
      out += uint8_t(s[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
      i += 3;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  out += '"';
}

namespace {

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
    const int d = hexDigit(s[i + k]);
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

}  // namespace

Result<void> normalizeGoJson(std::string_view in, GoJsonNormalized& out) {
  if (in.substr(0, 3) == "\xEF\xBB\xBF") return makeError("invalid character (BOM) at byte 0");
  auto ensureCopy = [&](size_t upTo) {
    if (!out.changed) {
      out.text.reserve(in.size() + 16);
      out.text.assign(in.data(), upTo);
      out.changed = true;
    }
  };
  bool inString = false;
  size_t numbers = 0;
  size_t i = 0;
  while (i < in.size()) {
    const char c = in[i];
    if (c == '\0') return makeError("invalid character (NUL) at byte " + std::to_string(i));
    if (static_cast<unsigned char>(c) >= 0x80) {
      const size_t n = utf8SeqLen(in, i);
      if (n == 0) {
        ensureCopy(i);
        out.text += "\xEF\xBF\xBD";
        ++i;
      } else {
        if (out.changed) out.text.append(in.data() + i, n);
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
            if (out.changed) out.text.append(in.data() + i, 12);
            i += 12;
          } else {
            ensureCopy(i);
            out.text += "\\ufffd";
            i += 6;
          }
          continue;
        }
        // Any other escape: keep both bytes so an escaped quote is skipped.
        if (out.changed) out.text.append(in.data() + i, 2);
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
        out.text += "0.0";
        out.overflowed.push_back(numbers);
      } else if (out.changed) {
        out.text.append(tok);
      }
      ++numbers;
      i = j;
      continue;
    }
    if (out.changed) out.text += c;
    ++i;
  }
  return okResult();
}

}  // namespace derpd
