// libFuzzer target: the derpd.conf parser. Arbitrary bytes must never crash
// it; whatever parses must render to text that parses back to the same
// settings and renders identically (the golden round-trip, on random input).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "common/config/config.hpp"

using namespace derpd::config;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Fixed environment: the defaults must not depend on the machine.
const Env& fuzzEnv() {
  static const Env kEnv = [] {
    Env e;
    e.getenv = [](const std::string& k) -> std::optional<std::string> {
      if (k == "HOME") return std::string("/home/fuzz");
      return std::nullopt;
    };
    e.fileExists = [](const std::string&) { return false; };
    return e;
  }();
  return kEnv;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = parseConfigText(text, "fuzz.conf", fuzzEnv());
  if (!cfg.ok()) {
    check(!cfg.error().empty());
    return 0;
  }
  const std::string rendered = renderConfig(*cfg);
  auto again = parseConfigText(rendered, "rendered.conf", fuzzEnv());
  check(again.ok());
  check(static_cast<const Settings&>(*again) == static_cast<const Settings&>(*cfg));
  check(renderConfig(*again) == rendered);
  return 0;
}
