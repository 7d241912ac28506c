#include "options.hpp"

#include "common/config/config.hpp"
#include "common/config/go_flags.hpp"

namespace derpd::certagent {

namespace {

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = [] {
    config::GoFlagTable<Options> t = {
      {"certmode", {false, [](Options& o, const std::string& v) -> Result<void> {
         if (v != "manual" && v != "letsencrypt") return makeError("want manual or letsencrypt");
         o.certMode = v; return {}; }}},
      {"certdir", {false, [](Options& o, const std::string& v) -> Result<void> { o.certDir = v; return {}; }}},
      {"hostname", {false, [](Options& o, const std::string& v) -> Result<void> { o.hostname = v; return {}; }}},
      {"acme-directory-url", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.acmeDirectoryUrl = v; return {}; }}},
      {"acme-ca-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.acmeCaFile = v; return {}; }}},
      {"acme-challenges", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto c = config::parseAcmeChallenges(v);
         if (!c) return makeError(c.error());
         o.acmeChallenges = std::move(*c);
         return {}; }}},
      {"acme-email", {false, [](Options& o, const std::string& v) -> Result<void> { o.acmeEmail = v; return {}; }}},
      {"acme-eab-kid", {false, [](Options& o, const std::string& v) -> Result<void> { o.acmeEabKid = v; return {}; }}},
      {"acme-eab-key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd"); o.acmeEabKeyFd = *i; return {}; }}},
    };
    config::addChildRoleFlags(t);
    return t;
  }();
  return kFlags;
}

}  // namespace

Result<Options> parseOptions(const std::vector<std::string>& args) {
  Options o;
  if (auto r = config::parseGoFlags(args, flags(), o); !r) return std::move(r).takeError();
  if (o.help || o.version) return o;
  if (o.control.empty()) return makeError("--control is required: cert-agent runs under derpd");
  if (o.certDir.empty()) return makeError("-certdir is required");
  if (!o.chrootDir.empty())
    return makeError("--chroot is not supported: cert-agent reads -certdir and, for ACME, DNS and the system's CA certificates");
  if ((o.acmeEabKeyFd >= 0) != !o.acmeEabKid.empty())
    return makeError("-acme-eab-kid and --acme-eab-key-fd go together");
  return o;
}

std::string usage() {
  return R"(usage: cert-agent [flags]

cert-agent is derpd's certificate process: it loads, makes or orders the TLS
certificate and hands it (and ACME challenge answers) to derp-worker over
derpd's control socket. derpd starts it; it does not run on its own.

  -certmode MODE        manual: DIR/HOST.crt (leaf + chain, PEM) and
                        DIR/HOST.key, reloaded on Reload (SIGHUP to derpd) and
                        whenever they change (inotify); an IP-address hostname
                        without files gets a self-signed ECDSA P-256
                        certificate, written to DIR, whose CertName is logged.
                        letsencrypt (default): ACME (RFC 8555); the account key,
                        certificate and key are kept in DIR; renewed when a
                        third of the lifetime is left; failures retried with
                        backoff while the last good certificate stays in use.
  -certdir DIR          the certificate directory (required)
  -hostname NAME        the certificate's name; HOST above is NAME without
                        characters outside [A-Za-z0-9.-] (default derp.tailscale.com)
  --acme-directory-url URL   ACME directory (default Let's Encrypt production)
  --acme-ca-file FILE   CA certificates (PEM) for the ACME server's HTTPS
                        (default: the system's)
  --acme-challenges LIST   tls-alpn-01 and/or http-01, in order of preference
                        (default tls-alpn-01,http-01)
  -acme-email ADDR      account contact (optional)
  -acme-eab-kid KID     External Account Binding key id (with --acme-eab-key-fd)
  --log-level LEVEL     trace, debug, info (default), warn, error
  -version              print the version and exit

Set by derpd:
  --control ipc://PATH  derpd's control socket (required)
  --acme-eab-key-fd N   read the External Account Binding MAC key from this pipe
  --user NAME           when root: drop to this user (derpd's cert-user) after
                        opening DIR
  --seccomp=false       no seccomp system call filter after the drop (debugging)
  -h, --help            this text
)";
}

}  // namespace derpd::certagent
