// What derpd-bench reads about processes: CPU seconds (its own and a
// server's, from /proc/PID/stat) and resident memory (/proc/PID/status).
// Included by derpd-bench only.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace derpd::bench {

// utime + stime of pid in seconds, or -1.
double processCpuSeconds(pid_t pid);
// This process's user + system CPU seconds.
double ownCpuSeconds();
// VmRSS of pid in bytes, or -1.
int64_t residentBytes(pid_t pid);

}  // namespace derpd::bench
