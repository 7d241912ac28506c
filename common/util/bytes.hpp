// Byte buffers and hex helpers shared by every codec.
// Included by every process.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace derpd {

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline ByteView asBytes(std::string_view s) {
  return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
inline std::string_view asChars(ByteView b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

// Lowercase hex.
std::string toHex(ByteView b);
// Accepts upper- and lowercase; nullopt on odd length or a non-hex digit.
std::optional<Bytes> fromHex(std::string_view s);

inline void putU32BE(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}
inline uint32_t getU32BE(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline void appendU32BE(Bytes& out, uint32_t v) {
  // resize + store rather than insert(): g++ 12 at -O2 reports a false
  // -Warray-bounds for a 4-byte insert into a 1-byte vector.
  size_t n = out.size();
  out.resize(n + 4);
  putU32BE(out.data() + n, v);
}

}  // namespace derpd
