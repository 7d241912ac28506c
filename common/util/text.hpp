// Small text helpers shared by the processes.
#pragma once

#include <cstddef>
#include <string>

namespace derpd {

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

}  // namespace derpd
