// Bounded HTTP/1.x head parsers. Runs in derp-worker (unprivileged, sandboxed)
// on bytes straight from the network, and in the client library on replies.
//
// Shape of the work: one memchr-driven pass finds the end of the head (the
// first empty line) while counting lines, so the number of lines examined is
// bounded by kMaxHeaders no matter how the bytes are fed; only then are the
// lines of a complete head tokenised. Nothing is allocated before the head is
// known to be complete and within maxHead.
#include "common/proto/http/http.hpp"

#include <cstdio>
#include <cstring>
#include <ctime>

namespace derpd::http {

namespace {

// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
// "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
bool isTchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!isTchar(c)) return false;
  }
  return true;
}

// field-value bytes: HTAB, VCHAR, SP, obs-text. Like Go's
// httpguts.ValidHeaderFieldValue: every CTL but HTAB is refused, and DEL.
bool isValueChar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

// request-target bytes: anything visible; no SP, no CTL, no DEL (Go's
// url.ParseRequestURI refuses CTLs; high bytes pass).
bool isTargetChar(unsigned char c) { return c > 0x20 && c != 0x7f; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string_view trimOws(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

// Strips the line terminator: LF, or CRLF.
std::string_view chompLine(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// Result of locating the end of a head.
struct HeadScan {
  ParseStatus status = ParseStatus::Incomplete;
  size_t end = 0;            // when Complete: bytes up to and including the empty line
  size_t firstLineEnd = 0;   // when nonzero: bytes of the first line including its LF
};

// Finds the first empty line. Counts line ends on the way so that a head with
// more than kMaxHeaders field lines is refused before it is complete. Looks at
// no more than maxHead bytes.
HeadScan scanHead(std::string_view buf, size_t maxHead) {
  HeadScan r;
  const size_t limit = buf.size() < maxHead ? buf.size() : maxHead;
  const char* base = buf.data();
  size_t pos = 0;
  size_t lines = 0;  // completed lines (request/status line + field lines)
  while (pos < limit) {
    const void* nl = std::memchr(base + pos, '\n', limit - pos);
    if (nl == nullptr) break;
    const size_t p = size_t(static_cast<const char*>(nl) - base);
    if (lines == 0) r.firstLineEnd = p + 1;
    ++lines;
    if (lines - 1 > kMaxHeaders) {  // field lines so far, not counting the first line
      r.status = ParseStatus::TooLarge;
      return r;
    }
    // Is the line after this LF empty? "\n" or "\r\n".
    if (p + 1 < limit && base[p + 1] == '\n') {
      r.status = ParseStatus::Complete;
      r.end = p + 2;
      return r;
    }
    if (p + 2 < limit && base[p + 1] == '\r' && base[p + 2] == '\n') {
      r.status = ParseStatus::Complete;
      r.end = p + 3;
      return r;
    }
    pos = p + 1;
  }
  r.status = buf.size() > maxHead ? ParseStatus::TooLarge : ParseStatus::Incomplete;
  return r;
}

// Parses "Name: value" field lines in head[from, end) into `out`. The final
// empty line is part of the range and ends the loop.
bool parseFields(std::string_view head, size_t from, std::vector<Header>& out, std::string& err) {
  size_t pos = from;
  while (pos < head.size()) {
    size_t nl = head.find('\n', pos);
    if (nl == std::string_view::npos) nl = head.size() - 1;  // unreachable: head ends with LF
    std::string_view line = chompLine(head.substr(pos, nl + 1 - pos));
    pos = nl + 1;
    if (line.empty()) return true;  // end of head
    if (line[0] == ' ' || line[0] == '\t') {
      err = "obsolete line folding";
      return false;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      err = "header line without ':'";
      return false;
    }
    std::string_view name = line.substr(0, colon);
    if (!isToken(name)) {
      err = "invalid header name";
      return false;
    }
    std::string_view value = trimOws(line.substr(colon + 1));
    for (unsigned char c : value) {
      if (!isValueChar(c)) {
        err = "invalid byte in header value";
        return false;
      }
    }
    out.push_back(Header{std::string(name), std::string(value)});
  }
  err = "head without an empty line";
  return false;
}

const std::string* findHeader(const std::vector<Header>& hs, std::string_view name) {
  for (const Header& h : hs) {
    if (iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

// "HTTP/1.<digit>" -> minor version, or -1.
int parseVersion(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 7) != "HTTP/1." || v[7] < '0' || v[7] > '9') return -1;
  return v[7] - '0';
}

bool startsWithIcase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// METHOD SP TARGET SP HTTP/1.x, terminator already removed. Fills method,
// target, path, query, versionMinor.
bool parseRequestLine(std::string_view line, RequestHead& h, std::string& err) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) {
    err = "malformed request line";
    return false;
  }
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    err = "malformed request line";
    return false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!isToken(method)) {
    err = "invalid method";
    return false;
  }
  if (target.empty()) {
    err = "empty request target";
    return false;
  }
  for (unsigned char c : target) {
    if (!isTargetChar(c)) {
      err = "invalid byte in request target";
      return false;
    }
  }
  const int minor = parseVersion(version);
  if (minor < 0) {
    err = "unsupported HTTP version";
    return false;
  }

  std::string_view path, query;
  if (method == "CONNECT") {
    path = target;  // authority-form
  } else if (target[0] == '/') {
    const size_t q = target.find('?');
    path = target.substr(0, q);
    if (q != std::string_view::npos) query = target.substr(q + 1);
  } else if (target == "*") {
    path = target;  // asterisk-form (OPTIONS)
  } else if (startsWithIcase(target, "http://") || startsWithIcase(target, "https://")) {
    // absolute-form: path and query come after the authority.
    std::string_view rest = target.substr(target.find("//") + 2);
    const size_t slash = rest.find_first_of("/?");
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    const size_t q = rest.find('?');
    path = rest.substr(0, q);
    if (q != std::string_view::npos) query = rest.substr(q + 1);
    if (path.empty()) path = "/";
  } else {
    err = "invalid request target";
    return false;
  }

  h.method = std::string(method);
  h.target = std::string(target);
  h.path = std::string(path);
  h.query = std::string(query);
  h.versionMinor = minor;
  return true;
}

// HTTP/1.x SP 3DIGIT [SP reason]. Go accepts a missing reason; so do we.
bool parseStatusLine(std::string_view line, ResponseHead& h, std::string& err) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || parseVersion(line.substr(0, sp1)) < 0) {
    err = "malformed status line";
    return false;
  }
  std::string_view rest = line.substr(sp1 + 1);
  const size_t sp2 = rest.find(' ');
  std::string_view code = rest.substr(0, sp2);
  std::string_view reason = sp2 == std::string_view::npos ? std::string_view() : rest.substr(sp2 + 1);
  if (code.size() != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' ||
      code[2] < '0' || code[2] > '9') {
    err = "malformed status code";
    return false;
  }
  for (unsigned char c : reason) {
    if (!isValueChar(c)) {
      err = "invalid byte in reason phrase";
      return false;
    }
  }
  h.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  h.reason = std::string(reason);
  return true;
}

int hexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded component: '+' is space, %XX a byte.
std::optional<std::string> formUnescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hexVal(s[i + 1]);
      const int lo = hexVal(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(char(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

const std::string* RequestHead::get(std::string_view name) const { return findHeader(headers, name); }

const std::string* ResponseHead::get(std::string_view name) const { return findHeader(headers, name); }

bool RequestHead::hasToken(std::string_view name, std::string_view token) const {
  // Every field line with this name counts ("Connection: keep-alive" plus
  // "Connection: Upgrade" is the same as one combined line).
  for (const Header& h : headers) {
    if (!iequals(h.name, name)) continue;
    std::string_view v = h.value;
    while (true) {
      const size_t comma = v.find(',');
      if (iequals(trimOws(v.substr(0, comma)), token)) return true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return false;
}

namespace {

// The shared body of both head parsers: scan for the end of the head, judge
// the first line as soon as it is whole, then parse the header fields.
template <typename Parse, typename Head, typename FirstLine>
Parse parseHead(std::string_view buf, size_t maxHead, FirstLine parseFirstLine) {
  Parse r{ParseStatus::Incomplete, {}, {}};
  const HeadScan scan = scanHead(buf, maxHead);
  if (scan.status != ParseStatus::Complete) {
    // Refuse garbage early: once the first line is whole it can be judged
    // without waiting for the rest of the head.
    if (scan.firstLineEnd != 0) {
      Head tmp;
      if (!parseFirstLine(chompLine(buf.substr(0, scan.firstLineEnd)), tmp, r.error)) {
        r.status = ParseStatus::Invalid;
        return r;
      }
    }
    r.status = scan.status;
    return r;
  }
  std::string_view head = buf.substr(0, scan.end);
  const size_t firstEnd = head.find('\n') + 1;
  if (!parseFirstLine(chompLine(head.substr(0, firstEnd)), r.head, r.error) ||
      !parseFields(head, firstEnd, r.head.headers, r.error)) {
    r.status = ParseStatus::Invalid;
    r.head = Head{};
    return r;
  }
  r.head.headLen = scan.end;
  r.status = ParseStatus::Complete;
  return r;
}

}  // namespace

RequestParse parseRequestHead(std::string_view buf, size_t maxHead) {
  return parseHead<RequestParse, RequestHead>(buf, maxHead, parseRequestLine);
}

ResponseParse parseResponseHead(std::string_view buf, size_t maxHead) {
  return parseHead<ResponseParse, ResponseHead>(buf, maxHead, parseStatusLine);
}

std::optional<std::string> queryValue(std::string_view query, std::string_view key) {
  // Same pair rules as Go's url.ParseQuery (what r.URL.Query().Get sees):
  // pairs split on '&'; a pair holding ';' or a bad escape is skipped.
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty() || pair.find(';') != std::string_view::npos) continue;
    const size_t eq = pair.find('=');
    std::optional<std::string> k = formUnescape(pair.substr(0, eq));
    if (!k || *k != key) continue;
    std::optional<std::string> v =
        formUnescape(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!v) continue;
    return v;
  }
  return std::nullopt;
}

std::string httpDate(long unixSeconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const time_t t = static_cast<time_t>(unixSeconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
      tm.tm_mon > 11) {
    return "Thu, 01 Jan 1970 00:00:00 GMT";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday,
                kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

}  // namespace derpd::http
