// Small file-descriptor helpers. Included by every process.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/util/result.hpp"

namespace derpd {

// Reads `fd` to EOF (retrying EINTR) and closes it. More than `maxBytes` is
// an error, as is a read error; `what` names the source in the message.
Result<std::string> readAllAndClose(int fd, size_t maxBytes, const std::string& what);

// As Go's atomicfile.WriteFile: a temp file in the same directory, written,
// fsync'ed, chmod'ed to `mode`, then renamed over `path`.
Result<void> writeFileAtomic(const std::string& path, std::string_view data, mode_t mode);

// The whole file, at most `maxBytes`; errors name the path. `*missing` (when
// given) is set when the file does not exist.
Result<std::string> readFileLimited(const std::string& path, size_t maxBytes, bool* missing = nullptr);

}  // namespace derpd
