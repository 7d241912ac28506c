#include "tls.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common/crypto/meta_cert.hpp"
#include "tls13_records.hpp"

namespace derpd::worker {

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

namespace {

constexpr unsigned char kAcmeTls1[] = "acme-tls/1";
constexpr size_t kAcmeTls1Len = sizeof kAcmeTls1 - 1;

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

// RFC 8737 §3: the challenge handshake must negotiate acme-tls/1.
int alpnSelectAcme(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned int inlen, void*) {
  unsigned int i = 0;
  while (i < inlen) {
    unsigned int n = in[i];
    if (i + 1 + n > inlen) break;
    if (n == kAcmeTls1Len && std::memcmp(in + i + 1, kAcmeTls1, n) == 0) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(n);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// The settings every context shares (the dispatch one included: an SSL
// object keeps the options and modes it was created with).
SSL_CTX* newServerCtx() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Idle connections give their read/write buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read-ahead stays off during the handshake, so OpenSSL reads exactly the
  // handshake's records and nothing after them: a TLS 1.3 connection then
  // moves to derp-worker's own record layer (tls13_records.hpp) with nothing
  // left behind in OpenSSL. A connection that stays on OpenSSL (TLS 1.2)
  // turns read-ahead on once the handshake is done.
  SSL_CTX_set_read_ahead(ctx, 0);
  // No session tickets: Tailscale's clients do not resume DERP sessions, and
  // a ticket would be a record under the application keys before the
  // switch (our sequence numbers start at 0).
  SSL_CTX_set_num_tickets(ctx, 0);
  enableTls13SecretCapture(ctx);
  return ctx;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// Loads a PEM chain (leaf first) and key into `ctx`.
Result<void> useChainAndKey(SSL_CTX* ctx, const std::string& chainPem, const std::string& keyPem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(chainPem.data(), int(chainPem.size())));
  if (!bio) return makeError("BIO_new_mem_buf: " + opensslErrors());
  std::unique_ptr<X509, X509Free> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!leaf) return makeError("no certificate in the chain: " + opensslErrors());
  if (SSL_CTX_use_certificate(ctx, leaf.get()) != 1) return makeError("certificate: " + opensslErrors());
  for (;;) {
    X509* next = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (!next) break;
    // add0: the context takes ownership.
    if (SSL_CTX_add0_chain_cert(ctx, next) != 1) {
      X509_free(next);
      return makeError("chain certificate: " + opensslErrors());
    }
  }
  ERR_clear_error();  // the end of the PEM text
  std::unique_ptr<BIO, BioFree> kbio(BIO_new_mem_buf(keyPem.data(), int(keyPem.size())));
  if (!kbio) return makeError("BIO_new_mem_buf: " + opensslErrors());
  std::unique_ptr<EVP_PKEY, PkeyFree> key(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!key) return makeError("private key: " + opensslErrors());
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1) return makeError("private key: " + opensslErrors());
  if (SSL_CTX_check_private_key(ctx) != 1) return makeError("the private key does not match the certificate");
  return okResult();
}

// The host_name entry of a server_name extension body (RFC 6066), lower-cased.
std::string parseSni(const unsigned char* p, size_t n) {
  if (n < 2) return {};
  size_t listLen = (size_t(p[0]) << 8) | p[1];
  if (listLen + 2 > n) return {};
  size_t i = 2;
  while (i + 3 <= 2 + listLen) {
    unsigned type = p[i];
    size_t len = (size_t(p[i + 1]) << 8) | p[i + 2];
    i += 3;
    if (i + len > 2 + listLen) return {};
    if (type == 0) {
      std::string name(reinterpret_cast<const char*>(p + i), len);
      for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      return name;
    }
    i += len;
  }
  return {};
}

// Whether an ALPN extension body (RFC 7301) offers acme-tls/1.
bool offersAcmeTls1(const unsigned char* p, size_t n) {
  if (n < 2) return false;
  size_t listLen = (size_t(p[0]) << 8) | p[1];
  if (listLen + 2 > n) return false;
  size_t i = 2;
  while (i < 2 + listLen) {
    size_t len = p[i];
    ++i;
    if (i + len > 2 + listLen) return false;
    if (len == kAcmeTls1Len && std::memcmp(p + i, kAcmeTls1, len) == 0) return true;
    i += len;
  }
  return false;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> TlsContext::fromPem(const std::string& chainPem, const std::string& keyPem,
                                                        const crypto::NodePublic& serverKey) {
  ERR_clear_error();
  SSL_CTX* ctx = newServerCtx();
  if (!ctx) return makeError("SSL_CTX_new: " + opensslErrors());
  std::shared_ptr<TlsContext> holder(new TlsContext(ctx));
  SSL_CTX_set_alpn_select_cb(ctx, alpnSelect, nullptr);
  if (auto r = useChainAndKey(ctx, chainPem, keyPem); !r) return std::move(r).takeError();
  auto meta = crypto::makeMetaCert(serverKey);
  if (!meta) return makeError("meta certificate: " + meta.error());
  // add1 takes its own reference; the meta cert goes last in the chain.
  if (SSL_CTX_add1_chain_cert(ctx, meta->get()) != 1)
    return makeError("cannot append the meta certificate: " + opensslErrors());
  return holder;
}

Result<std::shared_ptr<TlsContext>> TlsContext::forAcmeChallenge(const std::string& certPem,
                                                                 const std::string& keyPem) {
  ERR_clear_error();
  SSL_CTX* ctx = newServerCtx();
  if (!ctx) return makeError("SSL_CTX_new: " + opensslErrors());
  std::shared_ptr<TlsContext> holder(new TlsContext(ctx));
  SSL_CTX_set_alpn_select_cb(ctx, alpnSelectAcme, nullptr);
  if (auto r = useChainAndKey(ctx, certPem, keyPem); !r) return std::move(r).takeError();
  return holder;
}

TlsStore::TlsStore(SSL_CTX* dispatch, const crypto::NodePublic& serverKey)
    : dispatch_(dispatch), serverKey_(serverKey) {}

TlsStore::~TlsStore() { SSL_CTX_free(dispatch_); }

Result<std::shared_ptr<TlsStore>> TlsStore::create(const crypto::NodePublic& serverKey) {
  ERR_clear_error();
  SSL_CTX* ctx = newServerCtx();
  if (!ctx) return makeError("SSL_CTX_new: " + opensslErrors());
  std::shared_ptr<TlsStore> store(new TlsStore(ctx, serverKey));
  SSL_CTX_set_alpn_select_cb(ctx, alpnSelect, nullptr);
  SSL_CTX_set_client_hello_cb(ctx, &TlsStore::clientHello, store.get());
  return store;
}

int TlsStore::clientHello(SSL* ssl, int* alert, void* arg) {
  auto* self = static_cast<TlsStore*>(arg);
  const unsigned char* ext = nullptr;
  size_t extLen = 0;
  bool acme = SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &extLen) == 1 &&
              offersAcmeTls1(ext, extLen);
  std::string sni;
  if (acme && SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &extLen) == 1) sni = parseSni(ext, extLen);
  std::shared_ptr<TlsContext> ctx = self->pick(acme, sni);
  if (!ctx) {
    // No certificate yet (ACME has not finished), or no such challenge.
    *alert = acme ? SSL_AD_UNRECOGNIZED_NAME : SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  if (SSL_set_SSL_CTX(ssl, ctx->get()) == nullptr) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

std::shared_ptr<TlsContext> TlsStore::pick(bool acmeAlpn, const std::string& sni) const {
  std::lock_guard lock(mu_);
  if (acmeAlpn) {
    auto it = alpnChallenges_.find(sni);
    return it == alpnChallenges_.end() ? nullptr : it->second;
  }
  return current_;
}

Result<void> TlsStore::setCertificate(const std::string& chainPem, const std::string& keyPem) {
  auto ctx = TlsContext::fromPem(chainPem, keyPem, serverKey_);
  if (!ctx) return std::move(ctx).takeError();
  std::lock_guard lock(mu_);
  current_ = *ctx;
  return okResult();
}

bool TlsStore::hasCertificate() const {
  std::lock_guard lock(mu_);
  return current_ != nullptr;
}

Result<void> TlsStore::setAlpnChallenge(const std::string& identifier, const std::string& certPem,
                                        const std::string& keyPem) {
  auto ctx = TlsContext::forAcmeChallenge(certPem, keyPem);
  if (!ctx) return std::move(ctx).takeError();
  std::string id = identifier;
  for (char& c : id) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::lock_guard lock(mu_);
  alpnChallenges_[id] = *ctx;
  return okResult();
}

void TlsStore::clearAlpnChallenge(const std::string& identifier) {
  std::string id = identifier;
  for (char& c : id) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::lock_guard lock(mu_);
  alpnChallenges_.erase(id);
}

void TlsStore::setHttpToken(const std::string& token, const std::string& keyAuthorization) {
  std::lock_guard lock(mu_);
  httpTokens_[token] = keyAuthorization;
}

void TlsStore::clearHttpToken(const std::string& token) {
  std::lock_guard lock(mu_);
  httpTokens_.erase(token);
}

std::optional<std::string> TlsStore::httpToken(const std::string& token) const {
  std::lock_guard lock(mu_);
  auto it = httpTokens_.find(token);
  if (it == httpTokens_.end()) return std::nullopt;
  return it->second;
}

}  // namespace derpd::worker
