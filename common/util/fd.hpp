// Small file-descriptor helpers. Included by every process.
#pragma once

#include <cstddef>
#include <string>

#include "common/util/result.hpp"

namespace derpd {

// Reads `fd` to EOF (retrying EINTR) and closes it. More than `maxBytes` is
// an error, as is a read error; `what` names the source in the message.
Result<std::string> readAllAndClose(int fd, size_t maxBytes, const std::string& what);

}  // namespace derpd
