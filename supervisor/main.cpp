// derpd: the supervisor process (see supervisor.hpp). Reads derper's flags
// and /etc/derpd/derpd.conf, opens the privileged resources, runs the roles.
#include <cstdio>
#include <string>
#include <vector>

#include "common/config/config.hpp"
#include "common/log/log.hpp"
#include "common/proc/sandbox.hpp"
#include "supervisor.hpp"

using namespace derpd;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cfg = config::loadConfig(args);
  if (!cfg) {
    std::fprintf(stderr, "derpd: %s\n(run derpd --help for usage)\n", cfg.error().c_str());
    return 2;
  }
  if (cfg->help) {
    std::fputs(config::usage().c_str(), stdout);
    return 0;
  }
  if (cfg->version) {
    std::printf("derpd %s (%s)\n", DERPD_VERSION, DERPD_GIT_REV);
    return 0;
  }
  if (auto v = config::validate(*cfg); !v) {
    std::fprintf(stderr, "derpd: %s\n", v.error().c_str());
    return 2;
  }
  log::init("derpd", cfg->logLevel, cfg->logFile);
  // The children inherit it (derp-worker holds a descriptor per client).
  if (auto n = proc::raiseFdLimit(); !n) {
    LOG_WARN("file descriptor limit: {}", n.error());
  } else if (int64_t(*n) < cfg->maxConnections + 1024) {
    LOG_WARN("file descriptor limit {} is below max-connections ({}) + 1024: connections beyond it fail", *n,
             cfg->maxConnections);
  }
  supervisor::Supervisor sup(*cfg, args);
  if (auto r = sup.prepare(); !r) {
    LOG_ERR("{}", r.error());
    return 1;
  }
  return sup.run();
}
