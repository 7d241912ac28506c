#include "admission.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "client_conn.hpp"
#include "loop.hpp"

namespace derpd::worker {

Result<std::shared_ptr<AdmissionAsker>> AdmissionAsker::create(bool failOpen) {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return makeError(std::string("eventfd: ") + std::strerror(errno));
  auto a = std::shared_ptr<AdmissionAsker>(new AdmissionAsker(failOpen, fd));
  // A random first id: answers derpd still relays for a derp-worker that
  // has since restarted cannot match this one's questions.
  std::random_device rd;
  a->nextId_ = (uint64_t(rd()) << 32 | rd()) >> 1;
  return a;
}

AdmissionAsker::~AdmissionAsker() { ::close(evfd_); }

std::optional<uint64_t> AdmissionAsker::ask(Loop& loop, uint64_t connNum, const crypto::NodePublic& key,
                                            const std::string& sourceIp) {
  uint64_t id;
  {
    std::lock_guard g(mu_);
    if (pending_.size() >= kMaxPending) return std::nullopt;
    id = nextId_++;
    pending_.emplace(id, Pending{&loop, connNum});
    outbox_.push_back(ipc::VerifyRequest{id, key.toText(), sourceIp});
  }
  uint64_t one = 1;
  ssize_t n = ::write(evfd_, &one, sizeof one);
  (void)n;  // EAGAIN: the counter is already non-zero, a wake-up is pending
  return id;
}

void AdmissionAsker::forget(uint64_t id) {
  std::lock_guard g(mu_);
  pending_.erase(id);
}

std::vector<ipc::VerifyRequest> AdmissionAsker::takeRequests() {
  uint64_t v;
  ssize_t n = ::read(evfd_, &v, sizeof v);
  (void)n;
  std::vector<ipc::VerifyRequest> out;
  std::lock_guard g(mu_);
  out.swap(outbox_);
  return out;
}

void AdmissionAsker::onReply(const ipc::VerifyReply& reply) {
  Pending p;
  {
    std::lock_guard g(mu_);
    auto it = pending_.find(reply.id);
    if (it == pending_.end()) return;  // the connection stopped waiting
    p = it->second;
    pending_.erase(it);
  }
  Loop* loop = p.loop;
  uint64_t num = p.connNum;
  loop->post([loop, num, verdict = reply.verdict, reason = reply.reason] {
    if (Conn* c = loop->findConn(num)) c->onAdmission(verdict, reason);
  });
}

}  // namespace derpd::worker
