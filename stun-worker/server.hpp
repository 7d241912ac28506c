// stun-worker's server: one single-threaded epoll loop over the STUN UDP
// sockets, answering Tailscale binding requests in batches (recvmmsg /
// sendmmsg), plus hooks for other fds and a periodic tick so that main can
// put the signalfd, and later the control-plane socket and metric reports,
// into the same loop.
// Included by stun-worker only (unprivileged, after the sandbox).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ipc/messages.hpp"
#include "common/util/result.hpp"

namespace derpd::stun_worker {

// derper's counters (PROTOCOL.md §9). Owned by the loop thread.
struct Counters {
  uint64_t success = 0;     // answers sent
  uint64_t notStun = 0;     // datagrams that are not a Tailscale binding request (truncated ones too)
  uint64_t writeError = 0;  // answers that could not be sent (EAGAIN included: dropped, never waited for)
  uint64_t readError = 0;   // failed reads (each pauses that socket for 1 s)
  uint64_t ipv4 = 0;        // valid requests from IPv4 sources (IPv4-mapped included)
  uint64_t ipv6 = 0;        // valid requests from IPv6 sources
};

// The counters under derper's names, all MetricType::Counter:
//   stun_requests   labels disposition="success" | "not_stun" | "write_error" | "read_error"
//   stun_addrfamily labels family="ipv4" | "ipv6"
std::vector<ipc::Metric> toMetrics(const Counters& c);

class Server {
 public:
  using Clock = std::chrono::steady_clock;
  // Gets the epoll events (EPOLLIN, EPOLLHUP, ...) of the fd.
  using FdCallback = std::function<void(uint32_t events)>;
  using TickCallback = std::function<void()>;

  // A failed read pauses that socket for this long (derper sleeps 1 s); the
  // loop, the other sockets and the signals carry on meanwhile.
  static constexpr std::chrono::milliseconds kReadErrorBackoff{1000};
  // Datagrams per recvmmsg/sendmmsg and bytes per datagram. A longer
  // datagram arrives with MSG_TRUNC and is counted not_stun.
  static constexpr size_t kBatch = 64;
  static constexpr size_t kDatagramMax = 2048;
  // recvmmsg calls per socket per wakeup, so one busy socket cannot starve
  // the others or the hook fds (epoll is level-triggered: it comes back).
  static constexpr int kBatchesPerWakeup = 16;

  // Takes ownership of the bound UDP sockets (closed by the destructor).
  // Sockets bound to a wildcard address get IP_PKTINFO / IPV6_RECVPKTINFO so
  // that each answer leaves from the address the request was sent to.
  static Result<std::unique_ptr<Server>> create(std::vector<int> udpFds);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // ---- Extension points (all callbacks run on the loop thread) ----
  // Watches `fd` (level-triggered EPOLLIN); cb gets the events. The fd stays
  // the caller's: close it only after removeFd(). Adding an fd again replaces
  // its callback.
  Result<void> addFd(int fd, FdCallback cb);
  // Stops watching fd. Safe from any callback, also fd's own.
  void removeFd(int fd);
  // cb runs every `interval`, the first time one interval after run() starts
  // (or after this call, when the loop is running). Replaces an earlier tick;
  // an interval <= 0 removes it. A late tick is not repeated to catch up.
  void setTick(std::chrono::milliseconds interval, TickCallback cb);

  // Serves until stop() (from a callback). Fails only if epoll itself does.
  Result<void> run();
  void stop() { stopping_ = true; }

  const Counters& counters() const { return counters_; }
  std::vector<ipc::Metric> metrics() const { return toMetrics(counters_); }
  // The sockets' bound addresses ("127.0.0.1:3478", "[::1]:3478"), in order.
  std::vector<std::string> addresses() const;

 private:
  struct Socket {
    int fd = -1;
    int family = 0;            // AF_INET / AF_INET6
    bool pktinfo = false;      // answers carry the request's destination as source
    bool paused = false;       // after a read error, until resumeAt
    Clock::time_point resumeAt{};
  };
  struct Hook {
    std::shared_ptr<FdCallback> cb;  // copied out before a call: cb may replace itself
    bool removed = false;            // erased at the end of the loop iteration
  };
  struct Batch;  // recvmmsg/sendmmsg arrays, allocated once

  Server();
  void onReadable(size_t index);
  // One recvmmsg + sendmmsg round; false when the socket has nothing more.
  bool serveBatch(Socket& s);
  void sendAnswers(Socket& s, unsigned n);
  void pause(size_t index, int err);
  void resumeDue(Clock::time_point now);
  int waitTimeoutMs(Clock::time_point now) const;

  int epfd_ = -1;
  std::vector<Socket> sockets_;
  std::map<int, Hook> hooks_;
  std::unique_ptr<Batch> batch_;
  Counters counters_;
  std::chrono::milliseconds tickInterval_{0};
  TickCallback tick_;
  Clock::time_point nextTick_{};
  bool running_ = false;
  bool stopping_ = false;
};

}  // namespace derpd::stun_worker
