#include "common/util/go_json.hpp"

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

}  // namespace derpd
