// libFuzzer target: parseRequestHead / parseResponseHead on arbitrary bytes.
// The whole input is the buffer (so raw captured requests are valid seeds);
// the last byte picks maxHead: < 0x80 keeps the default, otherwise a limit
// proportional to the input size so the TooLarge paths get exercised.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/proto/http/http.hpp"

using namespace derpd::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool sameHeaders(const std::vector<Header>& a, const std::vector<Header>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
  }
  return true;
}

bool sameRequest(const RequestHead& a, const RequestHead& b) {
  return a.method == b.method && a.target == b.target && a.path == b.path && a.query == b.query &&
         a.versionMinor == b.versionMinor && a.headLen == b.headLen && sameHeaders(a.headers, b.headers);
}

bool sameResponse(const ResponseHead& a, const ResponseHead& b) {
  return a.status == b.status && a.reason == b.reason && a.headLen == b.headLen &&
         sameHeaders(a.headers, b.headers);
}

// Invariants common to both parsers. `parse` is called on prefixes and
// extensions of `buf`.
template <typename Parse, typename Same>
void checkParser(std::string_view buf, size_t maxHead, Parse parse, Same same) {
  auto r = parse(buf, maxHead);
  switch (r.status) {
    case ParseStatus::Complete: {
      const size_t n = r.head.headLen;
      check(n > 0 && n <= buf.size() && n <= maxHead);
      check(buf[n - 1] == '\n');
      check(r.head.headers.size() <= kMaxHeaders);
      for (const Header& h : r.head.headers) {
        check(!h.name.empty());
        check(h.value.empty() || (h.value.front() != ' ' && h.value.back() != ' '));
      }
      // The head alone parses to the same thing.
      auto again = parse(buf.substr(0, n), maxHead);
      check(again.status == ParseStatus::Complete && same(again.head, r.head));
      // One byte short of the head is not a complete head.
      auto shorter = parse(buf.substr(0, n - 1), maxHead);
      check(shorter.status != ParseStatus::Complete);
      break;
    }
    case ParseStatus::Incomplete:
      check(buf.size() <= maxHead);
      break;
    case ParseStatus::Invalid:
      check(!r.error.empty());
      break;
    case ParseStatus::TooLarge:
      break;
  }
  // Every verdict but Incomplete is final: more bytes do not change it.
  if (r.status != ParseStatus::Incomplete) {
    std::string more(buf);
    more += "\r\n\r\n";
    auto ext = parse(more, maxHead);
    check(ext.status == r.status);
    if (r.status == ParseStatus::Complete) check(same(ext.head, r.head));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view buf(reinterpret_cast<const char*>(data), size);
  size_t maxHead = kMaxRequestHead;
  if (size > 0 && data[size - 1] >= 0x80) maxHead = size * (data[size - 1] & 0x7f) / 128;

  checkParser(buf, maxHead, [](std::string_view b, size_t m) { return parseRequestHead(b, m); }, sameRequest);
  checkParser(buf, maxHead, [](std::string_view b, size_t m) { return parseResponseHead(b, m); }, sameResponse);

  // Helpers on the same bytes.
  const size_t cut = size / 2;
  (void)queryValue(buf.substr(0, cut), buf.substr(cut));
  (void)iequals(buf.substr(0, cut), buf.substr(cut, cut));
  return 0;
}
