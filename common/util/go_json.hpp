// Go encoding/json compatibility helpers shared by the parsers of JSON that
// Go programs write (ClientInfo, derper's key file).
#pragma once

#include <string_view>

namespace derpd {

// Go's encoding/json matches field names with bytes.EqualFold: ASCII case
// folding plus the two non-ASCII runes that fold onto ASCII letters, KELVIN
// SIGN (U+212A ~ k) and LATIN SMALL LETTER LONG S (U+017F ~ s). `name` is the
// field's ASCII name.
bool goJsonNameMatches(std::string_view key, std::string_view name);

}  // namespace derpd
