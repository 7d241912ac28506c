// stun-worker's end of derpd's control plane (docs/IPC.md): the handlers for
// what the supervisor sends and the periodic MetricsReport. Everything runs
// on stun-worker's one thread, from the server's epoll loop (the channel's
// fd is a hook of the loop, the report a tick). Included by stun-worker's
// main only.
#pragma once

#include <chrono>

#include "common/ipc/channel.hpp"
#include "common/ipc/messages.hpp"
#include "server.hpp"

namespace derpd::stun_worker {

class Control {
 public:
  static constexpr std::chrono::milliseconds kReportInterval{2000};

  Control(ipc::Channel& channel, Server& server) : ch_(channel), server_(server) {}

  // Adds the channel to the server's loop, sends Ready and starts the
  // reports. A peer fault later logs and exits 1 (derpd restarts us).
  Result<void> attach();

  Result<void> onReload(ipc::Role from, const ipc::Reload& msg);
  Result<void> onShutdown(ipc::Role from, const ipc::Shutdown& msg);
  Result<void> onLogReopen(ipc::Role from, const ipc::LogReopen& msg);

 private:
  void poll();
  void report();

  ipc::Channel& ch_;
  Server& server_;
};

}  // namespace derpd::stun_worker
