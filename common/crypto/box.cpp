// NaCl crypto_box in DERP's layout: nonce(24) || tag(16) || ciphertext.
#include "common/crypto/box.hpp"

#include <sodium.h>

#include <cstring>

namespace derpd::crypto {

static_assert(kNonceLen == crypto_box_NONCEBYTES);
static_assert(kBoxOverhead == crypto_box_MACBYTES);
static_assert(kKeyLen == crypto_box_PUBLICKEYBYTES && kKeyLen == crypto_box_SECRETKEYBYTES);

namespace {

bool sodiumReady() {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

}  // namespace

Bytes seal(const NodePrivate& from, const NodePublic& to, ByteView msg) {
  if (!sodiumReady()) return {};
  uint8_t nonce[kNonceLen];
  randombytes_buf(nonce, sizeof nonce);
  return sealWithNonce(from, to, msg, ByteView(nonce, sizeof nonce));
}

// Returns an empty buffer (never a valid sealed blob) when it cannot seal: a
// zero key on either side (Go panics there), a low-order peer key (libsodium
// refuses the all-zero shared secret) or a nonce that is not 24 bytes.
Bytes sealWithNonce(const NodePrivate& from, const NodePublic& to, ByteView msg,
                    ByteView nonce24) {
  if (!sodiumReady() || nonce24.size() != kNonceLen || from.isZero() || to.isZero()) return {};
  Bytes out(kNonceLen + kBoxOverhead + msg.size());
  std::memcpy(out.data(), nonce24.data(), kNonceLen);
  static const uint8_t kEmpty = 0;  // libsodium gets a valid pointer for empty input
  const uint8_t* m = msg.empty() ? &kEmpty : msg.data();
  if (crypto_box_easy(out.data() + kNonceLen, m, msg.size(), nonce24.data(), to.data(),
                      from.data()) != 0) {
    return {};
  }
  return out;
}

Result<Bytes> open(const NodePrivate& me, const NodePublic& from, ByteView sealed) {
  if (!sodiumReady()) return makeError("box: libsodium unavailable");
  if (sealed.size() < kNonceLen + kBoxOverhead) {
    return makeError("box: sealed message too short (" + std::to_string(sealed.size()) +
                     " bytes)");
  }
  if (from.isZero()) return makeError("box: zero peer key");
  if (me.isZero()) return makeError("box: zero private key");
  const uint8_t* nonce = sealed.data();
  const uint8_t* box = sealed.data() + kNonceLen;
  const size_t boxLen = sealed.size() - kNonceLen;
  Bytes out(boxLen - kBoxOverhead);
  uint8_t empty = 0;  // libsodium gets a valid pointer for an empty plaintext
  uint8_t* m = out.empty() ? &empty : out.data();
  // Fails on a bad MAC, and for low-order peer keys (all-zero shared secret).
  if (crypto_box_open_easy(m, box, boxLen, nonce, from.data(), me.data()) != 0) {
    return makeError("box: cannot open (bad MAC or key)");
  }
  return out;
}

}  // namespace derpd::crypto
