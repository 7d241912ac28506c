// JOSE for ACME: base64url, ES256 key + JWK + thumbprint, flattened JWS, EAB.
#include "common/crypto/jws.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <array>
#include <cstring>

#include "common/util/go_json.hpp"

namespace derpd::crypto {

namespace {

constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr size_t kP256CoordLen = 32;
constexpr size_t kEs256SigLen = 2 * kP256CoordLen;
// An account key file is a few hundred bytes; anything near this is not one.
constexpr size_t kMaxPemBytes = 64 * 1024;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct SigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

Error sslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return makeError("jws: " + what);
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return makeError("jws: " + what + ": " + buf);
}

int8_t b64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return int8_t(c - 'A');
  if (c >= 'a' && c <= 'z') return int8_t(c - 'a' + 26);
  if (c >= '0' && c <= '9') return int8_t(c - '0' + 52);
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Never prompt on a terminal for a passphrase: encrypted keys are an error.
int noPassphrase(char*, int, int, void*) { return -1; }

Result<Bytes> coordinate(EVP_PKEY* pkey, const char* param) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, param, &raw) != 1 || raw == nullptr) {
    return sslError(std::string("read public ") + param);
  }
  BnPtr bn(raw);
  Bytes out(kP256CoordLen);
  if (BN_bn2binpad(bn.get(), out.data(), int(out.size())) != int(out.size())) {
    return sslError("public coordinate does not fit 32 bytes");
  }
  return out;
}

void appendJsonMember(std::string& out, std::string_view name, std::string_view value) {
  appendGoJsonString(out, name);
  out += ':';
  appendGoJsonString(out, value);
}

std::string flattened(std::string_view protectedB64, std::string_view payloadB64,
                      std::string_view sigB64) {
  std::string out;
  out.reserve(protectedB64.size() + payloadB64.size() + sigB64.size() + 48);
  out += "{\"protected\":\"";
  out += protectedB64;
  out += "\",\"payload\":\"";
  out += payloadB64;
  out += "\",\"signature\":\"";
  out += sigB64;
  out += "\"}";
  return out;
}

}  // namespace

std::string base64UrlEncode(ByteView data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
    out += kB64Url[(v >> 18) & 63];
    out += kB64Url[(v >> 12) & 63];
    out += kB64Url[(v >> 6) & 63];
    out += kB64Url[v & 63];
  }
  const size_t rest = data.size() - i;
  if (rest == 1) {
    const uint32_t v = uint32_t(data[i]) << 16;
    out += kB64Url[(v >> 18) & 63];
    out += kB64Url[(v >> 12) & 63];
  } else if (rest == 2) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8);
    out += kB64Url[(v >> 18) & 63];
    out += kB64Url[(v >> 12) & 63];
    out += kB64Url[(v >> 6) & 63];
  }
  return out;
}

std::optional<Bytes> base64UrlDecode(std::string_view s) {
  if (s.size() % 4 == 1) return std::nullopt;
  Bytes out;
  out.reserve(s.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int8_t v = b64UrlValue(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  // 2 or 4 leftover bits must be zero (canonical encoding).
  if (acc != 0) return std::nullopt;
  return out;
}

Bytes sha256(ByteView data) {
  Bytes out(32);
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr) != 1 ||
      n != out.size()) {
    // Only a broken libcrypto fails a one-shot SHA-256 of memory.
    ERR_clear_error();
    out.assign(32, 0);
  }
  return out;
}

Result<Bytes> hmacSha256(ByteView key, ByteView data) {
  if (key.empty()) return makeError("jws: empty HMAC key");
  Bytes out(32);
  size_t n = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(), data.data(),
                data.size(), out.data(), out.size(), &n) == nullptr ||
      n != out.size()) {
    return sslError("HMAC-SHA256");
  }
  return out;
}

void Es256Key::PkeyFree::operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }

Es256Key::~Es256Key() = default;

Result<Es256Key> Es256Key::wrap(EVP_PKEY* owned) {
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(owned);
  if (EVP_PKEY_is_a(pkey.get(), "EC") != 1) return makeError("jws: the key is not an EC key");
  char group[64] = {};
  size_t groupLen = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                     &groupLen) != 1) {
    ERR_clear_error();
    return makeError("jws: the EC key has no named curve (P-256 required)");
  }
  if (std::string_view(group, groupLen) != "prime256v1") {
    return makeError("jws: the EC key is on " + std::string(group, groupLen) +
                     ", not P-256 (prime256v1)");
  }
  auto x = coordinate(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_X);
  if (!x) return std::move(x).takeError();
  auto y = coordinate(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_Y);
  if (!y) return std::move(y).takeError();

  std::string jwk = "{";
  appendJsonMember(jwk, "crv", "P-256");
  jwk += ',';
  appendJsonMember(jwk, "kty", "EC");
  jwk += ',';
  appendJsonMember(jwk, "x", base64UrlEncode(*x));
  jwk += ',';
  appendJsonMember(jwk, "y", base64UrlEncode(*y));
  jwk += '}';
  return Es256Key(std::move(pkey), std::move(jwk));
}

Result<Es256Key> Es256Key::generate() {
  EVP_PKEY* p = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (p == nullptr) return sslError("P-256 keygen");
  return wrap(p);
}

Result<Es256Key> Es256Key::fromPem(std::string_view pem) {
  if (pem.empty()) return makeError("jws: empty key PEM");
  if (pem.size() > kMaxPemBytes) return makeError("jws: key PEM too large");
  BioPtr bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  if (!bio) return sslError("BIO_new_mem_buf");
  EVP_PKEY* p = PEM_read_bio_PrivateKey(bio.get(), nullptr, noPassphrase, nullptr);
  if (p == nullptr) return sslError("no unencrypted private key in PEM");
  auto key = wrap(p);
  // The decoders queue errors for the formats they tried first; leave none
  // behind for the next caller of ERR_get_error (POCO's TLS code).
  ERR_clear_error();
  return key;
}

Result<std::string> Es256Key::toPkcs8Pem() const {
  // secmem: the buffer is cleansed when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) return sslError("BIO_new");
  if (PEM_write_bio_PKCS8PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0, nullptr,
                                    nullptr) != 1) {
    return sslError("write PKCS#8 PEM");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  if (n <= 0 || data == nullptr) return sslError("empty PEM");
  return std::string(data, size_t(n));
}

std::string Es256Key::thumbprint() const { return base64UrlEncode(sha256(asBytes(jwk_))); }

Result<Bytes> Es256Key::sign(ByteView data) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) return sslError("EVP_MD_CTX_new");
  if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()) != 1) {
    return sslError("DigestSignInit");
  }
  size_t derLen = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &derLen, data.data(), data.size()) != 1) {
    return sslError("DigestSign (size)");
  }
  Bytes der(derLen);
  if (EVP_DigestSign(ctx.get(), der.data(), &derLen, data.data(), data.size()) != 1) {
    return sslError("DigestSign");
  }
  const unsigned char* p = der.data();
  std::unique_ptr<ECDSA_SIG, SigFree> sig(d2i_ECDSA_SIG(nullptr, &p, long(derLen)));
  if (!sig) return sslError("decode ECDSA signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  Bytes raw(kEs256SigLen);
  if (BN_bn2binpad(r, raw.data(), int(kP256CoordLen)) != int(kP256CoordLen) ||
      BN_bn2binpad(s, raw.data() + kP256CoordLen, int(kP256CoordLen)) != int(kP256CoordLen)) {
    return sslError("ECDSA r/s do not fit 32 bytes");
  }
  return raw;
}

Result<std::string> signAcmeJws(const Es256Key& key, std::string_view payload,
                                const std::string& nonce, const std::string& url,
                                const std::string& kid) {
  std::string hdr = "{";
  appendJsonMember(hdr, "alg", "ES256");
  hdr += ',';
  if (kid.empty()) {
    appendGoJsonString(hdr, "jwk");
    hdr += ':';
    hdr += key.jwkJson();
  } else {
    appendJsonMember(hdr, "kid", kid);
  }
  hdr += ',';
  appendJsonMember(hdr, "nonce", nonce);
  hdr += ',';
  appendJsonMember(hdr, "url", url);
  hdr += '}';

  const std::string protectedB64 = base64UrlEncode(hdr);
  const std::string payloadB64 = base64UrlEncode(payload);
  const std::string signingInput = protectedB64 + "." + payloadB64;
  auto sig = key.sign(asBytes(signingInput));
  if (!sig) return std::move(sig).takeError();
  return flattened(protectedB64, payloadB64, base64UrlEncode(*sig));
}

Result<std::string> makeEabJws(const Es256Key& accountKey, const std::string& eabKid,
                               std::string_view macKeyB64url, const std::string& newAccountUrl) {
  if (eabKid.empty()) return makeError("jws: empty EAB key id");
  auto mac = base64UrlDecode(macKeyB64url);
  if (!mac) return makeError("jws: the EAB MAC key is not unpadded base64url");
  if (mac->empty()) return makeError("jws: the EAB MAC key is empty");

  std::string hdr = "{";
  appendJsonMember(hdr, "alg", "HS256");
  hdr += ',';
  appendJsonMember(hdr, "kid", eabKid);
  hdr += ',';
  appendJsonMember(hdr, "url", newAccountUrl);
  hdr += '}';

  const std::string protectedB64 = base64UrlEncode(hdr);
  const std::string payloadB64 = base64UrlEncode(accountKey.jwkJson());
  const std::string signingInput = protectedB64 + "." + payloadB64;
  auto tag = hmacSha256(*mac, asBytes(signingInput));
  OPENSSL_cleanse(mac->data(), mac->size());
  if (!tag) return std::move(tag).takeError();
  return flattened(protectedB64, payloadB64, base64UrlEncode(*tag));
}

}  // namespace derpd::crypto
