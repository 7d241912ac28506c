// The systemd service notification protocol (sd_notify(3)), without
// libsystemd: one datagram of "KEY=value\n" lines to the AF_UNIX socket named
// by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). A no-op
// where the variable is unset (not started by systemd as Type=notify).
// Included by derpd (the supervisor) only; its children never notify.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace derpd::proc {

class Notifier {
 public:
  // Reads $NOTIFY_SOCKET once, then unsets it so that the children do not
  // inherit it.
  static Notifier fromEnvironment();
  Notifier() = default;

  bool enabled() const { return !socket_.empty(); }
  // Sends `state` (e.g. "READY=1\nSTATUS=serving"). False when disabled or
  // when the send failed (systemd then learns nothing; derpd goes on).
  bool notify(std::string_view state) const;

  // CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC=.
  static uint64_t monotonicUsec();

 private:
  std::string socket_;
};

}  // namespace derpd::proc
