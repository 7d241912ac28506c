// A bounded HTTP/1.1 request-head parser (server side) and response-head
// parser (client side). Pure functions over bytes; no I/O.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace derpd::http {

// Heads larger than this are refused (431) by derp-worker.
inline constexpr size_t kMaxRequestHead = 16 * 1024;
inline constexpr size_t kMaxHeaders = 100;

struct Header {
  std::string name;   // as received
  std::string value;  // leading/trailing spaces and tabs trimmed
};

struct RequestHead {
  std::string method;   // e.g. "GET"
  std::string target;   // request-target as sent, e.g. "/generate_204?x=1"
  std::string path;     // target up to '?' (origin-form) or the authority (CONNECT)
  std::string query;    // after '?', without it; empty if none
  int versionMinor = 1; // HTTP/1.<minor>
  std::vector<Header> headers;
  size_t headLen = 0;   // bytes consumed including the final CRLFCRLF

  // First header with this name (ASCII case-insensitive), or nullptr.
  const std::string* get(std::string_view name) const;
  // True when a comma-separated header contains `token` (case-insensitive).
  bool hasToken(std::string_view name, std::string_view token) const;
};

enum class ParseStatus { Incomplete, Complete, Invalid, TooLarge };

struct RequestParse {
  ParseStatus status;
  RequestHead head;    // valid when Complete
  std::string error;   // when Invalid
};

// Parses the head at the start of `buf`. Incomplete when no CRLFCRLF yet (and
// buf is within maxHead); TooLarge when the head is longer than maxHead or
// has more than kMaxHeaders lines. Bare LF line ends are accepted, as Go does.
// A bad request line is Invalid as soon as its line end has arrived, before
// the rest of the head. Stateless: each call rescans `buf` (memchr for LFs;
// at most kMaxHeaders+1 lines are examined), so callers may simply re-call
// with the grown buffer. `path` and `query` are raw, not percent-decoded.
RequestParse parseRequestHead(std::string_view buf, size_t maxHead = kMaxRequestHead);

struct ResponseHead {
  int status = 0;
  std::string reason;
  std::vector<Header> headers;
  size_t headLen = 0;
  const std::string* get(std::string_view name) const;
};

struct ResponseParse {
  ParseStatus status;
  ResponseHead head;
  std::string error;
};
ResponseParse parseResponseHead(std::string_view buf, size_t maxHead = kMaxRequestHead);

bool iequals(std::string_view a, std::string_view b);

// Value of the first `key` pair in an x-www-form-urlencoded query ('+' is a
// space, %XX a byte; keys are decoded too), like Go's r.URL.Query().Get: a
// pair with a bad escape or a ';' is skipped. nullopt when no pair matches.
std::optional<std::string> queryValue(std::string_view query, std::string_view key);

// RFC 7231 IMF-fixdate for Date headers, e.g. "Tue, 24 Nov 2026 22:07:27 GMT".
std::string httpDate(long unixSeconds);

}  // namespace derpd::http
