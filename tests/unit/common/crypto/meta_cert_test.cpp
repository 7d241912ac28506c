#include "common/crypto/meta_cert.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "support/vectors.hpp"

namespace derpd::crypto {
namespace {

using test::readVectorFile;

const char* kServerPub = "443ecfd4c12b5426ed8f4f66816bd54033739805f82088ceafb022a911b7aa39";

X509Ptr loadVectorCert() {
  const std::string pem = readVectorFile("tls/meta-cert.pem");
  BIO* bio = BIO_new_mem_buf(pem.data(), int(pem.size()));
  X509Ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

Bytes der(X509* cert) {
  unsigned char* p = nullptr;
  int n = i2d_X509(cert, &p);
  EXPECT_GT(n, 0);
  Bytes out(p, p + (n > 0 ? n : 0));
  OPENSSL_free(p);
  return out;
}

NodePublic serverKey() {
  auto k = NodePublic::parseUntypedHex(kServerPub);
  EXPECT_TRUE(k.ok());
  return *k;
}

TEST(MetaCert, ParsesRealDerperCert) {
  X509Ptr cert = loadVectorCert();
  ASSERT_TRUE(cert);
  auto k = parseMetaCert(cert.get());
  ASSERT_TRUE(k.ok()) << k.error();
  EXPECT_EQ(k->toHex(), kServerPub);
}

TEST(MetaCert, GeneratedHasDerperLayout) {
  auto made = makeMetaCert(serverKey());
  ASSERT_TRUE(made.ok()) << made.error();
  X509* cert = made->get();

  auto k = parseMetaCert(cert);
  ASSERT_TRUE(k.ok()) << k.error();
  EXPECT_EQ(*k, serverKey());

  EXPECT_EQ(X509_get_version(cert), X509_VERSION_3);
  EXPECT_EQ(ASN1_INTEGER_get(X509_get0_serialNumber(cert)), 2);
  EXPECT_EQ(X509_get_signature_nid(cert), NID_ED25519);
  EVP_PKEY* pk = X509_get0_pubkey(cert);
  ASSERT_NE(pk, nullptr);
  EXPECT_EQ(EVP_PKEY_get_id(pk), EVP_PKEY_ED25519);
  EXPECT_EQ(X509_verify(cert, pk), 1);  // self-signed
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);

  // Exactly one extension: critical BasicConstraints CA:FALSE.
  ASSERT_EQ(X509_get_ext_count(cert), 1);
  X509_EXTENSION* ext = X509_get_ext(cert, 0);
  EXPECT_EQ(OBJ_obj2nid(X509_EXTENSION_get_object(ext)), NID_basic_constraints);
  EXPECT_EQ(X509_EXTENSION_get_critical(ext), 1);
  EXPECT_EQ(X509_get_ext_by_NID(cert, NID_subject_key_identifier, -1), -1);
  EXPECT_EQ(X509_get_ext_by_NID(cert, NID_authority_key_identifier, -1), -1);
  EXPECT_EQ(X509_get_ext_by_NID(cert, NID_subject_alt_name, -1), -1);
  EXPECT_EQ(X509_get0_subject_key_id(cert), nullptr);
  EXPECT_EQ(X509_get0_authority_key_id(cert), nullptr);
  EXPECT_EQ(X509_check_ca(cert), 0);

  // Validity: now-30d .. now+30d.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert), X509_get0_notAfter(cert)), 1);
  EXPECT_EQ(days, 60);
  EXPECT_EQ(secs, 0);
  EXPECT_LT(X509_cmp_current_time(X509_get0_notBefore(cert)), 0);
  EXPECT_GT(X509_cmp_current_time(X509_get0_notAfter(cert)), 0);

  // Byte layout equals the real derper's cert except for the dates, the
  // Ed25519 public key and the signature (all fixed-size fields).
  Bytes mine = der(cert);
  X509Ptr real = loadVectorCert();
  ASSERT_TRUE(real);
  Bytes theirs = der(real.get());
  ASSERT_EQ(mine.size(), theirs.size());
  ASSERT_EQ(mine.size(), 359u);
  auto same = [&](size_t from, size_t to) {
    EXPECT_EQ(toHex(ByteView(mine).subspan(from, to - from)),
              toHex(ByteView(theirs).subspan(from, to - from)))
        << "bytes " << from << ".." << to;
  };
  same(0, 111);    // header, version, serial, sig alg, issuer, validity header + UTCTime tag
  same(124, 126);  // notAfter tag
  same(139, 235);  // subject, SPKI header
  same(267, 295);  // extensions, outer sig alg, signature BIT STRING header
}

TEST(MetaCert, FreshKeyEachTime) {
  auto a = makeMetaCert(serverKey());
  auto b = makeMetaCert(serverKey());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(der(a->get()), der(b->get()));
}

TEST(MetaCert, SerialRange) {
  auto made = makeMetaCert(serverKey());
  ASSERT_TRUE(made.ok());
  X509* cert = made->get();
  for (long serial : {1L, 2L, 128L, 255L}) {
    ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(cert), serial), 1);
    EXPECT_TRUE(parseMetaCert(cert).ok()) << serial;
  }
  for (long serial : {0L, 256L, 65535L, -2L}) {
    ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(cert), serial), 1);
    EXPECT_FALSE(parseMetaCert(cert).ok()) << serial;
  }
}

X509Ptr certWithCN(const std::string& cn) {
  auto made = makeMetaCert(NodePublic::fromRaw(Bytes(32, 7)));
  EXPECT_TRUE(made.ok());
  X509Ptr cert = std::move(*made);
  X509_NAME* name = X509_NAME_new();
  // A raw UTF8String: the MBSTRING path would enforce the 64-char CN bound,
  // which "derpkey"+hex (71 chars) exceeds.
  EXPECT_EQ(X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                       reinterpret_cast<const unsigned char*>(cn.data()),
                                       int(cn.size()), -1, 0),
            1);
  X509_set_subject_name(cert.get(), name);
  X509_NAME_free(name);
  return cert;
}

TEST(MetaCert, CommonNameRules) {
  const std::string hex = kServerPub;
  auto plain = parseMetaCert(certWithCN("derpkey" + hex).get());
  ASSERT_TRUE(plain.ok()) << plain.error();
  EXPECT_EQ(plain->toHex(), hex);
  // Uppercase hex is fine (ParseNodePublicUntyped).
  std::string upper = hex;
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  auto r = parseMetaCert(certWithCN("derpkey" + upper).get());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->toHex(), hex);

  EXPECT_FALSE(parseMetaCert(certWithCN("DERPKEY" + hex).get()).ok());
  EXPECT_FALSE(parseMetaCert(certWithCN("derpkey" + hex.substr(2)).get()).ok());
  EXPECT_FALSE(parseMetaCert(certWithCN("derpkey" + hex + "00").get()).ok());
  EXPECT_FALSE(parseMetaCert(certWithCN("derpkey nodekey:" + hex).get()).ok());
  EXPECT_FALSE(parseMetaCert(certWithCN("localhost").get()).ok());
  EXPECT_FALSE(parseMetaCert(certWithCN("derpkey" + std::string(64, '0')).get()).ok());
  EXPECT_FALSE(parseMetaCert(nullptr).ok());

  // No CN at all.
  X509Ptr cert = certWithCN("x");
  X509_NAME* empty = X509_NAME_new();
  X509_set_subject_name(cert.get(), empty);
  X509_NAME_free(empty);
  EXPECT_FALSE(parseMetaCert(cert.get()).ok());
}

}  // namespace
}  // namespace derpd::crypto
