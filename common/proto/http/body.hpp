// Response bodies for the project's small HTTP clients (derpd-probe fetching
// a DERP map): Content-Length, chunked (RFC 9112 §7.1) or read to EOF, each
// bounded. Pure functions over the bytes after the head; no I/O; fuzzed.
// Included by derpd-probe and tests.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/proto/http/http.hpp"

namespace derpd::http {

enum class BodyStatus { Complete, Incomplete, Invalid, TooLarge };

struct BodyParse {
  BodyStatus status = BodyStatus::Incomplete;
  std::string body;   // when Complete
  std::string error;  // when Invalid or TooLarge
};

// A chunked body at the start of buf: hex sizes (at most 15 digits, chunk
// extensions ignored), CRLF (or bare LF) line ends, trailers skipped up to
// the blank line. More than maxBody decoded bytes is TooLarge; a trailer
// section over 16 KiB is Invalid.
BodyParse decodeChunked(std::string_view buf, size_t maxBody);

// The body of a response with `head`: chunked when Transfer-Encoding says
// so, else Content-Length bytes, else everything up to EOF (`eof` says the
// peer has closed). 1xx, 204 and 304 have no body; a HEAD request's
// response neither (`headRequest`).
BodyParse responseBody(const ResponseHead& head, std::string_view afterHead, bool eof, size_t maxBody,
                       bool headRequest = false);

}  // namespace derpd::http
