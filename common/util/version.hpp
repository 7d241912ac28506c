// The build's identity: DERPD_VERSION (the project's version, a compile
// definition) and the git revision the build was configured from. The
// revision lives in one generated source (version.cpp.in), so a new
// revision recompiles that file alone, not every file that prints it.
#pragma once

namespace derpd {

// `git describe --always --dirty` at configure time, or "unknown".
const char* gitRev();

}  // namespace derpd
