// derpd: the supervisor process (see supervisor.hpp). Reads derper's flags
// and /etc/derpd/derpd.conf, opens the privileged resources, runs the roles.
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/config.hpp"
#include "common/log/log.hpp"
#include "common/proc/sandbox.hpp"
#include "common/util/version.hpp"
#include "supervisor.hpp"

using namespace derpd;

namespace {

// derpd's test-only flags (not config keys, not in --help), each taking a
// number of milliseconds and passed on to one role's first start.
struct TestFlag {
  std::string_view name;
  int supervisor::TestHooks::*field;
};
constexpr TestFlag kTestFlags[] = {
    {"stun-forbidden-syscall-after-for-test", &supervisor::TestHooks::stunForbiddenSyscallAfterMs},
    {"stall-derp-loop-for-test", &supervisor::TestHooks::stallDerpLoopForTestMs},
};

// Takes derpd's test-only flags out of args (they are not config keys, so
// loadConfig and the reloads never see them): -name MS, -name=MS, --name ...
Result<supervisor::TestHooks> takeTestFlags(std::vector<std::string>& args) {
  supervisor::TestHooks hooks;
  for (size_t i = 0; i < args.size();) {
    std::string_view body = args[i];
    if (body == "--") break;
    if (body.rfind("--", 0) == 0) {
      body.remove_prefix(2);
    } else if (body.rfind('-', 0) == 0) {
      body.remove_prefix(1);
    }
    const TestFlag* flag = nullptr;
    std::string_view rest;
    for (const TestFlag& f : kTestFlags) {
      if (body.size() != args[i].size() && body.rfind(f.name, 0) == 0) {
        rest = body.substr(f.name.size());
        if (rest.empty() || rest[0] == '=') flag = &f;
      }
    }
    if (!flag) {
      ++i;
      continue;
    }
    std::string value;
    size_t take = 1;
    if (rest.empty()) {
      if (i + 1 >= args.size()) return makeError("flag needs an argument: -" + std::string(flag->name));
      value = args[i + 1];
      take = 2;
    } else {
      value = std::string(rest.substr(1));
    }
    auto ms = config::parseGoInt(value);
    if (!ms || *ms <= 0 || *ms > 3600 * 1000)
      return makeError("invalid value \"" + value + "\" for flag -" + std::string(flag->name));
    hooks.*(flag->field) = int(*ms);
    args.erase(args.begin() + long(i), args.begin() + long(i + take));
  }
  return hooks;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto hooks = takeTestFlags(args);
  if (!hooks) {
    std::fprintf(stderr, "derpd: %s\n(run derpd --help for usage)\n", hooks.error().c_str());
    return 2;
  }
  // The command line alone first: its errors exit 2, as Go's flag package
  // does for derper. Everything after that is a configuration error (78,
  // EX_CONFIG), which derpd.service does not restart on.
  if (auto f = config::checkFlags(args); !f) {
    std::fprintf(stderr, "derpd: %s\n(run derpd --help for usage)\n", f.error().c_str());
    return 2;
  }
  auto cfg = config::loadConfig(args);
  if (!cfg) {
    std::fprintf(stderr, "derpd: %s\n", cfg.error().c_str());
    return supervisor::kExitConfig;
  }
  if (cfg->help) {
    std::fputs(config::usage().c_str(), stdout);
    return 0;
  }
  if (cfg->version) {
    std::printf("derpd %s (%s)\n", DERPD_VERSION, gitRev());
    return 0;
  }
  if (auto v = config::validate(*cfg); !v) {
    std::fprintf(stderr, "derpd: %s\n", v.error().c_str());
    return supervisor::kExitConfig;
  }
  if (!cfg->logFile.empty()) {
    // A log file that cannot be opened at start is a configuration error
    // (later, a full disk or a failed reopen falls back to stderr).
    std::FILE* f = std::fopen(cfg->logFile.c_str(), "ae");
    if (!f) {
      std::fprintf(stderr, "derpd: %s: %s\n", config::describeSetting(*cfg, "log-file").c_str(), std::strerror(errno));
      return supervisor::kExitConfig;
    }
    std::fclose(f);
  }
  const log::Format format = log::resolveFormat(cfg->logFormat, !cfg->logFile.empty());
  log::init("derpd", cfg->logLevel, cfg->logFile, format);
  // The children write to a pipe to derpd: they take derpd's format.
  ::setenv(log::kFormatEnv, format == log::Format::Journal ? "journal" : "plain", 1);
  // The children inherit it (derp-worker holds a descriptor per client):
  // room for max-connections plus 1024 for everything else.
  const uint64_t want = cfg->maxConnections > 0 ? uint64_t(cfg->maxConnections) + 1024 : 0;
  if (auto n = proc::raiseFdLimit(want); !n) {
    LOG_WARN("file descriptor limit: {}", n.error());
  } else if (want > 0 && n->soft < want) {
    LOG_WARN("file descriptor limit {} (hard limit {}) is below max-connections ({}) + 1024: about {} clients "
             "fit; raise the hard limit (LimitNOFILE= in the unit, ulimit -Hn) or lower max-connections",
             n->soft, n->hard, cfg->maxConnections, n->soft > 1024 ? n->soft - 1024 : 0);
  }
  if (hooks->stunForbiddenSyscallAfterMs > 0)
    LOG_WARN("test hook: stun-worker makes a forbidden system call {} ms after it starts",
             hooks->stunForbiddenSyscallAfterMs);
  if (hooks->stallDerpLoopForTestMs > 0)
    LOG_WARN("test hook: derp-worker's event loop 0 stalls for {} ms once it is ready", hooks->stallDerpLoopForTestMs);
  supervisor::Supervisor sup(*cfg, args, *hooks);
  if (auto r = sup.prepare(); !r) {
    LOG_ERR("{}", r.error());
    return sup.prepareExitCode();
  }
  return sup.run();
}
