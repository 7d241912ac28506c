// One event loop per thread (epoll, level-triggered). Each connection belongs
// to exactly one loop and is only touched by that loop's thread, except for
// its send queues (guarded by the connection's own mutex).
// Included by derp-worker only.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/util/result.hpp"
#include "metrics.hpp"

namespace derpd::worker {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

class Server;
class Conn;

// Anything registered with epoll.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void onIo(uint32_t events) = 0;
};

class Loop {
 public:
  Loop(Server& server, int index);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  Result<void> init();  // epoll + eventfd
  void run();           // until stop(); on the loop thread
  void stop();          // any thread

  int index() const { return index_; }
  Server& server() { return server_; }
  LoopStats& stats() { return stats_; }
  const LoopStats& stats() const { return stats_; }
  TimePoint now() const { return now_; }
  // Any thread. Before run() has begun, false everywhere (post() then
  // wakes the loop, which is harmless).
  bool inLoopThread() const {
    return std::this_thread::get_id() == threadId_.load(std::memory_order_relaxed);
  }

  // epoll registration (loop thread).
  bool addFd(int fd, uint32_t events, IoHandler* h);
  bool modFd(int fd, uint32_t events, IoHandler* h);
  void delFd(int fd);
  // Takes `fd` out of epoll until `until`, then adds it back with `events`
  // (loop thread): a listener that fails with EMFILE stays readable, and
  // level-triggered epoll would wake the loop for it without end. delFd()
  // of a paused fd cancels the resume.
  void pauseFd(int fd, uint32_t events, IoHandler* h, TimePoint until);

  // Takes ownership of a new connection (loop thread).
  Conn* adopt(std::unique_ptr<Conn> c);
  // Destroys the connection at the end of this iteration (loop thread).
  void deferDelete(Conn* c);

  // Arms (or re-arms) the connection's single timer (loop thread). A
  // connection keeps one wake-up time: the earliest of its deadlines.
  void armTimer(Conn* c, TimePoint when);

  // Any thread: the connection has new queued output; the loop will call
  // Conn::onScheduled() once per batch. One eventfd write per batch.
  void schedule(Conn* c);
  // Any thread: run fn on the loop thread (rare control operations).
  void post(std::function<void()> fn);

  // Scratch buffer for reads (loop thread), shared by all its connections so
  // that an idle connection holds no read buffer.
  uint8_t* readBuf() { return readBuf_.get(); }
  static constexpr size_t kReadBufSize = 256 * 1024;

  size_t connCount() const { return conns_.size(); }
  // The live connection with this number on this loop, or null (loop thread).
  Conn* findConn(uint64_t connNum);
  // Closes every connection (loop thread; used at shutdown).
  void closeAll();
  // Graceful stop (loop thread): stop watching `listenFds`, then drain every
  // connection (Conn::drain).
  void drainAll(const std::vector<int>& listenFds, uint32_t reconnectInMs, uint32_t tryForMs);
  // Connections alive on this loop; readable from any thread.
  size_t liveConns() const { return live_.load(std::memory_order_relaxed); }
  // Iterations of run() so far (any thread): derpd's watchdog sees a loop
  // that stopped making progress.
  uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }
  // max-handshakes bookkeeping (loop thread): a connection starts or ends
  // its pending time (Conn::markPending), and the oldest pending one on
  // this loop can be closed to make room. False when this loop has none.
  void notePending(Conn* c);
  void leftPending();
  bool evictOldestPending();

 private:
  // malloc_trim once kTrimAfterFrees connections were freed, at most once
  // per kTrimInterval; after fewer, once per kTrimIntervalFew (loop thread).
  static constexpr size_t kTrimAfterFrees = 256;
  static constexpr std::chrono::seconds kTrimInterval{2};
  static constexpr std::chrono::seconds kTrimIntervalFew{10};
  void maybeTrimHeap();
  void wake();
  void drainInbox();
  void runTimers();
  void resumePaused();
  int nextTimeoutMs() const;

  Server& server_;
  const int index_;
  int epfd_ = -1;
  int evfd_ = -1;
  // Set by run() on the loop thread, read by post() on any (a mesh address
  // can be posted by the control thread before the loop has started).
  std::atomic<std::thread::id> threadId_{};
  std::atomic<bool> stopping_{false};
  TimePoint now_;
  LoopStats stats_;
  std::unique_ptr<uint8_t[]> readBuf_;

  // Owned by the loop thread.
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;  // by connNum
  std::vector<Conn*> pendingDelete_;
  // Pending connections in accept order (connNums; entries of connections
  // that stopped pending are skipped and compacted away). Loop thread.
  std::deque<uint64_t> pendingOrder_;
  size_t pendingHere_ = 0;
  size_t freedSinceTrim_ = 0;
  TimePoint lastTrim_{};
  struct TimerEntry {
    TimePoint when;
    uint64_t connNum;
    uint64_t seq;
    bool operator>(const TimerEntry& o) const { return when > o.when; }
  };
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timers_;
  struct PausedFd {
    int fd;
    uint32_t events;
    IoHandler* handler;
    TimePoint until;
  };
  std::vector<PausedFd> paused_;  // loop thread; a listener or two at most

  // Cross-thread inbox, guarded by inboxMu_.
  std::mutex inboxMu_;
  std::vector<Conn*> inbox_;
  std::vector<std::function<void()>> tasks_;
  std::atomic<bool> wakePending_{false};
  std::atomic<size_t> live_{0};  // mirrors conns_.size()
  std::atomic<uint64_t> ticks_{0};  // written by the loop thread only
};

}  // namespace derpd::worker
