#include "loop.hpp"

#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "client_conn.hpp"
#include "server.hpp"
#include "common/log/log.hpp"

namespace derpd::worker {

Loop::Loop(Server& server, int index)
    : server_(server), index_(index), now_(Clock::now()), readBuf_(new uint8_t[kReadBufSize]) {}

Loop::~Loop() {
  if (epfd_ >= 0) ::close(epfd_);
  if (evfd_ >= 0) ::close(evfd_);
}

Result<void> Loop::init() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return makeError(std::string("epoll_create1: ") + std::strerror(errno));
  evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) return makeError(std::string("eventfd: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the eventfd
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0)
    return makeError(std::string("epoll_ctl eventfd: ") + std::strerror(errno));
  return {};
}

bool Loop::addFd(int fd, uint32_t events, IoHandler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  return ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool Loop::modFd(int fd, uint32_t events, IoHandler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  return ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Loop::delFd(int fd) {
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  std::erase_if(paused_, [fd](const PausedFd& p) { return p.fd == fd; });
}

void Loop::pauseFd(int fd, uint32_t events, IoHandler* h, TimePoint until) {
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  std::erase_if(paused_, [fd](const PausedFd& p) { return p.fd == fd; });
  paused_.push_back({fd, events, h, until});
}

void Loop::resumePaused() {
  for (size_t i = 0; i < paused_.size();) {
    if (paused_[i].until <= now_) {
      const PausedFd p = paused_[i];
      paused_.erase(paused_.begin() + long(i));
      if (!addFd(p.fd, p.events, p.handler)) LOG_WARN("loop {}: epoll_ctl add {}: {}", index_, p.fd, std::strerror(errno));
      continue;
    }
    ++i;
  }
}

Conn* Loop::adopt(std::unique_ptr<Conn> c) {
  Conn* raw = c.get();
  conns_.emplace(raw->connNum(), std::move(c));
  live_.store(conns_.size(), std::memory_order_relaxed);
  return raw;
}

void Loop::deferDelete(Conn* c) { pendingDelete_.push_back(c); }

void Loop::notePending(Conn* c) {
  pendingOrder_.push_back(c->connNum());
  ++pendingHere_;
  server_.pendingConns().fetch_add(1, std::memory_order_relaxed);
  if (pendingOrder_.size() > 2 * pendingHere_ + 64) {
    // Mostly connections that finished their handshake: drop those entries.
    std::deque<uint64_t> keep;
    for (uint64_t n : pendingOrder_) {
      Conn* p = findConn(n);
      if (p && p->pending()) keep.push_back(n);
    }
    pendingOrder_.swap(keep);
  }
}

void Loop::leftPending() {
  --pendingHere_;
  server_.pendingConns().fetch_sub(1, std::memory_order_relaxed);
}

bool Loop::evictOldestPending() {
  while (!pendingOrder_.empty()) {
    uint64_t n = pendingOrder_.front();
    pendingOrder_.pop_front();
    Conn* c = findConn(n);
    if (c && c->pending()) {
      c->close(CloseReason::Evicted);
      return true;
    }
  }
  return false;
}

Conn* Loop::findConn(uint64_t connNum) {
  auto it = conns_.find(connNum);
  if (it == conns_.end() || it->second->isClosed()) return nullptr;
  return it->second.get();
}

void Loop::armTimer(Conn* c, TimePoint when) {
  uint64_t seq = c->bumpTimerSeq();
  timers_.push(TimerEntry{when, c->connNum(), seq});
}

void Loop::schedule(Conn* c) {
  if (inLoopThread()) {
    std::lock_guard lk(inboxMu_);
    inbox_.push_back(c);
    return;  // drained before this iteration ends
  }
  {
    std::lock_guard lk(inboxMu_);
    inbox_.push_back(c);
  }
  wake();
}

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard lk(inboxMu_);
    tasks_.push_back(std::move(fn));
  }
  if (!inLoopThread()) wake();
}

void Loop::wake() {
  if (!wakePending_.exchange(true, std::memory_order_acq_rel)) {
    uint64_t one = 1;
    ssize_t n = ::write(evfd_, &one, sizeof one);
    (void)n;  // EAGAIN means the counter is already non-zero: a wake is pending
  }
}

void Loop::stop() {
  stopping_.store(true);
  uint64_t one = 1;
  ssize_t n = ::write(evfd_, &one, sizeof one);
  (void)n;
}

void Loop::drainInbox() {
  // Batches may schedule more work (e.g. a flush that enqueues PeerGone to a
  // conn on this loop); loop until quiet, bounded so timers and I/O still run.
  for (int round = 0; round < 8; ++round) {
    std::vector<Conn*> conns;
    std::vector<std::function<void()>> tasks;
    {
      std::lock_guard lk(inboxMu_);
      conns.swap(inbox_);
      tasks.swap(tasks_);
    }
    if (conns.empty() && tasks.empty()) return;
    for (auto& t : tasks) t();
    for (Conn* c : conns) c->onScheduled();
  }
}

int Loop::nextTimeoutMs() const {
  {
    // Work queued from this thread during the iteration must run promptly.
    std::lock_guard lk(const_cast<std::mutex&>(inboxMu_));
    if (!inbox_.empty() || !tasks_.empty()) return 0;
  }
  TimePoint next = Clock::now() + std::chrono::seconds(1);
  if (!timers_.empty()) next = std::min(next, timers_.top().when);
  for (const PausedFd& p : paused_) next = std::min(next, p.until);
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
  if (d < 0) return 0;
  if (d > 1000) return 1000;
  return int(d) + 1;
}

void Loop::runTimers() {
  while (!timers_.empty() && timers_.top().when <= now_) {
    TimerEntry e = timers_.top();
    timers_.pop();
    auto it = conns_.find(e.connNum);
    if (it == conns_.end()) continue;
    Conn* c = it->second.get();
    if (c->timerSeq() != e.seq || c->isClosed()) continue;  // re-armed or gone
    c->onTimer();
  }
}

void Loop::drainAll(const std::vector<int>& listenFds, uint32_t reconnectInMs, uint32_t tryForMs) {
  for (int fd : listenFds) delFd(fd);
  std::vector<Conn*> all;
  all.reserve(conns_.size());
  for (auto& [_, c] : conns_) all.push_back(c.get());
  for (Conn* c : all) c->drain(reconnectInMs, tryForMs);
}

void Loop::closeAll() {
  std::vector<Conn*> all;
  all.reserve(conns_.size());
  for (auto& [_, c] : conns_) all.push_back(c.get());
  for (Conn* c : all) c->close(CloseReason::Shutdown);
  drainInbox();
  for (Conn* c : pendingDelete_) conns_.erase(c->connNum());
  pendingDelete_.clear();
  live_.store(conns_.size(), std::memory_order_relaxed);
}

void Loop::run() {
  threadId_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stopping_.load(std::memory_order_relaxed)) {
    ticks_.store(ticks_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    int n = ::epoll_wait(epfd_, events, kMaxEvents, nextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG_ERR("loop {}: epoll_wait: {}", index_, std::strerror(errno));
      break;
    }
    now_ = Clock::now();
    for (int i = 0; i < n; ++i) {
      IoHandler* h = static_cast<IoHandler*>(events[i].data.ptr);
      if (h == nullptr) {
        uint64_t v;
        ssize_t r = ::read(evfd_, &v, sizeof v);
        (void)r;
        wakePending_.store(false, std::memory_order_release);
        continue;
      }
      h->onIo(events[i].events);
    }
    drainInbox();
    runTimers();
    if (!paused_.empty()) resumePaused();
    drainInbox();
    // Deferred deletion: every cross-thread reference to these connections
    // was dropped when they left the registry, and any schedule() made
    // before that was drained above.
    if (!pendingDelete_.empty()) {
      drainInbox();
      for (Conn* c : pendingDelete_) conns_.erase(c->connNum());
      freedSinceTrim_ += pendingDelete_.size();
      pendingDelete_.clear();
      live_.store(conns_.size(), std::memory_order_relaxed);
    }
    maybeTrimHeap();
  }
}

void Loop::maybeTrimHeap() {
  // glibc keeps freed memory in its arenas: after many connections went
  // away, give it back to the system (RSS returns to its baseline).
  const auto since = now_ - lastTrim_;
  const bool many = freedSinceTrim_ >= kTrimAfterFrees && since >= kTrimInterval;
  const bool some = freedSinceTrim_ > 0 && since >= kTrimIntervalFew;  // e.g. one flooded receiver
  if (!many && !some) return;
  freedSinceTrim_ = 0;
  lastTrim_ = now_;
#ifndef DERPD_SANITIZED
  // Not under ASan/TSan: their allocators own the heap, and glibc's trim of
  // its unused arenas crashes there.
  ::malloc_trim(0);
#endif
}

}  // namespace derpd::worker
