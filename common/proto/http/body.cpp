#include "common/proto/http/body.hpp"

#include <cctype>
#include <cstdint>

namespace derpd::http {

namespace {

constexpr size_t kMaxTrailer = 16 * 1024;
constexpr size_t kMaxSizeLine = 4096;

// One line at `pos` (CRLF or LF); nullopt-like: returns npos when incomplete.
size_t lineEnd(std::string_view buf, size_t pos) { return buf.find('\n', pos); }

std::string_view trimCr(std::string_view s) {
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return s;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

BodyParse invalid(std::string why) { return BodyParse{BodyStatus::Invalid, {}, std::move(why)}; }

}  // namespace

BodyParse decodeChunked(std::string_view buf, size_t maxBody) {
  BodyParse out;
  size_t pos = 0;
  for (;;) {
    size_t le = lineEnd(buf, pos);
    if (le == std::string_view::npos) {
      if (buf.size() - pos > kMaxSizeLine) return invalid("chunk size line too long");
      return out;  // Incomplete
    }
    if (le - pos > kMaxSizeLine) return invalid("chunk size line too long");
    std::string_view line = trimCr(buf.substr(pos, le - pos));
    if (auto semi = line.find(';'); semi != std::string_view::npos) line = line.substr(0, semi);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty()) return invalid("empty chunk size");
    if (line.size() > 15) return invalid("chunk size too large");
    uint64_t n = 0;
    for (char c : line) {
      int h = hexValue(c);
      if (h < 0) return invalid("bad chunk size \"" + std::string(line) + "\"");
      n = n * 16 + uint64_t(h);
    }
    pos = le + 1;
    if (n == 0) {
      // Trailers, then the blank line.
      const size_t trailerStart = pos;
      for (;;) {
        size_t te = lineEnd(buf, pos);
        if (te == std::string_view::npos) {
          if (buf.size() - trailerStart > kMaxTrailer) return invalid("trailer section too long");
          return BodyParse{BodyStatus::Incomplete, {}, {}};
        }
        if (te - trailerStart > kMaxTrailer) return invalid("trailer section too long");
        bool blank = trimCr(buf.substr(pos, te - pos)).empty();
        pos = te + 1;
        if (blank) {
          out.status = BodyStatus::Complete;
          return out;
        }
      }
    }
    if (n > maxBody || out.body.size() + n > maxBody) {
      return BodyParse{BodyStatus::TooLarge, {}, "body larger than " + std::to_string(maxBody) + " bytes"};
    }
    if (buf.size() - pos < n) return BodyParse{BodyStatus::Incomplete, {}, {}};
    out.body.append(buf.substr(pos, size_t(n)));
    pos += size_t(n);
    size_t ce = lineEnd(buf, pos);
    if (ce == std::string_view::npos) {
      if (buf.size() - pos > 1) return invalid("chunk not followed by a line end");
      return BodyParse{BodyStatus::Incomplete, {}, {}};
    }
    if (!trimCr(buf.substr(pos, ce - pos)).empty()) return invalid("chunk not followed by a line end");
    pos = ce + 1;
  }
}

BodyParse responseBody(const ResponseHead& head, std::string_view afterHead, bool eof, size_t maxBody,
                       bool headRequest) {
  if (headRequest || head.status / 100 == 1 || head.status == 204 || head.status == 304) {
    return BodyParse{BodyStatus::Complete, {}, {}};
  }
  if (const std::string* te = head.get("Transfer-Encoding")) {
    if (!iequals(*te, "chunked")) return invalid("unsupported Transfer-Encoding \"" + *te + "\"");
    BodyParse p = decodeChunked(afterHead, maxBody);
    if (p.status == BodyStatus::Incomplete && eof) return invalid("connection closed inside a chunked body");
    return p;
  }
  if (const std::string* cl = head.get("Content-Length")) {
    if (cl->empty() || cl->size() > 18) return invalid("bad Content-Length \"" + *cl + "\"");
    uint64_t n = 0;
    for (char c : *cl) {
      if (c < '0' || c > '9') return invalid("bad Content-Length \"" + *cl + "\"");
      n = n * 10 + uint64_t(c - '0');
    }
    if (n > maxBody) return BodyParse{BodyStatus::TooLarge, {}, "body larger than " + std::to_string(maxBody) + " bytes"};
    if (afterHead.size() >= n) return BodyParse{BodyStatus::Complete, std::string(afterHead.substr(0, size_t(n))), {}};
    if (eof) return invalid("connection closed after " + std::to_string(afterHead.size()) + " of " +
                            std::to_string(n) + " body bytes");
    return BodyParse{BodyStatus::Incomplete, {}, {}};
  }
  if (afterHead.size() > maxBody) {
    return BodyParse{BodyStatus::TooLarge, {}, "body larger than " + std::to_string(maxBody) + " bytes"};
  }
  if (!eof) return BodyParse{BodyStatus::Incomplete, {}, {}};
  return BodyParse{BodyStatus::Complete, std::string(afterHead), {}};
}

}  // namespace derpd::http
