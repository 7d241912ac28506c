// A child's end of the control plane: connect to the supervisor's ROUTER,
// finish the Hello handshake before the sandbox is entered (connect() and the
// handshake need the socket path, which a chroot hides), then serve the
// channel from the child's own event loop.
//
//   zmq::context_t ctx(1);
//   auto ch = ipc::connectToSupervisor(ctx, Role::StunWorker, endpoint, 10s);
//   ... enterSandbox, start serving ...
//   ch->send(Role::Supervisor, ipc::Ready{getpid()});
//   loop: epoll on ch->fd() (EPOLLIN) and on every wake-up and after every
//         send: auto r = ch->poll(handler); if (r.fault) exit(1).
//
// Also: armParentDeathSignal(), which a child calls after its privilege drop
// (a uid change clears PR_SET_PDEATHSIG) so it never outlives derpd.
// Included by every child role, before and after its privilege drop.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "common/ipc/channel.hpp"
#include "common/ipc/role.hpp"
#include "common/util/result.hpp"

namespace derpd::ipc {

// Channel::connect, then waits up to `timeout` for the supervisor's Hello.
// Nothing after the Hello is read: those messages stay queued for the
// caller's poll(). An error names the endpoint and what went wrong (no answer,
// a peer fault in the handshake).
Result<std::unique_ptr<Channel>> connectToSupervisor(zmq::context_t& ctx, Role self,
                                                     const std::string& endpoint,
                                                     std::chrono::milliseconds timeout);

// Reads everything queued on a child's channel (in batches, so it returns
// only when nothing is left), dispatching to `handler`. A peer fault is
// returned as an error with PeerFault::describe(): log it and exit 1.
Result<void> pollChild(Channel& ch, const Handler& handler);
// pollChild for a child's control loop: a peer fault is logged ("exiting so
// that derpd restarts <role>") and ends the process with status 1. Only
// derpd can write to the socket, so a fault is its bug or a forgery.
void pollChildOrExit(Channel& ch, const Handler& handler, std::string_view role);

// Reads every pending signal from a signalfd of blockChildSignals()' set.
// SIGHUP is logged as ignored (reloads come over the control socket); the
// return value is the first SIGTERM/SIGINT read ("SIGTERM"/"SIGINT"), or
// nullptr when none was.
const char* readStopSignal(int sigFd);

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and every thread
// it starts afterwards, libzmq's included) and ignores SIGPIPE. Call first in
// main; the returned set is for sigwait() or signalfd().
sigset_t blockChildSignals();

// PR_SET_PDEATHSIG(SIGTERM), then checks the parent is still `parent` (the
// pid seen at start): an error when it already died, so the caller exits.
Result<void> armParentDeathSignal(pid_t parent);

}  // namespace derpd::ipc
