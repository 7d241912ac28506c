// Certificate material for derpd's TLS (see certs.hpp): chain + key
// validation, derper's self-signed IP certificate, the RFC 8737 TLS-ALPN-01
// certificate and the ACME CSR. OpenSSL 3 only; every OpenSSL object is held
// by a unique_ptr, and every public function leaves the thread's OpenSSL
// error queue empty (derp-worker's SSL_get_error() reads that queue).
#include "common/tls/certs.hpp"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <string_view>
#include <utility>

#include "common/util/bytes.hpp"
#include "common/util/fd.hpp"
#include "common/util/text.hpp"

namespace derpd::tls {

namespace {

// ---- limits ----

constexpr size_t kMaxChainBytes = 256 * 1024;
constexpr size_t kMaxChainCerts = 16;
constexpr size_t kMaxFileBytes = 1024 * 1024;
// X.520 ub-common-name: OpenSSL refuses a longer commonName.
constexpr size_t kMaxCommonName = 64;
constexpr int64_t kSecondsPerDay = 86400;

// id-pe-acmeIdentifier (RFC 8737 §6.1).
constexpr const char* kAcmeIdentifierOid = "1.3.6.1.5.5.7.1.31";

// ---- RAII ----

template <auto Fn>
struct FnDeleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    Fn(p);
  }
};

using BioPtr = std::unique_ptr<BIO, FnDeleter<&BIO_free>>;
using X509Ptr = std::unique_ptr<X509, FnDeleter<&X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, FnDeleter<&X509_REQ_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, FnDeleter<&EVP_PKEY_free>>;
using BnPtr = std::unique_ptr<BIGNUM, FnDeleter<&BN_free>>;
using NamePtr = std::unique_ptr<X509_NAME, FnDeleter<&X509_NAME_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, FnDeleter<&X509_EXTENSION_free>>;
using GenNamesPtr = std::unique_ptr<GENERAL_NAMES, FnDeleter<&GENERAL_NAMES_free>>;
using GenNamePtr = std::unique_ptr<GENERAL_NAME, FnDeleter<&GENERAL_NAME_free>>;
using OctetPtr = std::unique_ptr<ASN1_OCTET_STRING, FnDeleter<&ASN1_OCTET_STRING_free>>;
using Ia5Ptr = std::unique_ptr<ASN1_IA5STRING, FnDeleter<&ASN1_IA5STRING_free>>;
using BitStrPtr = std::unique_ptr<ASN1_BIT_STRING, FnDeleter<&ASN1_BIT_STRING_free>>;
using ObjPtr = std::unique_ptr<ASN1_OBJECT, FnDeleter<&ASN1_OBJECT_free>>;
using BasicPtr = std::unique_ptr<BASIC_CONSTRAINTS, FnDeleter<&BASIC_CONSTRAINTS_free>>;
using EkuPtr = std::unique_ptr<EXTENDED_KEY_USAGE, FnDeleter<&EXTENDED_KEY_USAGE_free>>;
using P8Ptr = std::unique_ptr<PKCS8_PRIV_KEY_INFO, FnDeleter<&PKCS8_PRIV_KEY_INFO_free>>;

struct ExtStackDeleter {
  void operator()(STACK_OF(X509_EXTENSION) * s) const noexcept {
    sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
  }
};
using ExtStackPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), ExtStackDeleter>;

struct OpensslFree {
  void operator()(void* p) const noexcept { OPENSSL_free(p); }
};

// Decoded PEM bodies may be private keys: wiped before they are freed.
struct ClearFree {
  size_t len = 0;
  void operator()(unsigned char* p) const noexcept { OPENSSL_clear_free(p, len); }
};

// Empties the thread's OpenSSL error queue when the scope ends, whatever
// path it leaves by.
struct ErrQueueGuard {
  ErrQueueGuard() { ERR_clear_error(); }
  ~ErrQueueGuard() { ERR_clear_error(); }
  ErrQueueGuard(const ErrQueueGuard&) = delete;
  ErrQueueGuard& operator=(const ErrQueueGuard&) = delete;
};

// ---- small helpers ----

std::string prefixOf(const std::string& what) { return what.empty() ? std::string() : what + ": "; }

Error sslError(const std::string& prefix, const std::string& step) {
  return makeError(prefix + step + ": " + opensslErrors());
}

bool isBlank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\v' && c != '\f') return false;
  }
  return true;
}

// A PEM label from a file goes into an error message: printable ASCII only,
// and not too much of it.
std::string safeLabel(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 40) out += "...";
  return out;
}

std::string bioToString(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return (n > 0 && p) ? std::string(p, size_t(n)) : std::string();
}

// Unix seconds of a broken-down UTC time (no time zone, no locale).
int64_t tmToUnix(const std::tm& tm) {
  using namespace std::chrono;
  const sys_days d{year{tm.tm_year + 1900} / month{unsigned(tm.tm_mon + 1)} /
                   day{unsigned(tm.tm_mday)}};
  return int64_t(d.time_since_epoch().count()) * kSecondsPerDay + tm.tm_hour * 3600 +
         tm.tm_min * 60 + tm.tm_sec;
}

std::string formatUtc(int64_t t) { return formatUtcSeconds(t); }

Result<int64_t> asn1TimeToUnix(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return makeError("invalid time");
  return tmToUnix(tm);
}

// ---- PEM framing ----

struct PemBlock {
  std::string name;
  bool hasHeaders = false;  // RFC 1421 headers (Proc-Type, DEK-Info): legacy encryption
  std::unique_ptr<unsigned char, ClearFree> data;
  long len = 0;
};

struct PemText {
  std::vector<PemBlock> blocks;
  bool trailingData = false;  // non-whitespace after the last block
};

// Every PEM block of `text` in order. Text before a block is skipped as
// RFC 7468 explanatory text (e.g. `openssl x509 -text` output); what follows
// the last block must be whitespace, else trailingData is set. A block that
// does not decode (no END line, bad base64) is an error naming `where`.
Result<PemText> readPemBlocks(const std::string& text, const std::string& prefix,
                              const char* where) {
  if (text.size() > size_t(INT_MAX)) return makeError(prefix + where + " is too large");
  BioPtr bio(BIO_new_mem_buf(text.data(), int(text.size())));
  if (!bio) return sslError(prefix, "BIO_new_mem_buf");
  PemText out;
  for (;;) {
    char* rest = nullptr;
    const long restLen = BIO_get_mem_data(bio.get(), &rest);
    const std::string_view remaining =
        (restLen > 0 && rest) ? std::string_view(rest, size_t(restLen)) : std::string_view();
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    const int rc = PEM_read_bio(bio.get(), &name, &header, &data, &len);
    std::unique_ptr<char, OpensslFree> nameHolder(name);
    std::unique_ptr<char, OpensslFree> headerHolder(header);
    std::unique_ptr<unsigned char, ClearFree> dataHolder(data,
                                                         ClearFree{len > 0 ? size_t(len) : 0});
    if (rc != 1) {
      const unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        out.trailingData = !isBlank(remaining);
        return out;
      }
      return makeError(prefix + "malformed PEM in " + where + ": " + opensslErrors());
    }
    PemBlock b;
    b.name = name ? name : "";
    b.hasHeaders = header && header[0] != '\0';
    b.data = std::move(dataHolder);
    b.len = len;
    out.blocks.push_back(std::move(b));
  }
}

// ---- certificate facts ----

std::string ipToText(const ASN1_OCTET_STRING* ip) {
  const int n = ASN1_STRING_length(ip);
  const unsigned char* p = ASN1_STRING_get0_data(ip);
  char buf[INET6_ADDRSTRLEN] = {};
  if (n == 4 && inet_ntop(AF_INET, p, buf, sizeof buf)) return buf;
  if (n == 16 && inet_ntop(AF_INET6, p, buf, sizeof buf)) return buf;
  return "<IP SAN of " + std::to_string(n) + " bytes>";
}

void collectSans(X509* leaf, CertInfo& info) {
  int crit = 0;
  GenNamesPtr gens(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, nullptr)));
  if (!gens) return;
  for (int i = 0; i < sk_GENERAL_NAME_num(gens.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(gens.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_IA5STRING* s = gn->d.dNSName;
      info.dnsNames.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                 size_t(ASN1_STRING_length(s)));
    } else if (gn->type == GEN_IPADD) {
      info.ipAddrs.push_back(ipToText(gn->d.iPAddress));
    }
  }
}

// Upper-case hex without leading zeros; "0" for zero. (BN_bn2hex prints
// whole bytes, so 10 comes out as "0A".)
Result<std::string> serialHexOf(X509* cert) {
  BnPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (!bn) return makeError("unreadable serial number: " + opensslErrors());
  std::unique_ptr<char, OpensslFree> hex(BN_bn2hex(bn.get()));
  if (!hex) return makeError("BN_bn2hex: " + opensslErrors());
  std::string s = hex.get();
  const bool negative = !s.empty() && s[0] == '-';
  size_t start = negative ? 1 : 0;
  while (s.size() - start > 1 && s[start] == '0') s.erase(start, 1);
  return s;
}

Result<std::string> derOf(X509* cert) {
  unsigned char* p = nullptr;
  const int n = i2d_X509(cert, &p);
  if (n <= 0) return makeError("i2d_X509: " + opensslErrors());
  std::unique_ptr<unsigned char, OpensslFree> holder(p);
  return std::string(reinterpret_cast<char*>(p), size_t(n));
}

Result<std::string> sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdLen = 0;
  if (EVP_Digest(data.data(), data.size(), md, &mdLen, EVP_sha256(), nullptr) != 1) {
    return makeError("SHA-256: " + opensslErrors());
  }
  return toHex(ByteView(md, mdLen));
}

Result<CertInfo> infoOf(X509* leaf) {
  CertInfo info;
  auto serial = serialHexOf(leaf);
  if (!serial) return std::move(serial).takeError();
  info.serialHex = std::move(*serial);
  auto nb = asn1TimeToUnix(X509_get0_notBefore(leaf));
  if (!nb) return makeError("certificate has an unreadable notBefore");
  auto na = asn1TimeToUnix(X509_get0_notAfter(leaf));
  if (!na) return makeError("certificate has an unreadable notAfter");
  info.notBefore = *nb;
  info.notAfter = *na;
  collectSans(leaf, info);
  // The hash of what goes on the wire: OpenSSL sends i2d_X509 of the
  // parsed certificate, so that is what a client pins.
  auto der = derOf(leaf);
  if (!der) return std::move(der).takeError();
  auto h = sha256Hex(*der);
  if (!h) return std::move(h).takeError();
  info.leafSha256Hex = std::move(*h);
  return info;
}

std::string namesForMessage(const CertInfo& info) {
  std::string s;
  for (const auto& n : info.dnsNames) s += (s.empty() ? "" : ", ") + safeLabel(n);
  for (const auto& n : info.ipAddrs) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "it has no DNS or IP subject alternative names" : "its names: " + s;
}

// ---- keys ----

bool isKeyLabel(const std::string& n) {
  return n == "PRIVATE KEY" || n == "EC PRIVATE KEY" || n == "RSA PRIVATE KEY";
}

Result<PkeyPtr> decodeKeyBlock(const PemBlock& b, const std::string& prefix) {
  const unsigned char* p = b.data.get();
  const unsigned char* const end = p + b.len;
  PkeyPtr key;
  if (b.name == "PRIVATE KEY") {
    P8Ptr p8(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &p, b.len));
    if (p8 && p == end) key.reset(EVP_PKCS82PKEY(p8.get()));
  } else {
    const int type = b.name == "EC PRIVATE KEY" ? EVP_PKEY_EC : EVP_PKEY_RSA;
    key.reset(d2i_PrivateKey(type, nullptr, &p, b.len));
    if (key && p != end) key.reset();
  }
  if (!key) {
    ERR_clear_error();  // the decoder's messages say nothing more useful
    return makeError(prefix + "the " + b.name + " block does not parse as a private key");
  }
  const int id = EVP_PKEY_get_base_id(key.get());
  if (id != EVP_PKEY_EC && id != EVP_PKEY_RSA && id != EVP_PKEY_ED25519) {
    const char* tn = EVP_PKEY_get0_type_name(key.get());
    return makeError(prefix + "unsupported private key type " + (tn ? tn : "unknown") +
                     " (want EC, RSA or Ed25519)");
  }
  return key;
}

// Exactly one private key: "PRIVATE KEY" (PKCS#8), "EC PRIVATE KEY" (SEC1)
// or "RSA PRIVATE KEY" (PKCS#1). "EC PARAMETERS" blocks (what `openssl
// ecparam -genkey` writes first) are skipped; any other block is an error.
Result<PkeyPtr> parseKeyPem(const std::string& keyPem, const std::string& prefix) {
  auto text = readPemBlocks(keyPem, prefix, "the key file");
  if (!text) return std::move(text).takeError();
  const PemBlock* keyBlock = nullptr;
  size_t keys = 0;
  for (const auto& b : text->blocks) {
    if (b.name == "EC PARAMETERS") continue;
    if (b.name == "ENCRYPTED PRIVATE KEY" || (isKeyLabel(b.name) && b.hasHeaders)) {
      return makeError(prefix + "the private key is encrypted; derpd needs it unencrypted");
    }
    if (!isKeyLabel(b.name)) {
      return makeError(prefix + "a " + safeLabel(b.name) +
                       " block in the key file (it must hold only the private key)");
    }
    ++keys;
    keyBlock = &b;
  }
  if (keys == 0) return makeError(prefix + "no private key found");
  if (keys > 1) {
    return makeError(prefix + std::to_string(keys) +
                     " private keys in the key file, want exactly one");
  }
  if (text->trailingData) return makeError(prefix + "unexpected data after the private key");
  return decodeKeyBlock(*keyBlock, prefix);
}

Result<std::string> keyToPkcs8Pem(EVP_PKEY* key, const std::string& prefix) {
  // Secure-heap memory BIO: wiped when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) return sslError(prefix, "BIO_new");
  if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return sslError(prefix, "encoding the private key");
  }
  return bioToString(bio.get());
}

Result<PkeyPtr> newP256Key(const std::string& prefix) {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return sslError(prefix, "generating a P-256 key");
  return key;
}

// ---- validation ----

struct Whats {
  std::string chain;  // prefix for errors about the certificates
  std::string key;    // ... about the key file
  std::string pair;   // ... about the two together
};

Result<CertBundle> validateImpl(const std::string& chainPem, const std::string& keyPem,
                                const std::string& hostname, int64_t nowUnix, const Whats& w) {
  ErrQueueGuard errGuard;
  const std::string& pc = w.chain;
  if (chainPem.size() > kMaxChainBytes) {
    return makeError(pc + "the certificate chain is " + std::to_string(chainPem.size()) +
                     " bytes, more than the limit of " + std::to_string(kMaxChainBytes));
  }
  auto text = readPemBlocks(chainPem, pc, "the certificate chain");
  if (!text) return std::move(text).takeError();
  for (const auto& b : text->blocks) {
    if (b.name != "CERTIFICATE") {
      return makeError(pc + "a " + safeLabel(b.name) + " block in the certificate chain");
    }
    if (b.hasHeaders) return makeError(pc + "a CERTIFICATE block with PEM headers");
  }
  if (text->blocks.empty()) return makeError(pc + "no certificate found");
  if (text->trailingData) return makeError(pc + "unexpected data after the last certificate");
  if (text->blocks.size() > kMaxChainCerts) {
    return makeError(pc + std::to_string(text->blocks.size()) +
                     " certificates, more than the limit of " + std::to_string(kMaxChainCerts));
  }
  std::vector<X509Ptr> certs;
  for (size_t i = 0; i < text->blocks.size(); ++i) {
    const auto& b = text->blocks[i];
    const unsigned char* p = b.data.get();
    X509Ptr x(d2i_X509(nullptr, &p, b.len));
    if (!x) {
      return makeError(pc + "certificate #" + std::to_string(i + 1) +
                       " does not parse: " + opensslErrors());
    }
    if (p != b.data.get() + b.len) {
      return makeError(pc + "certificate #" + std::to_string(i + 1) +
                       " has trailing bytes after its DER");
    }
    certs.push_back(std::move(x));
  }
  X509* leaf = certs.front().get();

  auto key = parseKeyPem(keyPem, w.key);
  if (!key) return std::move(key).takeError();

  if (X509_check_private_key(leaf, key->get()) != 1) {
    ERR_clear_error();
    return makeError(w.pair + "private key does not match the certificate");
  }

  auto info = infoOf(leaf);
  if (!info) return makeError(pc + info.error());

  if (hostname.empty()) return makeError(pc + "empty host name");
  if (isIpLiteral(hostname)) {
    if (X509_check_ip_asc(leaf, hostname.c_str(), 0) != 1) {
      return makeError(pc + "certificate is not valid for IP address \"" + hostname + "\" (" +
                       namesForMessage(*info) + ")");
    }
  } else {
    // Only DNS SANs count (as in Go since 1.15: the subject CN is never a
    // host name), and "*" must be a whole left-most label.
    const unsigned flags =
        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;
    if (X509_check_host(leaf, hostname.data(), hostname.size(), flags, nullptr) != 1) {
      return makeError(pc + "certificate is not valid for host name \"" + safeLabel(hostname) +
                       "\" (" + namesForMessage(*info) + ")");
    }
  }

  if (nowUnix < info->notBefore) {
    return makeError(pc + "certificate is not valid before " + formatUtc(info->notBefore));
  }
  if (nowUnix >= info->notAfter) {
    return makeError(pc + "certificate expired at " + formatUtc(info->notAfter));
  }

  CertBundle out;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return sslError(pc, "BIO_new");
  for (const auto& c : certs) {
    if (PEM_write_bio_X509(bio.get(), c.get()) != 1) return sslError(pc, "encoding the chain");
  }
  out.chainPem = bioToString(bio.get());
  auto kp = keyToPkcs8Pem(key->get(), w.key);
  if (!kp) return std::move(kp).takeError();
  out.keyPem = std::move(*kp);
  out.info = std::move(*info);
  return out;
}

// ---- building certificates ----

// PrintableString when every character allows it (what Go's encoding/asn1
// picks for a pkix.Name CommonName), else UTF8String.
bool isPrintableString(const std::string& s) {
  for (unsigned char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::strchr(" '()+,-./:=?", c) != nullptr;
    if (!ok || c == '\0') return false;
  }
  return true;
}

// Subject CN = `cn`, or an empty subject when `cn` is longer than X.520
// allows (callers then mark the SAN critical, RFC 5280 §4.2.1.6).
Result<NamePtr> subjectName(const std::string& cn, const std::string& prefix) {
  NamePtr name(X509_NAME_new());
  if (!name) return sslError(prefix, "X509_NAME_new");
  if (cn.size() <= kMaxCommonName) {
    const int type = isPrintableString(cn) ? V_ASN1_PRINTABLESTRING : MBSTRING_UTF8;
    if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, type,
                                   reinterpret_cast<const unsigned char*>(cn.data()),
                                   int(cn.size()), -1, 0) != 1) {
      return sslError(prefix, "setting the subject common name");
    }
  }
  return name;
}

// A DNS SAN must be IA5 (ASCII) without controls or spaces.
bool isSaneDnsName(const std::string& n) {
  if (n.empty() || n.size() > 253) return false;
  for (unsigned char c : n) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// GENERAL_NAMES for `names`: iPAddress for IP literals, dNSName otherwise.
Result<GenNamesPtr> sanNames(const std::vector<std::string>& names, const std::string& prefix) {
  GenNamesPtr gens(sk_GENERAL_NAME_new_null());
  if (!gens) return sslError(prefix, "sk_GENERAL_NAME_new_null");
  for (const auto& n : names) {
    GenNamePtr gn(GENERAL_NAME_new());
    if (!gn) return sslError(prefix, "GENERAL_NAME_new");
    if (isIpLiteral(n)) {
      OctetPtr ip(a2i_IPADDRESS(n.c_str()));
      if (!ip) return sslError(prefix, "encoding IP address \"" + n + "\"");
      GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, ip.release());
    } else {
      if (!isSaneDnsName(n)) return makeError(prefix + "invalid DNS name \"" + safeLabel(n) + "\"");
      Ia5Ptr s(ASN1_IA5STRING_new());
      if (!s || ASN1_STRING_set(s.get(), n.data(), int(n.size())) != 1) {
        return sslError(prefix, "encoding DNS name");
      }
      GENERAL_NAME_set0_value(gn.get(), GEN_DNS, s.release());
    }
    if (sk_GENERAL_NAME_push(gens.get(), gn.get()) <= 0)
      return sslError(prefix, "sk_GENERAL_NAME_push");
    gn.release();  // owned by gens now
  }
  return gens;
}

// A random serial in [1, 2^128): 128 random bits, as Go's
// rand.Int(rand.Reader, 1<<128), never zero.
Result<void> setRandomSerial(X509* x, const std::string& prefix) {
  BnPtr bn(BN_new());
  if (!bn) return sslError(prefix, "BN_new");
  do {
    if (BN_rand(bn.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
      return sslError(prefix, "random serial");
    }
  } while (BN_is_zero(bn.get()));
  if (!BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)))
    return sslError(prefix, "set serial");
  return okResult();
}

struct LeafSpec {
  std::string name;  // CN and the single SAN (IP or DNS)
  int64_t notBefore = 0;
  int64_t notAfter = 0;
  bool keyEncipherment = false;
  const std::string* acmeIdentifierValue = nullptr;  // DER OCTET STRING, when set
};

// A self-signed v3 leaf laid out as Go's x509.CreateCertificate does for
// derper's template: extensions keyUsage (critical), extKeyUsage serverAuth,
// basicConstraints (critical, CA:FALSE), subjectAltName; no SKI/AKI;
// ecdsa-with-SHA256. Then the acmeIdentifier extension when asked for.
Result<X509Ptr> buildSelfSigned(EVP_PKEY* key, const LeafSpec& spec, const std::string& prefix) {
  X509Ptr x(X509_new());
  if (!x) return sslError(prefix, "X509_new");
  if (X509_set_version(x.get(), X509_VERSION_3) != 1) return sslError(prefix, "set version");
  if (auto r = setRandomSerial(x.get(), prefix); !r) return std::move(r).takeError();

  auto name = subjectName(spec.name, prefix);
  if (!name) return std::move(name).takeError();
  const bool subjectEmpty = X509_NAME_entry_count(name->get()) == 0;
  if (X509_set_subject_name(x.get(), name->get()) != 1 ||
      X509_set_issuer_name(x.get(), name->get()) != 1) {
    return sslError(prefix, "set subject/issuer");
  }
  if (!ASN1_TIME_set(X509_getm_notBefore(x.get()), time_t(spec.notBefore)) ||
      !ASN1_TIME_set(X509_getm_notAfter(x.get()), time_t(spec.notAfter))) {
    return sslError(prefix, "set validity");
  }
  if (X509_set_pubkey(x.get(), key) != 1) return sslError(prefix, "set public key");

  BitStrPtr ku(ASN1_BIT_STRING_new());
  if (!ku || ASN1_BIT_STRING_set_bit(ku.get(), 0, 1) != 1 ||  // digitalSignature
      (spec.keyEncipherment && ASN1_BIT_STRING_set_bit(ku.get(), 2, 1) != 1) ||
      X509_add1_ext_i2d(x.get(), NID_key_usage, ku.get(), 1, X509V3_ADD_DEFAULT) != 1) {
    return sslError(prefix, "keyUsage");
  }
  EkuPtr eku(sk_ASN1_OBJECT_new_null());
  if (!eku) return sslError(prefix, "extKeyUsage");
  {
    ObjPtr serverAuth(OBJ_nid2obj(NID_server_auth));
    if (!serverAuth || sk_ASN1_OBJECT_push(eku.get(), serverAuth.get()) <= 0) {
      return sslError(prefix, "extKeyUsage");
    }
    serverAuth.release();
  }
  if (X509_add1_ext_i2d(x.get(), NID_ext_key_usage, eku.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return sslError(prefix, "extKeyUsage");
  }
  BasicPtr bc(BASIC_CONSTRAINTS_new());
  if (!bc) return sslError(prefix, "basicConstraints");
  bc->ca = 0;
  if (X509_add1_ext_i2d(x.get(), NID_basic_constraints, bc.get(), 1, X509V3_ADD_DEFAULT) != 1) {
    return sslError(prefix, "basicConstraints");
  }
  auto gens = sanNames({spec.name}, prefix);
  if (!gens) return std::move(gens).takeError();
  if (X509_add1_ext_i2d(x.get(), NID_subject_alt_name, gens->get(), subjectEmpty ? 1 : 0,
                        X509V3_ADD_DEFAULT) != 1) {
    return sslError(prefix, "subjectAltName");
  }
  if (spec.acmeIdentifierValue) {
    ObjPtr oid(OBJ_txt2obj(kAcmeIdentifierOid, 1));
    OctetPtr value(ASN1_OCTET_STRING_new());
    const std::string& v = *spec.acmeIdentifierValue;
    if (!oid || !value ||
        ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>(v.data()),
                              int(v.size())) != 1) {
      return sslError(prefix, "acmeIdentifier");
    }
    ExtPtr ext(X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, value.get()));
    if (!ext || X509_add_ext(x.get(), ext.get(), -1) != 1)
      return sslError(prefix, "acmeIdentifier");
  }
  if (X509_sign(x.get(), key, EVP_sha256()) <= 0) return sslError(prefix, "signing");
  return x;
}

Result<std::string> certToPem(X509* x, const std::string& prefix) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x) != 1)
    return sslError(prefix, "encoding the certificate");
  return bioToString(bio.get());
}

// Builds the certificate, then runs it through validateBundle so that what
// is returned is exactly what a reload would accept, with info filled.
Result<CertBundle> makeSelfSignedBundle(const LeafSpec& spec, int64_t nowUnix,
                                        const std::string& prefix, const std::string& what) {
  auto key = newP256Key(prefix);
  if (!key) return std::move(key).takeError();
  auto cert = buildSelfSigned(key->get(), spec, prefix);
  if (!cert) return std::move(cert).takeError();
  auto chain = certToPem(cert->get(), prefix);
  if (!chain) return std::move(chain).takeError();
  auto keyPem = keyToPkcs8Pem(key->get(), prefix);
  if (!keyPem) return std::move(keyPem).takeError();
  auto b = validateImpl(*chain, *keyPem, spec.name, nowUnix, Whats{prefix, prefix, prefix});
  OPENSSL_cleanse(keyPem->data(), keyPem->size());
  if (!b) return makeError(what + ": the generated certificate does not validate: " + b.error());
  return b;
}

template <typename T, typename F>
Result<T> noThrow(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    ERR_clear_error();
    return makeError(what + ": " + e.what());
  } catch (...) {
    ERR_clear_error();
    return makeError(what + ": unknown exception");
  }
}

}  // namespace

bool isIpLiteral(const std::string& host) {
  in_addr a4;
  in6_addr a6;
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

Result<CertBundle> validateBundle(const std::string& chainPem, const std::string& keyPem,
                                  const std::string& hostname, int64_t nowUnix,
                                  const std::string& what) {
  return noThrow<CertBundle>(what, [&]() -> Result<CertBundle> {
    const std::string p = prefixOf(what);
    return validateImpl(chainPem, keyPem, hostname, nowUnix, Whats{p, p, p});
  });
}

Result<CertBundle> loadBundleFiles(const std::string& crtPath, const std::string& keyPath,
                                   const std::string& hostname, int64_t nowUnix) {
  return noThrow<CertBundle>(crtPath, [&]() -> Result<CertBundle> {
    auto chain = readFileLimited(crtPath, kMaxFileBytes);
    if (!chain) return std::move(chain).takeError();
    auto key = readFileLimited(keyPath, kMaxFileBytes);
    if (!key) return std::move(key).takeError();
    auto b = validateImpl(*chain, *key, hostname, nowUnix,
                          Whats{crtPath + ": ", keyPath + ": ", crtPath + ", " + keyPath + ": "});
    OPENSSL_cleanse(key->data(), key->size());
    return b;
  });
}

Result<CertBundle> makeSelfSigned(const std::string& hostname, int64_t nowUnix, int validDays) {
  const std::string what = "self-signed certificate for \"" + hostname + "\"";
  return noThrow<CertBundle>(what, [&]() -> Result<CertBundle> {
    ErrQueueGuard errGuard;
    const std::string prefix = what + ": ";
    if (hostname.empty()) return makeError("self-signed certificate: empty host name");
    if (validDays <= 0) return makeError(prefix + "validDays must be positive");
    LeafSpec spec;
    spec.name = hostname;
    spec.notBefore = nowUnix;  // derper: NotBefore = time.Now(), no backdating
    spec.notAfter = nowUnix + int64_t(validDays) * kSecondsPerDay;
    spec.keyEncipherment = true;
    return makeSelfSignedBundle(spec, nowUnix, prefix, what);
  });
}

std::string certNameSha256Raw(const CertBundle& b) { return "sha256-raw:" + b.info.leafSha256Hex; }

Result<CertBundle> makeTlsAlpnChallengeCert(const std::string& identifier,
                                            const std::string& keyAuthorization, int64_t nowUnix) {
  const std::string what = "tls-alpn-01 certificate for \"" + identifier + "\"";
  return noThrow<CertBundle>(what, [&]() -> Result<CertBundle> {
    ErrQueueGuard errGuard;
    const std::string prefix = what + ": ";
    if (identifier.empty()) return makeError("tls-alpn-01 certificate: empty identifier");
    if (keyAuthorization.empty()) return makeError(prefix + "empty key authorization");
    // extnValue = DER OCTET STRING (04 20 <SHA-256(keyAuthorization)>).
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdLen = 0;
    if (EVP_Digest(keyAuthorization.data(), keyAuthorization.size(), md, &mdLen, EVP_sha256(),
                   nullptr) != 1 ||
        mdLen != 32) {
      return sslError(prefix, "SHA-256");
    }
    std::string value;
    value.push_back('\x04');
    value.push_back('\x20');
    value.append(reinterpret_cast<const char*>(md), mdLen);
    LeafSpec spec;
    spec.name = identifier;
    spec.notBefore = nowUnix - 3600;
    spec.notAfter = nowUnix + 7 * kSecondsPerDay;
    spec.acmeIdentifierValue = &value;
    return makeSelfSignedBundle(spec, nowUnix, prefix, what);
  });
}

Result<std::string> generateP256KeyPem() {
  return noThrow<std::string>("P-256 key", []() -> Result<std::string> {
    ErrQueueGuard errGuard;
    auto key = newP256Key("P-256 key: ");
    if (!key) return std::move(key).takeError();
    return keyToPkcs8Pem(key->get(), "P-256 key: ");
  });
}

Result<std::string> makeCsrDer(const std::string& keyPem, const std::vector<std::string>& names) {
  return noThrow<std::string>("CSR", [&]() -> Result<std::string> {
    ErrQueueGuard errGuard;
    const std::string prefix = "CSR: ";
    if (names.empty()) return makeError(prefix + "no names");
    auto key = parseKeyPem(keyPem, prefix);
    if (!key) return std::move(key).takeError();

    ReqPtr req(X509_REQ_new());
    if (!req) return sslError(prefix, "X509_REQ_new");
    if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1)
      return sslError(prefix, "set version");
    auto subject = subjectName(names[0], prefix);
    if (!subject) return std::move(subject).takeError();
    const bool subjectEmpty = X509_NAME_entry_count(subject->get()) == 0;
    if (X509_REQ_set_subject_name(req.get(), subject->get()) != 1)
      return sslError(prefix, "set subject");
    if (X509_REQ_set_pubkey(req.get(), key->get()) != 1) return sslError(prefix, "set public key");

    auto gens = sanNames(names, prefix);
    if (!gens) return std::move(gens).takeError();
    ExtStackPtr exts(sk_X509_EXTENSION_new_null());
    if (!exts) return sslError(prefix, "sk_X509_EXTENSION_new_null");
    ExtPtr san(X509V3_EXT_i2d(NID_subject_alt_name, subjectEmpty ? 1 : 0, gens->get()));
    if (!san || sk_X509_EXTENSION_push(exts.get(), san.get()) <= 0)
      return sslError(prefix, "subjectAltName");
    san.release();  // owned by exts now
    if (X509_REQ_add_extensions(req.get(), exts.get()) != 1)
      return sslError(prefix, "add extensions");

    const EVP_MD* md =
        EVP_PKEY_get_base_id(key->get()) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
    if (X509_REQ_sign(req.get(), key->get(), md) <= 0) return sslError(prefix, "signing");

    unsigned char* der = nullptr;
    const int n = i2d_X509_REQ(req.get(), &der);
    if (n <= 0) return sslError(prefix, "i2d_X509_REQ");
    std::unique_ptr<unsigned char, OpensslFree> holder(der);
    return std::string(reinterpret_cast<const char*>(der), size_t(n));
  });
}

std::string opensslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::string certFileStem(const std::string& hostname) {
  std::string s;
  for (char c : hostname) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-') s += c;
  }
  return s;
}

}  // namespace derpd::tls
