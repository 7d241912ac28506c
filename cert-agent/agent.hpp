// cert-agent's work: the certificate in service and where it comes from.
//   manual:      <certdir>/<stem>.crt + .key, read by derpd (root; the files
//                may be root-only) and sent here (ManualCertFiles) when
//                cert-agent is Ready, on SIGHUP and when this process's
//                inotify watch asks (ManualCertFilesRequest); validated
//                here (name, key, dates); a broken
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

  // manual: the inotify watch; the first load comes as ManualCertFiles (an
  // error there is fatal: derpd reports it and gives up
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
  Result<void> onManualCertFiles(ipc::Role from, const ipc::ManualCertFiles& msg);

  static constexpr std::chrono::milliseconds kReportInterval{2000};
  static constexpr std::chrono::milliseconds kSettle{250};  // quiet time after a certdir event

 private:
  class Responder;
  std::string stem() const;
  // Validates the manual files derpd read (or makes the self-signed
  // certificate when both are missing and the hostname is an IP).
  Result<tls::CertBundle> loadManual(const ipc::ManualCertFiles& files, bool* generated);
  // The first load puts the certificate in service or ends the process; a
  // later one replaces it, or is refused and the old one stays.
  void applyManual(const ipc::ManualCertFiles& files);
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
  int exitCode_ = 0;
  bool manualLoaded_ = false;  // a manual certificate has been put in service

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
