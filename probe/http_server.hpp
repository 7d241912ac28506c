// derpd-probe's HTTP side in daemon mode (POCO's HTTPServer; this is no data
// plane): "/" the status page, /healthz, /metrics and /debug/varz the
// Prometheus text, /debug/probe-run?name=… to run one probe now. /debug/
// answers loopback and Tailscale addresses only, as derpprobe's tsweb does.
// Runs unprivileged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/util/result.hpp"
#include "probe/prober.hpp"

namespace Poco::Net {
class HTTPServer;
}

namespace derpd::probe {

class StatusServer {
 public:
  // `listen`: "host:port", ":port" (every address) or "[v6]:port"; port 0
  // picks a free one.
  static Result<std::unique_ptr<StatusServer>> start(const std::string& listen, Prober& prober);
  ~StatusServer();
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  // The address it listens on, with the real port ("127.0.0.1:8030").
  const std::string& address() const { return address_; }

 private:
  StatusServer() = default;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  std::string address_;
};

// tsweb's rule for /debug/ without a debug key: loopback, or a Tailscale
// address (100.64.0.0/10 but 100.115.92.0/23, fd7a:115c:a1e0::/48).
bool debugAllowedFrom(const std::string& ip);

}  // namespace derpd::probe
