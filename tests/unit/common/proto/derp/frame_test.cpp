#include "common/proto/derp/frame.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <map>

#include "common/crypto/box.hpp"
#include "common/proto/derp/client_info.hpp"
#include "support/vectors.hpp"

namespace derpd::derp {
namespace {

using crypto::NodePrivate;
using test::hexBytes;
using test::loadVectorJson;

NodePublic pubHex(const std::string& hex) { return NodePublic::fromRaw(hexBytes(hex)); }

struct Got {
  uint8_t type;
  std::string payloadHex;
};

HeaderVerdict deliverAll(const FrameHeader&) { return HeaderVerdict::Deliver; }

// Feeds `stream` in chunks of `chunk` bytes (0 = whole) and collects frames.
std::vector<Got> feedAll(ByteView stream, size_t chunk) {
  FrameReader r(deliverAll);
  std::vector<Got> got;
  auto cb = [&](const Frame& f) {
    got.push_back({static_cast<uint8_t>(f.type), toHex(f.payload)});
    return true;
  };
  if (chunk == 0) chunk = stream.size();
  for (size_t off = 0; off < stream.size(); off += chunk) {
    auto res = r.feed(stream.subspan(off, std::min(chunk, stream.size() - off)), cb);
    EXPECT_TRUE(res.ok()) << res.error();
  }
  EXPECT_TRUE(r.idle());
  return got;
}

class Frames : public ::testing::Test {
 protected:
  void SetUp() override {
    j_ = loadVectorJson("frames.json");
    for (const auto& k : j_["keys"]) {
      privByName_[k["name"].get<std::string>()] = NodePrivate::fromRaw(hexBytes(k["private_hex"]));
      privByPub_[k["public_hex"].get<std::string>()] =
          NodePrivate::fromRaw(hexBytes(k["private_hex"]));
    }
    ASSERT_EQ(j_["frames"].size(), 40u);
  }
  nlohmann::json j_;
  std::map<std::string, NodePrivate> privByName_;
  std::map<std::string, NodePrivate> privByPub_;
};

// Go's netip.AddrPort.String() of ip16 (unmapped) and port.
std::string goAddrPort(const std::array<uint8_t, 16>& ip16, uint16_t port) {
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char buf[INET6_ADDRSTRLEN];
  if (std::equal(kMapped, kMapped + 12, ip16.begin())) {
    inet_ntop(AF_INET, ip16.data() + 12, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  inet_ntop(AF_INET6, ip16.data(), buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

std::array<uint8_t, 8> arr8(const std::string& hex) {
  Bytes b = hexBytes(hex);
  std::array<uint8_t, 8> a{};
  EXPECT_EQ(b.size(), 8u);
  std::copy_n(b.begin(), 8, a.begin());
  return a;
}

TEST_F(Frames, ReencodeEveryFrame) {
  int n = 0;
  for (const auto& fr : j_["frames"]) {
    const std::string name = fr["name"];
    SCOPED_TRACE(name);
    const auto& f = fr["fields"];
    const uint8_t type = fr["type"].get<uint8_t>();
    Bytes out;
    switch (static_cast<FrameType>(type)) {
      case FrameType::ClientInfo: {
        Bytes sealed = hexBytes(f["nonce_hex"]);
        Bytes box = hexBytes(f["box_hex"]);
        sealed.insert(sealed.end(), box.begin(), box.end());
        appendClientInfo(out, pubHex(f["client_public_hex"]), sealed);
        break;
      }
      case FrameType::ServerInfo: {
        Bytes sealed = hexBytes(f["nonce_hex"]);
        Bytes box = hexBytes(f["box_hex"]);
        sealed.insert(sealed.end(), box.begin(), box.end());
        appendServerInfo(out, sealed);
        break;
      }
      case FrameType::ServerKey:
        EXPECT_EQ(f["magic_hex"].get<std::string>(), toHex(ByteView(kMagic.data(), kMagic.size())));
        appendServerKey(out, pubHex(f["server_public_hex"]));
        break;
      case FrameType::SendPacket:
        appendSendPacket(out, pubHex(f["dst_public_hex"]),
                         hexBytes(f.value("packet_hex", std::string())));
        break;
      case FrameType::RecvPacket:
        appendRecvPacket(out, pubHex(f["src_public_hex"]),
                         hexBytes(f.value("packet_hex", std::string())));
        break;
      case FrameType::KeepAlive:
        appendKeepAlive(out);
        break;
      case FrameType::NotePreferred:
        appendNotePreferred(out, f["preferred"].get<bool>());
        break;
      case FrameType::PeerGone:
        if (f.contains("reason")) {
          appendPeerGone(out, pubHex(f["peer_public_hex"]),
                         static_cast<PeerGoneReason>(f["reason"].get<uint8_t>()));
        } else {  // legacy 32-byte form: no encoder, the header by hand
          appendHeader(out, FrameType::PeerGone, 32);
          Bytes k = hexBytes(f["peer_public_hex"]);
          out.insert(out.end(), k.begin(), k.end());
        }
        break;
      case FrameType::PeerPresent:
        if (f.contains("flags")) {
          Bytes ip = hexBytes(f["ip16_hex"]);
          std::array<uint8_t, 16> ip16{};
          std::copy_n(ip.begin(), 16, ip16.begin());
          appendPeerPresent(out, pubHex(f["key_hex"]), ip16, f["port"].get<uint16_t>(),
                            f["flags"].get<uint8_t>());
        } else {  // legacy synthetic forms
          const uint32_t len = fr["payload_len"];
          appendHeader(out, FrameType::PeerPresent, len);
          Bytes k = hexBytes(f["key"]);
          out.insert(out.end(), k.begin(), k.end());
          if (len == 50) {
            in_addr a{};
            ASSERT_EQ(inet_pton(AF_INET, f["ip"].get<std::string>().c_str(), &a), 1);
            const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            out.insert(out.end(), pre, pre + 12);
            const uint8_t* ab = reinterpret_cast<const uint8_t*>(&a);
            out.insert(out.end(), ab, ab + 4);
            const uint16_t port = f["port"];
            out.push_back(uint8_t(port >> 8));
            out.push_back(uint8_t(port));
          }
        }
        break;
      case FrameType::ForwardPacket:
        appendForwardPacket(out, pubHex(f["src_public_hex"]), pubHex(f["dst_public_hex"]),
                            hexBytes(f["packet_hex"]));
        break;
      case FrameType::WatchConns:
        appendWatchConns(out);
        break;
      case FrameType::ClosePeer:
        appendClosePeer(out, pubHex(f["target_public_hex"]));
        break;
      case FrameType::Ping:
        appendPing(out, arr8(f["data_hex"]));
        break;
      case FrameType::Pong:
        appendPong(out, arr8(f["data_hex"]));
        break;
      case FrameType::Health:
        appendHealth(out, f["problem"].get<std::string>());
        break;
      case FrameType::Restarting:
        appendRestarting(out, f["reconnect_in_ms"].get<uint32_t>(), f["try_for_ms"].get<uint32_t>());
        break;
      default:
        ADD_FAILURE() << "unexpected type " << int(type);
    }
    EXPECT_EQ(toHex(out), fr["hex"].get<std::string>());
    EXPECT_EQ(out.size(), fr["frame_len"].get<size_t>());
    EXPECT_EQ(frameTypeName(type), fr["type_name"].get<std::string>());
    ++n;
  }
  EXPECT_EQ(n, 40);
}

TEST_F(Frames, EncodersAppend) {
  Bytes out;
  appendKeepAlive(out);
  appendPing(out, {1, 2, 3, 4, 5, 6, 7, 8});
  appendNotePreferred(out, true);
  appendWatchConns(out);
  EXPECT_EQ(toHex(out), "0600000000" "12000000080102030405060708" "070000000101" "1000000000");
}

TEST_F(Frames, ReaderEveryFrameWholeAndBytewise) {
  for (const auto& fr : j_["frames"]) {
    SCOPED_TRACE(fr["name"].get<std::string>());
    const std::string hex = fr["hex"];
    const Bytes bytes = hexBytes(hex);
    for (size_t chunk : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(7)}) {
      auto got = feedAll(bytes, chunk);
      ASSERT_EQ(got.size(), 1u) << "chunk " << chunk;
      EXPECT_EQ(got[0].type, fr["type"].get<uint8_t>());
      EXPECT_EQ(got[0].payloadHex, hex.substr(10));
      EXPECT_EQ(got[0].payloadHex.size() / 2, fr["payload_len"].get<size_t>());
    }
  }
}

TEST_F(Frames, ReaderAllFramesAsOneStream) {
  Bytes stream;
  std::vector<Got> want;
  for (const auto& fr : j_["frames"]) {
    Bytes b = hexBytes(fr["hex"]);
    stream.insert(stream.end(), b.begin(), b.end());
    want.push_back({fr["type"].get<uint8_t>(), fr["hex"].get<std::string>().substr(10)});
  }
  for (size_t chunk : {size_t(0), size_t(1), size_t(4), size_t(5), size_t(6), size_t(13),
                       size_t(64), size_t(1000)}) {
    auto got = feedAll(stream, chunk);
    ASSERT_EQ(got.size(), want.size()) << chunk;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].type, want[i].type) << chunk << " #" << i;
      EXPECT_EQ(got[i].payloadHex, want[i].payloadHex) << chunk << " #" << i;
    }
  }
}

TEST_F(Frames, ClientInfoFramesOpenAndParse) {
  const NodePrivate& server = privByName_.at("server");
  int n = 0;
  for (const auto& fr : j_["frames"]) {
    if (fr["type"] != 2) continue;
    SCOPED_TRACE(fr["name"].get<std::string>());
    const auto& f = fr["fields"];
    Bytes frame = hexBytes(fr["hex"]);
    FrameReader r([](const FrameHeader& h) {
      return h.type == uint8_t(FrameType::ClientInfo) && h.len >= kMinClientInfoLen &&
                     h.len <= kMaxClientInfoLen
                 ? HeaderVerdict::Deliver
                 : HeaderVerdict::Reject;
    });
    bool seen = false;
    auto res = r.feed(frame, [&](const Frame& fm) {
      seen = true;
      NodePublic clientKey = NodePublic::fromRaw(fm.payload.first(kKeyLen));
      EXPECT_EQ(clientKey.toHex(), f["client_public_hex"].get<std::string>());
      auto plain = crypto::open(server, clientKey, fm.payload.subspan(kKeyLen));
      EXPECT_TRUE(plain.ok());
      if (!plain.ok()) return false;
      const std::string json = std::string(asChars(*plain));
      EXPECT_EQ(json, f["plaintext_json"].get<std::string>());
      auto ci = parseClientInfo(json);
      EXPECT_TRUE(ci.ok());
      if (!ci.ok()) return false;
      auto want = nlohmann::json::parse(json);
      EXPECT_EQ(ci->version, want.value("version", 0));
      EXPECT_EQ(ci->canAckPings, want.value("CanAckPings", false));
      EXPECT_EQ(ci->isProber, want.value("IsProber", false));
      EXPECT_EQ(ci->meshKey, want.value("meshKey", std::string()));
      EXPECT_EQ(encodeClientInfo(*ci), json);
      // Sealing the same JSON with the same nonce from the client key gives
      // the same bytes.
      const NodePrivate& client = privByPub_.at(clientKey.toHex());
      Bytes sealed = crypto::sealWithNonce(client, server.publicKey(), asBytes(json),
                                           hexBytes(f["nonce_hex"]));
      EXPECT_EQ(toHex(sealed), toHex(fm.payload.subspan(kKeyLen)));
      return true;
    });
    ASSERT_TRUE(res.ok()) << res.error();
    EXPECT_TRUE(seen);
    ++n;
  }
  EXPECT_EQ(n, 6);
}

TEST_F(Frames, ServerInfoOpensWithAlice) {
  for (const auto& fr : j_["frames"]) {
    if (fr["type"] != 3) continue;
    const auto& f = fr["fields"];
    Bytes frame = hexBytes(fr["hex"]);
    const NodePrivate& alice = privByName_.at("alice");
    const NodePrivate& server = privByName_.at("server");
    auto plain = crypto::open(alice, server.publicKey(), ByteView(frame).subspan(5));
    ASSERT_TRUE(plain.ok()) << plain.error();
    EXPECT_EQ(asChars(*plain), f["plaintext_json"].get<std::string>());
    auto si = parseServerInfo(asChars(*plain));
    ASSERT_TRUE(si.ok());
    EXPECT_EQ(si->version, 2);
    EXPECT_EQ(si->tokenBucketBytesPerSecond,
              fr["go_client_parse"]["TokenBucketBytesPerSecond"].get<int64_t>());
    EXPECT_EQ(si->tokenBucketBytesBurst,
              fr["go_client_parse"]["TokenBucketBytesBurst"].get<int64_t>());
    // The server side: encode + seal with the fixed nonce = the exact frame.
    ServerInfo mine;
    mine.version = kProtocolVersion;
    Bytes sealed = crypto::sealWithNonce(server, alice.publicKey(),
                                         asBytes(encodeServerInfo(mine)), hexBytes(f["nonce_hex"]));
    Bytes out;
    appendServerInfo(out, sealed);
    EXPECT_EQ(toHex(out), fr["hex"].get<std::string>());
    return;
  }
  FAIL() << "no ServerInfo frame";
}

TEST_F(Frames, ServerToClientDecoders) {
  int peerGone = 0, peerPresent = 0, serverKey = 0;
  for (const auto& fr : j_["frames"]) {
    if (!fr.contains("go_client_parse")) continue;
    SCOPED_TRACE(fr["name"].get<std::string>());
    const auto& g = fr["go_client_parse"];
    const Bytes frame = hexBytes(fr["hex"]);
    const ByteView payload = ByteView(frame).subspan(5);
    switch (static_cast<FrameType>(fr["type"].get<uint8_t>())) {
      case FrameType::PeerGone: {
        auto r = parsePeerGone(payload);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->key.toHex(), g["Peer"].get<std::string>());
        EXPECT_EQ(int(r->reason), g["Reason"].get<int>());
        ++peerGone;
        break;
      }
      case FrameType::PeerPresent: {
        auto r = parsePeerPresent(payload);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->key.toHex(), g["Key"].get<std::string>());
        EXPECT_EQ(r->hasAddr, g["IPPort_valid"].get<bool>());
        if (r->hasAddr) {
          EXPECT_EQ(goAddrPort(r->ip16, r->port), g["IPPort"].get<std::string>());
        }
        EXPECT_EQ(int(r->flags), g["Flags"].get<int>());
        if (fr["fields"].contains("ip16_hex")) {
          EXPECT_EQ(toHex(ByteView(r->ip16.data(), 16)), fr["fields"]["ip16_hex"].get<std::string>());
          EXPECT_EQ(r->port, fr["fields"]["port"].get<uint16_t>());
        }
        ++peerPresent;
        break;
      }
      case FrameType::ServerKey: {
        auto r = parseServerKey(payload);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->toHex(), g["ServerPublicKey"].get<std::string>());
        ++serverKey;
        break;
      }
      default:
        break;
    }
  }
  EXPECT_EQ(peerGone, 5);
  EXPECT_EQ(peerPresent, 9);
  EXPECT_EQ(serverKey, 1);
}

TEST(FrameDecoders, Limits) {
  EXPECT_FALSE(parsePeerGone(Bytes(31)).ok());
  EXPECT_FALSE(parsePeerPresent(Bytes(31)).ok());
  EXPECT_FALSE(parsePeerPresent(ByteView()).ok());
  // 33..49 bytes: key only.
  auto pp = parsePeerPresent(Bytes(49, 1));
  ASSERT_TRUE(pp.ok());
  EXPECT_FALSE(pp->hasAddr);
  EXPECT_EQ(pp->flags, 0);

  Bytes sk(kMagic.begin(), kMagic.end());
  Bytes key(32, 0x42);
  sk.insert(sk.end(), key.begin(), key.end());
  ASSERT_TRUE(parseServerKey(sk).ok());
  EXPECT_FALSE(parseServerKey(ByteView(sk).first(39)).ok());
  Bytes big = sk;
  big.resize(1024, 0xee);  // extra bytes are ignored, up to 1 KiB
  auto r = parseServerKey(big);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->toHex(), toHex(key));
  big.push_back(0);
  EXPECT_FALSE(parseServerKey(big).ok());
  Bytes badMagic = sk;
  badMagic[0] ^= 1;
  EXPECT_FALSE(parseServerKey(badMagic).ok());
  Bytes zero(kMagic.begin(), kMagic.end());
  zero.resize(40, 0);
  EXPECT_FALSE(parseServerKey(zero).ok());
}

TEST(FrameDecoders, LooksLikeDisco) {
  Bytes pkt = hexBytes(
      "5453f09f92aca0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf10111213141516"
      "1718191a1b1c1d1e1f2021222324252627eeeeeeeeeeeeeeee");
  ASSERT_EQ(pkt.size(), 70u);
  EXPECT_TRUE(looksLikeDisco(pkt));
  EXPECT_TRUE(looksLikeDisco(ByteView(pkt).first(62)));
  EXPECT_FALSE(looksLikeDisco(ByteView(pkt).first(61)));
  EXPECT_FALSE(looksLikeDisco(ByteView()));
  pkt[5] ^= 1;
  EXPECT_FALSE(looksLikeDisco(pkt));
}

TEST(FrameDecoders, TypeNames) {
  EXPECT_EQ(frameTypeName(0x01), "ServerKey");
  EXPECT_EQ(frameTypeName(0x0a), "ForwardPacket");
  EXPECT_EQ(frameTypeName(0x15), "Restarting");
  EXPECT_EQ(frameTypeName(0x00), "Unknown(0x00)");
  EXPECT_EQ(frameTypeName(0x0b), "Unknown(0x0b)");
  EXPECT_EQ(frameTypeName(0xff), "Unknown(0xff)");
}

// ---- FrameReader edge cases ----

Bytes frameBytes(uint8_t type, uint32_t len, ByteView payload = {}) {
  Bytes b(kFrameHeaderLen + payload.size());
  b[0] = type;
  putU32BE(b.data() + 1, len);
  std::copy(payload.begin(), payload.end(), b.begin() + kFrameHeaderLen);
  return b;
}

TEST(FrameReader, SkipsHugeUnknownFrameThenDeliversInSmallPieces) {
  // An unknown frame claiming 4 GiB - 1 is skipped without buffering; the
  // bytes that follow are its payload, then a good Ping.
  FrameReader r([](const FrameHeader& h) {
    return h.type == 0x12 ? HeaderVerdict::Deliver : HeaderVerdict::Skip;
  });
  std::vector<std::string> got;
  auto cb = [&](const Frame& f) {
    got.push_back(frameTypeName(uint8_t(f.type)) + ":" + toHex(f.payload));
    return true;
  };
  Bytes hdr = frameBytes(0x7f, 0xffffffffu);
  ASSERT_TRUE(r.feed(hdr, cb).ok());
  EXPECT_EQ(r.skippedFrames(), 1u);
  EXPECT_FALSE(r.idle());
  // Discard 0xffffffff bytes, fed in 1 MiB pieces (never buffered).
  Bytes junk(1 << 20, 0x12);
  uint64_t left = 0xffffffffull;
  while (left > 0) {
    const size_t n = size_t(std::min<uint64_t>(left, junk.size()));
    ASSERT_TRUE(r.feed(ByteView(junk).first(n), cb).ok());
    left -= n;
  }
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(r.idle());
  Bytes ping;
  appendPing(ping, {1, 2, 3, 4, 5, 6, 7, 8});
  for (size_t i = 0; i < ping.size(); i += 2) {
    ASSERT_TRUE(r.feed(ByteView(ping).subspan(i, std::min<size_t>(2, ping.size() - i)), cb).ok());
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "Ping:0102030405060708");
  EXPECT_TRUE(r.idle());
}

TEST(FrameReader, SkipInsideOneBuffer) {
  FrameReader r([](const FrameHeader& h) {
    return h.type == 0x06 ? HeaderVerdict::Deliver : HeaderVerdict::Skip;
  });
  Bytes s = frameBytes(0x55, 3, Bytes{1, 2, 3});
  Bytes e = frameBytes(0x56, 0);
  s.insert(s.end(), e.begin(), e.end());
  appendKeepAlive(s);
  int n = 0;
  ASSERT_TRUE(r.feed(s, [&](const Frame& f) {
                 EXPECT_EQ(f.type, FrameType::KeepAlive);
                 EXPECT_TRUE(f.payload.empty());
                 ++n;
                 return true;
               }).ok());
  EXPECT_EQ(n, 1);
  EXPECT_EQ(r.skippedFrames(), 2u);
  EXPECT_TRUE(r.idle());
}

TEST(FrameReader, RejectStopsAndStaysFailed) {
  int classified = 0;
  FrameReader r([&](const FrameHeader& h) {
    ++classified;
    return h.type == 0x07 ? HeaderVerdict::Reject : HeaderVerdict::Deliver;
  });
  Bytes s;
  appendKeepAlive(s);
  appendNotePreferred(s, true);
  appendKeepAlive(s);
  int delivered = 0;
  auto cb = [&](const Frame&) {
    ++delivered;
    return true;
  };
  auto res = r.feed(s, cb);
  EXPECT_FALSE(res.ok());
  EXPECT_EQ(delivered, 1);
  EXPECT_EQ(classified, 2);
  EXPECT_EQ(r.consumed(), 5u + 5u);
  Bytes ka;
  appendKeepAlive(ka);
  EXPECT_FALSE(r.feed(ka, cb).ok());
  EXPECT_FALSE(r.feed(ByteView(), cb).ok());
  EXPECT_EQ(delivered, 1);
  EXPECT_EQ(classified, 2);
}

TEST(FrameReader, DeliverAboveMaxPayloadFails) {
  FrameReader r(deliverAll, 100);
  int delivered = 0;
  auto cb = [&](const Frame&) {
    ++delivered;
    return true;
  };
  ASSERT_TRUE(r.feed(frameBytes(0x04, 100, Bytes(100, 1)), cb).ok());
  EXPECT_EQ(delivered, 1);
  // A header split in two claiming 101 bytes fails as soon as it is complete.
  Bytes h = frameBytes(0x04, 101);
  ASSERT_TRUE(r.feed(ByteView(h).first(3), cb).ok());
  EXPECT_FALSE(r.feed(ByteView(h).subspan(3), cb).ok());
  EXPECT_FALSE(r.feed(frameBytes(0x06, 0), cb).ok());
  EXPECT_EQ(delivered, 1);

  FrameReader big(deliverAll);  // default: kReaderMaxPayload
  EXPECT_FALSE(big.feed(frameBytes(0x02, kReaderMaxPayload + 1), cb).ok());
  FrameReader huge(deliverAll);
  EXPECT_FALSE(huge.feed(frameBytes(0x02, 0xffffffffu), cb).ok());
}

TEST(FrameReader, MaxPayloadDeliveredWhenSplit) {
  FrameReader r(deliverAll);
  Bytes payload(kReaderMaxPayload);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 7);
  Bytes s = frameBytes(0x02, kReaderMaxPayload, payload);
  appendKeepAlive(s);
  std::vector<Bytes> got;
  auto cb = [&](const Frame& f) {
    got.emplace_back(f.payload.begin(), f.payload.end());
    return true;
  };
  for (size_t off = 0; off < s.size(); off += 4093) {
    ASSERT_TRUE(r.feed(ByteView(s).subspan(off, std::min<size_t>(4093, s.size() - off)), cb).ok());
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], payload);
  EXPECT_TRUE(got[1].empty());
}

TEST(FrameReader, WholeFramesAreZeroCopy) {
  Bytes s;
  NodePublic k = NodePublic::fromRaw(Bytes(32, 9));
  appendSendPacket(s, k, Bytes(1200, 0xab));
  appendSendPacket(s, k, Bytes(10, 0xcd));
  appendPing(s, {1, 2, 3, 4, 5, 6, 7, 8});
  FrameReader r(deliverAll);
  int n = 0;
  ASSERT_TRUE(r.feed(s, [&](const Frame& f) {
                 EXPECT_GE(f.payload.data(), s.data());
                 EXPECT_LE(f.payload.data() + f.payload.size(), s.data() + s.size());
                 ++n;
                 return true;
               }).ok());
  EXPECT_EQ(n, 3);
  // A split frame is buffered; the next whole one is zero-copy again.
  Bytes a, b;
  appendSendPacket(a, k, Bytes(100, 1));
  appendPing(b, {8, 7, 6, 5, 4, 3, 2, 1});
  Bytes tail(a.begin() + 50, a.end());
  tail.insert(tail.end(), b.begin(), b.end());
  n = 0;
  ASSERT_TRUE(r.feed(ByteView(a).first(50), [&](const Frame&) { return ++n, true; }).ok());
  EXPECT_EQ(n, 0);
  ASSERT_TRUE(r.feed(tail, [&](const Frame& f) {
                 ++n;
                 const bool inTail = f.payload.data() >= tail.data() &&
                                     f.payload.data() + f.payload.size() <= tail.data() + tail.size();
                 EXPECT_EQ(inTail, f.type == FrameType::Ping);
                 return true;
               }).ok());
  EXPECT_EQ(n, 2);
}

TEST(FrameReader, CallbackStopAndResume) {
  Bytes s;
  appendKeepAlive(s);
  appendNotePreferred(s, true);
  appendPing(s, {1, 2, 3, 4, 5, 6, 7, 8});
  FrameReader r(deliverAll);
  std::vector<FrameType> got;
  auto stopAtPreferred = [&](const Frame& f) {
    got.push_back(f.type);
    return f.type != FrameType::NotePreferred;
  };
  ASSERT_TRUE(r.feed(s, stopAtPreferred).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(r.consumed(), 11u);
  EXPECT_TRUE(r.idle());
  ASSERT_TRUE(r.feed(ByteView(s).subspan(r.consumed()), stopAtPreferred).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2], FrameType::Ping);
  EXPECT_EQ(r.consumed(), 13u);

  // Stopping on a buffered (split) frame.
  FrameReader r2(deliverAll);
  got.clear();
  ASSERT_TRUE(r2.feed(ByteView(s).first(8), stopAtPreferred).ok());
  EXPECT_EQ(got.size(), 1u);
  ASSERT_TRUE(r2.feed(ByteView(s).subspan(8), stopAtPreferred).ok());
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(r2.consumed(), 3u);  // 11 - 8
}

TEST(FrameReader, ClassifierSeesTypeAndLength) {
  std::vector<std::pair<uint8_t, uint32_t>> seen;
  FrameReader r([&](const FrameHeader& h) {
    seen.emplace_back(h.type, h.len);
    return HeaderVerdict::Skip;
  });
  Bytes s = frameBytes(0xfe, 0x01020304);
  ASSERT_TRUE(r.feed(s, [](const Frame&) { return true; }).ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, 0xfe);
  EXPECT_EQ(seen[0].second, 0x01020304u);
}

}  // namespace
}  // namespace derpd::derp
