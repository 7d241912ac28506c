#include "options.hpp"

#include <cstdint>
#include <functional>
#include <map>

#include "common/config/go_flags.hpp"
#include "common/net/dns_client.hpp"

namespace derpd::worker {

namespace {

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = [] {
    config::GoFlagTable<Options> t = {
      {"a", {false, [](Options& o, const std::string& v) -> Result<void> { o.addr = v; o.addrSet = true; return {}; }}},
      {"dev", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.dev = *b; return {}; }}},
      {"c", {false, [](Options& o, const std::string& v) -> Result<void> { o.configPath = v; return {}; }}},
      {"certmode", {false, [](Options& o, const std::string& v) -> Result<void> { o.certMode = v; return {}; }}},
      {"certdir", {false, [](Options& o, const std::string& v) -> Result<void> { o.certDir = v; return {}; }}},
      {"hostname", {false, [](Options& o, const std::string& v) -> Result<void> { o.hostname = v; return {}; }}},
      {"http-port", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error());
         if (*i < -1 || *i > 65535) return makeError("port out of range");
         o.httpPort = *i; return {}; }}},
      {"mesh-psk-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.meshPskFile = v; return {}; }}},
      {"debug-key-file", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.debugKeyFile = v; o.debugKeyFileSet = true; return {}; }}},
      {"derp", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.derpEnabled = *b; return {}; }}},
      {"threads", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error());
         if (*i < 0 || *i > 256) return makeError("threads must be 0..256");
         o.threads = *i; return {}; }}},
      {"drain-timeout", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto d = config::parseGoDuration(v);
         if (!d || d->count() < 0) return makeError("invalid duration \"" + v + "\"");
         o.drainTimeout = std::chrono::duration_cast<std::chrono::milliseconds>(*d); return {}; }}},
      {"accept-connection-limit", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto f = config::parseGoFloat(v);
         if (!f || *f < 0) return makeError("want connections per second (>= 0, +Inf for no limit)");
         o.acceptConnectionLimit = *f; return {}; }}},
      {"accept-connection-burst", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::parseGoInt(v);
         if (!i || *i < 0) return makeError("want a burst size >= 0");
         o.acceptConnectionBurst = *i; return {}; }}},
      {"max-connections", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::parseGoInt(v);
         if (!i || *i < 0) return makeError("want a number >= 0 (0: no cap)");
         o.maxConnections = *i; return {}; }}},
      {"max-handshakes", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::parseGoInt(v);
         if (!i || *i < 0) return makeError("want a number >= 0 (0: no cap)");
         o.maxHandshakes = *i; return {}; }}},
      {"listen-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd"); o.listenFd = *i; return {}; }}},
      {"port80-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd"); o.port80Fd = *i; return {}; }}},
      {"key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd"); o.keyFd = *i; return {}; }}},
      {"bootstrap-dns-names", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.bootstrapDnsNames = v; return {}; }}},
      {"unpublished-bootstrap-dns-names", {false, [](Options& o, const std::string& v) -> Result<void> {
         o.unpublishedBootstrapDnsNames = v; return {}; }}},
      {"bootstrap-dns-server", {false, [](Options& o, const std::string& v) -> Result<void> {
         if (!v.empty()) {
           if (auto s = net::parseDnsServer(v); !s) return makeError(s.error());
         }
         o.bootstrapDnsServer = v; return {}; }}},
      {"tls-own-records", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.tlsOwnRecords = *b; return {}; }}},
      {"tls-from-control", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.tlsFromControl = *b; return {}; }}},
      {"mesh-key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i || *i < 0) return makeError("bad fd"); o.meshKeyFd = *i; return {}; }}},
      {"mesh-with", {false, [](Options& o, const std::string& v) -> Result<void> { o.meshWith = v; return {}; }}},
      {"mesh-ca-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.meshCaFile = v; return {}; }}},
      {"mesh-peers-from-control", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.meshPeersFromControl = *b; return {}; }}},
      {"verify-via-control", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.verifyViaControl = *b; return {}; }}},
      {"verify-client-url-fail-open", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = config::flagBool(v); if (!b) return makeError(b.error()); o.verifyFailOpen = *b; return {}; }}},
      {"stall-loop-for-test", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = config::flagInt(v); if (!i) return makeError(i.error());
         if (*i <= 0 || *i > 3600 * 1000) return makeError("want a positive number of milliseconds");
         o.stallLoopForTestMs = int(*i); return {}; }}},
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
  if (o.dev && !o.addrSet) o.addr = ":3340";
  if (o.certMode != "manual" && o.certMode != "letsencrypt") {
    return makeError("unsupported -certmode \"" + o.certMode + "\" (manual or letsencrypt)");
  }
  if (o.tlsFromControl && o.control.empty()) return makeError("--tls-from-control needs --control");
  if (o.meshPeersFromControl && o.control.empty()) return makeError("--mesh-peers-from-control needs --control");
  if (o.verifyViaControl && o.control.empty()) return makeError("--verify-via-control needs --control");
  if (!o.meshWith.empty() && o.meshPskFile.empty() && o.meshKeyFd < 0) {
    return makeError("-mesh-with requires -mesh-psk-file");
  }
  return o;
}

std::string usage() {
  return R"(usage: derp-worker [flags]

derp-worker is derpd's DERP relay process: TLS, HTTP and the DERP relay.
It normally runs under derpd; it also runs on its own with derper's flags.

  -a ADDR               listen address (default ":443"; ":3340" with -dev).
                        TLS when the port is 443 or -certmode is manual.
  -dev                  development mode: plain HTTP on :3340, a fresh random key
  -c FILE               derper key file {"PrivateKey":"privkey:..."}; created
                        (0600) when missing; required unless -dev
  -certmode MODE        manual (DIR/HOST.crt + DIR/HOST.key, read once at
                        start); letsencrypt needs derpd's cert-agent and is
                        refused here
  -certdir DIR          directory of the manual certificate files
  -hostname NAME        TLS host name; certificate file stem (default derp.tailscale.com)
  -http-port N          port-80 listener in TLS mode (default 80; -1 off)
  -mesh-psk-file FILE   mesh key (64+ hex digits): peers presenting it may
                        send WatchConns, ForwardPacket and ClosePeer
  -mesh-with HOSTS      comma-separated hosts (name or name:port) of this
                        region's other DERP servers: each is dialled as
                        https://HOST/derp with this server's key and the mesh
                        key, and learns which clients are there (WatchConns);
                        packets for them are forwarded (ForwardPacket). An
                        entry that turns out to be this server is skipped.
                        Names are resolved with the system resolver here;
                        under derpd, by mesh-helper. Needs -mesh-psk-file.
  --mesh-ca-file FILE   PEM CA certificates that verify mesh peers (default:
                        the system's, or $SSL_CERT_FILE); read at start
  -derp=BOOL            serve DERP on /derp (default true; false answers 404)
  -bootstrap-dns-names NAMES   comma-separated names whose addresses
                        /bootstrap-dns publishes (resolved at start and every 10 min)
  -unpublished-bootstrap-dns-names NAMES   "name" or "name/txtname" entries
                        served only to ?q=name (txtname: a TXT record 0-100,
                        the percentage of clients that get the answer)
  --bootstrap-dns-server IP[:PORT]   DNS server for those names (default: the
                        first nameserver of /etc/resolv.conf; /etc/hosts first)
  --threads N           event loops (default: number of CPUs)
  -accept-connection-limit R   accept at most R connections per second on the
                        main listener (default +Inf); beyond it a connection
                        is accepted and closed at once (as derper)
  -accept-connection-burst N   burst size of that limit (default 2^63-1)
  --max-connections N   accepted connections alive at once (default 50000;
                        0: no cap); beyond it new ones are closed at once
  --max-handshakes N    of those, connections still in TLS, HTTP or the DERP
                        handshake (default 10000; 0: no cap); beyond it the
                        oldest such connection is closed for the new one
  --drain-timeout D     on SIGTERM/SIGINT: stop accepting, send clients the
                        Restarting frame, wait up to D for them to go (default 5s)
  --debug-key-file FILE /debug/ key: a GET with ?debugkey=<the file's content,
                        white space trimmed> may see /debug/ from anywhere,
                        even through a proxy (X-Forwarded-For). Read once at
                        start, before the sandbox: an unreadable or empty
                        file is an error; a new key needs a restart.
                        Default: $TS_DEBUG_KEY_PATH when set (as derper; a
                        bad file then only disables the key); "" for none.
                        Without a key, /debug/ answers loopback and Tailscale
                        (100.64.0.0/10 but 100.115.92.0/23, fd7a:115c:a1e0::/48)
                        peers, and the one address in $TS_ALLOW_DEBUG_IP.
  --log-level LEVEL     trace, debug, info (default), warn, error
  -version              print the version and exit

Set by derpd when it runs derp-worker (inherited descriptors, sandbox):
  --listen-fd N, --port80-fd N   listening sockets to use instead of binding
  --key-fd N            read the key file's contents from this descriptor
  --mesh-key-fd N       read the mesh key from this descriptor
  --control ipc://PATH  derpd's control socket (ZeroMQ): Hello, Ready, Reload,
                        Shutdown, log reopen, metrics for /debug/varz
  --mesh-peers-from-control   dial the -mesh-with addresses derpd's
                        mesh-helper resolves (MeshPeers), not the resolver's
  --verify-via-control  ask derpd's mesh-helper whether each client (not mesh
                        peers) may connect (-verify-clients,
                        -verify-client-url); the connection waits, its loop
                        does not
  -verify-client-url-fail-open=BOOL   with --verify-via-control: admit the
                        client when mesh-helper cannot answer (default true)
  --stall-loop-for-test MS
                        tests only: once ready, event loop 0 blocks for MS ms
  --tls-own-records=false  keep OpenSSL for every TLS connection's records
                        (default true: after a TLS 1.3 handshake OpenSSL's
                        connection object is freed and derp-worker seals and
                        opens the records itself, ~10 kB less per client)
  --tls-from-control    serve TLS with the certificates and ACME challenges
                        derpd's cert-agent sends over the control socket
                        (handshakes fail until the first certificate arrives)
  --user NAME           when root: drop to this user after loading
  --chroot DIR          when root: chroot into this empty directory
  --seccomp=false       no seccomp system call filter after the drop (debugging)
  -h, --help            this text
)";
}

}  // namespace derpd::worker
