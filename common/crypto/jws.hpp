// JOSE for ACME (RFC 7515 / 7518 / 7638 / 8555): base64url, the ES256 account
// key (OpenSSL 3 EVP_PKEY, P-256 only), its JWK and thumbprint, ACME requests
// as flattened-JSON JWS, and the HS256 External Account Binding.
// Included by cert-agent (the only process holding an account key) and tests.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::crypto {

// RFC 4648 §5 alphabet, no padding.
std::string base64UrlEncode(ByteView data);
inline std::string base64UrlEncode(std::string_view s) { return base64UrlEncode(asBytes(s)); }
// Strict: no padding, no whitespace, only [A-Za-z0-9_-], a length that is not
// 1 mod 4, and zero unused trailing bits (so decode∘encode is the identity).
std::optional<Bytes> base64UrlDecode(std::string_view s);

// One-shot SHA-256, and HMAC-SHA256 (an empty key is an error).
Bytes sha256(ByteView data);
Result<Bytes> hmacSha256(ByteView key, ByteView data);

// An ECDSA P-256 private key, used as an ES256 JWS signer. Move-only.
class Es256Key {
 public:
  Es256Key(Es256Key&&) noexcept = default;
  Es256Key& operator=(Es256Key&&) noexcept = default;
  ~Es256Key();

  static Result<Es256Key> generate();
  // The first private key in `pem` (PKCS#8 "PRIVATE KEY" or SEC1 "EC PRIVATE
  // KEY", unencrypted); anything but an EC key on P-256 is an error.
  static Result<Es256Key> fromPem(std::string_view pem);

  // PKCS#8 PEM of the private key. A secret: never log it.
  Result<std::string> toPkcs8Pem() const;

  // Canonical public JWK (RFC 7638 member order, no whitespace):
  //   {"crv":"P-256","kty":"EC","x":"<b64url 32 B>","y":"<b64url 32 B>"}
  const std::string& jwkJson() const { return jwk_; }
  // RFC 7638 thumbprint: base64url(SHA-256(jwkJson())).
  std::string thumbprint() const;

  // ES256 over `data`: SHA-256, ECDSA, returned as raw r||s (64 bytes,
  // each big-endian, left-padded), as RFC 7518 §3.4 requires.
  Result<Bytes> sign(ByteView data) const;

  EVP_PKEY* pkey() const { return pkey_.get(); }

 private:
  struct PkeyFree {
    void operator()(EVP_PKEY* p) const;
  };
  Es256Key(std::unique_ptr<EVP_PKEY, PkeyFree> pkey, std::string jwk)
      : pkey_(std::move(pkey)), jwk_(std::move(jwk)) {}
  static Result<Es256Key> wrap(EVP_PKEY* owned);

  std::unique_ptr<EVP_PKEY, PkeyFree> pkey_;
  std::string jwk_;
};

// An ACME request body (RFC 8555 §6.2), flattened JSON serialization:
//   {"protected":B64(hdr),"payload":B64(payload),"signature":B64(r||s)}
// with hdr = {"alg":"ES256","jwk":<jwk>,"nonce":…,"url":…} when `kid` is
// empty (newAccount, revokeCert by key), else {"alg":"ES256","kid":…,"nonce":…,
// "url":…}. POST-as-GET: payload "" (the "payload" member is then "").
Result<std::string> signAcmeJws(const Es256Key& key, std::string_view payload,
                                const std::string& nonce, const std::string& url,
                                const std::string& kid);

// The externalAccountBinding value of a newAccount payload (RFC 8555 §7.3.4):
// a flattened JWS with protected {"alg":"HS256","kid":<eabKid>,"url":<newAccount
// url>}, payload = the account key's JWK, HMAC-SHA256 keyed with the
// base64url-decoded `macKeyB64url`. An undecodable or empty MAC key is an error.
Result<std::string> makeEabJws(const Es256Key& accountKey, const std::string& eabKid,
                               std::string_view macKeyB64url, const std::string& newAccountUrl);

}  // namespace derpd::crypto
