// Go encoding/json compatibility helpers shared by the parsers of JSON that
// Go programs write (ClientInfo, derper's key file).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/result.hpp"

namespace derpd {

// Go's encoding/json matches field names with bytes.EqualFold: ASCII case
// folding plus the two non-ASCII runes that fold onto ASCII letters, KELVIN
// SIGN (U+212A ~ k) and LATIN SMALL LETTER LONG S (U+017F ~ s). `name` is the
// field's ASCII name.
bool goJsonNameMatches(std::string_view key, std::string_view name);

// Length of the well-formed UTF-8 sequence at s[i] (Unicode Table 3-7, the
// rule both Go's utf8.DecodeRune and nlohmann's lexer use), or 0.
size_t utf8SeqLen(std::string_view s, size_t i);

// Appends `s` as encoding/json writes a string: quoted, HTML-safe (<, >, &
// as \u00XX), control characters escaped, invalid UTF-8 as \ufffd, U+2028
// and U+2029 escaped.
void appendGoJsonString(std::string& out, std::string_view s);

// The input a Go-compatible decoder built on nlohmann must see. nlohmann
// and Go disagree on a few inputs:
//  - Go replaces invalid UTF-8 (per byte) and unpaired surrogate escapes with
//    U+FFFD; nlohmann rejects both. The pre-pass does Go's replacement.
//  - Go accepts numbers of any magnitude where it skips a value; nlohmann
//    rejects those that overflow a double. The pre-pass rewrites such a
//    number to 0.0 and records its ordinal, so a decoder can still reject it
//    where Go would (an int or float64 field).
//  - nlohmann stops at a NUL byte and skips a leading UTF-8 BOM; Go rejects
//    both: so does the pre-pass (the error names the byte).
struct GoJsonNormalized {
  std::string text;  // the rewritten input, when `changed`
  bool changed = false;
  // Ordinals (0-based, document order, counting every number token) of the
  // numbers rewritten because they overflow a double.
  std::vector<size_t> overflowed;
};
Result<void> normalizeGoJson(std::string_view in, GoJsonNormalized& out);

}  // namespace derpd
