// mesh-helper's work: a pool of threads answering derp-worker's admission
// questions with the Verifier (each may block for seconds on tailscaled or
// the admission URL), the -mesh-with resolver, and the control loop on the
// main thread that receives the questions and sends the answers.
// Included by mesh-helper only.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/ipc/channel.hpp"
#include "common/ipc/messages.hpp"
#include "common/net/mesh_hosts.hpp"
#include "common/util/post_queue.hpp"
#include "options.hpp"
#include "verifier.hpp"

namespace derpd::mesh {

class Service {
 public:
  // Questions waiting for a worker; beyond this they are answered
  // "unavailable" at once (derp-worker's fail-open setting decides).
  static constexpr size_t kMaxQueued = 4096;
  static constexpr std::chrono::seconds kResolveInterval{60};

  Service(const Options& opts, ipc::Channel& ch);
  ~Service();  // stops the workers and the resolver
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  Result<void> start();
  // The control loop (main thread) until Shutdown or SIGTERM/SIGINT; the
  // process exit code.
  int run(int sigFd);

  Result<void> onReload(ipc::Role from, const ipc::Reload& msg);
  Result<void> onShutdown(ipc::Role from, const ipc::Shutdown& msg);
  Result<void> onLogReopen(ipc::Role from, const ipc::LogReopen& msg);
  Result<void> onVerifyRequest(ipc::Role from, const ipc::VerifyRequest& msg);

 private:
  struct Job {
    ipc::VerifyRequest req;
    crypto::NodePublic key;
  };
  void worker();
  void report();
  void pollControl();

  const Options opts_;
  ipc::Channel& ch_;
  Verifier verifier_;
  PostQueue posted_;  // sends from the workers and the resolver
  std::unique_ptr<net::MeshResolver> resolver_;
  std::vector<std::thread> workers_;
  bool stop_ = false;  // main thread

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;

  std::atomic<uint64_t> allowed_{0}, denied_{0}, overloaded_{0};
};

}  // namespace derpd::mesh
