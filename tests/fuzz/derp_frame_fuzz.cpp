// libFuzzer target: the DERP FrameReader and the server->client decoders.
//
// Input layout: byte 0 = config (classifier seed, max payload, chunking),
// byte 1 = chunk-size seed, the rest = the DERP byte stream. The stream is
// fed in chunks, stopping in the callback now and then and resuming from
// consumed(); the frames seen must equal those of a trivial whole-buffer
// reference parser. Every delivered payload also goes through
// parsePeerPresent / parsePeerGone / parseServerKey / looksLikeDisco.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/proto/derp/frame.hpp"

using namespace derpd;
using namespace derpd::derp;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

struct Seen {
  uint8_t type;
  Bytes payload;
  bool operator==(const Seen&) const = default;
};

// Deterministic verdict from the seed, the type and the length.
HeaderVerdict verdictFor(uint8_t seed, const FrameHeader& h) {
  const unsigned v = (unsigned(h.type) * 31u + seed + (h.len & 0x3)) % 7u;
  if (v == 0 && (seed & 0x40)) return HeaderVerdict::Reject;
  if (v <= 2) return HeaderVerdict::Skip;
  return HeaderVerdict::Deliver;
}

void exerciseDecoders(uint8_t type, ByteView p) {
  (void)frameTypeName(type);
  (void)looksLikeDisco(p);
  if (auto r = parsePeerPresent(p); r.ok()) {
    check(p.size() >= kKeyLen);
    check(r->hasAddr == (p.size() >= kKeyLen + 18));
    check(r->flags == (p.size() >= kKeyLen + 19 ? p[kKeyLen + 18] : 0));
  } else {
    check(p.size() < kKeyLen);
  }
  if (auto r = parsePeerGone(p); r.ok()) {
    check(p.size() >= kKeyLen);
    check(uint8_t(r->reason) == (p.size() > kKeyLen ? p[kKeyLen] : 0));
  } else {
    check(p.size() < kKeyLen);
  }
  if (auto r = parseServerKey(p); r.ok()) {
    check(p.size() >= 40 && p.size() <= 1024);
    check(!r->isZero());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t cfg = data[0];
  const uint8_t chunkSeed = data[1];
  const ByteView stream(data + 2, size - 2);
  const uint32_t maxPayload = (cfg & 0x80) ? 64u : kReaderMaxPayload;
  // Stop in the callback when a payload's first byte matches (bit 5 on).
  const bool stopSome = cfg & 0x20;
  auto wantsStop = [&](ByteView p) { return stopSome && !p.empty() && (p[0] & 0x0f) == (cfg & 0x0f); };

  // Reference: whole-buffer parse with the same classifier.
  std::vector<Seen> ref;
  bool refFailed = false;
  {
    size_t off = 0;
    while (stream.size() - off >= kFrameHeaderLen) {
      FrameHeader h{stream[off], getU32BE(stream.data() + off + 1)};
      off += kFrameHeaderLen;
      const HeaderVerdict v = verdictFor(cfg, h);
      if (v == HeaderVerdict::Reject) {
        refFailed = true;
        break;
      }
      if (v == HeaderVerdict::Skip) {
        off += std::min<size_t>(h.len, stream.size() - off);
        continue;
      }
      if (h.len > maxPayload) {
        refFailed = true;
        break;
      }
      if (stream.size() - off < h.len) break;  // partial: stays pending
      ref.push_back({h.type, Bytes(stream.begin() + off, stream.begin() + off + h.len)});
      off += h.len;
    }
  }

  // Incremental: chunk sizes from chunkSeed (0 = whole input).
  std::vector<Seen> got;
  FrameReader reader([&](const FrameHeader& h) { return verdictFor(cfg, h); }, maxPayload);
  auto cb = [&](const Frame& f) {
    check(f.payload.size() <= maxPayload);
    got.push_back({uint8_t(f.type), Bytes(f.payload.begin(), f.payload.end())});
    exerciseDecoders(uint8_t(f.type), f.payload);
    return !wantsStop(f.payload);
  };
  bool failed = false;
  size_t off = 0;
  unsigned step = 0;
  while (off < stream.size() && !failed) {
    size_t chunk = chunkSeed == 0 ? stream.size() : 1 + ((chunkSeed * (step + 1) * 7u) % 23u);
    ++step;
    chunk = std::min(chunk, stream.size() - off);
    ByteView piece = stream.subspan(off, chunk);
    // Feed the piece, resuming after each stop.
    while (true) {
      auto r = reader.feed(piece, cb);
      check(reader.consumed() <= piece.size());
      if (!r.ok()) {
        failed = true;
        break;
      }
      if (reader.consumed() == piece.size()) break;
      check(reader.idle());  // a stop leaves the reader at a frame boundary
      piece = piece.subspan(reader.consumed());
    }
    off += chunk;
  }
  check(failed == refFailed);
  check(got == ref);
  if (failed) {
    // A failed reader stays failed.
    const uint8_t ka[5] = {0x06, 0, 0, 0, 0};
    check(!reader.feed(ByteView(ka, 5), cb).ok());
    check(got == ref);
  }

  // The encoders round-trip through the reader.
  if (stream.size() >= kKeyLen) {
    NodePublic k = NodePublic::fromRaw(stream.first(kKeyLen));
    ByteView pkt = stream.subspan(kKeyLen, std::min<size_t>(stream.size() - kKeyLen, 2000));
    Bytes enc;
    appendSendPacket(enc, k, pkt);
    appendPeerGone(enc, k, PeerGoneReason(cfg));
    appendForwardPacket(enc, k, k, pkt);
    std::array<uint8_t, 16> ip{};
    appendPeerPresent(enc, k, ip, chunkSeed, cfg);
    FrameReader all([](const FrameHeader&) { return HeaderVerdict::Deliver; });
    int n = 0;
    check(all.feed(enc, [&](const Frame& f) {
             ++n;
             check(NodePublic::fromRaw(f.payload.first(kKeyLen)) == k);
             return true;
           }).ok());
    check(n == 4 && all.idle());
  }
  return 0;
}
