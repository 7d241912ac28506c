// Small text helpers shared by the processes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

namespace derpd {

// Unix seconds as RFC 3339 / ISO 8601 UTC: 2026-01-02T03:04:05Z (the number
// itself when the date cannot be represented).
inline std::string formatUtcSeconds(int64_t t) {
  const std::time_t tt = std::time_t(t);
  std::tm tm{};
  if (!gmtime_r(&tt, &tm)) return std::to_string(t);
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return std::to_string(t);
  return buf;
}

// For a log line from text a peer may have chosen (an exception that quotes
// a server's answer, a response body): control bytes become spaces and the
// text is cut at `max` bytes with "...". One bounded line.
inline std::string printableLine(std::string s, size_t max = 300) {
  if (s.size() > max) s.replace(max, std::string::npos, "...");
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return s;
}

// Go's html.EscapeString: & < > " ' as entities (what derper's pages and
// http.Redirect bodies use, and derpd-probe's status page).
inline std::string htmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace derpd
