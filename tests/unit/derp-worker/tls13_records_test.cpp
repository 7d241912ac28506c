// Tls13Records against OpenSSL's own TLS 1.3 client: a handshake over memory
// BIOs on derp-worker's real server context, then records both ways through
// our layer on the server side and OpenSSL on the client side, for each
// TLS 1.3 cipher suite; KeyUpdate (requested or not) from the client;
// close_notify both ways; and the records our layer must refuse.
#include "tls13_records.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>

#include <ctime>
#include <memory>
#include <string>

#include "common/tls/certs.hpp"
#include "tls.hpp"

namespace derpd::worker {
namespace {

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

Bytes drain(BIO* b) {
  Bytes out(size_t(BIO_pending(b)));
  if (!out.empty()) BIO_read(b, out.data(), int(out.size()));
  return out;
}
void feed(BIO* b, ByteView in) {
  if (!in.empty()) BIO_write(b, in.data(), int(in.size()));
}

// One OpenSSL client, one derp-worker server context, joined by memory BIOs.
class Tls13RecordsTest : public ::testing::Test {
 protected:
  void handshake(const char* suite, int maxVersion = TLS1_3_VERSION) {
    auto bundle = tls::makeSelfSigned("127.0.0.1", std::time(nullptr));
    ASSERT_TRUE(bundle.ok()) << bundle.error();
    auto ctx = TlsContext::fromPem(bundle->chainPem, bundle->keyPem, crypto::NodePrivate::generate().publicKey());
    ASSERT_TRUE(ctx.ok()) << ctx.error();
    serverCtx_ = *ctx;
    clientCtx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_max_proto_version(clientCtx_.get(), maxVersion);
    if (suite) {
      ASSERT_EQ(SSL_CTX_set_ciphersuites(clientCtx_.get(), suite), 1);
    }
    server_.reset(SSL_new(serverCtx_->get()));
    client_.reset(SSL_new(clientCtx_.get()));
    attachTls13Secrets(server_.get(), &secrets_);
    sIn_ = BIO_new(BIO_s_mem()), sOut_ = BIO_new(BIO_s_mem());
    cIn_ = BIO_new(BIO_s_mem()), cOut_ = BIO_new(BIO_s_mem());
    SSL_set_bio(server_.get(), sIn_, sOut_);
    SSL_set_bio(client_.get(), cIn_, cOut_);
    SSL_set_accept_state(server_.get());
    SSL_set_connect_state(client_.get());
    bool sDone = false, cDone = false;
    for (int i = 0; i < 20 && !(sDone && cDone); ++i) {
      if (!cDone) cDone = SSL_do_handshake(client_.get()) == 1;
      feed(sIn_, drain(cOut_));
      if (!sDone) sDone = SSL_do_handshake(server_.get()) == 1;
      feed(cIn_, drain(sOut_));
    }
    ASSERT_TRUE(sDone && cDone) << "handshake did not finish";
    // The point derp-worker switches at: nothing unread, nothing unsent.
    EXPECT_EQ(BIO_pending(sIn_), 0);
    EXPECT_EQ(BIO_pending(sOut_), 0) << "no session tickets are sent";
    EXPECT_FALSE(SSL_has_pending(server_.get()));
  }

  void switchToOwnRecords() {
    auto r = Tls13Records::fromServerHandshake(server_.get(), secrets_);
    ASSERT_TRUE(r.ok()) << r.error();
    rec_ = std::move(*r);
  }

  // What the client sends, opened by our layer: every record's result.
  std::vector<Result<Tls13Records::Opened>> openAll(Bytes& wire, std::string* data) {
    std::vector<Result<Tls13Records::Opened>> got;
    size_t off = 0;
    while (off < wire.size()) {
      auto len = Tls13Records::recordLength(ByteView(wire).subspan(off));
      if (!len.ok()) {
        got.emplace_back(makeError(len.error()));
        break;
      }
      if (*len == 0) break;
      auto o = rec_->open(std::span<uint8_t>(wire.data() + off, *len));
      if (o.ok() && o->kind == Tls13Records::Kind::Data) data->append(asChars(o->data));
      const bool stop = !o.ok();
      got.push_back(std::move(o));
      off += *len;
      if (stop) break;
    }
    return got;
  }

  std::string clientSends(const std::string& s) {
    EXPECT_EQ(SSL_write(client_.get(), s.data(), int(s.size())), int(s.size()));
    Bytes wire = drain(cOut_);
    std::string data;
    for (auto& r : openAll(wire, &data)) EXPECT_TRUE(r.ok()) << r.error();
    return data;
  }

  std::string clientReceives(const Bytes& wire) {
    feed(cIn_, wire);
    std::string got;
    char buf[16384];
    for (;;) {
      int n = SSL_read(client_.get(), buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, size_t(n));
    }
    return got;
  }

  void TearDown() override { ERR_clear_error(); }

  std::shared_ptr<TlsContext> serverCtx_;
  std::unique_ptr<SSL_CTX, CtxFree> clientCtx_;
  SslPtr server_, client_;
  BIO *sIn_ = nullptr, *sOut_ = nullptr, *cIn_ = nullptr, *cOut_ = nullptr;
  Tls13Secrets secrets_;
  std::unique_ptr<Tls13Records> rec_;
};

class EverySuite : public Tls13RecordsTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(EverySuite, RecordsBothWaysWithOpenSslClient) {
  handshake(GetParam());
  ASSERT_NO_FATAL_FAILURE(switchToOwnRecords());
  server_.reset();  // derp-worker frees the SSL object here
  EXPECT_EQ(clientSends("GET /derp HTTP/1.1\r\n\r\n"), "GET /derp HTTP/1.1\r\n\r\n");
  Bytes out;
  rec_->seal(asBytes(std::string_view("HTTP/1.1 101 Switching Protocols\r\n\r\n")), out);
  EXPECT_EQ(clientReceives(out), "HTTP/1.1 101 Switching Protocols\r\n\r\n");
  // Larger than one record each way.
  std::string big(100000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 26);
  EXPECT_EQ(clientSends(big), big);
  out.clear();
  rec_->seal(asBytes(big), out);
  EXPECT_EQ(out.size(), big.size() + 7 * (5 + 1 + 16)) << "7 records of at most 2^14 bytes";
  EXPECT_EQ(clientReceives(out), big);
  EXPECT_EQ(rec_->writeSequence(), 8u);
}

INSTANTIATE_TEST_SUITE_P(Tls13, EverySuite,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"),
                         [](const auto& info) { return std::string(info.param).substr(4, 11); });

TEST_F(Tls13RecordsTest, ClientKeyUpdateRequestedIsAnswered) {
  handshake(nullptr);
  ASSERT_NO_FATAL_FAILURE(switchToOwnRecords());
  EXPECT_EQ(clientSends("one"), "one");
  ASSERT_EQ(SSL_key_update(client_.get(), SSL_KEY_UPDATE_REQUESTED), 1);
  // The KeyUpdate goes out with the next write, ahead of the data.
  EXPECT_EQ(clientSends("two"), "two");
  EXPECT_TRUE(rec_->wantKeyUpdate());
  Bytes out;
  rec_->sealKeyUpdate(out);
  EXPECT_FALSE(rec_->wantKeyUpdate());
  rec_->seal(asBytes(std::string_view("three")), out);
  EXPECT_EQ(clientReceives(out), "three");
  // Both directions on their new keys.
  EXPECT_EQ(clientSends("four"), "four");
  out.clear();
  rec_->seal(asBytes(std::string_view("five")), out);
  EXPECT_EQ(clientReceives(out), "five");
}

TEST_F(Tls13RecordsTest, ClientKeyUpdateNotRequested) {
  handshake(nullptr);
  ASSERT_NO_FATAL_FAILURE(switchToOwnRecords());
  ASSERT_EQ(SSL_key_update(client_.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
  EXPECT_EQ(clientSends("after"), "after");
  EXPECT_FALSE(rec_->wantKeyUpdate());
  Bytes out;
  rec_->seal(asBytes(std::string_view("same key")), out);
  EXPECT_EQ(clientReceives(out), "same key");
}

TEST_F(Tls13RecordsTest, CloseNotifyBothWays) {
  handshake(nullptr);
  ASSERT_NO_FATAL_FAILURE(switchToOwnRecords());
  Bytes out;
  rec_->sealCloseNotify(out);
  feed(cIn_, out);
  char buf[16];
  EXPECT_EQ(SSL_read(client_.get(), buf, sizeof buf), 0);
  EXPECT_EQ(SSL_get_error(client_.get(), 0), SSL_ERROR_ZERO_RETURN);
  SSL_shutdown(client_.get());
  Bytes wire = drain(cOut_);
  std::string data;
  auto got = openAll(wire, &data);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].ok()) << got[0].error();
  EXPECT_EQ(got[0]->kind, Tls13Records::Kind::CloseNotify);
}

TEST_F(Tls13RecordsTest, TamperedReplayedAndMalformedRecordsAreRefused) {
  handshake(nullptr);
  ASSERT_NO_FATAL_FAILURE(switchToOwnRecords());
  ASSERT_EQ(SSL_write(client_.get(), "abc", 3), 3);
  const Bytes good = drain(cOut_);
  // One flipped bit anywhere (header = AAD, body, tag) fails.
  for (size_t at : {size_t(4), size_t(6), good.size() - 1}) {
    Bytes bad = good;
    bad[at] ^= 0x01;
    auto len = Tls13Records::recordLength(bad);
    if (!len.ok() || *len != bad.size()) continue;  // the length byte itself
    EXPECT_FALSE(rec_->open(std::span<uint8_t>(bad.data(), bad.size())).ok()) << "bit at " << at;
  }
  // The genuine record still opens (a failed open does not advance)...
  Bytes copy = good;
  auto ok = rec_->open(std::span<uint8_t>(copy.data(), copy.size()));
  ASSERT_TRUE(ok.ok()) << ok.error();
  // ...once: replayed, it is under the wrong sequence number.
  copy = good;
  EXPECT_FALSE(rec_->open(std::span<uint8_t>(copy.data(), copy.size())).ok());

  const uint8_t handshakeType[5] = {22, 3, 3, 0, 40};
  EXPECT_FALSE(Tls13Records::recordLength(ByteView(handshakeType, 5)).ok());
  const uint8_t ccs[6] = {20, 3, 3, 0, 1, 1};
  EXPECT_FALSE(Tls13Records::recordLength(ByteView(ccs, 6)).ok());
  const uint8_t oversized[5] = {23, 3, 3, 0x41, 0x01};  // 16641 > 2^14 + 256
  EXPECT_FALSE(Tls13Records::recordLength(ByteView(oversized, 5)).ok());
  const uint8_t tiny[5] = {23, 3, 3, 0, 16};
  EXPECT_FALSE(Tls13Records::recordLength(ByteView(tiny, 5)).ok());
  const uint8_t partial[7] = {23, 3, 3, 0, 40, 1, 2};
  auto need = Tls13Records::recordLength(ByteView(partial, 7));
  ASSERT_TRUE(need.ok());
  EXPECT_EQ(*need, 0u);
}

// Our writer and our reader on the same secret: the content types and
// handshake messages a client must not send after the handshake.
TEST(Tls13RecordsPair, RefusesWhatAServerMustNotAccept) {
  Bytes s1(32, 0x11), s2(32, 0x22);
  auto reader = Tls13Records::fromSecrets(0x1301, s1, s2);
  auto writer = Tls13Records::fromSecrets(0x1301, s2, s1);
  ASSERT_TRUE(reader.ok() && writer.ok());
  Bytes out;
  (*writer)->seal(asBytes(std::string_view("ok")), out);
  auto o = (*reader)->open(std::span<uint8_t>(out.data(), out.size()));
  ASSERT_TRUE(o.ok()) << o.error();
  EXPECT_EQ(std::string(asChars(o->data)), "ok");
  EXPECT_FALSE(Tls13Records::fromSecrets(0x1301, Bytes(48, 1), s1).ok()) << "SHA-256 suite, 48-byte secret";
  EXPECT_FALSE(Tls13Records::fromSecrets(0xc02f, s1, s2).ok()) << "a TLS 1.2 suite";
}

TEST_F(Tls13RecordsTest, Tls12KeepsOpenSsl) {
  handshake(nullptr, TLS1_2_VERSION);
  auto r = Tls13Records::fromServerHandshake(server_.get(), secrets_);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace derpd::worker
