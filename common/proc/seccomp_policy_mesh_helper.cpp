// mesh-helper's seccomp allow-list. Not chrooted: it resolves the
// -mesh-with hosts with getaddrinfo (reads /etc/nsswitch.conf, host.conf,
// hosts, resolv.conf, gai.conf; may load NSS modules; asks nscd and DNS
// servers; netlink for AI_ADDRCONFIG), asks tailscaled's LocalAPI on its
// Unix socket, and POSTs to the admission URL over POCO (TCP, TLS with the
// system's or a given CA file). Files are opened read-only.
#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

SeccompPolicy meshHelper() {
  SeccompPolicy p = base();
  append(p, readFiles());
  append(p, dialAndResolve());
  return p;
}

}  // namespace derpd::proc::policy
