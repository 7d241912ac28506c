#include "common/util/post_queue.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace derpd {

PostQueue::PostQueue() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

PostQueue::~PostQueue() {
  if (fd_ >= 0) ::close(fd_);
}

void PostQueue::post(std::function<void()> fn) {
  {
    std::lock_guard g(mu_);
    queue_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!::write(fd_, &one, sizeof one);  // EAGAIN: a wake-up is already pending
}

void PostQueue::drain() {
  uint64_t n;
  (void)!::read(fd_, &n, sizeof n);
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard g(mu_);
      if (queue_.empty()) return;
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

}  // namespace derpd
