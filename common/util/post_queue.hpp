// Closures handed from worker threads to a process's main thread, which owns
// the control channel (ZeroMQ sockets are not thread-safe): post() from any
// thread, and the main thread polls fd() and runs drain(). Used by
// cert-agent (its ACME thread) and mesh-helper (its verifier workers and
// resolver).
#pragma once

#include <deque>
#include <functional>
#include <mutex>

namespace derpd {

class PostQueue {
 public:
  PostQueue();   // an eventfd; fd() is -1 if the kernel refused one
  ~PostQueue();
  PostQueue(const PostQueue&) = delete;
  PostQueue& operator=(const PostQueue&) = delete;

  int fd() const { return fd_; }  // readable while something is queued
  void post(std::function<void()> fn);  // any thread
  void drain();                          // the main thread: runs what is queued, in order

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace derpd
