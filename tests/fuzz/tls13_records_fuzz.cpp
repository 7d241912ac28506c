// libFuzzer target: derp-worker's TLS 1.3 record layer (tls13_records.hpp),
// the parser of every byte a TLS 1.3 client sends after the handshake.
// Byte 0 picks the mode:
//   even: the rest is a raw byte stream from the peer, cut into records with
//         recordLength() and opened (headers, lengths, failed AEAD);
//   odd:  the rest is a list of inner plaintexts (2-byte length, bytes), each
//         sealed under the reader's key by a writer and opened in order
//         (content types, padding, alerts, handshake messages, KeyUpdate
//         and the key schedule that follows it).
// Whatever opens must stay in bounds, and the reader and the writer must
// agree on sequence numbers until the first refusal.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "tls13_records.hpp"

using namespace derpd;
using namespace derpd::worker;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const Bytes kClient(32, 0x5a), kServer(32, 0xa5);
  auto reader = Tls13Records::fromSecrets(0x1301, kClient, kServer);
  auto writer = Tls13Records::fromSecrets(0x1301, kServer, kClient);
  check(reader.ok() && writer.ok());
  Tls13Records& r = **reader;
  Bytes in;
  if (data[0] % 2 == 0) {
    in.assign(data + 1, data + size);
  } else {
    size_t off = 1;
    while (off + 2 <= size) {
      const size_t len = std::min<size_t>(size_t(data[off]) << 8 | data[off + 1], size - off - 2);
      (*writer)->sealInnerForTest(ByteView(data + off + 2, std::min<size_t>(len, 16384 + 255)), in);
      off += 2 + len;
    }
  }
  size_t off = 0;
  while (off < in.size()) {
    auto len = Tls13Records::recordLength(ByteView(in).subspan(off));
    if (!len.ok() || *len == 0) break;
    check(*len <= in.size() - off && *len <= Tls13Records::kHeaderLen + Tls13Records::kMaxCiphertext);
    const uint64_t seq = r.readSequence();
    auto o = r.open(std::span<uint8_t>(in.data() + off, *len));
    if (!o.ok()) break;
    if (o->kind == Tls13Records::Kind::Data) {
      check(o->data.data() >= in.data() + off && o->data.data() + o->data.size() <= in.data() + off + *len);
      check(o->data.size() <= Tls13Records::kMaxPlaintext);
    }
    // A KeyUpdate restarts the sequence under the next key.
    check(r.readSequence() == seq + 1 || r.readSequence() == 0);
    if (r.wantKeyUpdate()) {
      Bytes answer;
      r.sealKeyUpdate(answer);
      check(!r.wantKeyUpdate() && r.writeSequence() == 0 && !answer.empty());
    }
    off += *len;
  }
  return 0;
}
