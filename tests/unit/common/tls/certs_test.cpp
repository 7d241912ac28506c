// Tests for common/tls/certs: fixtures (CA, intermediates, leaves, keys in
// every accepted format) are made here with OpenSSL, not checked in.
#include "common/tls/certs.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace derpd::tls {
namespace {

template <auto Fn>
struct Del {
  template <typename T>
  void operator()(T* p) const noexcept {
    Fn(p);
  }
};
using X509P = std::unique_ptr<X509, Del<&X509_free>>;
using ReqP = std::unique_ptr<X509_REQ, Del<&X509_REQ_free>>;
using PkeyP = std::unique_ptr<EVP_PKEY, Del<&EVP_PKEY_free>>;
using BioP = std::unique_ptr<BIO, Del<&BIO_free>>;
using BnP = std::unique_ptr<BIGNUM, Del<&BN_free>>;
using GensP = std::unique_ptr<GENERAL_NAMES, Del<&GENERAL_NAMES_free>>;
using ObjP = std::unique_ptr<ASN1_OBJECT, Del<&ASN1_OBJECT_free>>;
using ExtP = std::unique_ptr<X509_EXTENSION, Del<&X509_EXTENSION_free>>;
struct ExtsFree {
  void operator()(STACK_OF(X509_EXTENSION) * s) const {
    sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
  }
};
using ExtsP = std::unique_ptr<STACK_OF(X509_EXTENSION), ExtsFree>;

constexpr int64_t kNow = 1767323045;  // 2026-01-02T03:04:05Z
constexpr int64_t kDay = 86400;

// ---- fixtures ----

PkeyP ecKey() { return PkeyP(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }
PkeyP rsaKey() { return PkeyP(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(2048))); }
PkeyP edKey() { return PkeyP(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")); }

struct CertSpec {
  std::string cn = "test";
  std::string san;  // X509V3 config syntax, e.g. "DNS:a.example.com,IP:192.0.2.1"; empty = none
  int64_t notBefore = kNow - kDay;
  int64_t notAfter = kNow + 90 * kDay;
  bool ca = false;
  std::string serialHex = "1";
};

void addExt(X509* x, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  ExtP ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  ASSERT_TRUE(ext) << value;
  ASSERT_EQ(X509_add_ext(x, ext.get(), -1), 1);
}

// A certificate for `key`, signed by `issuerKey` as `issuer` (self-signed
// when issuer is null).
X509P makeCert(const CertSpec& s, EVP_PKEY* key, X509* issuer = nullptr,
               EVP_PKEY* issuerKey = nullptr) {
  X509P x(X509_new());
  EXPECT_EQ(X509_set_version(x.get(), X509_VERSION_3), 1);
  BIGNUM* bn = nullptr;
  EXPECT_GT(BN_hex2bn(&bn, s.serialHex.c_str()), 0);
  BnP bnHolder(bn);
  EXPECT_TRUE(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get())));
  X509_NAME* name = X509_get_subject_name(x.get());
  EXPECT_EQ(
      X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(s.cn.c_str()), -1, -1, 0),
      1);
  EXPECT_EQ(X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name), 1);
  EXPECT_TRUE(ASN1_TIME_set(X509_getm_notBefore(x.get()), time_t(s.notBefore)));
  EXPECT_TRUE(ASN1_TIME_set(X509_getm_notAfter(x.get()), time_t(s.notAfter)));
  EXPECT_EQ(X509_set_pubkey(x.get(), key), 1);
  X509* iss = issuer ? issuer : x.get();
  addExt(x.get(), iss, NID_basic_constraints, s.ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  if (!s.san.empty()) addExt(x.get(), iss, NID_subject_alt_name, s.san);
  EVP_PKEY* signer = issuerKey ? issuerKey : key;
  const EVP_MD* md = EVP_PKEY_get_base_id(signer) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  EXPECT_GT(X509_sign(x.get(), signer, md), 0);
  return x;
}

std::string bioString(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, size_t(n));
}

std::string pemOf(X509* x) {
  BioP b(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_X509(b.get(), x), 1);
  return bioString(b.get());
}

std::string pkcs8Pem(EVP_PKEY* k) {
  BioP b(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return bioString(b.get());
}

// "EC PRIVATE KEY" (SEC1) or "RSA PRIVATE KEY" (PKCS#1), as derper and
// `openssl genrsa -traditional` write them.
std::string traditionalPem(EVP_PKEY* k) {
  BioP b(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PrivateKey_traditional(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr),
            1);
  return bioString(b.get());
}

std::string derOf(X509* x) {
  unsigned char* p = nullptr;
  int n = i2d_X509(x, &p);
  EXPECT_GT(n, 0);
  std::string out(reinterpret_cast<char*>(p), size_t(n));
  OPENSSL_free(p);
  return out;
}

std::string sha256Hex(const std::string& data) {
  unsigned char md[32];
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr), 1);
  return toHex(ByteView(md, n));
}

std::vector<X509P> parseChain(const std::string& pem) {
  std::vector<X509P> out;
  BioP b(BIO_new_mem_buf(pem.data(), int(pem.size())));
  while (X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();
  return out;
}

X509P firstCert(const CertBundle& b) {
  auto chain = parseChain(b.chainPem);
  EXPECT_FALSE(chain.empty());
  return chain.empty() ? X509P() : std::move(chain.front());
}

PkeyP parseKey(const std::string& pem) {
  BioP b(BIO_new_mem_buf(pem.data(), int(pem.size())));
  return PkeyP(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
}

// "DNS:x" / "IP:y" for every SAN of `gens`, in order.
std::vector<std::string> sanList(const GENERAL_NAMES* gens) {
  std::vector<std::string> out;
  for (int i = 0; i < sk_GENERAL_NAME_num(gens); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(gens, i);
    if (gn->type == GEN_DNS) {
      out.push_back("DNS:" +
                    std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                                size_t(ASN1_STRING_length(gn->d.dNSName))));
    } else if (gn->type == GEN_IPADD) {
      const unsigned char* p = ASN1_STRING_get0_data(gn->d.iPAddress);
      out.push_back("IP:" + toHex(ByteView(p, size_t(ASN1_STRING_length(gn->d.iPAddress)))));
    } else {
      out.push_back("other");
    }
  }
  return out;
}

std::vector<std::string> certSans(X509* x) {
  GensP g(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  return g ? sanList(g.get()) : std::vector<std::string>{};
}

std::string commonName(X509_NAME* n, int* type = nullptr) {
  int idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  if (idx < 0) return "";
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
  if (type) *type = ASN1_STRING_type(s);
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     size_t(ASN1_STRING_length(s)));
}

class TlsCertsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    caKey_ = ecKey().release();
    leafKey_ = ecKey().release();
    otherKey_ = ecKey().release();
    rsaKey_ = rsaKey().release();
    CertSpec ca;
    ca.cn = "Test Root";
    ca.ca = true;
    ca.notBefore = kNow - 365 * kDay;
    ca.notAfter = kNow + 3650 * kDay;
    ca_ = makeCert(ca, caKey_).release();
  }
  static void TearDownTestSuite() {
    X509_free(ca_);
    EVP_PKEY_free(caKey_);
    EVP_PKEY_free(leafKey_);
    EVP_PKEY_free(otherKey_);
    EVP_PKEY_free(rsaKey_);
  }
  void TearDown() override {
    EXPECT_EQ(ERR_peek_error(), 0UL) << "OpenSSL error queue left non-empty";
  }

  // A leaf signed by the test CA.
  static X509P leaf(const std::string& san, int64_t notBefore = kNow - kDay,
                    int64_t notAfter = kNow + 90 * kDay, EVP_PKEY* key = nullptr,
                    const std::string& serialHex = "1000") {
    CertSpec s;
    s.cn = "leaf";
    s.san = san;
    s.notBefore = notBefore;
    s.notAfter = notAfter;
    s.serialHex = serialHex;
    return makeCert(s, key ? key : leafKey_, ca_, caKey_);
  }

  static inline X509* ca_ = nullptr;
  static inline EVP_PKEY* caKey_ = nullptr;
  static inline EVP_PKEY* leafKey_ = nullptr;
  static inline EVP_PKEY* otherKey_ = nullptr;
  static inline EVP_PKEY* rsaKey_ = nullptr;
};

// ---- isIpLiteral ----

TEST_F(TlsCertsTest, IsIpLiteral) {
  EXPECT_TRUE(isIpLiteral("127.0.0.1"));
  EXPECT_TRUE(isIpLiteral("192.0.2.10"));
  EXPECT_TRUE(isIpLiteral("::1"));
  EXPECT_TRUE(isIpLiteral("2001:db8::1"));
  EXPECT_FALSE(isIpLiteral(""));
  EXPECT_FALSE(isIpLiteral("[::1]"));
  EXPECT_FALSE(isIpLiteral("fe80::1%eth0"));
  EXPECT_FALSE(isIpLiteral("1.2.3"));
  EXPECT_FALSE(isIpLiteral("derp.example.com"));
  EXPECT_FALSE(isIpLiteral("1.2.3.4.example.com"));
}

// ---- validateBundle: good chains ----

TEST_F(TlsCertsTest, ValidDnsChain) {
  auto l = leaf("DNS:derp.example.com,DNS:www.example.com", kNow - kDay, kNow + 90 * kDay, nullptr,
                "1234ABCD");
  const std::string chain = pemOf(l.get()) + pemOf(ca_);
  auto r = validateBundle(chain, pkcs8Pem(leafKey_), "derp.example.com", kNow, "test");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->info.serialHex, "1234ABCD");
  EXPECT_EQ(r->info.notBefore, kNow - kDay);
  EXPECT_EQ(r->info.notAfter, kNow + 90 * kDay);
  EXPECT_EQ(r->info.dnsNames, (std::vector<std::string>{"derp.example.com", "www.example.com"}));
  EXPECT_TRUE(r->info.ipAddrs.empty());
  EXPECT_EQ(r->info.leafSha256Hex, sha256Hex(derOf(l.get())));
  EXPECT_EQ(r->chainPem, chain);  // already canonical PEM
  EXPECT_EQ(r->keyPem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  PkeyP k = parseKey(r->keyPem);
  ASSERT_TRUE(k);
  EXPECT_EQ(EVP_PKEY_eq(k.get(), leafKey_), 1);
  // Host names are case-insensitive; the second SAN works too.
  EXPECT_TRUE(validateBundle(chain, pkcs8Pem(leafKey_), "WWW.Example.COM", kNow, "t").ok());
}

TEST_F(TlsCertsTest, ValidIpv4AndIpv6) {
  auto l = leaf("IP:192.0.2.7,IP:2001:db8::1,DNS:derp.example.com");
  const std::string chain = pemOf(l.get());
  const std::string key = pkcs8Pem(leafKey_);
  auto v4 = validateBundle(chain, key, "192.0.2.7", kNow, "t");
  ASSERT_TRUE(v4.ok()) << v4.error();
  EXPECT_EQ(v4->info.ipAddrs, (std::vector<std::string>{"192.0.2.7", "2001:db8::1"}));
  EXPECT_EQ(v4->info.dnsNames, (std::vector<std::string>{"derp.example.com"}));
  auto v6 = validateBundle(chain, key, "2001:db8::1", kNow, "t");
  ASSERT_TRUE(v6.ok()) << v6.error();
  auto v6long = validateBundle(chain, key, "2001:0db8:0:0:0:0:0:1", kNow, "t");
  EXPECT_TRUE(v6long.ok()) << v6long.error();
  auto other = validateBundle(chain, key, "192.0.2.8", kNow, "t");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(
      other.error(),
      "t: certificate is not valid for IP address \"192.0.2.8\" (its names: derp.example.com, "
      "192.0.2.7, 2001:db8::1)");
}

TEST_F(TlsCertsTest, IpHostNeedsIpSan) {
  // A DNS SAN spelling an IP does not make the certificate valid for that IP.
  auto l = leaf("DNS:192.0.2.7");
  auto r = validateBundle(pemOf(l.get()), pkcs8Pem(leafKey_), "192.0.2.7", kNow, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("not valid for IP address \"192.0.2.7\""), std::string::npos)
      << r.error();
}

TEST_F(TlsCertsTest, Wildcard) {
  auto l = leaf("DNS:*.example.com");
  const std::string chain = pemOf(l.get());
  const std::string key = pkcs8Pem(leafKey_);
  EXPECT_TRUE(validateBundle(chain, key, "derp.example.com", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(chain, key, "example.com", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(chain, key, "a.b.example.com", kNow, "t").ok());
  auto partial = leaf("DNS:d*.example.com");
  EXPECT_FALSE(validateBundle(pemOf(partial.get()), key, "derp.example.com", kNow, "t").ok());
}

TEST_F(TlsCertsTest, WrongHostNamesTheCertNames) {
  auto l = leaf("DNS:derp.example.com,DNS:www.example.com,IP:192.0.2.7");
  auto r = validateBundle(pemOf(l.get()), pkcs8Pem(leafKey_), "other.example.com", kNow, "a.crt");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "a.crt: certificate is not valid for host name \"other.example.com\" (its names: "
            "derp.example.com, www.example.com, 192.0.2.7)");
}

TEST_F(TlsCertsTest, CommonNameAloneIsNotAHostName) {
  CertSpec s;
  s.cn = "derp.example.com";
  auto x = makeCert(s, leafKey_, ca_, caKey_);
  auto r = validateBundle(pemOf(x.get()), pkcs8Pem(leafKey_), "derp.example.com", kNow, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(
      r.error(),
      "t: certificate is not valid for host name \"derp.example.com\" (it has no DNS or IP subject "
      "alternative names)");
}

TEST_F(TlsCertsTest, EmptyHostName) {
  auto l = leaf("DNS:derp.example.com");
  auto r = validateBundle(pemOf(l.get()), pkcs8Pem(leafKey_), "", kNow, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "t: empty host name");
}

// ---- key checks ----

TEST_F(TlsCertsTest, KeyMismatch) {
  auto l = leaf("DNS:derp.example.com");
  auto r = validateBundle(pemOf(l.get()), pkcs8Pem(otherKey_), "derp.example.com", kNow, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "t: private key does not match the certificate");
  auto rsa = validateBundle(pemOf(l.get()), pkcs8Pem(rsaKey_), "derp.example.com", kNow, "t");
  ASSERT_FALSE(rsa.ok());
  EXPECT_EQ(rsa.error(), "t: private key does not match the certificate");
}

TEST_F(TlsCertsTest, KeyFormats) {
  // EC: PKCS#8, SEC1 (derper's "EC PRIVATE KEY"), SEC1 after "EC PARAMETERS".
  auto l = leaf("DNS:derp.example.com");
  const std::string chain = pemOf(l.get());
  const std::string sec1 = traditionalPem(leafKey_);
  ASSERT_EQ(sec1.rfind("-----BEGIN EC PRIVATE KEY-----", 0), 0u);
  const std::string params =
      "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
  for (const std::string& key : {pkcs8Pem(leafKey_), sec1, params + sec1}) {
    auto r = validateBundle(chain, key, "derp.example.com", kNow, "t");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->keyPem, pkcs8Pem(leafKey_));
  }
  // RSA: PKCS#8 and PKCS#1.
  auto rl = leaf("DNS:derp.example.com", kNow - kDay, kNow + kDay, rsaKey_);
  const std::string pkcs1 = traditionalPem(rsaKey_);
  ASSERT_EQ(pkcs1.rfind("-----BEGIN RSA PRIVATE KEY-----", 0), 0u);
  for (const std::string& key : {pkcs8Pem(rsaKey_), pkcs1}) {
    auto r = validateBundle(pemOf(rl.get()), key, "derp.example.com", kNow, "t");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->keyPem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  }
  // Ed25519 (PKCS#8 only).
  PkeyP ed = edKey();
  auto el = leaf("DNS:derp.example.com", kNow - kDay, kNow + kDay, ed.get());
  auto r = validateBundle(pemOf(el.get()), pkcs8Pem(ed.get()), "derp.example.com", kNow, "t");
  ASSERT_TRUE(r.ok()) << r.error();
}

TEST_F(TlsCertsTest, KeyFileErrors) {
  auto l = leaf("DNS:derp.example.com");
  const std::string chain = pemOf(l.get());
  auto check = [&](const std::string& key, const std::string& want) {
    auto r = validateBundle(chain, key, "derp.example.com", kNow, "k");
    ASSERT_FALSE(r.ok()) << want;
    EXPECT_EQ(r.error(), want);
  };
  check("", "k: no private key found");
  check("not a key\n", "k: no private key found");
  check(pkcs8Pem(leafKey_) + pkcs8Pem(otherKey_),
        "k: 2 private keys in the key file, want exactly one");
  check(pkcs8Pem(leafKey_) + traditionalPem(leafKey_),
        "k: 2 private keys in the key file, want exactly one");
  check(pkcs8Pem(leafKey_) + chain,
        "k: a CERTIFICATE block in the key file (it must hold only the private key)");
  check(pkcs8Pem(leafKey_) + "garbage\n", "k: unexpected data after the private key");
  check("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "k: the PRIVATE KEY block does not parse as a private key");
  // Encrypted PKCS#8.
  BioP b(BIO_new(BIO_s_mem()));
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(b.get(), leafKey_, EVP_aes_128_cbc(), nullptr, 0, nullptr,
                                          const_cast<char*>("secret")),
            1);
  check(bioString(b.get()), "k: the private key is encrypted; derpd needs it unencrypted");
  // An X25519 key cannot sign.
  PkeyP x(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  check(pkcs8Pem(x.get()), "k: unsupported private key type X25519 (want EC, RSA or Ed25519)");
  // Malformed PEM (no END line).
  auto r =
      validateBundle(chain, "-----BEGIN PRIVATE KEY-----\nMIGH\n", "derp.example.com", kNow, "k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().rfind("k: malformed PEM in the key file: ", 0), 0u) << r.error();
}

// ---- time ----

TEST_F(TlsCertsTest, Expired) {
  auto l = leaf("DNS:derp.example.com", kNow - 90 * kDay, kNow);
  const std::string chain = pemOf(l.get());
  const std::string key = pkcs8Pem(leafKey_);
  auto r = validateBundle(chain, key, "derp.example.com", kNow, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "t: certificate expired at 2026-01-02T03:04:05Z");
  EXPECT_TRUE(validateBundle(chain, key, "derp.example.com", kNow - 1, "t").ok());
}

TEST_F(TlsCertsTest, NotYetValid) {
  auto l = leaf("DNS:derp.example.com", kNow, kNow + 90 * kDay);
  const std::string chain = pemOf(l.get());
  const std::string key = pkcs8Pem(leafKey_);
  auto r = validateBundle(chain, key, "derp.example.com", kNow - 1, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "t: certificate is not valid before 2026-01-02T03:04:05Z");
  EXPECT_TRUE(validateBundle(chain, key, "derp.example.com", kNow, "t").ok());
}

TEST_F(TlsCertsTest, GeneralizedTimeAfter2049) {
  const int64_t y2100 = 4102444800;  // 2100-01-01T00:00:00Z
  auto l = leaf("DNS:derp.example.com", kNow - kDay, y2100);
  auto r = validateBundle(pemOf(l.get()), pkcs8Pem(leafKey_), "derp.example.com", kNow, "t");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->info.notAfter, y2100);
}

// ---- chain text ----

TEST_F(TlsCertsTest, EmptyAndGarbage) {
  const std::string key = pkcs8Pem(leafKey_);
  for (const std::string& chain :
       {std::string(), std::string("  \n\n"), std::string("hello world\n"),
        std::string("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n")}) {
    auto r = validateBundle(chain, key, "derp.example.com", kNow, "c");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), "c: no certificate found");
  }
}

TEST_F(TlsCertsTest, MalformedPem) {
  const std::string key = pkcs8Pem(leafKey_);
  auto l = leaf("DNS:derp.example.com");
  std::string pem = pemOf(l.get());
  // Truncated: no END line.
  auto r = validateBundle(pem.substr(0, pem.size() / 2), key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().rfind("c: malformed PEM in the certificate chain: ", 0), 0u) << r.error();
  // Valid base64, not a certificate.
  r = validateBundle("-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n", key,
                     "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().rfind("c: certificate #1 does not parse: ", 0), 0u) << r.error();
}

TEST_F(TlsCertsTest, TrailingGarbageAndExplanatoryText) {
  const std::string key = pkcs8Pem(leafKey_);
  auto l = leaf("DNS:derp.example.com");
  const std::string pem = pemOf(l.get());
  auto r = validateBundle(pem + "garbage\n", key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: unexpected data after the last certificate");
  // Trailing whitespace, CRLF line ends, no final newline and RFC 7468
  // explanatory text before a block are all fine.
  EXPECT_TRUE(validateBundle(pem + "\n \t\n", key, "derp.example.com", kNow, "c").ok());
  std::string crlf;
  for (char ch : pem) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  EXPECT_TRUE(validateBundle(crlf, key, "derp.example.com", kNow, "c").ok());
  EXPECT_TRUE(
      validateBundle(pem.substr(0, pem.size() - 1), key, "derp.example.com", kNow, "c").ok());
  auto x = validateBundle("subject=CN = leaf\nissuer=CN = Test Root\n" + pem +
                              "\nsubject=CN = Test Root\n" + pemOf(ca_),
                          key, "derp.example.com", kNow, "c");
  ASSERT_TRUE(x.ok()) << x.error();
  EXPECT_EQ(x->chainPem, pem + pemOf(ca_));
}

TEST_F(TlsCertsTest, KeyBlockInChain) {
  auto l = leaf("DNS:derp.example.com");
  const std::string key = pkcs8Pem(leafKey_);
  auto r = validateBundle(pemOf(l.get()) + key, key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: a PRIVATE KEY block in the certificate chain");
  r = validateBundle(traditionalPem(leafKey_) + pemOf(l.get()), key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: a EC PRIVATE KEY block in the certificate chain");
  // A key alone, no certificate: the key block is what is reported.
  r = validateBundle(key, key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: a PRIVATE KEY block in the certificate chain");
}

TEST_F(TlsCertsTest, CertCountAndSizeLimits) {
  auto l = leaf("DNS:derp.example.com");
  const std::string pem = pemOf(l.get());
  const std::string key = pkcs8Pem(leafKey_);
  std::string sixteen;
  for (int i = 0; i < 16; ++i) sixteen += pem;
  auto ok = validateBundle(sixteen, key, "derp.example.com", kNow, "c");
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_EQ(parseChain(ok->chainPem).size(), 16u);
  auto r = validateBundle(sixteen + pem, key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: 17 certificates, more than the limit of 16");
  std::string big = pem + std::string(256 * 1024, '\n');
  r = validateBundle(big, key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: the certificate chain is " + std::to_string(big.size()) +
                           " bytes, more than the limit of 262144");
}

TEST_F(TlsCertsTest, ChainOrderPreserved) {
  PkeyP interKey = ecKey();
  CertSpec is;
  is.cn = "Test Intermediate";
  is.ca = true;
  is.serialHex = "77";
  auto inter = makeCert(is, interKey.get(), ca_, caKey_);
  CertSpec ls;
  ls.cn = "leaf";
  ls.san = "DNS:derp.example.com";
  auto l = makeCert(ls, leafKey_, inter.get(), interKey.get());
  const std::string key = pkcs8Pem(leafKey_);
  for (const auto& order : {std::vector<X509*>{l.get(), inter.get(), ca_},
                            std::vector<X509*>{l.get(), ca_, inter.get()}}) {
    std::string chain;
    for (X509* x : order) chain += pemOf(x);
    auto r = validateBundle(chain, key, "derp.example.com", kNow, "c");
    ASSERT_TRUE(r.ok()) << r.error();
    auto got = parseChain(r->chainPem);
    ASSERT_EQ(got.size(), order.size());
    for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(derOf(got[i].get()), derOf(order[i])) << i;
  }
  // The leaf is the first certificate: a chain starting with the CA does
  // not match the leaf's key.
  auto r = validateBundle(pemOf(ca_) + pemOf(l.get()), key, "derp.example.com", kNow, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "c: private key does not match the certificate");
}

TEST_F(TlsCertsTest, SerialHex) {
  const std::string key = pkcs8Pem(leafKey_);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0", "0"},
      {"0A", "A"},
      {"1234abcd", "1234ABCD"},
      {"00ff", "FF"},
      {"fedcba9876543210fedcba9876543210", "FEDCBA9876543210FEDCBA9876543210"},
      {"0123456789abcdef0123456789abcdef01", "123456789ABCDEF0123456789ABCDEF01"},
  };
  for (const auto& [in, want] : cases) {
    auto l = leaf("DNS:derp.example.com", kNow - kDay, kNow + kDay, nullptr, in);
    auto r = validateBundle(pemOf(l.get()), key, "derp.example.com", kNow, "c");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->info.serialHex, want) << in;
  }
}

// ---- loadBundleFiles ----

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "derpd-certs-XXXXXX";
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& data) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << data;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_F(TlsCertsTest, LoadBundleFiles) {
  TempDir dir;
  auto l = leaf("DNS:derp.example.com");
  const std::string crt = dir.write("derp.example.com.crt", pemOf(l.get()) + pemOf(ca_));
  const std::string key = dir.write("derp.example.com.key", traditionalPem(leafKey_));
  auto r = loadBundleFiles(crt, key, "derp.example.com", kNow);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(parseChain(r->chainPem).size(), 2u);

  auto host = loadBundleFiles(crt, key, "other.example.com", kNow);
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.error().rfind(crt + ": certificate is not valid for host name", 0), 0u)
      << host.error();

  const std::string otherKey = dir.write("other.key", pkcs8Pem(otherKey_));
  auto mismatch = loadBundleFiles(crt, otherKey, "derp.example.com", kNow);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.error(),
            crt + ", " + otherKey + ": private key does not match the certificate");

  const std::string emptyKey = dir.write("empty.key", "");
  auto noKey = loadBundleFiles(crt, emptyKey, "derp.example.com", kNow);
  ASSERT_FALSE(noKey.ok());
  EXPECT_EQ(noKey.error(), emptyKey + ": no private key found");

  auto missing = loadBundleFiles(dir.path() + "/nope.crt", key, "derp.example.com", kNow);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find(dir.path() + "/nope.crt"), std::string::npos) << missing.error();

  const std::string huge = dir.write("huge.crt", std::string(1024 * 1024 + 1, '\n'));
  auto tooBig = loadBundleFiles(huge, key, "derp.example.com", kNow);
  ASSERT_FALSE(tooBig.ok());
  EXPECT_NE(tooBig.error().find(huge), std::string::npos) << tooBig.error();
}

// ---- makeSelfSigned (derper's createSelfSignedIPCert) ----

// Checks the layout derper's template gives x509.CreateCertificate.
void expectDerperLayout(X509* x, const std::string& host, const std::string& wantSan) {
  // Key: ECDSA P-256; signature ecdsa-with-SHA256; v3.
  EVP_PKEY* pub = X509_get0_pubkey(x);
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  char group[64] = {};
  size_t glen = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(pub, group, sizeof group, &glen), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_get_version(x), X509_VERSION_3);
  EXPECT_EQ(X509_verify(x, pub), 1);
  // Subject = issuer = CN=host only, PrintableString.
  int type = 0;
  EXPECT_EQ(commonName(X509_get_subject_name(x), &type), host);
  EXPECT_EQ(type, V_ASN1_PRINTABLESTRING);
  EXPECT_EQ(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
  // Serial: positive, at most 128 bits.
  BnP serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr));
  ASSERT_TRUE(serial);
  EXPECT_FALSE(BN_is_zero(serial.get()));
  EXPECT_FALSE(BN_is_negative(serial.get()));
  EXPECT_LE(BN_num_bits(serial.get()), 128);
  // Extensions, in Go's order: keyUsage (critical), extKeyUsage,
  // basicConstraints (critical, CA:FALSE), subjectAltName. No SKI/AKI.
  ASSERT_EQ(X509_get_ext_count(x), 4);
  const int wantNids[] = {NID_key_usage, NID_ext_key_usage, NID_basic_constraints,
                          NID_subject_alt_name};
  const int wantCrit[] = {1, 0, 1, 0};
  for (int i = 0; i < 4; ++i) {
    X509_EXTENSION* e = X509_get_ext(x, i);
    EXPECT_EQ(OBJ_obj2nid(X509_EXTENSION_get_object(e)), wantNids[i]) << i;
    EXPECT_EQ(X509_EXTENSION_get_critical(e), wantCrit[i]) << i;
  }
  EXPECT_EQ(X509_get_key_usage(x), uint32_t(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  EXPECT_EQ(X509_get_extended_key_usage(x), uint32_t(XKU_SSL_SERVER));
  EXPECT_EQ(X509_get_extension_flags(x) & EXFLAG_CA, 0u);
  EXPECT_NE(X509_get_extension_flags(x) & EXFLAG_BCONS, 0u);
  // basicConstraints is an empty SEQUENCE, as Go encodes CA:FALSE.
  ASN1_OCTET_STRING* bc = X509_EXTENSION_get_data(X509_get_ext(x, 2));
  EXPECT_EQ(toHex(ByteView(ASN1_STRING_get0_data(bc), size_t(ASN1_STRING_length(bc)))), "3000");
  ASN1_OCTET_STRING* ku = X509_EXTENSION_get_data(X509_get_ext(x, 0));
  EXPECT_EQ(toHex(ByteView(ASN1_STRING_get0_data(ku), size_t(ASN1_STRING_length(ku)))), "030205a0");
  EXPECT_EQ(certSans(x), std::vector<std::string>{wantSan});
}

TEST_F(TlsCertsTest, SelfSignedIpv4) {
  auto b = makeSelfSigned("127.0.0.1", kNow);
  ASSERT_TRUE(b.ok()) << b.error();
  EXPECT_EQ(b->info.notBefore, kNow);
  EXPECT_EQ(b->info.notAfter, kNow + 365 * kDay);
  EXPECT_EQ(b->info.ipAddrs, std::vector<std::string>{"127.0.0.1"});
  EXPECT_TRUE(b->info.dnsNames.empty());
  auto chain = parseChain(b->chainPem);
  ASSERT_EQ(chain.size(), 1u);
  expectDerperLayout(chain[0].get(), "127.0.0.1", "IP:7f000001");
  PkeyP k = parseKey(b->keyPem);
  ASSERT_TRUE(k);
  EXPECT_EQ(EVP_PKEY_eq(k.get(), X509_get0_pubkey(chain[0].get())), 1);
  EXPECT_EQ(b->keyPem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);

  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "127.0.0.1", kNow, "t").ok());
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "127.0.0.1", kNow + 364 * kDay, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "127.0.0.2", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "localhost", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "127.0.0.1", kNow - 1, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "127.0.0.1", kNow + 365 * kDay, "t").ok());
}

TEST_F(TlsCertsTest, SelfSignedIpv6) {
  auto b = makeSelfSigned("::1", kNow, 30);
  ASSERT_TRUE(b.ok()) << b.error();
  EXPECT_EQ(b->info.notAfter, kNow + 30 * kDay);
  EXPECT_EQ(b->info.ipAddrs, std::vector<std::string>{"::1"});
  auto chain = parseChain(b->chainPem);
  ASSERT_EQ(chain.size(), 1u);
  expectDerperLayout(chain[0].get(), "::1", "IP:00000000000000000000000000000001");
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "::1", kNow, "t").ok());
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "0:0:0:0:0:0:0:1", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "::2", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "127.0.0.1", kNow, "t").ok());
}

TEST_F(TlsCertsTest, SelfSignedDnsNameAndErrors) {
  auto b = makeSelfSigned("derp.example.com", kNow);
  ASSERT_TRUE(b.ok()) << b.error();
  EXPECT_EQ(b->info.dnsNames, std::vector<std::string>{"derp.example.com"});
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "derp.example.com", kNow, "t").ok());
  EXPECT_FALSE(makeSelfSigned("", kNow).ok());
  EXPECT_FALSE(makeSelfSigned("127.0.0.1", kNow, 0).ok());
  EXPECT_FALSE(makeSelfSigned("bad host", kNow).ok());
}

TEST_F(TlsCertsTest, SelfSignedIsFreshEachTime) {
  auto a = makeSelfSigned("127.0.0.1", kNow);
  auto b = makeSelfSigned("127.0.0.1", kNow);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->info.serialHex, b->info.serialHex);
  EXPECT_NE(a->keyPem, b->keyPem);
  EXPECT_NE(a->info.leafSha256Hex, b->info.leafSha256Hex);
}

TEST_F(TlsCertsTest, CertNameSha256Raw) {
  auto b = makeSelfSigned("192.0.2.1", kNow);
  ASSERT_TRUE(b.ok()) << b.error();
  X509P x = firstCert(*b);
  ASSERT_TRUE(x);
  const std::string want = "sha256-raw:" + sha256Hex(derOf(x.get()));
  EXPECT_EQ(certNameSha256Raw(*b), want);
  EXPECT_EQ(want.size(), 11u + 64u);
  // Re-validating gives the same pin.
  auto again = validateBundle(b->chainPem, b->keyPem, "192.0.2.1", kNow, "t");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(certNameSha256Raw(*again), want);
}

// ---- TLS-ALPN-01 ----

ASN1_OCTET_STRING* acmeIdentifierValue(X509* x, int* critical) {
  ObjP oid(OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1));
  const int idx = X509_get_ext_by_OBJ(x, oid.get(), -1);
  if (idx < 0) return nullptr;
  if (X509_get_ext_by_OBJ(x, oid.get(), idx) >= 0) return nullptr;  // must be exactly one
  X509_EXTENSION* e = X509_get_ext(x, idx);
  *critical = X509_EXTENSION_get_critical(e);
  return X509_EXTENSION_get_data(e);
}

TEST_F(TlsCertsTest, TlsAlpnChallengeCert) {
  // SHA-256("abc") is the FIPS 180-2 test vector.
  auto b = makeTlsAlpnChallengeCert("derp.example.com", "abc", kNow);
  ASSERT_TRUE(b.ok()) << b.error();
  X509P x = firstCert(*b);
  ASSERT_TRUE(x);
  int critical = -1;
  ASN1_OCTET_STRING* v = acmeIdentifierValue(x.get(), &critical);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(critical, 1);
  ASSERT_EQ(ASN1_STRING_length(v), 34);
  EXPECT_EQ(toHex(ByteView(ASN1_STRING_get0_data(v), 34)),
            "0420ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(certSans(x.get()), std::vector<std::string>{"DNS:derp.example.com"});
  EXPECT_EQ(b->info.notBefore, kNow - 3600);
  EXPECT_EQ(b->info.notAfter, kNow + 7 * kDay);
  EXPECT_EQ(X509_verify(x.get(), X509_get0_pubkey(x.get())), 1);
  char group[64] = {};
  size_t glen = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(X509_get0_pubkey(x.get()), group, sizeof group, &glen), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "derp.example.com", kNow, "t").ok());
  EXPECT_FALSE(validateBundle(b->chainPem, b->keyPem, "other.example.com", kNow, "t").ok());

  // A realistic key authorization: token "." thumbprint.
  const std::string ka =
      "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
  auto b2 = makeTlsAlpnChallengeCert("derp.example.com", ka, kNow);
  ASSERT_TRUE(b2.ok()) << b2.error();
  X509P x2 = firstCert(*b2);
  v = acmeIdentifierValue(x2.get(), &critical);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(toHex(ByteView(ASN1_STRING_get0_data(v), size_t(ASN1_STRING_length(v)))),
            "0420" + sha256Hex(ka));
}

TEST_F(TlsCertsTest, TlsAlpnChallengeCertForIp) {
  auto b = makeTlsAlpnChallengeCert("192.0.2.9", "abc", kNow);
  ASSERT_TRUE(b.ok()) << b.error();
  X509P x = firstCert(*b);
  EXPECT_EQ(certSans(x.get()), std::vector<std::string>{"IP:c0000209"});
  EXPECT_TRUE(validateBundle(b->chainPem, b->keyPem, "192.0.2.9", kNow, "t").ok());
  auto b6 = makeTlsAlpnChallengeCert("2001:db8::9", "abc", kNow);
  ASSERT_TRUE(b6.ok()) << b6.error();
  EXPECT_EQ(b6->info.ipAddrs, std::vector<std::string>{"2001:db8::9"});
  EXPECT_FALSE(makeTlsAlpnChallengeCert("", "abc", kNow).ok());
  EXPECT_FALSE(makeTlsAlpnChallengeCert("derp.example.com", "", kNow).ok());
}

// ---- keys and CSR ----

TEST_F(TlsCertsTest, GenerateP256KeyPem) {
  auto k = generateP256KeyPem();
  ASSERT_TRUE(k.ok()) << k.error();
  EXPECT_EQ(k->rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  PkeyP key = parseKey(*k);
  ASSERT_TRUE(key);
  char group[64] = {};
  size_t glen = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key.get(), group, sizeof group, &glen), 1);
  EXPECT_STREQ(group, "prime256v1");
  auto k2 = generateP256KeyPem();
  ASSERT_TRUE(k2.ok());
  EXPECT_NE(*k, *k2);
}

ReqP parseCsr(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  ReqP req(d2i_X509_REQ(nullptr, &p, long(der.size())));
  EXPECT_EQ(p, reinterpret_cast<const unsigned char*>(der.data()) + der.size());
  return req;
}

std::vector<std::string> csrSans(X509_REQ* req, int* critical) {
  ExtsP exts(X509_REQ_get_extensions(req));
  if (!exts) return {};
  EXPECT_EQ(sk_X509_EXTENSION_num(exts.get()), 1);
  for (int i = 0; i < sk_X509_EXTENSION_num(exts.get()); ++i) {
    X509_EXTENSION* e = sk_X509_EXTENSION_value(exts.get(), i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name) continue;
    *critical = X509_EXTENSION_get_critical(e);
    GensP g(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(e)));
    return g ? sanList(g.get()) : std::vector<std::string>{};
  }
  return {};
}

TEST_F(TlsCertsTest, CsrDer) {
  auto keyPem = generateP256KeyPem();
  ASSERT_TRUE(keyPem.ok());
  auto der =
      makeCsrDer(*keyPem, {"derp.example.com", "192.0.2.1", "www.example.com", "2001:db8::1"});
  ASSERT_TRUE(der.ok()) << der.error();
  ReqP req = parseCsr(*der);
  ASSERT_TRUE(req);
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(X509_REQ_verify(req.get(), pub), 1);
  PkeyP key = parseKey(*keyPem);
  EXPECT_EQ(EVP_PKEY_eq(key.get(), pub), 1);
  EXPECT_EQ(X509_REQ_get_signature_nid(req.get()), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_REQ_get_version(req.get()), 0);
  EXPECT_EQ(commonName(X509_REQ_get_subject_name(req.get())), "derp.example.com");
  int critical = -1;
  EXPECT_EQ(csrSans(req.get(), &critical),
            (std::vector<std::string>{"DNS:derp.example.com", "IP:c0000201", "DNS:www.example.com",
                                      "IP:20010db8000000000000000000000001"}));
  EXPECT_EQ(critical, 0);
}

TEST_F(TlsCertsTest, CsrDerOtherKeysAndLongName) {
  // RSA and SEC1 keys sign too; a name longer than 64 characters cannot be
  // the CN, so the subject is empty and the SAN critical.
  const std::string longName = std::string(70, 'a') + ".example.com";
  for (const std::string& keyPem : {traditionalPem(rsaKey_), traditionalPem(leafKey_)}) {
    auto der = makeCsrDer(keyPem, {longName});
    ASSERT_TRUE(der.ok()) << der.error();
    ReqP req = parseCsr(*der);
    ASSERT_TRUE(req);
    EXPECT_EQ(X509_REQ_verify(req.get(), X509_REQ_get0_pubkey(req.get())), 1);
    EXPECT_EQ(X509_NAME_entry_count(X509_REQ_get_subject_name(req.get())), 0);
    int critical = -1;
    EXPECT_EQ(csrSans(req.get(), &critical), std::vector<std::string>{"DNS:" + longName});
    EXPECT_EQ(critical, 1);
  }
  PkeyP ed = edKey();
  auto edDer = makeCsrDer(pkcs8Pem(ed.get()), {"derp.example.com"});
  ASSERT_TRUE(edDer.ok()) << edDer.error();
  ReqP edReq = parseCsr(*edDer);
  ASSERT_TRUE(edReq);
  EXPECT_EQ(X509_REQ_verify(edReq.get(), X509_REQ_get0_pubkey(edReq.get())), 1);
}

TEST_F(TlsCertsTest, CsrDerErrors) {
  auto keyPem = generateP256KeyPem();
  ASSERT_TRUE(keyPem.ok());
  auto none = makeCsrDer(*keyPem, {});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error(), "CSR: no names");
  auto noKey = makeCsrDer("garbage", {"derp.example.com"});
  ASSERT_FALSE(noKey.ok());
  EXPECT_EQ(noKey.error(), "CSR: no private key found");
  EXPECT_FALSE(makeCsrDer(*keyPem, {"derp.example.com", ""}).ok());
  EXPECT_FALSE(makeCsrDer(*keyPem, {"bad name"}).ok());
}

}  // namespace
}  // namespace derpd::tls
