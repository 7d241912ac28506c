#include "agent.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/ipc/child.hpp"
#include "common/ipc/dispatch.hpp"
#include "common/log/log.hpp"
#include "common/util/text.hpp"

namespace derpd::certagent {

namespace {

constexpr std::array kHandlers = {
    ipc::handlerFor<&Agent::onReload>(),
    ipc::handlerFor<&Agent::onShutdown>(),
    ipc::handlerFor<&Agent::onLogReopen>(),
    ipc::handlerFor<&Agent::onAcmeChallengeReady>(),
    ipc::handlerFor<&Agent::onManualCertFiles>(),
};
static_assert(ipc::uniqueTypes(kHandlers));

constexpr size_t kMaxFile = 1024 * 1024;
constexpr const char* kAccountKey = "acme-account.key";
constexpr auto kRetryMin = std::chrono::seconds(2);
constexpr auto kRetryMax = std::chrono::hours(1);
constexpr auto kChallengeAnswerTimeout = std::chrono::seconds(30);

int64_t nowUnix() { return int64_t(std::time(nullptr)); }

std::string utc(int64_t t) { return formatUtcSeconds(t); }

}  // namespace

// The ACME client's challenge presenter: AcmeChallenge to derpd, then waits
// for derp-worker's AcmeChallengeReady (relayed by derpd).
class Agent::Responder final : public ChallengeResponder {
 public:
  explicit Responder(Agent& a) : a_(a) {}

  Result<void> present(const Challenge& c) override {
    ipc::AcmeChallenge msg;
    msg.present = true;
    msg.type = c.type;
    msg.identifier = c.identifier;
    msg.token = c.token;
    if (c.type == "http-01") {
      msg.keyAuthorization = c.keyAuthorization;
    } else if (c.type == "tls-alpn-01") {
      auto cert = tls::makeTlsAlpnChallengeCert(c.identifier, c.keyAuthorization, nowUnix());
      if (!cert) return makeError("tls-alpn-01 certificate: " + cert.error());
      msg.certPem = cert->chainPem;
      msg.keyPem = cert->keyPem;
    } else {
      return makeError("unsupported challenge type " + c.type);
    }
    {
      std::lock_guard lock(a_.mu_);
      a_.challengeAnswers_[c.token] = std::nullopt;
    }
    a_.post([this, msg] { a_.sendToSupervisor(msg); });
    std::unique_lock lock(a_.mu_);
    const bool answered = a_.answerCv_.wait_for(lock, kChallengeAnswerTimeout, [&] {
      return a_.cancel_.load() || a_.challengeAnswers_[c.token].has_value();
    });
    std::optional<ipc::AcmeChallengeReady> answer = a_.challengeAnswers_[c.token];
    a_.challengeAnswers_.erase(c.token);
    if (a_.cancel_.load()) return makeError("stopping");
    if (!answered || !answer)
      return makeError("derp-worker did not confirm the " + c.type + " challenge within " +
                       std::to_string(kChallengeAnswerTimeout.count()) + " s");
    if (!answer->ok) return makeError("derp-worker cannot answer the " + c.type + " challenge: " + answer->error);
    return okResult();
  }

  void cleanup(const Challenge& c) override {
    ipc::AcmeChallenge msg;
    msg.present = false;
    msg.type = c.type;
    msg.identifier = c.identifier;
    msg.token = c.token;
    a_.post([this, msg] { a_.sendToSupervisor(msg); });
  }

 private:
  Agent& a_;
};

Agent::Agent(Options opts, CertDir dir, std::string eabKey, ipc::Channel& ch)
    : opts_(std::move(opts)), dir_(std::move(dir)), eabKey_(std::move(eabKey)), ch_(ch) {}

Agent::~Agent() {
  cancel_ = true;
  {
    std::lock_guard lock(mu_);
    answerCv_.notify_all();
    stopCv_.notify_all();
  }
  if (acme_.joinable()) acme_.join();
  std::fill(eabKey_.begin(), eabKey_.end(), '\0');
}

std::string Agent::stem() const { return tls::certFileStem(opts_.hostname); }

template <typename Msg>
static void sendOrLog(ipc::Channel& ch, const Msg& msg) {
  ipc::SendResult r = ch.send(ipc::Role::Supervisor, msg);
  if (!r.ok()) LOG_ERR("control: cannot send {}: {}", ipc::msgTypeName(Msg::kType), r.error);
}

void Agent::sendToSupervisor(const auto& msg) { sendOrLog(ch_, msg); }

void Agent::post(std::function<void()> fn) { posted_.post(std::move(fn)); }

void Agent::drainPosted() { posted_.drain(); }

void Agent::deliver(const tls::CertBundle& b, const std::string& source) {
  ipc::CertUpdate msg{b.chainPem, b.keyPem, b.info.serialHex, b.info.notAfter, source};
  {
    std::lock_guard lock(mu_);
    inService_ = b.info;
  }
  LOG_INFO("certificate serial {} ({}) for {}, valid until {}: handing it to derp-worker", b.info.serialHex, source,
           opts_.hostname, utc(b.info.notAfter));
  post([this, msg = std::move(msg)]() mutable {
    sendToSupervisor(msg);
    std::fill(msg.keyPem.begin(), msg.keyPem.end(), '\0');
  });
}

// ---- manual ----

// The files' bytes come from derpd, which read them with its privileges
// (ManualCertFiles); everything about their contents is decided here.
Result<tls::CertBundle> Agent::loadManual(const ipc::ManualCertFiles& files, bool* generated) {
  *generated = false;
  const std::string crtName = stem() + ".crt";
  const std::string keyName = stem() + ".key";
  const std::string what = files.crt.path + " and " + files.key.path;
  if (files.crt.missing && files.key.missing && tls::isIpLiteral(opts_.hostname)) {
    // derper (HEAD): an IP hostname without files gets a self-signed cert.
    auto b = tls::makeSelfSigned(opts_.hostname, nowUnix());
    if (!b) return makeError("self-signed certificate for " + opts_.hostname + ": " + b.error());
    if (auto r = dir_.writeAtomic(keyName, b->keyPem, 0600); !r) return std::move(r).takeError();
    if (auto r = dir_.writeAtomic(crtName, b->chainPem, 0644); !r) return std::move(r).takeError();
    *generated = true;
    return b;
  }
  auto unreadable = [](const ipc::ManualCertFile& f) {
    return f.missing ? f.path + ": no such file" : f.path + ": " + f.error;
  };
  if (files.crt.missing || !files.crt.error.empty())
    return makeError("cannot load the certificate: " + unreadable(files.crt));
  if (files.key.missing || !files.key.error.empty())
    return makeError("cannot load the private key: " + unreadable(files.key));
  return tls::validateBundle(files.crt.bytes, files.key.bytes, opts_.hostname, nowUnix(), what);
}

void Agent::applyManual(const ipc::ManualCertFiles& files) {
  bool generated = false;
  auto b = loadManual(files, &generated);
  const std::string& why = files.reason;
  if (!manualLoaded_) {
    // The first load: derpd checked these files before it started
    // anything, so this is a race with an edit. Without a certificate
    // there is nothing to serve: exit, and derpd restarts cert-agent.
    if (!b) {
      LOG_ERR("{}: {}", why, b.error());
      exitCode_ = 1;
      stop_ = true;
      return;
    }
    manualLoaded_ = true;
    ++reloadsOk_;
    if (generated) LOG_INFO("wrote a self-signed certificate for {} to {}", opts_.hostname, dir_.pathOf(stem() + ".crt"));
    if (tls::isIpLiteral(opts_.hostname)) {
      // derper's hint, with the same DERPNode JSON.
      LOG_INFO("Using self-signed certificate for IP address \"{}\". Configure it in DERPMap using: "
               "(https://tailscale.com/s/custom-derp) {{\"Name\":\"custom\",\"RegionID\":900,\"HostName\":\"{}\","
               "\"CertName\":\"{}\"}}",
               opts_.hostname, opts_.hostname, tls::certNameSha256Raw(*b));
    }
    deliver(*b, generated ? "self-signed" : "manual " + files.crt.path);
    return;
  }
  std::optional<tls::CertInfo> current;
  {
    std::lock_guard lock(mu_);
    current = inService_;
  }
  if (!b) {
    ++reloadsRefused_;
    LOG_ERR("{}: new certificate refused: {}; still serving serial {}", why, b.error(),
            current ? current->serialHex : std::string("(none)"));
    return;
  }
  if (current && current->leafSha256Hex == b->info.leafSha256Hex) {
    // Same leaf; a new key for it would not have validated.
    LOG_DEBUG("{}: certificate unchanged (serial {})", why, b->info.serialHex);
    return;
  }
  ++reloadsOk_;
  deliver(*b, generated ? "self-signed" : "manual " + files.crt.path);
}

Result<void> Agent::onManualCertFiles(ipc::Role, const ipc::ManualCertFiles& msg) {
  if (opts_.certMode != "manual") return makeError("ManualCertFiles in certmode " + opts_.certMode);
  applyManual(msg);
  return okResult();
}

// ---- letsencrypt ----

Result<tls::CertBundle> Agent::acmeOrder() {
  bool missing = false;
  std::string accountKey;
  auto existing = dir_.read(kAccountKey, 64 * 1024, &missing);
  if (existing) {
    accountKey = std::move(*existing);
  } else if (missing) {
    auto k = tls::generateP256KeyPem();
    if (!k) return makeError("account key: " + k.error());
    if (auto r = dir_.writeAtomic(kAccountKey, *k, 0600); !r) return makeError("account key: " + r.error());
    LOG_INFO("ACME: new account key written to {}", dir_.pathOf(kAccountKey));
    accountKey = std::move(*k);
  } else {
    return makeError("account key: " + existing.error());
  }
  AcmeConfig cfg;
  cfg.directoryUrl = opts_.acmeDirectoryUrl;
  cfg.caFile = opts_.acmeCaFile;
  cfg.email = opts_.acmeEmail;
  cfg.eabKid = opts_.acmeEabKid;
  cfg.eabHmacKey = eabKey_;
  cfg.challengeTypes = opts_.acmeChallenges;
  auto client = AcmeClient::create(std::move(cfg), accountKey);
  std::fill(accountKey.begin(), accountKey.end(), '\0');
  if (!client) return makeError(client.error());
  Responder responder(*this);
  auto issued = (*client)->obtain({opts_.hostname}, responder, cancel_);
  if (!issued) return std::move(issued).takeError();
  auto b = tls::validateBundle(issued->chainPem, issued->keyPem, opts_.hostname, nowUnix(), "the issued certificate");
  std::fill(issued->keyPem.begin(), issued->keyPem.end(), '\0');
  if (!b) return b;
  // Kept so that a restart serves it without asking the CA.
  if (auto r = dir_.writeAtomic(stem() + ".key", b->keyPem, 0600); !r) return makeError("saving: " + r.error());
  if (auto r = dir_.writeAtomic(stem() + ".crt", b->chainPem, 0644); !r) return makeError("saving: " + r.error());
  return b;
}

void Agent::acmeThread() {
  auto retry = std::chrono::duration_cast<std::chrono::seconds>(kRetryMin);
  for (;;) {
    std::optional<tls::CertInfo> current;
    {
      std::lock_guard lock(mu_);
      current = inService_;
    }
    // Renew when a third of the lifetime is left.
    int64_t due = nowUnix();
    if (current) due = current->notAfter - (current->notAfter - current->notBefore) / 3;
    if (due > nowUnix()) {
      LOG_INFO("ACME: certificate serial {} is renewed from {}", current->serialHex, utc(due));
      std::unique_lock lock(mu_);
      auto until = std::chrono::system_clock::from_time_t(std::time_t(due));
      if (stopCv_.wait_until(lock, until, [this] { return cancel_.load(); })) return;
      continue;  // re-check: the clock may have jumped
    }
    LOG_INFO("ACME: ordering a certificate for {} from {}", opts_.hostname, opts_.acmeDirectoryUrl);
    auto b = acmeOrder();
    if (cancel_) return;
    if (b) {
      {
        std::lock_guard lock(mu_);
        ++ordersOk_;
      }
      deliver(*b, "acme");
      retry = std::chrono::duration_cast<std::chrono::seconds>(kRetryMin);
      continue;
    }
    {
      std::lock_guard lock(mu_);
      ++ordersFailed_;
    }
    LOG_ERR("ACME: {}; retrying in {} s ({})", b.error(), retry.count(),
            current ? "still serving serial " + current->serialHex : std::string("no certificate yet"));
    std::unique_lock lock(mu_);
    if (stopCv_.wait_for(lock, retry, [this] { return cancel_.load(); })) return;
    retry = std::min<std::chrono::seconds>(retry * 2, kRetryMax);
  }
}

// ---- main thread ----

Result<void> Agent::start() {
  if (opts_.certMode == "manual") {
    // The files come from derpd once this process says Ready
    // (ManualCertFiles); the watch asks for them again when they change.
    if (dir_.watchFd() < 0) {
      if (auto w = dir_.watch(); !w) return makeError(w.error());
    }
    return okResult();
  }
  if (tls::isIpLiteral(opts_.hostname))
    return makeError("-hostname " + opts_.hostname +
                     " is an IP address: use -certmode manual (a self-signed certificate is made for it)");
  // The last good certificate, if it is still good, serves until renewal.
  auto crt = dir_.read(stem() + ".crt", kMaxFile);
  auto key = dir_.read(stem() + ".key", kMaxFile);
  if (crt && key) {
    auto b = tls::validateBundle(*crt, *key, opts_.hostname, nowUnix(), dir_.pathOf(stem() + ".crt"));
    if (b) {
      deliver(*b, "acme, kept in " + dir_.path());
    } else {
      LOG_WARN("ACME: the kept certificate is not usable ({}); ordering a new one", b.error());
    }
    std::fill(key->begin(), key->end(), '\0');
  }
  acme_ = std::thread([this] { acmeThread(); });
  return okResult();
}

void Agent::report() {
  ipc::MetricsReport r;
  {
    std::lock_guard lock(mu_);
    if (inService_) {
      r.metrics.push_back({"derpd_cert_not_after_seconds", "", double(inService_->notAfter), ipc::MetricType::Gauge});
    }
    r.metrics.push_back({"derpd_cert_loads", "result=\"ok\"", double(reloadsOk_ + ordersOk_), ipc::MetricType::Counter});
    r.metrics.push_back({"derpd_cert_loads", "result=\"refused\"", double(reloadsRefused_), ipc::MetricType::Counter});
    if (opts_.certMode == "letsencrypt") {
      r.metrics.push_back({"derpd_acme_orders", "result=\"ok\"", double(ordersOk_), ipc::MetricType::Counter});
      r.metrics.push_back({"derpd_acme_orders", "result=\"failed\"", double(ordersFailed_), ipc::MetricType::Counter});
    }
  }
  ipc::SendResult s = ch_.send(ipc::Role::Supervisor, r);
  if (!s.ok()) LOG_DEBUG("metrics report: {}", s.error);
}

void Agent::pollControl() {
  ipc::pollChildOrExit(
      ch_, [this](ipc::Role from, const ipc::Envelope& env) { return ipc::dispatch(*this, kHandlers, from, env); },
      "cert-agent");
}

int Agent::run(int sigFd) {
  using Clock = std::chrono::steady_clock;
  auto nextReport = Clock::now();
  Clock::time_point settleUntil{};  // a certdir event to act on at; {} = none
  while (!stop_) {
    drainPosted();
    pollControl();
    auto now = Clock::now();
    if (now >= nextReport) {
      report();
      pollControl();  // a send may consume the fd's wake-up
      nextReport = now + kReportInterval;
    }
    if (settleUntil != Clock::time_point{} && now >= settleUntil) {
      settleUntil = {};
      // derpd reads them (it can open root-only files) and sends them back.
      sendToSupervisor(ipc::ManualCertFilesRequest{"certificate files changed"});
      pollControl();  // a send may consume the fd's wake-up
    }
    if (const char* sig = ipc::readStopSignal(sigFd)) {
      LOG_INFO("signal {}: stopping", sig);
      stop_ = true;
    }
    if (stop_) break;
    auto wake = nextReport;
    if (settleUntil != Clock::time_point{}) wake = std::min(wake, settleUntil);
    int timeout = int(std::clamp<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now()).count(), 0, 1000));
    std::array<pollfd, 4> pfds = {{{sigFd, POLLIN, 0}, {ch_.fd(), POLLIN, 0}, {posted_.fd(), POLLIN, 0},
                                   {dir_.watchFd(), POLLIN, 0}}};
    const nfds_t n = dir_.watchFd() >= 0 ? 4 : 3;
    if (::poll(pfds.data(), n, timeout) < 0 && errno != EINTR) {
      LOG_ERR("poll: {}", std::strerror(errno));
      return 1;
    }
    if (n == 4 && (pfds[3].revents & POLLIN)) {
      if (dir_.drainEvents({stem() + ".crt", stem() + ".key"})) settleUntil = Clock::now() + kSettle;
    }
  }
  cancel_ = true;
  {
    std::lock_guard lock(mu_);
    answerCv_.notify_all();
    stopCv_.notify_all();
  }
  if (acme_.joinable()) acme_.join();
  drainPosted();
  LOG_INFO("stopped");
  return exitCode_;
}

Result<void> Agent::onReload(ipc::Role, const ipc::Reload& msg) {
  if (!msg.logLevel.empty() && !log::setLevel(msg.logLevel)) {
    return makeError("Reload with unknown log level '" + msg.logLevel + "'");
  }
  if (opts_.certMode == "manual") {
    // derpd sends the files it re-read (ManualCertFiles) with the reload.
    LOG_DEBUG("reload: log level {}", msg.logLevel.empty() ? "unchanged" : msg.logLevel);
  } else {
    LOG_INFO("reload: log level {}; ACME renews on its own schedule",
             msg.logLevel.empty() ? "unchanged" : msg.logLevel);
  }
  return okResult();
}

Result<void> Agent::onShutdown(ipc::Role, const ipc::Shutdown&) {
  LOG_INFO("Shutdown from derpd: stopping");
  stop_ = true;
  return okResult();
}

Result<void> Agent::onLogReopen(ipc::Role, const ipc::LogReopen&) {
  log::reopen();  // stderr, which derpd copies into its log file: a no-op
  return okResult();
}

Result<void> Agent::onAcmeChallengeReady(ipc::Role, const ipc::AcmeChallengeReady& msg) {
  std::lock_guard lock(mu_);
  auto it = challengeAnswers_.find(msg.token);
  if (it == challengeAnswers_.end()) {
    LOG_DEBUG("AcmeChallengeReady for a challenge no longer pending; ignored");
    return okResult();
  }
  it->second = msg;
  answerCv_.notify_all();
  return okResult();
}

}  // namespace derpd::certagent
