// The DERP meta certificate (PROTOCOL.md §2.2), laid out as Go's derper makes
// it: v3, serial 2, Ed25519, subject = issuer = CN (PrintableString)
// "derpkey<hex>", validity now±30 days, one extension BasicConstraints
// critical CA:FALSE, no SKI/AKI/SAN.
#include "common/crypto/meta_cert.hpp"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <string>

namespace derpd::crypto {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct NameDeleter {
  void operator()(X509_NAME* n) const { X509_NAME_free(n); }
};
struct ExtDeleter {
  void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); }
};
struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};

constexpr long kValiditySeconds = 30L * 24 * 3600;

Error sslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return makeError("meta cert: " + what);
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return makeError("meta cert: " + what + ": " + buf);
}

}  // namespace

Result<X509Ptr> makeMetaCert(const NodePublic& serverKey) {
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!pkey) return sslError("Ed25519 keygen");

  X509Ptr cert(X509_new());
  if (!cert) return sslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return sslError("set version");
  if (ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), kMetaCertSerial) != 1) {
    return sslError("set serial");
  }

  std::unique_ptr<X509_NAME, NameDeleter> name(X509_NAME_new());
  if (!name) return sslError("X509_NAME_new");
  const std::string cn = std::string(kMetaCertCNPrefix) + serverKey.toHex();
  // Go encodes a printable CN as PrintableString; pass the type explicitly so
  // OpenSSL does not pick UTF8String.
  if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, V_ASN1_PRINTABLESTRING,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 int(cn.size()), -1, 0) != 1) {
    return sslError("set CN");
  }
  if (X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), name.get()) != 1) {
    return sslError("set names");
  }

  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kValiditySeconds) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValiditySeconds)) {
    return sslError("set validity");
  }
  if (X509_set_pubkey(cert.get(), pkey.get()) != 1) return sslError("set pubkey");

  // BasicConstraints{CA: false}, critical: the value is an empty SEQUENCE.
  BASIC_CONSTRAINTS* bc = BASIC_CONSTRAINTS_new();
  if (!bc) return sslError("BASIC_CONSTRAINTS_new");
  bc->ca = 0;
  std::unique_ptr<X509_EXTENSION, ExtDeleter> ext(
      X509V3_EXT_i2d(NID_basic_constraints, /*crit=*/1, bc));
  BASIC_CONSTRAINTS_free(bc);
  if (!ext) return sslError("encode BasicConstraints");
  if (X509_add_ext(cert.get(), ext.get(), -1) != 1) return sslError("add BasicConstraints");

  // Ed25519 signs without a separate digest.
  if (X509_sign(cert.get(), pkey.get(), nullptr) <= 0) return sslError("sign");
  return cert;
}

Result<NodePublic> parseMetaCert(X509* cert) {
  if (cert == nullptr) return makeError("meta cert: no certificate");

  // Serial: Go accepts BitLen() <= 8 and non-zero, i.e. 1..255 (Go's x509
  // parser already refuses negative serials).
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  if (serial == nullptr) return makeError("meta cert: no serial");
  std::unique_ptr<BIGNUM, BnDeleter> bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return sslError("serial");
  if (BN_is_negative(bn.get()) || BN_is_zero(bn.get()) || BN_num_bits(bn.get()) > 8) {
    return makeError("meta cert: serial out of range 1..255");
  }

  // Go's pkix.Name keeps the last CommonName of the subject.
  const X509_NAME* subject = X509_get_subject_name(cert);
  if (subject == nullptr) return makeError("meta cert: no subject");
  int idx = -1;
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    idx = i;
  }
  if (idx < 0) return makeError("meta cert: no CommonName");
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  if (data == nullptr) return makeError("meta cert: bad CommonName");
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return sslError("CommonName");
  std::string cn(reinterpret_cast<const char*>(utf8), size_t(n));
  OPENSSL_free(utf8);

  const std::string_view prefix = kMetaCertCNPrefix;
  if (std::string_view(cn).substr(0, prefix.size()) != prefix) {
    return makeError("meta cert: CommonName lacks the derpkey prefix");
  }
  auto key = NodePublic::parseUntypedHex(std::string_view(cn).substr(prefix.size()));
  if (!key) return makeError("meta cert: " + key.error());
  if (key->isZero()) return makeError("meta cert: zero server key");
  return *key;
}

}  // namespace derpd::crypto
