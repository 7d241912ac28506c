// The monitor's (derpd-probe under derpd) seccomp allow-list. Not chrooted:
// it reads the DERP map (file, http(s) URL, tailscaled's LocalAPI socket),
// resolves node names, dials every node (TCP, TLS against the CA bundle it
// reads for each probe), sends STUN over UDP, and with -listen serves its
// status page (POCO's HTTPServer: bind, listen, accept). Files are opened
// read-only.
#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

SeccompPolicy monitor() {
  SeccompPolicy p = base();
  append(p, readFiles());
  append(p, dialAndResolve());
  append(p, {allow("listen"), allow("accept4"), allow("accept")});
  return p;
}

}  // namespace derpd::proc::policy
