// Node keys (Curve25519) and their text forms; derper's key file.
#include "common/crypto/keys.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>

#include "common/util/fd.hpp"
#include "common/util/go_json.hpp"

namespace derpd::crypto {

namespace {

constexpr std::string_view kNodePublicPrefix = "nodekey:";
constexpr std::string_view kNodePrivatePrefix = "privkey:";

// sodium_init() is thread-safe and idempotent; the static makes it run once.
bool sodiumReady() {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

// Exactly 64 hex digits of either case into 32 bytes, as Go's key parsers.
Result<std::array<uint8_t, kKeyLen>> parseHex64(std::string_view hex) {
  if (hex.size() != 2 * kKeyLen) {
    return makeError("key hex has the wrong size, got " + std::to_string(hex.size()) +
                     " want 64");
  }
  auto raw = fromHex(hex);
  if (!raw) return makeError("invalid hex character in key");
  std::array<uint8_t, kKeyLen> out;
  std::memcpy(out.data(), raw->data(), kKeyLen);
  sodium_memzero(raw->data(), raw->size());
  return out;
}


}  // namespace

// ---- NodePublic ----

NodePublic NodePublic::fromRaw(ByteView raw32) {
  NodePublic k;
  if (raw32.size() == kKeyLen) std::memcpy(k.b_.data(), raw32.data(), kKeyLen);
  return k;
}

Result<NodePublic> NodePublic::parseText(std::string_view s) {
  if (s.substr(0, kNodePublicPrefix.size()) != kNodePublicPrefix) {
    return makeError("key hex string doesn't have expected type prefix nodekey:");
  }
  return parseUntypedHex(s.substr(kNodePublicPrefix.size()));
}

Result<NodePublic> NodePublic::parseUntypedHex(std::string_view s) {
  auto raw = parseHex64(s);
  if (!raw) return std::move(raw).takeError();
  NodePublic k;
  k.b_ = *raw;
  return k;
}

std::string NodePublic::toText() const { return std::string(kNodePublicPrefix) + toHex(); }

std::string NodePublic::toHex() const { return derpd::toHex(bytes()); }

std::string NodePublic::shortString() const {
  // base64 of 32 bytes is 44 chars; sodium_bin2base64 wants room for the NUL.
  char b64[sodium_base64_ENCODED_LEN(kKeyLen, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(b64, sizeof b64, b_.data(), b_.size(), sodium_base64_VARIANT_ORIGINAL);
  return "[" + std::string(b64, 5) + "]";
}

bool NodePublic::isZero() const { return sodium_is_zero(b_.data(), b_.size()) == 1; }

// ---- NodePrivate ----

NodePrivate::~NodePrivate() { sodium_memzero(b_.data(), b_.size()); }

void clamp(std::array<uint8_t, kKeyLen>& b) {
  b[0] &= 248;
  b[31] = uint8_t((b[31] & 127) | 64);
}

NodePrivate NodePrivate::generate() {
  NodePrivate k;
  if (!sodiumReady()) return k;  // zero key; every user rejects it
  randombytes_buf(k.b_.data(), k.b_.size());
  clamp(k.b_);
  return k;
}

NodePrivate NodePrivate::fromRaw(ByteView raw32) {
  NodePrivate k;
  if (raw32.size() == kKeyLen) std::memcpy(k.b_.data(), raw32.data(), kKeyLen);
  return k;
}

Result<NodePrivate> NodePrivate::parseText(std::string_view s) {
  if (s.substr(0, kNodePrivatePrefix.size()) != kNodePrivatePrefix) {
    return makeError("key hex string doesn't have expected type prefix privkey:");
  }
  auto raw = parseHex64(s.substr(kNodePrivatePrefix.size()));
  if (!raw) return std::move(raw).takeError();
  NodePrivate k;
  k.b_ = *raw;
  sodium_memzero(raw->data(), raw->size());
  return k;
}

std::string NodePrivate::toText() const {
  return std::string(kNodePrivatePrefix) + derpd::toHex(ByteView(b_.data(), b_.size()));
}

NodePublic NodePrivate::publicKey() const {
  NodePublic pub;
  if (!sodiumReady()) return pub;
  std::array<uint8_t, kKeyLen> out;
  // X25519(priv, 9); libsodium clamps the scalar internally, as Go does.
  if (crypto_scalarmult_base(out.data(), b_.data()) != 0) return pub;
  return NodePublic::fromRaw(ByteView(out.data(), out.size()));
}

bool NodePrivate::isZero() const { return sodium_is_zero(b_.data(), b_.size()) == 1; }

// ---- derper key file ----

std::string keyFileContents(const NodePrivate& key) {
  // json.MarshalIndent(config{PrivateKey}, "", "\t"), no trailing newline.
  return "{\n\t\"PrivateKey\": \"" + key.toText() + "\"\n}";
}

namespace {

// SAX handler for the key file: Go's json.Unmarshal into
// struct{PrivateKey key.NodePrivate}. Every top-level member whose name folds
// to "PrivateKey" is decoded in document order (so the last one wins); null
// leaves the field as it was; any other non-string is an error.
class KeyFileHandler {
 public:
  using json = nlohmann::json;

  std::optional<NodePrivate> result;
  std::string err;

  bool null() {
    if (!scalar()) return false;
    take();  // null leaves the field unchanged
    return true;
  }
  bool boolean(bool) { return nonString(); }
  bool number_integer(json::number_integer_t) { return nonString(); }
  bool number_unsigned(json::number_unsigned_t) { return nonString(); }
  bool number_float(json::number_float_t, const json::string_t&) { return nonString(); }
  bool binary(json::binary_t&) { return fail("unexpected binary value"); }
  bool string(json::string_t& v) {
    if (!scalar()) return false;
    if (take()) {
      auto k = NodePrivate::parseText(v);
      sodium_memzero(v.data(), v.size());
      if (!k) return fail("PrivateKey: " + k.error());
      result = *k;
    }
    return true;
  }
  bool start_object(std::size_t) { return open(); }
  bool start_array(std::size_t) { return depth_ == 0 ? fail("not a JSON object") : open(); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    if (depth_ == 1) pending_ = goJsonNameMatches(k, "PrivateKey");
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
    return fail("invalid JSON at byte " + std::to_string(pos) + ": " + ex.what());
  }

 private:
  bool scalar() { return depth_ == 0 ? fail("not a JSON object") : true; }
  bool nonString() {
    if (!scalar()) return false;
    if (take()) return fail("PrivateKey is not a string");
    return true;
  }
  bool take() {
    const bool p = depth_ == 1 && pending_;
    if (depth_ == 1) pending_ = false;
    return p;
  }
  bool open() {
    if (take()) return fail("PrivateKey is not a string");
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool fail(std::string msg) {
    if (err.empty()) err = std::move(msg);
    return false;
  }

  int depth_ = 0;
  bool pending_ = false;
};

}  // namespace

Result<NodePrivate> parseKeyFile(std::string_view contents) {
  // nlohmann would skip a BOM and stop at a NUL byte; Go rejects both.
  if (contents.substr(0, 3) == "\xEF\xBB\xBF" || contents.find('\0') != std::string_view::npos) {
    return makeError("key file: invalid JSON");
  }
  KeyFileHandler h;
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(contents.begin(), contents.end(), &h,
                                   nlohmann::json::input_format_t::json, /*strict=*/true,
                                   /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return makeError(std::string("key file: invalid JSON: ") + e.what());
  }
  if (!ok) return makeError("key file: " + (h.err.empty() ? std::string("invalid JSON") : h.err));
  if (!h.result || h.result->isZero()) return makeError("key file: no PrivateKey");
  return *h.result;
}

namespace {

Result<std::string> readFile(const std::string& path, bool* missing) {
  *missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return makeError(path + ": no such file");
    }
    return makeError("open " + path + ": " + std::strerror(errno));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      sodium_memzero(buf, sizeof buf);
      return makeError("read " + path + ": " + std::strerror(saved));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
    if (out.size() > (1 << 20)) {
      ::close(fd);
      sodium_memzero(buf, sizeof buf);
      return makeError(path + ": key file too large");
    }
  }
  ::close(fd);
  sodium_memzero(buf, sizeof buf);
  return out;
}

}  // namespace

Result<NodePrivate> loadOrCreateKeyFile(const std::string& path, bool* created) {
  if (created) *created = false;
  bool missing = false;
  auto contents = readFile(path, &missing);
  if (contents) {
    auto key = parseKeyFile(*contents);
    sodium_memzero(contents->data(), contents->size());
    if (!key) return makeError(path + ": " + key.error());
    return key;
  }
  if (!missing) return std::move(contents).takeError();

  NodePrivate key = NodePrivate::generate();
  if (key.isZero()) return makeError("generate key: libsodium unavailable");
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return makeError("create " + dir.string() + ": " + ec.message());
  }
  std::string text = keyFileContents(key);
  auto w = writeFileAtomic(path, text, 0600);
  sodium_memzero(text.data(), text.size());
  if (!w) return std::move(w).takeError();
  if (created) *created = true;
  return key;
}

Result<std::string> parseMeshKey(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  if (s.size() < 64) return makeError("key must be at least 64 hex digits");
  for (char c : s) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) return makeError("key must be hex digits only");
  }
  return std::string(s);
}

Result<std::string> readMeshKeyFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return makeError("mesh key file " + path + ": " + std::strerror(errno));
  auto data = readAllAndClose(fd, 64 * 1024, "mesh key file " + path);
  if (!data.ok()) return data;
  auto k = parseMeshKey(*data);
  std::fill(data->begin(), data->end(), '\0');
  if (!k.ok()) return makeError("mesh key file " + path + ": " + k.error());
  return k;
}

}  // namespace derpd::crypto
