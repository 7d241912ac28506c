// cert-agent's work: the certificate in service and where it comes from.
//   manual:      <certdir>/<stem>.crt + .key, validated (name, key, dates) and
//                reloaded on Reload and on inotify events; a broken
//                replacement is refused with an error line and the old one
//                stays. An IP hostname without files gets a self-signed
//                certificate (derper HEAD), whose CertName is logged.
//   letsencrypt: ACME on a thread of its own (AcmeClient); the last good
//                certificate is kept in <certdir> and served at start;
//                renewal when a third of its lifetime is left; failures are
//                retried with backoff (2 s doubling, at most 1 h).
// Certificates and challenges go to derpd (CertUpdate, AcmeChallenge), which
// relays them to derp-worker. Everything that touches the control channel
// runs on the main thread; the ACME thread hands messages over through a
// queue and an eventfd. Included by cert-agent's main only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "acme_client.hpp"
#include "cert_dir.hpp"
#include "common/ipc/channel.hpp"
#include "common/util/post_queue.hpp"
#include "common/ipc/messages.hpp"
#include "common/tls/certs.hpp"
#include "options.hpp"

namespace derpd::certagent {

class Agent {
 public:
  Agent(Options opts, CertDir dir, std::string eabKey, ipc::Channel& ch);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // manual: the first load (an error is fatal: derpd reports it and gives up
  // after repeated failures). letsencrypt: serves the cached certificate if
  // any and starts the ACME thread.
  Result<void> start();
  // The main loop: control messages, certdir events, the ACME thread's
  // messages, metrics. Returns the exit code.
  int run(int sigFd);

  Result<void> onReload(ipc::Role from, const ipc::Reload& msg);
  Result<void> onShutdown(ipc::Role from, const ipc::Shutdown& msg);
  Result<void> onLogReopen(ipc::Role from, const ipc::LogReopen& msg);
  Result<void> onAcmeChallengeReady(ipc::Role from, const ipc::AcmeChallengeReady& msg);

  static constexpr std::chrono::milliseconds kReportInterval{2000};
  static constexpr std::chrono::milliseconds kSettle{250};  // quiet time after a certdir event

 private:
  class Responder;
  std::string stem() const;
  // Loads the manual files (or makes the self-signed certificate).
  Result<tls::CertBundle> loadManual(bool* generated);
  void reloadManual(const char* why);
  // Puts `b` in service: CertUpdate to derpd (from any thread).
  void deliver(const tls::CertBundle& b, const std::string& source);
  void acmeThread();
  Result<tls::CertBundle> acmeOrder();
  // Runs `fn` on the main thread (from the ACME thread).
  void post(std::function<void()> fn);
  void drainPosted();
  void sendToSupervisor(const auto& msg);
  void report();
  void pollControl();

  Options opts_;
  CertDir dir_;
  std::string eabKey_;
  ipc::Channel& ch_;
  PostQueue posted_;  // from the ACME thread
  bool stop_ = false;

  std::mutex mu_;  // guards everything below
  std::optional<tls::CertInfo> inService_;
  std::map<std::string, std::optional<ipc::AcmeChallengeReady>> challengeAnswers_;  // by token
  std::condition_variable answerCv_;
  std::condition_variable stopCv_;
  uint64_t reloadsOk_ = 0, reloadsRefused_ = 0, ordersOk_ = 0, ordersFailed_ = 0;

  std::atomic<bool> cancel_{false};
  std::thread acme_;
};

}  // namespace derpd::certagent
