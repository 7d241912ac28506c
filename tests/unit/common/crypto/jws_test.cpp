// base64url, the ES256 key / JWK / thumbprint, ACME JWS and EAB, each checked
// against OpenSSL used directly (not through jws.cpp).
#include "common/crypto/jws.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

namespace derpd::crypto {
namespace {

// RFC 7515 Appendix A.3: the ES256 example key (x, y and d as published).
constexpr char kRfc7515X[] = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
constexpr char kRfc7515Y[] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
// The same key (d = jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI) as PKCS#8 and SEC1.
constexpr char kRfc7515Pkcs8[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjpsQnnGQmL+YBIff\n"
    "H1136cspYG6+0iY7X1fCE9+E9LKhRANCAAR/zc4ncPbEXUGDy+5v20t7WAczNXvp\n"
    "7xO6z248e9FURcfxRM0bvZt+hyzf7bnuufSzaV1uqQskrYpGIyiFiOWt\n"
    "-----END PRIVATE KEY-----\n";
constexpr char kRfc7515Sec1[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEII6bEJ5xkJi/mASH3x9dd+nLKWBuvtImO19XwhPfhPSyoAoGCCqGSM49\n"
    "AwEHoUQDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEXH8UTNG72b\n"
    "focs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==\n"
    "-----END EC PRIVATE KEY-----\n";
// base64url(SHA-256('{"crv":"P-256","kty":"EC","x":"f83O…","y":"x_FE…"}')),
// computed outside this code base (Python hashlib).
constexpr char kRfc7515Thumbprint[] = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

// Independent base64url: OpenSSL's standard base64, then the URL alphabet.
std::string refB64Url(const uint8_t* p, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, int(n));
  out.resize(size_t(len));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

std::string decodeToString(std::string_view b64) {
  auto d = base64UrlDecode(b64);
  EXPECT_TRUE(d.has_value()) << b64;
  return d ? std::string(asChars(*d)) : std::string();
}

// The public point straight from OpenSSL, as two 32-byte coordinates.
std::pair<Bytes, Bytes> publicXY(EVP_PKEY* pkey) {
  uint8_t pt[65];
  size_t len = 0;
  EXPECT_EQ(EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &len), 1);
  EXPECT_EQ(len, 65u);
  EXPECT_EQ(pt[0], 0x04);  // uncompressed
  return {Bytes(pt + 1, pt + 33), Bytes(pt + 33, pt + 65)};
}

std::string refThumbprint(EVP_PKEY* pkey) {
  auto [x, y] = publicXY(pkey);
  const std::string jwk = std::string("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"") +
                          refB64Url(x.data(), x.size()) + "\",\"y\":\"" + refB64Url(y.data(), y.size()) +
                          "\"}";
  uint8_t md[32];
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(jwk.data(), jwk.size(), md, &n, EVP_sha256(), nullptr), 1);
  return refB64Url(md, n);
}

// Verifies an ES256 raw r||s signature over `input` with OpenSSL.
bool verifyEs256(EVP_PKEY* pkey, std::string_view input, const Bytes& raw) {
  if (raw.size() != 64) return false;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(raw.data(), 32, nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + 32, 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  unsigned char* der = nullptr;
  const int derLen = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = derLen > 0 && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestVerify(ctx, der, size_t(derLen), reinterpret_cast<const unsigned char*>(input.data()),
                             input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  return ok;
}

std::string pemOf(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  std::string out(p, size_t(n));
  BIO_free(bio);
  return out;
}

TEST(Base64Url, Rfc4648Vectors) {
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""},         {"f", "Zg"},         {"fo", "Zm8"},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
  };
  for (auto [plain, enc] : kVectors) {
    EXPECT_EQ(base64UrlEncode(std::string_view(plain)), enc);
    EXPECT_EQ(decodeToString(enc), plain);
  }
  // The two characters that differ from standard base64.
  const uint8_t fbff[] = {0xfb, 0xff};
  EXPECT_EQ(base64UrlEncode(ByteView(fbff)), "-_8");
  const uint8_t f8[] = {0xf8};
  EXPECT_EQ(base64UrlEncode(ByteView(f8)), "-A");
}

TEST(Base64Url, RoundTripsRandomData) {
  std::mt19937 rng(1234);
  for (size_t len = 0; len < 300; ++len) {
    Bytes b(len);
    for (auto& x : b) x = uint8_t(rng());
    const std::string enc = base64UrlEncode(b);
    EXPECT_EQ(enc, refB64Url(b.data(), b.size()));
    auto dec = base64UrlDecode(enc);
    ASSERT_TRUE(dec.has_value());
    EXPECT_EQ(*dec, b);
  }
}

TEST(Base64Url, RejectsNonCanonicalInput) {
  for (const char* bad : {"Zg==", "Zm8=", "Z", "Zm9vY", "Zm9v!", "Zm+v", "Zm/v", "Zm9 v", " Zm9v",
                          "Zm9v\n", "Zh", "Zm9", "Zm9vYmF=", "\xc3\xa9"}) {
    EXPECT_FALSE(base64UrlDecode(bad).has_value()) << bad;
  }
  // "Zm9" has set trailing bits ("fo" is "Zm8"); the strict decoder refuses it.
  EXPECT_TRUE(base64UrlDecode("Zm8").has_value());
  EXPECT_FALSE(base64UrlDecode(std::string_view("Zm\0v", 4)).has_value());
}

TEST(Es256Key, Rfc7515KeyJwkAndThumbprint) {
  for (const char* pem : {kRfc7515Pkcs8, kRfc7515Sec1}) {
    auto k = Es256Key::fromPem(pem);
    ASSERT_TRUE(k.ok()) << k.error();
    EXPECT_EQ(k->jwkJson(), std::string("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"") + kRfc7515X +
                                "\",\"y\":\"" + kRfc7515Y + "\"}");
    EXPECT_EQ(k->thumbprint(), kRfc7515Thumbprint);
    EXPECT_EQ(k->thumbprint(), refThumbprint(k->pkey()));
  }
}

TEST(Es256Key, GeneratedKeyThumbprintMatchesOpenSsl) {
  auto k = Es256Key::generate();
  ASSERT_TRUE(k.ok()) << k.error();
  EXPECT_EQ(k->thumbprint(), refThumbprint(k->pkey()));
  auto j = nlohmann::json::parse(k->jwkJson());
  auto [x, y] = publicXY(k->pkey());
  EXPECT_EQ(j["x"], refB64Url(x.data(), x.size()));
  EXPECT_EQ(j["y"], refB64Url(y.data(), y.size()));
}

TEST(Es256Key, CoordinatesArePaddedTo32Bytes) {
  // Find a key whose x has a leading zero byte (1 in 256); the JWK must
  // still carry 32 bytes (43 base64url characters).
  bool found = false;
  for (int i = 0; i < 5000 && !found; ++i) {
    auto k = Es256Key::generate();
    ASSERT_TRUE(k.ok());
    auto [x, y] = publicXY(k->pkey());
    if (x[0] != 0 && y[0] != 0) continue;
    found = true;
    auto j = nlohmann::json::parse(k->jwkJson());
    EXPECT_EQ(j["x"].get<std::string>().size(), 43u);
    EXPECT_EQ(j["y"].get<std::string>().size(), 43u);
    EXPECT_EQ(k->thumbprint(), refThumbprint(k->pkey()));
  }
  EXPECT_TRUE(found);
}

TEST(Es256Key, Pkcs8RoundTrip) {
  auto k = Es256Key::generate();
  ASSERT_TRUE(k.ok());
  auto pem = k->toPkcs8Pem();
  ASSERT_TRUE(pem.ok()) << pem.error();
  EXPECT_EQ(pem->rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  auto again = Es256Key::fromPem(*pem);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again->jwkJson(), k->jwkJson());
}

TEST(Es256Key, RejectsOtherKeysAndGarbage) {
  EVP_PKEY* p384 = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  ASSERT_NE(p384, nullptr);
  auto r1 = Es256Key::fromPem(pemOf(p384));
  EXPECT_FALSE(r1.ok());
  EXPECT_NE(r1.error().find("P-256"), std::string::npos) << r1.error();
  EVP_PKEY_free(p384);

  EVP_PKEY* ed = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  ASSERT_NE(ed, nullptr);
  EXPECT_FALSE(Es256Key::fromPem(pemOf(ed)).ok());
  EVP_PKEY_free(ed);

  EVP_PKEY* rsa = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(2048));
  ASSERT_NE(rsa, nullptr);
  EXPECT_FALSE(Es256Key::fromPem(pemOf(rsa)).ok());
  EVP_PKEY_free(rsa);

  EXPECT_FALSE(Es256Key::fromPem("").ok());
  EXPECT_FALSE(Es256Key::fromPem("not a key").ok());
  EXPECT_FALSE(Es256Key::fromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").ok());
}

TEST(Es256Key, RejectsEncryptedKeyWithoutPrompting) {
  auto k = Es256Key::fromPem(kRfc7515Pkcs8);
  ASSERT_TRUE(k.ok());
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(bio, k->pkey(), EVP_aes_128_cbc(), nullptr, 0, nullptr,
                                          const_cast<char*>("secret")),
            1);
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  std::string enc(p, size_t(n));
  BIO_free(bio);
  EXPECT_FALSE(Es256Key::fromPem(enc).ok());
}

struct ParsedJws {
  nlohmann::json header;
  std::string payload;
  std::string signingInput;
  Bytes signature;
};

ParsedJws parseFlattened(const std::string& jws) {
  ParsedJws out;
  auto j = nlohmann::json::parse(jws);
  EXPECT_EQ(j.size(), 3u);
  const std::string prot = j.at("protected");
  const std::string payload = j.at("payload");
  out.header = nlohmann::json::parse(decodeToString(prot));
  out.payload = decodeToString(payload);
  out.signingInput = prot + "." + payload;
  auto sig = base64UrlDecode(j.at("signature").get<std::string>());
  EXPECT_TRUE(sig.has_value());
  if (sig) out.signature = *sig;
  return out;
}

TEST(AcmeJws, JwkFormVerifiesWithOpenSsl) {
  auto k = Es256Key::fromPem(kRfc7515Pkcs8);
  ASSERT_TRUE(k.ok());
  const std::string payload = R"({"termsOfServiceAgreed":true})";
  auto jws = signAcmeJws(*k, payload, "nonce-123_abc", "https://ca.test/acme/new-acct", "");
  ASSERT_TRUE(jws.ok()) << jws.error();
  ParsedJws p = parseFlattened(*jws);
  EXPECT_EQ(p.header["alg"], "ES256");
  EXPECT_EQ(p.header["nonce"], "nonce-123_abc");
  EXPECT_EQ(p.header["url"], "https://ca.test/acme/new-acct");
  EXPECT_FALSE(p.header.contains("kid"));
  EXPECT_EQ(p.header["jwk"], nlohmann::json::parse(k->jwkJson()));
  EXPECT_EQ(p.payload, payload);
  ASSERT_EQ(p.signature.size(), 64u);
  EXPECT_TRUE(verifyEs256(k->pkey(), p.signingInput, p.signature));
  // A changed byte must not verify.
  std::string tampered = p.signingInput;
  tampered.back() ^= 1;
  EXPECT_FALSE(verifyEs256(k->pkey(), tampered, p.signature));
}

TEST(AcmeJws, KidFormAndPostAsGet) {
  auto k = Es256Key::generate();
  ASSERT_TRUE(k.ok());
  // Characters that need escaping in JSON must survive.
  const std::string url = "https://ca.test/acme/order/1?a=\"b\"&c=\\";
  for (int i = 0; i < 20; ++i) {  // different r, s lengths (leading zeros)
    auto jws = signAcmeJws(*k, "", "n0nce", url, "https://ca.test/acme/acct/7");
    ASSERT_TRUE(jws.ok()) << jws.error();
    EXPECT_NE(jws->find("\"payload\":\"\""), std::string::npos);
    ParsedJws p = parseFlattened(*jws);
    EXPECT_EQ(p.header["kid"], "https://ca.test/acme/acct/7");
    EXPECT_FALSE(p.header.contains("jwk"));
    EXPECT_EQ(p.header["url"], url);
    EXPECT_EQ(p.payload, "");
    EXPECT_TRUE(verifyEs256(k->pkey(), p.signingInput, p.signature));
  }
}

TEST(Eab, HmacMatchesIndependentComputation) {
  auto k = Es256Key::fromPem(kRfc7515Pkcs8);
  ASSERT_TRUE(k.ok());
  // pebble's example MAC key for kid-1.
  const std::string macB64 = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
  auto jws = makeEabJws(*k, "kid-1", macB64, "https://ca.test/acme/new-acct");
  ASSERT_TRUE(jws.ok()) << jws.error();
  ParsedJws p = parseFlattened(*jws);
  EXPECT_EQ(p.header, nlohmann::json::parse(R"({"alg":"HS256","kid":"kid-1","url":"https://ca.test/acme/new-acct"})"));
  EXPECT_FALSE(p.header.contains("nonce"));
  EXPECT_EQ(p.payload, k->jwkJson());

  auto mac = base64UrlDecode(macB64);
  ASSERT_TRUE(mac.has_value());
  EXPECT_EQ(mac->size(), 48u);
  uint8_t md[32];
  unsigned int mdLen = 0;
  ASSERT_NE(HMAC(EVP_sha256(), mac->data(), int(mac->size()),
                 reinterpret_cast<const unsigned char*>(p.signingInput.data()), p.signingInput.size(), md,
                 &mdLen),
            nullptr);
  EXPECT_EQ(p.signature, Bytes(md, md + mdLen));
}

TEST(Eab, RejectsBadMacKeyAndKid) {
  auto k = Es256Key::generate();
  ASSERT_TRUE(k.ok());
  EXPECT_FALSE(makeEabJws(*k, "kid", "not base64!", "https://x/").ok());
  EXPECT_FALSE(makeEabJws(*k, "kid", "", "https://x/").ok());
  EXPECT_FALSE(makeEabJws(*k, "kid", "AAA=", "https://x/").ok());
  EXPECT_FALSE(makeEabJws(*k, "", "AAAA", "https://x/").ok());
}

TEST(Hmac, Rfc4231Case2) {
  auto tag = hmacSha256(asBytes("Jefe"), asBytes("what do ya want for nothing?"));
  ASSERT_TRUE(tag.ok());
  EXPECT_EQ(toHex(*tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_FALSE(hmacSha256(ByteView(), asBytes("x")).ok());
}

}  // namespace
}  // namespace derpd::crypto
