// Access to the byte-exact vectors in tests/vectors/ (copied from
// ../shared/vectors; captured from Tailscale's Go code at 209567e7a0).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "common/util/bytes.hpp"

namespace derpd::test {

// Absolute path of a file under tests/vectors/.
std::string vectorPath(const std::string& rel);
// Whole file as bytes / text; aborts the test binary if missing.
std::string readVectorFile(const std::string& rel);
nlohmann::json loadVectorJson(const std::string& rel);
// Hex string to bytes; aborts on bad hex (vectors are trusted).
Bytes hexBytes(const std::string& hex);

}  // namespace derpd::test
