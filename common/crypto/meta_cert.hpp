// The DERP meta certificate (PROTOCOL.md §2.2): self-signed Ed25519, CN =
// "derpkey" + hex(server public key), serial 2, validity start±30 days, one
// extension (BasicConstraints critical CA:FALSE), no SKI/AKI/SAN. Appended last
// to the served chain so clients can fast-start.
#pragma once

#include <openssl/x509.h>

#include <memory>

#include "common/crypto/keys.hpp"
#include "common/util/result.hpp"

namespace derpd::crypto {

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

inline constexpr const char* kMetaCertCNPrefix = "derpkey";
inline constexpr long kMetaCertSerial = 2;

Result<X509Ptr> makeMetaCert(const NodePublic& serverKey);
// Client side: the server key if `cert` is a valid meta cert (CN prefix and 64
// hex, serial 1..255), else an error.
Result<NodePublic> parseMetaCert(X509* cert);

}  // namespace derpd::crypto
