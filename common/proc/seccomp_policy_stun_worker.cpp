// stun-worker's seccomp allow-list: the smallest. Chrooted in the empty
// directory, one thread (plus libzmq's), it only reads and answers
// datagrams on the UDP sockets derpd bound (recvmmsg/sendmmsg, in base())
// and talks to derpd on the control socket. No socket(), no connect(), no
// accept.
#include <cerrno>

#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

SeccompPolicy stunWorker() {
  SeccompPolicy p = base();
  // Nothing can be opened in the empty chroot; glibc looks for
  // /etc/localtime once, the first time a time is formatted. Fail the way
  // the chroot would instead of killing the process.
  append(p, {failWith("openat", ENOENT)});
  return p;
}

}  // namespace derpd::proc::policy
