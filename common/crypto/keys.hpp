// Node keys (Curve25519) and their text forms, as Tailscale's types/key.
// The DERP server key is a node key. Included by every process that speaks DERP.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::crypto {

inline constexpr size_t kKeyLen = 32;

// A node public key: 32 raw bytes.
class NodePublic {
 public:
  NodePublic() { b_.fill(0); }
  static NodePublic fromRaw(ByteView raw32);  // raw32.size() must be 32
  // "nodekey:" + exactly 64 hex digits (either case); prefix case-sensitive.
  static Result<NodePublic> parseText(std::string_view s);
  // Exactly 64 hex digits, no prefix (Derp-Public-Key header, meta cert CN).
  static Result<NodePublic> parseUntypedHex(std::string_view s);

  std::string toText() const;       // "nodekey:<hex>"
  std::string toHex() const;        // untyped lowercase hex
  std::string shortString() const;  // "[" + first 5 chars of std base64 + "]"
  bool isZero() const;

  const std::array<uint8_t, kKeyLen>& raw() const { return b_; }
  const uint8_t* data() const { return b_.data(); }
  ByteView bytes() const { return ByteView(b_.data(), b_.size()); }

  friend bool operator==(const NodePublic&, const NodePublic&) = default;
  friend auto operator<=>(const NodePublic&, const NodePublic&) = default;

 private:
  std::array<uint8_t, kKeyLen> b_;
};

// A node private key. Zeroed on destruction. Never logged.
class NodePrivate {
 public:
  NodePrivate() { b_.fill(0); }
  ~NodePrivate();
  NodePrivate(const NodePrivate&) = default;
  NodePrivate& operator=(const NodePrivate&) = default;

  // 32 random bytes, clamped: b[0] &= 248; b[31] = (b[31] & 127) | 64.
  static NodePrivate generate();
  // As Go's NodePrivateFromRaw32: no clamping.
  static NodePrivate fromRaw(ByteView raw32);
  // "privkey:" + exactly 64 hex digits (either case). No clamping (as Go).
  static Result<NodePrivate> parseText(std::string_view s);

  std::string toText() const;  // "privkey:<hex>"
  NodePublic publicKey() const;  // X25519(priv, 9)
  bool isZero() const;
  const uint8_t* data() const { return b_.data(); }

  friend bool operator==(const NodePrivate&, const NodePrivate&) = default;

 private:
  std::array<uint8_t, kKeyLen> b_;
};

// Clamp 32 bytes in place as Curve25519 private keys are clamped at generation.
void clamp(std::array<uint8_t, kKeyLen>& b);

// derper's key file (-c): JSON {"PrivateKey": "privkey:<hex>"}; key names are
// matched case-insensitively and unknown keys ignored, as Go's encoding/json.
// When the file does not exist it is created as derper does: parent
// directories made, a fresh key written tab-indented with no trailing newline
// (`{\n\t"PrivateKey": "privkey:…"\n}`), mode 0600, atomically (temp + rename).
// `created` (optional) is set to true when the file was written.
Result<NodePrivate> loadOrCreateKeyFile(const std::string& path, bool* created = nullptr);
// The exact bytes derper writes for a key.
std::string keyFileContents(const NodePrivate& key);
// Parses key-file bytes (no I/O).
Result<NodePrivate> parseKeyFile(std::string_view contents);

// derper's -mesh-psk-file rule: the file's content with surrounding white
// space trimmed must match ^[0-9a-fA-F]{64,}$. Returns the trimmed key.
Result<std::string> parseMeshKey(std::string_view contents);
// Reads (at most 64 KiB of) `path` and parses it; errors name the file.
Result<std::string> readMeshKeyFile(const std::string& path);

struct NodePublicHash {
  size_t operator()(const NodePublic& k) const noexcept {
    size_t h;
    static_assert(sizeof(h) <= kKeyLen);
    __builtin_memcpy(&h, k.data(), sizeof(h));
    return h;
  }
};

}  // namespace derpd::crypto
