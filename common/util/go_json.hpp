// Go encoding/json compatibility helpers shared by the parsers of JSON that
// Go programs write (ClientInfo, derper's key file).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

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

}  // namespace derpd
