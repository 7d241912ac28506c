#include "common/crypto/box.hpp"

#include <gtest/gtest.h>

#include <map>

#include "support/vectors.hpp"

namespace derpd::crypto {
namespace {

using test::hexBytes;
using test::loadVectorJson;

// public hex -> private key, from the frames.json key set.
std::map<std::string, NodePrivate> keyTable() {
  std::map<std::string, NodePrivate> m;
  auto j = loadVectorJson("frames.json");
  for (const auto& k : j["keys"]) {
    m[k["public_hex"].get<std::string>()] = NodePrivate::fromRaw(hexBytes(k["private_hex"]));
  }
  return m;
}

TEST(Box, VectorsSealAndOpen) {
  auto j = loadVectorJson("nacl-box.json");
  ASSERT_EQ(j["vectors"].size(), 65u);
  for (const auto& v : j["vectors"]) {
    SCOPED_TRACE("vector " + std::to_string(v["id"].get<int>()));
    NodePrivate sender = NodePrivate::fromRaw(hexBytes(v["sender_private_hex"]));
    NodePrivate receiver = NodePrivate::fromRaw(hexBytes(v["receiver_private_hex"]));
    ASSERT_EQ(sender.publicKey().toHex(), v["sender_public_hex"].get<std::string>());
    ASSERT_EQ(receiver.publicKey().toHex(), v["receiver_public_hex"].get<std::string>());
    const Bytes msg = hexBytes(v["message_hex"]);
    const Bytes nonce = hexBytes(v["nonce_hex"]);
    const Bytes want = hexBytes(v["derp_sealed_hex"]);
    ASSERT_EQ(want.size(), v["derp_sealed_len"].get<size_t>());

    Bytes sealed = sealWithNonce(sender, receiver.publicKey(), msg, nonce);
    EXPECT_EQ(toHex(sealed), v["derp_sealed_hex"].get<std::string>());
    EXPECT_EQ(toHex(ByteView(sealed).subspan(kNonceLen)), v["box_hex"].get<std::string>());

    auto opened = open(receiver, sender.publicKey(), want);
    ASSERT_TRUE(opened.ok()) << opened.error();
    EXPECT_EQ(*opened, msg);
    // The box is symmetric: the sender can open it too with the roles swapped.
    auto back = open(sender, receiver.publicKey(), want);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, msg);
  }
}

TEST(Box, OpenNegativeCases) {
  auto keys = keyTable();
  auto j = loadVectorJson("nacl-box.json");
  int failing = 0;
  for (const auto& c : j["open_negative_cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto me = keys.find(c["opened_by"].get<std::string>());
    ASSERT_NE(me, keys.end());
    NodePublic from = NodePublic::fromRaw(hexBytes(c["claimed_sender"]));
    auto r = open(me->second, from, hexBytes(c["sealed_hex"]));
    const bool ok = c["go_OpenFrom_ok"];
    ASSERT_EQ(r.ok(), ok);
    if (ok) {
      EXPECT_EQ(toHex(*r), c["go_OpenFrom_plaintext_hex"].get<std::string>());
    } else {
      ++failing;
    }
  }
  EXPECT_GE(failing, 9);
}

TEST(Box, RandomNonceRoundTrip) {
  NodePrivate a = NodePrivate::generate(), b = NodePrivate::generate();
  const std::string msg = R"({"version":2,"CanAckPings":true})";
  Bytes s1 = seal(a, b.publicKey(), asBytes(msg));
  Bytes s2 = seal(a, b.publicKey(), asBytes(msg));
  ASSERT_EQ(s1.size(), kNonceLen + kBoxOverhead + msg.size());
  EXPECT_NE(s1, s2);  // fresh nonces
  auto r = open(b, a.publicKey(), s1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(asChars(*r), msg);
  // Empty message.
  Bytes e = seal(a, b.publicKey(), ByteView());
  ASSERT_EQ(e.size(), kNonceLen + kBoxOverhead);
  auto re = open(b, a.publicKey(), e);
  ASSERT_TRUE(re.ok());
  EXPECT_TRUE(re->empty());
}

TEST(Box, RejectsZeroAndLowOrderKeys) {
  NodePrivate a = NodePrivate::generate(), b = NodePrivate::generate();
  Bytes sealed = seal(a, b.publicKey(), asBytes("x"));
  ASSERT_FALSE(sealed.empty());
  EXPECT_FALSE(open(b, NodePublic(), sealed).ok());      // zero client key
  EXPECT_FALSE(open(NodePrivate(), a.publicKey(), sealed).ok());
  EXPECT_TRUE(seal(a, NodePublic(), asBytes("x")).empty());
  EXPECT_TRUE(seal(NodePrivate(), b.publicKey(), asBytes("x")).empty());
  // A low-order point (order 8 on Curve25519) gives an all-zero shared secret.
  NodePublic lowOrder = NodePublic::fromRaw(
      hexBytes("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"));
  EXPECT_TRUE(seal(a, lowOrder, asBytes("x")).empty());
  EXPECT_FALSE(open(b, lowOrder, sealed).ok());
  // Wrong nonce size.
  EXPECT_TRUE(sealWithNonce(a, b.publicKey(), asBytes("x"), Bytes(23)).empty());
}

TEST(Box, ShortInputs) {
  NodePrivate a = NodePrivate::generate(), b = NodePrivate::generate();
  Bytes sealed = seal(a, b.publicKey(), ByteView());
  for (size_t n = 0; n < sealed.size(); ++n) {
    EXPECT_FALSE(open(b, a.publicKey(), ByteView(sealed).first(n)).ok()) << n;
  }
  EXPECT_TRUE(open(b, a.publicKey(), sealed).ok());
}

}  // namespace
}  // namespace derpd::crypto
