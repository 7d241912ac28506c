// libFuzzer target: WsDecoder in both mask modes.
// Input: byte 0 = bit 0 expectMasked, bits 1..7 the split point (fraction of
// the stream); byte 1 = maxFrameLen selector; the rest is the byte stream.
// The stream is decoded whole, split in two, and (when short) byte by byte:
// all three must report the same data, control frames and verdict.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

#include "common/proto/http/websocket.hpp"

using namespace derpd;
using namespace derpd::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

struct Collector : WsDecoder::Events {
  Bytes data;
  std::vector<std::pair<WsOpcode, Bytes>> controls;
  void onData(ByteView d) override {
    check(!d.empty());
    data.insert(data.end(), d.begin(), d.end());
  }
  void onControl(WsOpcode op, ByteView p) override {
    check(op == WsOpcode::Close || op == WsOpcode::Ping || op == WsOpcode::Pong);
    check(p.size() <= 125);
    controls.emplace_back(op, Bytes(p.begin(), p.end()));
  }
};

struct Outcome {
  Collector ev;
  bool ok = true;
  uint16_t code = 0;
};

Outcome decode(bool masked, uint64_t maxFrameLen, ByteView in, const std::vector<size_t>& cuts) {
  Outcome o;
  WsDecoder dec(masked, maxFrameLen);
  size_t off = 0;
  for (size_t i = 0; i <= cuts.size() && o.ok; ++i) {
    const size_t end = i < cuts.size() ? cuts[i] : in.size();
    Result<void> r = dec.feed(in.subspan(off, end - off), o.ev, &o.code);
    if (!r) {
      o.ok = false;
      check(o.code == kWsCloseProtocolError || o.code == kWsCloseUnsupportedData || o.code == kWsCloseTooBig);
      // Stays failed.
      uint16_t again = 0;
      check(!dec.feed(in.subspan(0, 0), o.ev, &again).ok() && again == o.code);
    }
    off = end;
  }
  return o;
}

bool same(const Outcome& a, const Outcome& b) {
  return a.ok == b.ok && a.code == b.code && a.ev.data == b.ev.data && a.ev.controls == b.ev.controls;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool masked = (data[0] & 1) != 0;
  static constexpr uint64_t kLimits[] = {0, 1, 125, 126, 65535, 65536, 64 * 1024 + 100, UINT64_MAX};
  const uint64_t maxFrameLen = kLimits[data[1] & 7];
  ByteView in(data + 2, size - 2);

  const Outcome whole = decode(masked, maxFrameLen, in, {});
  check(whole.ev.data.size() <= in.size());

  const size_t split = in.size() * (data[0] >> 1) / 127;
  check(same(whole, decode(masked, maxFrameLen, in, {split})));

  if (in.size() <= 512) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < in.size(); ++i) cuts.push_back(i);
    check(same(whole, decode(masked, maxFrameLen, in, cuts)));
  }

  // The encoder's output always decodes back to its payload.
  Bytes wire;
  appendWsFrame(wire, WsOpcode::Binary, in, masked);
  appendWsClose(wire, uint16_t(1000 + data[1]), asChars(in.subspan(0, in.size() / 2)), masked);
  const Outcome rt = decode(masked, UINT64_MAX, wire, {wire.size() / 3});
  check(rt.ok && rt.ev.data.size() == in.size() && std::equal(in.begin(), in.end(), rt.ev.data.begin()));
  check(rt.ev.controls.size() == 1 && rt.ev.controls[0].first == WsOpcode::Close);
  return 0;
}
