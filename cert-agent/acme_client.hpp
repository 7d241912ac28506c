// An ACME (RFC 8555) client for cert-agent's certmode letsencrypt: account
// (created on first use with the account key cert-agent keeps, optional
// External Account Binding), order, HTTP-01 / TLS-ALPN-01 authorization,
// finalize with a fresh P-256 key + CSR, certificate download. Blocking; runs
// on cert-agent's ACME thread, never on a loop that serves anything.
// HTTP(S) through POCO (Net, NetSSL_OpenSSL), JSON through common/proto/acme,
// JWS (ES256, HS256 for EAB) through common/crypto/jws.
// Included by cert-agent only.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::certagent {

struct AcmeConfig {
  // The directory URL (https://…; http:// is accepted for tests on loopback).
  std::string directoryUrl = "https://acme-v02.api.letsencrypt.org/directory";
  // PEM bundle that verifies the ACME server's TLS certificate; empty = the
  // system store (/etc/ssl/certs/ca-certificates.crt).
  std::string caFile;
  std::string email;    // optional account contact ("mailto:" is added)
  std::string eabKid;   // External Account Binding key id; empty = none
  std::string eabHmacKey;  // its MAC key, base64url as the CA hands it out
  // Challenge types to use, in order of preference: "tls-alpn-01", "http-01".
  std::vector<std::string> challengeTypes = {"tls-alpn-01", "http-01"};
  std::chrono::seconds requestTimeout{30};   // each HTTP request
  std::chrono::seconds orderTimeout{180};    // polling an authz / the order
};

// One challenge the relay must answer before the CA is told to validate it.
struct Challenge {
  std::string type;              // "http-01" or "tls-alpn-01"
  std::string identifier;        // the DNS name or IP being validated
  std::string token;             // the challenge token
  std::string keyAuthorization;  // token + "." + base64url(JWK thumbprint)
};

// cert-agent's side of presenting a challenge: present() returns once
// derp-worker answers it (or an error); cleanup() withdraws it.
class ChallengeResponder {
 public:
  virtual ~ChallengeResponder() = default;
  virtual Result<void> present(const Challenge& c) = 0;
  virtual void cleanup(const Challenge& c) = 0;
};

struct IssuedCert {
  std::string chainPem;  // as downloaded: leaf first, then the issuer chain
  std::string keyPem;    // the fresh P-256 key the CSR was signed with (PKCS#8)
};

class AcmeClient {
 public:
  // `accountKeyPem`: the ES256 (P-256) account key (see loadOrCreateAccountKey).
  static Result<std::unique_ptr<AcmeClient>> create(AcmeConfig cfg, const std::string& accountKeyPem);
  ~AcmeClient();

  // Runs one whole order for `identifiers` (DNS names, or IP literals as
  // RFC 8738 "ip" identifiers). badNonce answers are retried with a fresh
  // nonce (up to 5 times per request); every other failure is returned with
  // the CA's problem document in the message. `cancel` set → returns an
  // error soon (checked between requests and while polling).
  Result<IssuedCert> obtain(const std::vector<std::string>& identifiers, ChallengeResponder& responder,
                            const std::atomic<bool>& cancel);

 private:
  struct Impl;
  explicit AcmeClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The account key at `path`: read when it exists (PEM, must be P-256),
// otherwise generated and written 0600 (atomically). `*created` tells which.
Result<std::string> loadOrCreateAccountKey(const std::string& path, bool* created);

}  // namespace derpd::certagent
