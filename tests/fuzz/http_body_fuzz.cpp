// Fuzz target: HTTP response bodies (chunked decoding, Content-Length, EOF)
// as derpd-probe reads a DERP map from a server. Properties: no crash, the
// decoded body never exceeds the bound, and a complete chunked decode is
// stable when more bytes follow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/proto/http/body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  constexpr size_t kMax = 4096;
  auto p = derpd::http::decodeChunked(in, kMax);
  if (p.body.size() > kMax) std::abort();
  if (p.status == derpd::http::BodyStatus::Complete) {
    std::string more(in);
    more += "trailing";
    auto q = derpd::http::decodeChunked(more, kMax);
    if (q.status != derpd::http::BodyStatus::Complete || q.body != p.body) std::abort();
  }
  // The same bytes as a whole response.
  auto head = derpd::http::parseResponseHead(in);
  if (head.status == derpd::http::ParseStatus::Complete) {
    for (bool eof : {false, true}) {
      auto b = derpd::http::responseBody(head.head, in.substr(head.head.headLen), eof, kMax);
      if (b.body.size() > kMax) std::abort();
    }
  }
  return 0;
}
