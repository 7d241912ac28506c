// derp-worker's own TLS 1.3 record layer (RFC 8446 §5, §7), so that an
// established connection does not keep a whole OpenSSL connection object
// (~7.6 kB for SSL_new alone, per heaptrack) for the rest of its life.
//
// OpenSSL does the handshake. Its key-log callback hands us the two
// application traffic secrets (CLIENT_/SERVER_TRAFFIC_SECRET_0); when the
// handshake is complete, nothing was read beyond it (read-ahead is off
// until then) and no record was sent under the application keys (no
// session tickets: SSL_CTX_set_num_tickets 0), so both sequence numbers are
// 0. derp-worker then frees the SSL object and seals and opens records here
// with two AEAD contexts (AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305).
// This is what kernel TLS takes from OpenSSL; the kernel's TLS module is
// not available on every host (nor in this project's CI), so it is done in
// user space.
//
// After the handshake a TLS 1.3 peer may send, besides application data:
// alerts (close_notify ends the stream cleanly; any other alert is fatal;
// user_canceled is ignored as the RFC allows), and post-handshake
// handshake messages, of which only KeyUpdate is valid towards a server
// that does not ask for client certificates. A KeyUpdate moves our reading
// key forward; with update_requested we answer with our own KeyUpdate
// (sent under the old writing key) and move the writing key forward.
// Anything else (an unexpected handshake message, a record that does not
// authenticate, a plaintext record, an oversized one, a change_cipher_spec)
// is fatal. A handshake message split across records is refused
// (KeyUpdate is 5 bytes; Go and OpenSSL send it in one record).
//
// Not thread-safe: one connection's loop thread uses it. Included by
// derp-worker only.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::worker {

// The application traffic secrets of one handshake, filled by the key-log
// callback. Owned by the connection while it handshakes.
struct Tls13Secrets {
  std::array<uint8_t, 48> client{};
  std::array<uint8_t, 48> server{};
  size_t clientLen = 0;
  size_t serverLen = 0;
};

// Installs the key-log callback on `ctx` (every server context).
void enableTls13SecretCapture(SSL_CTX* ctx);
// Points `ssl`'s key-log output at `secrets` (null: none).
void attachTls13Secrets(SSL* ssl, Tls13Secrets* secrets);

class Tls13Records {
 public:
  static constexpr size_t kHeaderLen = 5;
  static constexpr size_t kTagLen = 16;
  static constexpr size_t kMaxPlaintext = 16384;              // 2^14
  static constexpr size_t kMaxCiphertext = kMaxPlaintext + 256;  // RFC 8446 §5.2

  ~Tls13Records();
  Tls13Records(const Tls13Records&) = delete;
  Tls13Records& operator=(const Tls13Records&) = delete;

  // For a completed TLS 1.3 server handshake on `ssl` whose secrets were
  // captured. An error when the version, the cipher suite or the secrets
  // do not allow it (the caller keeps OpenSSL for that connection).
  static Result<std::unique_ptr<Tls13Records>> fromServerHandshake(const SSL* ssl, const Tls13Secrets& secrets);
  // For tests: the raw parameters. `cipherId` is the TLS cipher suite
  // (0x1301, 0x1302, 0x1303); `readSecret`/`writeSecret` hash-length.
  static Result<std::unique_ptr<Tls13Records>> fromSecrets(uint16_t cipherId, ByteView readSecret,
                                                           ByteView writeSecret);

  // Appends records carrying `plain` (split at kMaxPlaintext) to `out`.
  void seal(ByteView plain, Bytes& out);
  // Appends a close_notify alert record.
  void sealCloseNotify(Bytes& out);

  // What one record held.
  enum class Kind { Data, CloseNotify, Control };
  struct Opened {
    Kind kind = Kind::Control;
    ByteView data;  // Data: the plaintext (in the record's buffer)
  };
  // Length of the record at the start of `in` (header included) when it is
  // all there; 0 when more bytes are needed; an error for a header that is
  // not a TLS 1.3 application_data record of a valid length.
  static Result<size_t> recordLength(ByteView in);
  // Decrypts the whole record `rec` (recordLength() bytes) in place. A
  // KeyUpdate with update_requested leaves wantKeyUpdate() true.
  Result<Opened> open(std::span<uint8_t> rec);

  // Our answer to a KeyUpdate that asked for one is owed: sealKeyUpdate().
  bool wantKeyUpdate() const { return owedKeyUpdate_; }
  // Appends our KeyUpdate (update_not_requested) under the current writing
  // key, then moves the writing key forward.
  void sealKeyUpdate(Bytes& out);

  // Fuzzing and tests: seals `inner` as a whole TLSInnerPlaintext (content,
  // type byte and padding as given, nothing added).
  void sealInnerForTest(ByteView inner, Bytes& out) { sealInner(inner, 0, out); }

  uint64_t readSequence() const { return read_.seq; }
  uint64_t writeSequence() const { return write_.seq; }

 private:
  struct Direction {
    EVP_CIPHER_CTX* ctx = nullptr;
    std::array<uint8_t, 48> secret{};
    std::array<uint8_t, 12> iv{};
    uint64_t seq = 0;
  };
  Tls13Records(const EVP_CIPHER* cipher, const EVP_MD* md, size_t keyLen);
  Result<void> install(Direction& d, bool encrypt, ByteView secret);
  Result<void> nextSecret(Direction& d, bool encrypt);
  void nonce(const Direction& d, uint8_t out[12]) const;
  void sealRecord(uint8_t innerType, ByteView plain, Bytes& out);
  // One record of `plain` followed by `typeByte` (none when 0).
  void sealInner(ByteView plain, uint8_t typeByte, Bytes& out);
  Result<Opened> onHandshake(ByteView msgs);

  const EVP_CIPHER* cipher_;
  const EVP_MD* md_;
  size_t keyLen_;
  size_t hashLen_;
  Direction read_, write_;
  bool owedKeyUpdate_ = false;
};

}  // namespace derpd::worker
