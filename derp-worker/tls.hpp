// derp-worker's TLS server context (PROTOCOL.md §2.2): TLS 1.2+, ALPN
// http/1.1 only (other offers proceed without ALPN), the served chain = the
// certificate file's chain + the DERP meta certificate last.
// Included by derp-worker only.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "common/crypto/keys.hpp"
#include "common/util/result.hpp"

namespace derpd::worker {

class TlsContext {
 public:
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // certmode manual: PEM chain (leaf first) and key. The leaf must match
  // `hostname` (DNS or IP SAN) and the key must match the leaf.
  static Result<std::shared_ptr<TlsContext>> loadManual(const std::string& certFile,
                                                        const std::string& keyFile,
                                                        const std::string& hostname,
                                                        const crypto::NodePublic& serverKey);
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// derper's file stem for manual certificates: hostname minus every character
// outside [A-Za-z0-9.-] (so IPv6 colons vanish).
std::string certFileStem(const std::string& hostname);

// Drains OpenSSL's thread error queue into one line.
std::string opensslErrors();

}  // namespace derpd::worker
