// Go `flag` package syntax for the role binaries' command lines (derpd's own
// command line goes through config.hpp): -x / --x, -x=v or -x v; a boolean
// takes a value only with '='; "--" ends the flags; errors read like Go's
// ("flag provided but not defined: -x"). Plus the flags every child role has.
// Included by the role binaries (derp-worker, stun-worker, ...).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config/config.hpp"
#include "common/util/result.hpp"
#include "common/util/version.hpp"

namespace derpd::config {

// Go's strconv.ParseBool / ParseInt (int32 range) with Go flag's messages.
inline Result<bool> flagBool(const std::string& v) {
  auto b = parseGoBool(v);
  if (!b) return makeError("invalid boolean value \"" + v + "\"");
  return *b;
}

inline Result<int> flagInt(const std::string& v) {
  auto i = parseGoInt(v);
  if (!i || *i < INT32_MIN || *i > INT32_MAX) return makeError("invalid integer value \"" + v + "\"");
  return int(*i);
}

template <typename Opts>
struct GoFlag {
  bool isBool;
  std::function<Result<void>(Opts&, const std::string&)> set;
};

template <typename Opts>
using GoFlagTable = std::map<std::string, GoFlag<Opts>>;

template <typename Opts>
Result<void> parseGoFlags(const std::vector<std::string>& args, const GoFlagTable<Opts>& flags, Opts& o) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
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
    auto it = flags.find(name);
    if (it == flags.end()) return makeError("flag provided but not defined: -" + name);
    if (!hasValue) {
      if (it->second.isBool) {
        value = "true";
      } else {
        if (i + 1 >= args.size()) return makeError("flag needs an argument: -" + name);
        value = args[++i];
      }
    }
    if (auto r = it->second.set(o, value); !r) return makeError(r.error() + " for flag -" + name);
  }
  return okResult();
}

// The flags of every child role: --log-level, --user, --chroot, --control,
// --seccomp, -version, -h/--help. Opts needs the members logLevel, user,
// chrootDir, control, seccomp, version and help.
template <typename Opts>
void addChildRoleFlags(GoFlagTable<Opts>& t) {
  t["log-level"] = {false, [](Opts& o, const std::string& v) -> Result<void> {
                      if (v != "trace" && v != "debug" && v != "info" && v != "warn" && v != "error")
                        return makeError("log level must be trace, debug, info, warn or error");
                      o.logLevel = v;
                      return okResult();
                    }};
  t["user"] = {false, [](Opts& o, const std::string& v) -> Result<void> {
                 o.user = v;
                 return okResult();
               }};
  t["chroot"] = {false, [](Opts& o, const std::string& v) -> Result<void> {
                   o.chrootDir = v;
                   return okResult();
                 }};
  t["control"] = {false, [](Opts& o, const std::string& v) -> Result<void> {
                    if (v.rfind("ipc://", 0) != 0) return makeError("want ipc://PATH");
                    o.control = v;
                    return okResult();
                  }};
  t["seccomp"] = {true, [](Opts& o, const std::string& v) -> Result<void> {
                    auto b = flagBool(v);
                    if (!b) return makeError(b.error());
                    o.seccomp = *b;
                    return okResult();
                  }};
  t["version"] = {true, [](Opts& o, const std::string& v) -> Result<void> {
                    auto b = flagBool(v);
                    if (!b) return makeError(b.error());
                    o.version = *b;
                    return okResult();
                  }};
  auto help = [](Opts& o, const std::string&) -> Result<void> {
    o.help = true;
    return okResult();
  };
  t["help"] = {true, help};
  t["h"] = {true, help};
}

// The start of a role binary's main(): a parse error (exit 2, with a hint),
// --help (usage on stdout, exit 0) or -version (exit 0). Returns the exit
// code when main should return at once, nullopt to carry on.
template <typename Opts>
std::optional<int> earlyExit(const char* prog, const Result<Opts>& opts, const std::function<std::string()>& usage) {
  if (!opts) {
    std::fprintf(stderr, "%s: %s\n(run %s --help for usage)\n", prog, opts.error().c_str(), prog);
    return 2;
  }
  if (opts->help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  if (opts->version) {
    std::printf("%s %s (%s)\n", prog, DERPD_VERSION, derpd::gitRev());
    return 0;
  }
  return std::nullopt;
}

}  // namespace derpd::config
