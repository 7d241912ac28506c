// cert-agent's seccomp allow-list. Not chrooted: it writes certificates
// and the ACME account key into -certdir through the directory's
// descriptor (openat/renameat/unlinkat, fchmod, fsync), reads its inotify
// descriptor (the watch was added before the drop), and in letsencrypt mode
// talks HTTPS to the ACME server from its own thread (POCO: name
// resolution, connect, OpenSSL reading the CA bundle and openssl.cnf).
#include "common/proc/seccomp_policy.hpp"

namespace derpd::proc::policy {

SeccompPolicy certAgent() {
  SeccompPolicy p = base();
  append(p, readFiles());
  append(p, dialAndResolve());
  append(p, {
                // Writing in -certdir: any openat flags (O_CREAT|O_EXCL for
                // the temporary file), then rename over the old one.
                allow("openat"), allow("renameat"), allow("renameat2"), allow("unlinkat"), allow("fchmod"),
                allow("fsync"), allow("fdatasync"), allow("ftruncate"), allow("pwrite64"),
            });
  return p;
}

}  // namespace derpd::proc::policy
