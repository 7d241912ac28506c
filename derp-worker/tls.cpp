#include "tls.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstring>

#include "common/crypto/meta_cert.hpp"

namespace derpd::worker {

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
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
        c == '-')
      s += c;
  }
  return s;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

namespace {

// ALPN: pick http/1.1 when offered; otherwise go on without ALPN rather than
// fail (DERP clients offer none; never pick h2 on a conn that may carry /derp).
int alpnSelect(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = "http/1.1";
  unsigned int i = 0;
  while (i < inlen) {
    unsigned int n = in[i];
    if (i + 1 + n > inlen) break;
    if (n == 8 && std::memcmp(in + i + 1, kHttp11, 8) == 0) {
      *out = in + i + 1;
      *outlen = 8;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

bool isIpLiteral(const std::string& h) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, h.c_str(), &a4) == 1 || inet_pton(AF_INET6, h.c_str(), &a6) == 1;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> TlsContext::loadManual(const std::string& certFile,
                                                           const std::string& keyFile,
                                                           const std::string& hostname,
                                                           const crypto::NodePublic& serverKey) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return makeError("SSL_CTX_new: " + opensslErrors());
  std::shared_ptr<TlsContext> holder(new TlsContext(ctx));

  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Idle connections give their read/write buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_alpn_select_cb(ctx, alpnSelect, nullptr);

  if (SSL_CTX_use_certificate_chain_file(ctx, certFile.c_str()) != 1)
    return makeError("cannot load certificate chain " + certFile + ": " + opensslErrors());
  if (SSL_CTX_use_PrivateKey_file(ctx, keyFile.c_str(), SSL_FILETYPE_PEM) != 1)
    return makeError("cannot load private key " + keyFile + ": " + opensslErrors());
  if (SSL_CTX_check_private_key(ctx) != 1)
    return makeError("private key " + keyFile + " does not match the certificate in " + certFile);

  X509* leaf = SSL_CTX_get0_certificate(ctx);
  int match = isIpLiteral(hostname) ? X509_check_ip_asc(leaf, hostname.c_str(), 0)
                                    : X509_check_host(leaf, hostname.c_str(), hostname.size(), 0, nullptr);
  if (match != 1)
    return makeError("certificate " + certFile + " is not valid for host name \"" + hostname + "\"");

  auto meta = crypto::makeMetaCert(serverKey);
  if (!meta) return makeError("meta certificate: " + meta.error());
  // add1 takes its own reference; the meta cert goes last in the chain.
  if (SSL_CTX_add1_chain_cert(ctx, meta->get()) != 1)
    return makeError("cannot append the meta certificate: " + opensslErrors());
  return holder;
}

}  // namespace derpd::worker
