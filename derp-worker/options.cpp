#include "options.hpp"

#include <cstdint>
#include <functional>
#include <map>

#include "common/config/config.hpp"

namespace derpd::worker {

namespace {

// Go's strconv.ParseBool / ParseInt, shared with derpd's config parser.
Result<bool> parseBool(const std::string& v) {
  auto b = config::parseGoBool(v);
  if (!b) return makeError("invalid boolean value \"" + v + "\"");
  return *b;
}

Result<int> parseInt(const std::string& v) {
  auto i = config::parseGoInt(v);
  if (!i || *i < INT32_MIN || *i > INT32_MAX) return makeError("invalid integer value \"" + v + "\"");
  return int(*i);
}

struct Flag {
  bool isBool;
  std::function<Result<void>(Options&, const std::string&)> set;
};

const std::map<std::string, Flag>& flags() {
  static const std::map<std::string, Flag> kFlags = {
      {"a", {false, [](Options& o, const std::string& v) -> Result<void> { o.addr = v; o.addrSet = true; return {}; }}},
      {"dev", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = parseBool(v); if (!b) return makeError(b.error()); o.dev = *b; return {}; }}},
      {"c", {false, [](Options& o, const std::string& v) -> Result<void> { o.configPath = v; return {}; }}},
      {"certmode", {false, [](Options& o, const std::string& v) -> Result<void> { o.certMode = v; return {}; }}},
      {"certdir", {false, [](Options& o, const std::string& v) -> Result<void> { o.certDir = v; return {}; }}},
      {"hostname", {false, [](Options& o, const std::string& v) -> Result<void> { o.hostname = v; return {}; }}},
      {"http-port", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i) return makeError(i.error());
         if (*i < -1 || *i > 65535) return makeError("port out of range");
         o.httpPort = *i; return {}; }}},
      {"mesh-psk-file", {false, [](Options& o, const std::string& v) -> Result<void> { o.meshPskFile = v; return {}; }}},
      {"derp", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = parseBool(v); if (!b) return makeError(b.error()); o.derpEnabled = *b; return {}; }}},
      {"threads", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i) return makeError(i.error());
         if (*i < 0 || *i > 256) return makeError("threads must be 0..256");
         o.threads = *i; return {}; }}},
      {"log-level", {false, [](Options& o, const std::string& v) -> Result<void> {
         if (v != "trace" && v != "debug" && v != "info" && v != "warn" && v != "error")
           return makeError("log level must be trace, debug, info, warn or error");
         o.logLevel = v; return {}; }}},
      {"drain-timeout", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto d = config::parseGoDuration(v);
         if (!d || d->count() < 0) return makeError("invalid duration \"" + v + "\"");
         o.drainTimeout = std::chrono::duration_cast<std::chrono::milliseconds>(*d); return {}; }}},
      {"listen-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i || *i < 0) return makeError("bad fd"); o.listenFd = *i; return {}; }}},
      {"port80-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i || *i < 0) return makeError("bad fd"); o.port80Fd = *i; return {}; }}},
      {"key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i || *i < 0) return makeError("bad fd"); o.keyFd = *i; return {}; }}},
      {"mesh-key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
         auto i = parseInt(v); if (!i || *i < 0) return makeError("bad fd"); o.meshKeyFd = *i; return {}; }}},
      {"control", {false, [](Options& o, const std::string& v) -> Result<void> {
         if (v.rfind("ipc://", 0) != 0) return makeError("want ipc://PATH");
         o.control = v; return {}; }}},
      {"user", {false, [](Options& o, const std::string& v) -> Result<void> { o.user = v; return {}; }}},
      {"chroot", {false, [](Options& o, const std::string& v) -> Result<void> { o.chrootDir = v; return {}; }}},
      {"version", {true, [](Options& o, const std::string& v) -> Result<void> {
         auto b = parseBool(v); if (!b) return makeError(b.error()); o.version = *b; return {}; }}},
      {"help", {true, [](Options& o, const std::string& v) -> Result<void> { o.help = true; return {}; }}},
      {"h", {true, [](Options& o, const std::string& v) -> Result<void> { o.help = true; return {}; }}},
  };
  return kFlags;
}

}  // namespace

Result<Options> parseOptions(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--" ) {
      if (i + 1 < args.size()) return makeError("unexpected argument \"" + args[i + 1] + "\"");
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') return makeError("unexpected argument \"" + arg + "\"");
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    if (body.empty() || body[0] == '-' || body[0] == '=') return makeError("bad flag syntax: " + arg);
    std::string name = body, value;
    bool hasValue = false;
    if (auto eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      hasValue = true;
    }
    auto it = flags().find(name);
    if (it == flags().end()) return makeError("flag provided but not defined: -" + name);
    if (!hasValue) {
      if (it->second.isBool) {
        value = "true";
      } else {
        if (i + 1 >= args.size()) return makeError("flag needs an argument: -" + name);
        value = args[++i];
      }
    }
    if (auto r = it->second.set(o, value); !r) {
      return makeError(r.error() + " for flag -" + name);
    }
  }
  if (o.dev && !o.addrSet) o.addr = ":3340";
  if (o.certMode != "manual" && o.certMode != "letsencrypt") {
    return makeError("unsupported -certmode \"" + o.certMode + "\" (manual or letsencrypt)");
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
  -certmode MODE        manual (DIR/HOST.crt + DIR/HOST.key); letsencrypt
                        needs derpd's cert-agent and is refused here
  -certdir DIR          directory of the manual certificate files
  -hostname NAME        TLS host name; certificate file stem (default derp.tailscale.com)
  -http-port N          port-80 listener in TLS mode (default 80; -1 off)
  -mesh-psk-file FILE   mesh key (64+ hex digits): peers presenting it may
                        send WatchConns, ForwardPacket and ClosePeer
  -derp=BOOL            serve DERP on /derp (default true; false answers 404)
  --threads N           event loops (default: number of CPUs)
  --drain-timeout D     on SIGTERM/SIGINT: stop accepting, send clients the
                        Restarting frame, wait up to D for them to go (default 5s)
  --log-level LEVEL     trace, debug, info (default), warn, error
  -version              print the version and exit

Set by derpd when it runs derp-worker (inherited descriptors, sandbox):
  --listen-fd N, --port80-fd N   listening sockets to use instead of binding
  --key-fd N            read the key file's contents from this descriptor
  --mesh-key-fd N       read the mesh key from this descriptor
  --control ipc://PATH  derpd's control socket (ZeroMQ): Hello, Ready, Reload,
                        Shutdown, log reopen, metrics for /debug/varz
  --user NAME           when root: drop to this user after loading
  --chroot DIR          when root: chroot into this empty directory
  -h, --help            this text
)";
}

}  // namespace derpd::worker
