// derp-worker's seccomp allow-list. Chrooted in the empty directory; after
// the sandbox it accepts and serves DERP/HTTP(S) on the listeners derpd
// passed, runs its event-loop threads (started after the filter), dials the
// mesh peers mesh-helper resolved (TCP, TLS), resolves /bootstrap-dns names
// against one DNS server (UDP, TCP retry), and reads /proc/self/fd and
// /proc/self/statm through descriptors opened before the chroot.
#include <fcntl.h>
#include <sys/socket.h>

#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

SeccompPolicy derpWorker() {
  SeccompPolicy p = base();
  append(p, {
                allow("accept4"), allow("accept"),
                // Mesh links and the bootstrap DNS client: IP sockets only.
                allowArgIn("socket", 0, {AF_INET, AF_INET6}), allow("connect"),
                // /debug/varz's open file count: openat(/proc/self/fd, ".")
                // and readdir. Read-only, and the chroot is empty.
                allowMasked("openat", 2, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY), allow("getdents64"),
            });
  return p;
}

}  // namespace derpd::proc::policy
