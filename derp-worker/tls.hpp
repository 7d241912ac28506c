// derp-worker's TLS (PROTOCOL.md §2.2): TLS 1.2+, ALPN http/1.1 only (other
// offers proceed without ALPN), the served chain = the certificate's chain +
// the DERP meta certificate last.
//
// Certificates change while derp-worker runs (cert-agent rotates them), so
// every connection starts on one fixed "dispatch" SSL_CTX without a
// certificate, whose ClientHello callback moves the connection to the
// context in force at that moment: the current certificate's, or, for a
// ClientHello offering ALPN "acme-tls/1", the RFC 8737 challenge context for
// its SNI. A connection keeps the context it started with (SSL_set_SSL_CTX
// takes a reference), so a swap touches new handshakes only.
// Included by derp-worker only.
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/crypto/keys.hpp"
#include "common/tls/certs.hpp"
#include "common/util/result.hpp"

namespace derpd::worker {

// One SSL_CTX with one certificate (or a challenge certificate).
class TlsContext {
 public:
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // The relay's context: `chainPem` (leaf first) and `keyPem`, which must
  // match; the DERP meta certificate for `serverKey` is appended to the chain.
  static Result<std::shared_ptr<TlsContext>> fromPem(const std::string& chainPem, const std::string& keyPem,
                                                     const crypto::NodePublic& serverKey);
  // A TLS-ALPN-01 context: negotiates ALPN "acme-tls/1" and nothing else.
  static Result<std::shared_ptr<TlsContext>> forAcmeChallenge(const std::string& certPem,
                                                               const std::string& keyPem);
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// The contexts in force, shared by every loop thread (a mutex; taken once
// per handshake) and changed by the control thread.
class TlsStore {
 public:
  static Result<std::shared_ptr<TlsStore>> create(const crypto::NodePublic& serverKey);
  ~TlsStore();
  TlsStore(const TlsStore&) = delete;
  TlsStore& operator=(const TlsStore&) = delete;

  // What every accepted TLS connection is created on (SSL_new).
  SSL_CTX* dispatchCtx() const { return dispatch_; }

  // Serves `chainPem`/`keyPem` to handshakes from now on. On error the
  // certificate in force stays.
  Result<void> setCertificate(const std::string& chainPem, const std::string& keyPem);
  bool hasCertificate() const;

  // TLS-ALPN-01: handshakes offering "acme-tls/1" with SNI `identifier`
  // (case-insensitive) get this certificate.
  Result<void> setAlpnChallenge(const std::string& identifier, const std::string& certPem,
                                const std::string& keyPem);
  void clearAlpnChallenge(const std::string& identifier);

  // HTTP-01: port 80 answers /.well-known/acme-challenge/<token>.
  void setHttpToken(const std::string& token, const std::string& keyAuthorization);
  void clearHttpToken(const std::string& token);
  std::optional<std::string> httpToken(const std::string& token) const;

 private:
  TlsStore(SSL_CTX* dispatch, const crypto::NodePublic& serverKey);
  static int clientHello(SSL* ssl, int* alert, void* arg);
  std::shared_ptr<TlsContext> pick(bool acmeAlpn, const std::string& sni) const;

  SSL_CTX* dispatch_;
  crypto::NodePublic serverKey_;
  mutable std::mutex mu_;
  std::shared_ptr<TlsContext> current_;
  std::map<std::string, std::shared_ptr<TlsContext>> alpnChallenges_;  // by lower-case identifier
  std::map<std::string, std::string> httpTokens_;
};

using tls::certFileStem;
using tls::opensslErrors;

}  // namespace derpd::worker
