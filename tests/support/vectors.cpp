#include "support/vectors.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace derpd::test {

std::string vectorPath(const std::string& rel) { return std::string(DERPD_VECTORS_DIR) + "/" + rel; }

std::string readVectorFile(const std::string& rel) {
  std::ifstream f(vectorPath(rel), std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "missing vector file %s\n", vectorPath(rel).c_str());
    std::abort();
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json loadVectorJson(const std::string& rel) { return nlohmann::json::parse(readVectorFile(rel)); }

Bytes hexBytes(const std::string& hex) {
  auto b = fromHex(hex);
  if (!b) {
    std::fprintf(stderr, "bad hex in vector: %s\n", hex.c_str());
    std::abort();
  }
  return *b;
}

}  // namespace derpd::test
