// Client admission (PROTOCOL.md §5.9) for a derp-worker run by derpd: the
// question goes to mesh-helper over the control plane, the connection waits
// in State::Verifying, and no loop ever blocks on it.
//
// Threads: ask()/forget() run on loop threads; takeRequests(), onReply() and
// failAll() on the control thread (derp-worker's main thread), which polls
// wakeFd() and sends what takeRequests() returns. Included by derp-worker only.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/ipc/messages.hpp"
#include "common/util/result.hpp"

namespace derpd::worker {

class Loop;

class AdmissionAsker {
 public:
  // Questions waiting for an answer; beyond this a new one is answered
  // "unavailable" at once (the fail-open setting decides).
  static constexpr size_t kMaxPending = 16384;

  static Result<std::shared_ptr<AdmissionAsker>> create(bool failOpen);
  ~AdmissionAsker();
  AdmissionAsker(const AdmissionAsker&) = delete;
  AdmissionAsker& operator=(const AdmissionAsker&) = delete;

  bool failOpen() const { return failOpen_; }

  // Loop thread: asks about connection `connNum` on `loop`; the answer
  // arrives as Conn::onAdmission on that loop. nullopt: too many questions
  // pending (treat as "unavailable").
  std::optional<uint64_t> ask(Loop& loop, uint64_t connNum, const crypto::NodePublic& key,
                              const std::string& sourceIp);
  // Loop thread: the connection stopped waiting (closed or timed out).
  void forget(uint64_t id);

  // Control thread.
  int wakeFd() const { return evfd_; }
  std::vector<ipc::VerifyRequest> takeRequests();
  void onReply(const ipc::VerifyReply& reply);

 private:
  explicit AdmissionAsker(bool failOpen, int evfd) : failOpen_(failOpen), evfd_(evfd) {}
  struct Pending {
    Loop* loop;
    uint64_t connNum;
  };
  const bool failOpen_;
  const int evfd_;
  std::mutex mu_;
  uint64_t nextId_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::vector<ipc::VerifyRequest> outbox_;
};

}  // namespace derpd::worker
