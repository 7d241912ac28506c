#include "options.hpp"

#include "common/config/go_flags.hpp"
#include "common/net/mesh_hosts.hpp"

namespace derpd::mesh {

namespace {

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = [] {
    config::GoFlagTable<Options> t = {
      {"mesh-with", {false, [](Options& o, const std::string& v) -> Result<void> {
         if (auto h = net::parseMeshWith(v); !h) return makeError(h.error());
         o.meshWith = v; return {}; }}},
      {"verify-clients", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.verifyClients = *b; return {}; }}},
      {"verify-clients-socket", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.verifyClientsSocket = v; return {}; }}},
      {"verify-client-url", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.verifyClientUrl = v; return {}; }}},
      {"verify-client-url-fail-open", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.verifyClientUrlFailOpen = *b; return {}; }}},
      {"workers", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 1 || *i > 256) return makeError("workers must be 1..256");
         o.workers = *i; return {}; }}},
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
  if (o.control.empty()) return makeError("--control is required: mesh-helper runs under derpd");
  if (!o.chrootDir.empty()) {
    return makeError("--chroot is not supported: mesh-helper needs the resolver's files and tailscaled's socket");
  }
  if (o.verifyClients && o.verifyClientsSocket.empty()) return makeError("--verify-clients-socket is empty");
  return o;
}

std::string usage() {
  return R"(usage: mesh-helper [flags]

mesh-helper is derpd's outward-facing helper: it resolves the -mesh-with
hosts for derp-worker (whose chroot has no resolver) and answers derp-worker's
client admission questions (PROTOCOL.md §5.9) by asking the local tailscaled
and/or an admission controller. derpd starts it; it does not run on its own.

  -mesh-with HOSTS      comma-separated hosts (name or name:port); resolved
                        at start and every 60 s, sent to derp-worker on change
  -verify-clients       admit only node keys the local tailscaled knows
                        (GET /localapi/v0/whois?addr=nodekey:... on its socket)
  --verify-clients-socket PATH   tailscaled's LocalAPI socket
                        (default /var/run/tailscale/tailscaled.sock)
  -verify-client-url URL   POST {"NodePublic":...,"Source":...} here (5 s
                        timeout); 200 with {"Allow":true} admits
  -verify-client-url-fail-open=BOOL   admit when the URL cannot be reached
                        (default true)
  --workers N           questions answered at once (default 8)
  --log-level LEVEL     trace, debug, info (default), warn, error
  -version              print the version and exit

Set by derpd:
  --control ipc://PATH  derpd's control socket (required)
  --user NAME           when root: drop to this user
  --seccomp=false       no seccomp system call filter after the drop (debugging)
  -h, --help            this text
)";
}

}  // namespace derpd::mesh
