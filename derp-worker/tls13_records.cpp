#include "tls13_records.hpp"

#include <openssl/hmac.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string_view>

namespace derpd::worker {

namespace {

constexpr uint8_t kTypeAlert = 21;
constexpr uint8_t kTypeHandshake = 22;
constexpr uint8_t kTypeApplicationData = 23;
constexpr uint8_t kHandshakeKeyUpdate = 24;
constexpr uint8_t kAlertCloseNotify = 0;
constexpr uint8_t kAlertUserCanceled = 90;

int secretsIndex() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

// "LABEL <client random hex> <secret hex>" -> the secret, when LABEL matches.
bool parseKeyLogLine(std::string_view line, std::string_view label, std::array<uint8_t, 48>& out, size_t& len) {
  if (line.size() <= label.size() || line.substr(0, label.size()) != label || line[label.size()] != ' ') {
    return false;
  }
  auto secret = fromHex(line.substr(line.rfind(' ') + 1));
  if (!secret || secret->empty() || secret->size() > out.size()) return false;
  std::copy(secret->begin(), secret->end(), out.begin());
  len = secret->size();
  OPENSSL_cleanse(secret->data(), secret->size());
  return true;
}

void keyLog(const SSL* ssl, const char* line) {
  auto* s = static_cast<Tls13Secrets*>(SSL_get_ex_data(ssl, secretsIndex()));
  if (!s || !line) return;
  const std::string_view l(line);
  if (!parseKeyLogLine(l, "CLIENT_TRAFFIC_SECRET_0", s->client, s->clientLen)) {
    parseKeyLogLine(l, "SERVER_TRAFFIC_SECRET_0", s->server, s->serverLen);
  }
}

// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, for lengths up
// to the hash length (one HMAC block: all TLS 1.3 keys, IVs and secrets).
bool expandLabel(const EVP_MD* md, ByteView secret, std::string_view label, uint8_t* out, size_t len) {
  uint8_t info[2 + 1 + 255 + 1 + 1];
  size_t n = 0;
  info[n++] = uint8_t(len >> 8);
  info[n++] = uint8_t(len);
  info[n++] = uint8_t(6 + label.size());
  std::memcpy(info + n, "tls13 ", 6);
  n += 6;
  std::memcpy(info + n, label.data(), label.size());
  n += label.size();
  info[n++] = 0;  // empty context
  info[n++] = 1;  // T(1)
  uint8_t block[EVP_MAX_MD_SIZE];
  unsigned int blockLen = 0;
  if (!HMAC(md, secret.data(), int(secret.size()), info, n, block, &blockLen) || blockLen < len) return false;
  std::memcpy(out, block, len);
  OPENSSL_cleanse(block, sizeof block);
  return true;
}

}  // namespace

void enableTls13SecretCapture(SSL_CTX* ctx) { SSL_CTX_set_keylog_callback(ctx, keyLog); }

void attachTls13Secrets(SSL* ssl, Tls13Secrets* secrets) { SSL_set_ex_data(ssl, secretsIndex(), secrets); }

Tls13Records::Tls13Records(const EVP_CIPHER* cipher, const EVP_MD* md, size_t keyLen)
    : cipher_(cipher), md_(md), keyLen_(keyLen), hashLen_(size_t(EVP_MD_get_size(md))) {}

Tls13Records::~Tls13Records() {
  for (Direction* d : {&read_, &write_}) {
    EVP_CIPHER_CTX_free(d->ctx);
    OPENSSL_cleanse(d->secret.data(), d->secret.size());
  }
}

Result<std::unique_ptr<Tls13Records>> Tls13Records::fromServerHandshake(const SSL* ssl,
                                                                         const Tls13Secrets& secrets) {
  if (SSL_version(ssl) != TLS1_3_VERSION) return makeError("not TLS 1.3");
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
  if (!c) return makeError("no cipher suite");
  if (secrets.clientLen == 0 || secrets.serverLen == 0) return makeError("traffic secrets not captured");
  // A server reads with the client's secret and writes with its own.
  return fromSecrets(uint16_t(SSL_CIPHER_get_protocol_id(c)), ByteView(secrets.client.data(), secrets.clientLen),
                     ByteView(secrets.server.data(), secrets.serverLen));
}

Result<std::unique_ptr<Tls13Records>> Tls13Records::fromSecrets(uint16_t cipherId, ByteView readSecret,
                                                                ByteView writeSecret) {
  const EVP_CIPHER* cipher = nullptr;
  const EVP_MD* md = nullptr;
  size_t keyLen = 0;
  switch (cipherId) {
    case 0x1301: cipher = EVP_aes_128_gcm(), md = EVP_sha256(), keyLen = 16; break;
    case 0x1302: cipher = EVP_aes_256_gcm(), md = EVP_sha384(), keyLen = 32; break;
    case 0x1303: cipher = EVP_chacha20_poly1305(), md = EVP_sha256(), keyLen = 32; break;
    default: return makeError("cipher suite " + std::to_string(cipherId) + " is not handled");
  }
  std::unique_ptr<Tls13Records> r(new Tls13Records(cipher, md, keyLen));
  if (readSecret.size() != r->hashLen_ || writeSecret.size() != r->hashLen_) {
    return makeError("traffic secret length does not match the cipher suite's hash");
  }
  if (auto e = r->install(r->read_, false, readSecret); !e) return std::move(e).takeError();
  if (auto e = r->install(r->write_, true, writeSecret); !e) return std::move(e).takeError();
  return r;
}

Result<void> Tls13Records::install(Direction& d, bool encrypt, ByteView secret) {
  uint8_t key[32];
  std::memcpy(d.secret.data(), secret.data(), secret.size());
  if (!expandLabel(md_, secret, "key", key, keyLen_) || !expandLabel(md_, secret, "iv", d.iv.data(), d.iv.size())) {
    return makeError("HKDF-Expand-Label failed");
  }
  if (!d.ctx) d.ctx = EVP_CIPHER_CTX_new();
  const bool ok = d.ctx && EVP_CipherInit_ex(d.ctx, cipher_, nullptr, key, nullptr, encrypt ? 1 : 0) == 1;
  OPENSSL_cleanse(key, sizeof key);
  if (!ok) return makeError("AEAD key setup failed");
  d.seq = 0;
  return okResult();
}

Result<void> Tls13Records::nextSecret(Direction& d, bool encrypt) {
  std::array<uint8_t, 48> next{};
  if (!expandLabel(md_, ByteView(d.secret.data(), hashLen_), "traffic upd", next.data(), hashLen_)) {
    return makeError("HKDF-Expand-Label failed");
  }
  auto r = install(d, encrypt, ByteView(next.data(), hashLen_));
  OPENSSL_cleanse(next.data(), next.size());
  return r;
}

void Tls13Records::nonce(const Direction& d, uint8_t out[12]) const {
  std::memcpy(out, d.iv.data(), 12);
  for (int i = 0; i < 8; ++i) out[11 - i] ^= uint8_t(d.seq >> (8 * i));
}

void Tls13Records::sealRecord(uint8_t innerType, ByteView plain, Bytes& out) { sealInner(plain, innerType, out); }

void Tls13Records::sealInner(ByteView plain, uint8_t innerType, Bytes& out) {
  const size_t inner = plain.size() + (innerType != 0 ? 1 : 0);
  const size_t start = out.size();
  out.resize(start + kHeaderLen + inner + kTagLen);
  uint8_t* h = out.data() + start;
  h[0] = kTypeApplicationData;
  h[1] = 0x03;
  h[2] = 0x03;
  h[3] = uint8_t((inner + kTagLen) >> 8);
  h[4] = uint8_t(inner + kTagLen);
  uint8_t* body = h + kHeaderLen;
  if (!plain.empty()) std::memcpy(body, plain.data(), plain.size());
  if (innerType != 0) body[plain.size()] = innerType;
  uint8_t iv[12];
  nonce(write_, iv);
  int len = 0;
  // Encryption with a key and IV already set up cannot fail.
  EVP_EncryptInit_ex(write_.ctx, nullptr, nullptr, nullptr, iv);
  EVP_EncryptUpdate(write_.ctx, nullptr, &len, h, int(kHeaderLen));
  EVP_EncryptUpdate(write_.ctx, body, &len, body, int(inner));
  EVP_EncryptFinal_ex(write_.ctx, body + inner, &len);
  EVP_CIPHER_CTX_ctrl(write_.ctx, EVP_CTRL_AEAD_GET_TAG, int(kTagLen), body + inner);
  ++write_.seq;
}

void Tls13Records::seal(ByteView plain, Bytes& out) {
  out.reserve(out.size() + plain.size() + (plain.size() / kMaxPlaintext + 1) * (kHeaderLen + 1 + kTagLen));
  while (!plain.empty()) {
    const size_t n = std::min(plain.size(), kMaxPlaintext);
    sealRecord(kTypeApplicationData, plain.first(n), out);
    plain = plain.subspan(n);
  }
}

void Tls13Records::sealCloseNotify(Bytes& out) {
  const uint8_t alert[2] = {1, kAlertCloseNotify};  // warning, close_notify
  sealRecord(kTypeAlert, ByteView(alert, 2), out);
}

void Tls13Records::sealKeyUpdate(Bytes& out) {
  const uint8_t msg[5] = {kHandshakeKeyUpdate, 0, 0, 1, 0};  // update_not_requested
  sealRecord(kTypeHandshake, ByteView(msg, 5), out);
  (void)nextSecret(write_, true);  // cannot fail: the same HMAC and init as at start
  owedKeyUpdate_ = false;
}

Result<size_t> Tls13Records::recordLength(ByteView in) {
  if (in.size() < kHeaderLen) return size_t(0);
  if (in[0] != kTypeApplicationData) {
    return makeError("record type " + std::to_string(in[0]) + " after the handshake");
  }
  if (in[1] != 0x03 || in[2] != 0x03) return makeError("record version is not 0x0303");
  const size_t len = size_t(in[3]) << 8 | in[4];
  if (len > kMaxCiphertext) return makeError("record of " + std::to_string(len) + " bytes (record_overflow)");
  if (len < 1 + kTagLen) return makeError("record of " + std::to_string(len) + " bytes is too short");
  return in.size() >= kHeaderLen + len ? kHeaderLen + len : 0;
}

Result<Tls13Records::Opened> Tls13Records::open(std::span<uint8_t> rec) {
  const size_t ct = rec.size() - kHeaderLen - kTagLen;
  uint8_t* body = rec.data() + kHeaderLen;
  uint8_t iv[12];
  nonce(read_, iv);
  int len = 0;
  if (EVP_DecryptInit_ex(read_.ctx, nullptr, nullptr, nullptr, iv) != 1 ||
      EVP_DecryptUpdate(read_.ctx, nullptr, &len, rec.data(), int(kHeaderLen)) != 1 ||
      EVP_DecryptUpdate(read_.ctx, body, &len, body, int(ct)) != 1 ||
      EVP_CIPHER_CTX_ctrl(read_.ctx, EVP_CTRL_AEAD_SET_TAG, int(kTagLen), body + ct) != 1 ||
      EVP_DecryptFinal_ex(read_.ctx, body + ct, &len) != 1) {
    return makeError("record does not authenticate (bad_record_mac)");
  }
  ++read_.seq;
  // TLSInnerPlaintext: content, the real type, then zero padding.
  size_t n = ct;
  while (n > 0 && body[n - 1] == 0) --n;
  if (n == 0) return makeError("record without a content type");
  const uint8_t type = body[n - 1];
  const ByteView content(body, n - 1);
  if (content.size() > kMaxPlaintext) return makeError("plaintext over 2^14 bytes (record_overflow)");
  switch (type) {
    case kTypeApplicationData:
      return Opened{Kind::Data, content};
    case kTypeAlert:
      if (content.size() != 2) return makeError("malformed alert");
      if (content[1] == kAlertCloseNotify) return Opened{Kind::CloseNotify, {}};
      if (content[1] == kAlertUserCanceled) return Opened{Kind::Control, {}};
      return makeError("alert " + std::to_string(content[1]) + " from the peer");
    case kTypeHandshake:
      return onHandshake(content);
    default:
      return makeError("content type " + std::to_string(type) + " after the handshake");
  }
}

Result<Tls13Records::Opened> Tls13Records::onHandshake(ByteView msgs) {
  if (msgs.empty()) return makeError("empty handshake record");
  bool update = false;
  while (!msgs.empty()) {
    if (msgs.size() < 4) return makeError("handshake message split across records");
    const size_t len = size_t(msgs[1]) << 16 | size_t(msgs[2]) << 8 | msgs[3];
    if (msgs.size() < 4 + len) return makeError("handshake message split across records");
    if (msgs[0] != kHandshakeKeyUpdate) {
      return makeError("handshake message type " + std::to_string(msgs[0]) + " after the handshake");
    }
    if (len != 1 || msgs[4] > 1) return makeError("malformed KeyUpdate");
    if (msgs.size() != 5) return makeError("data after a KeyUpdate in its record");  // §5.1: key change boundary
    if (msgs[4] == 1) owedKeyUpdate_ = true;
    update = true;
    msgs = msgs.subspan(4 + len);
  }
  if (update) {
    if (auto r = nextSecret(read_, false); !r) return std::move(r).takeError();
  }
  return Opened{Kind::Control, {}};
}

}  // namespace derpd::worker
