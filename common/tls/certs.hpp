// Certificate material for derpd's TLS (PROTOCOL.md §8): validating a chain
// and key for a host name, derper's self-signed IP certificate and its
// `sha256-raw:` CertName, the RFC 8737 TLS-ALPN-01 challenge certificate, and
// the P-256 key + CSR an ACME order is finalized with. OpenSSL only; no I/O
// except loadBundleFiles.
// Included by cert-agent (all of it), derp-worker (validateBundle), tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::tls {

// What a validated leaf says about itself.
struct CertInfo {
  std::string serialHex;      // upper-case hex of the leaf's serial, no leading zeros ("0" for 0)
  int64_t notBefore = 0;      // unix seconds
  int64_t notAfter = 0;       // unix seconds
  std::vector<std::string> dnsNames;  // the leaf's DNS SANs
  std::vector<std::string> ipAddrs;   // the leaf's IP SANs, textual (inet_ntop)
  std::string leafSha256Hex;  // lower-case hex SHA-256 of the leaf's DER
};

// A certificate chain (leaf first, PEM) and its private key (PEM), validated.
struct CertBundle {
  std::string chainPem;  // every certificate, re-encoded as PEM, leaf first
  std::string keyPem;    // the private key, re-encoded as PKCS#8 PEM
  CertInfo info;
};

// True when `host` is an IPv4 or IPv6 literal (no brackets, no zone).
bool isIpLiteral(const std::string& host);

// Parses and checks: at least one certificate and nothing but CERTIFICATE
// blocks in `chainPem` (at most 16, at most 256 KiB); exactly one private key
// (EC, RSA or Ed25519) in `keyPem`; the key matches the leaf; the leaf is
// valid for `hostname` (an IP SAN for an IP literal, else a DNS SAN with
// wildcard rules as X509_check_host, whole left-most label only; the
// subject CN is never used); notBefore <= nowUnix < notAfter.
// Text before a PEM block is skipped (RFC 7468 explanatory text); anything
// but whitespace after the last block is an error. `keyPem` may also hold
// "EC PARAMETERS" blocks (`openssl ecparam -genkey` output), nothing else.
// The chain is not verified against any trust store.
// Errors say what is wrong, prefixed by `what` (e.g. the file names).
Result<CertBundle> validateBundle(const std::string& chainPem, const std::string& keyPem,
                                  const std::string& hostname, int64_t nowUnix,
                                  const std::string& what);

// Reads `crtPath` and `keyPath` (each at most 1 MiB) and validates them as
// above; errors name the files.
Result<CertBundle> loadBundleFiles(const std::string& crtPath, const std::string& keyPath,
                                   const std::string& hostname, int64_t nowUnix);

// derper's self-signed certificate for an IP-address hostname (HEAD,
// PROTOCOL.md §13; cmd/derper/cert.go createSelfSignedIPCert), laid out as
// Go's x509.CreateCertificate does it: v3, a fresh ECDSA P-256 key, a random
// serial of up to 128 bits (never 0), subject = issuer = CN hostname only
// (PrintableString), valid from nowUnix (derper does not backdate) for
// `validDays` days (derper: time.Now().AddDate(1, 0, 0), 365 or 366 days);
// extensions in Go's order: keyUsage digitalSignature|keyEncipherment
// (critical), extKeyUsage serverAuth, basicConstraints CA:FALSE (critical),
// subjectAltName = the IP (or a DNS name when `hostname` is not an IP, which
// derper refuses); no SKI/AKI; ecdsa-with-SHA256. derper writes the key as
// SEC1 "EC PRIVATE KEY"; keyPem here is PKCS#8 like every bundle.
Result<CertBundle> makeSelfSigned(const std::string& hostname, int64_t nowUnix,
                                  int validDays = 365);

// The DERPNode.CertName a client pins a self-signed certificate with:
// "sha256-raw:" + lower-case hex SHA-256 of the leaf DER.
std::string certNameSha256Raw(const CertBundle& b);

// RFC 8737 (TLS-ALPN-01): a self-signed certificate for `identifier` (DNS SAN,
// or IP SAN per RFC 8738 when it is an IP literal) carrying the critical
// extension id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31) whose value is the DER
// OCTET STRING of SHA-256(keyAuthorization). Fresh P-256 key, valid
// nowUnix - 1 h .. nowUnix + 7 days; otherwise laid out as makeSelfSigned
// (keyUsage digitalSignature only), the acmeIdentifier extension last.
// info is filled as for validateBundle.
Result<CertBundle> makeTlsAlpnChallengeCert(const std::string& identifier,
                                            const std::string& keyAuthorization,
                                            int64_t nowUnix);

// A fresh ECDSA P-256 private key, PKCS#8 PEM.
Result<std::string> generateP256KeyPem();

// A PKCS#10 CSR (DER) signed by `keyPem` (SHA-256) with a SAN extension
// naming every entry of `names` (IP SAN for IP literals, DNS SAN otherwise)
// and subject CN = names[0] (an empty subject and a critical SAN when
// names[0] is longer than the 64 characters X.520 allows a CN). `names` must
// not be empty.
Result<std::string> makeCsrDer(const std::string& keyPem, const std::vector<std::string>& names);

// derper's file stem for manual certificates: hostname minus every character
// outside [A-Za-z0-9.-] (so IPv6 colons vanish): <certdir>/<stem>.crt|.key.
std::string certFileStem(const std::string& hostname);

// Drains the thread's OpenSSL error queue into one line (oldest first).
std::string opensslErrors();

}  // namespace derpd::tls
