// NaCl crypto_box in DERP's layout: sealed = nonce(24) || crypto_box_easy(msg)
// (tag(16) || ciphertext). Used for ClientInfo/ServerInfo.
#pragma once

#include "common/crypto/keys.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::crypto {

inline constexpr size_t kNonceLen = 24;
inline constexpr size_t kBoxOverhead = 16;

// Seals msg from `from` to `to` with a random nonce.
Bytes seal(const NodePrivate& from, const NodePublic& to, ByteView msg);
// Same with a chosen nonce (tests and vectors only).
Bytes sealWithNonce(const NodePrivate& from, const NodePublic& to, ByteView msg,
                    ByteView nonce24);
// Opens nonce||box sealed by `from` to `me`. Fails when shorter than 24+16
// bytes, on a bad MAC, or when `from` is the all-zero key.
Result<Bytes> open(const NodePrivate& me, const NodePublic& from, ByteView sealed);

}  // namespace derpd::crypto
