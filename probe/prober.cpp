#include "prober.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <exception>
#include <tuple>

#include "common/log/log.hpp"

namespace derpd::probe {

namespace {

constexpr size_t kRecentHistSize = 10;

double unixSeconds(SysClock::time_point t) {
  return double(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

std::string escapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::chrono::milliseconds ProbeContext::left(std::chrono::milliseconds cap) const {
  if (stopping()) return std::chrono::milliseconds(0);
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
  if (d.count() < 0) return std::chrono::milliseconds(0);
  return std::min(d, cap);
}

const char* statusName(ProbeStatus s) {
  switch (s) {
    case ProbeStatus::Unknown: return "unknown";
    case ProbeStatus::Running: return "running";
    case ProbeStatus::Failed: return "failed";
    case ProbeStatus::Succeeded: return "succeeded";
  }
  return "unknown";
}

double ProbeInfo::recentSuccessRatio() const {
  if (recentResults.empty()) return 0;
  size_t ok = size_t(std::count(recentResults.begin(), recentResults.end(), true));
  return double(ok) / double(recentResults.size());
}

std::chrono::nanoseconds ProbeInfo::recentMedianLatency() const {
  // As prober.go: the middle element of the history as recorded (unsorted).
  if (recentLatencies.empty()) return std::chrono::nanoseconds(0);
  return recentLatencies[recentLatencies.size() / 2];
}

// ---------------------------------------------------------------------------
// Formatting

std::string formatGoFloat(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return std::signbit(v) ? "-0" : "0";
  char buf[64];
  auto sci = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, sci.ptr);
  const size_t e = s.find('e');
  int exp = 0;
  std::from_chars(s.data() + e + (s[e + 1] == '+' ? 2 : 1), s.data() + s.size(), exp);
  // Go 'g' with the shortest digits: %e when exp < -4 || exp >= 6 (eprec = 6).
  if (exp < -4 || exp >= 6) return s;
  auto fix = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  return std::string(buf, fix.ptr);
}

std::string labelBody(const std::vector<std::pair<std::string, std::string>>& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    if (!out.empty()) out += ',';
    out += k + "=\"" + escapeLabelValue(v) + "\"";
  }
  return out;
}

std::string renderPrometheus(std::vector<FlatMetric> metrics) {
  // Families in name order; within one, client_golang's metricSorter: fewer
  // labels first, then label values compared in order.
  std::stable_sort(metrics.begin(), metrics.end(), [](const FlatMetric& a, const FlatMetric& b) {
    if (a.family != b.family) return a.family < b.family;
    if (a.type == "histogram") return false;  // keep _bucket/_sum/_count as emitted
    if (a.labels.size() != b.labels.size()) return a.labels.size() < b.labels.size();
    for (size_t i = 0; i < a.labels.size(); ++i) {
      if (a.labels[i].second != b.labels[i].second) return a.labels[i].second < b.labels[i].second;
    }
    return false;
  });
  std::string out;
  std::string family;
  for (const FlatMetric& m : metrics) {
    if (m.family != family) {
      family = m.family;
      out += "# HELP " + m.family + " " + m.help + "\n";
      out += "# TYPE " + m.family + " " + m.type + "\n";
    }
    out += m.name;
    if (!m.labels.empty()) out += "{" + labelBody(m.labels) + "}";
    out += " " + formatGoFloat(m.value) + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------
// Probe

namespace {
Labels allLabels(const std::string& name, const ProbeClass& pc, const Labels& labels) {
  Labels l = {{"name", name}, {"class", pc.cls}};
  for (const auto& [k, v] : pc.labels) l[k] = v;
  for (const auto& [k, v] : labels) l[k] = v;
  return l;
}
}  // namespace

Probe::Probe(Prober& owner, std::string name, std::chrono::milliseconds interval, Labels labels, ProbeClass pc)
    : owner_(owner),
      name_(std::move(name)),
      interval_(interval),
      timeout_(std::chrono::milliseconds(int64_t(double(interval.count()) * 0.8))),
      class_(std::move(pc)),
      labels_(allLabels(name_, class_, labels)) {}

Probe::~Probe() { stop(); }

void Probe::start() { thread_ = std::thread([this] { loop(); }); }

void Probe::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Probe::sleepFor(std::chrono::nanoseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_.load(); });
  return !stop_.load();
}

void Probe::loop() {
  const Prober::Settings& s = owner_.settings();
  if (s.spread && interval_.count() > 0) {
    auto d = Prober::initialDelay(name_, interval_);
    if (d.count() > 0 && !sleepFor(d)) {
      done_.store(true);
      return;
    }
  }
  if (s.once) {
    if (!stop_.load()) runNow();
    done_.store(true);
    return;
  }
  if (continuous()) {
    while (!stop_.load()) {
      runNow();
      if (!sleepFor(-interval_)) break;
    }
    done_.store(true);
    return;
  }
  auto next = Clock::now();
  while (!stop_.load()) {
    runNow();
    next += interval_;
    auto now = Clock::now();
    if (next < now) next = now;  // a run longer than the interval: no catching up
    if (!sleepFor(next - now)) break;
  }
  done_.store(true);
}

ProbeInfo Probe::runNow() {
  std::lock_guard<std::mutex> run(runMu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    start_ = SysClock::now();
    startMono_ = Clock::now();
  }
  const Clock::time_point deadline =
      continuous() ? Clock::time_point::max() : Clock::now() + std::max(timeout_, std::chrono::milliseconds(1));
  ProbeContext ctx(deadline, &stop_);
  Result<void> r = okResult();
  try {
    r = class_.probe(ctx);
  } catch (const std::exception& e) {
    r = makeError(std::string("panic: ") + e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  end_ = SysClock::now();
  auto latency = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - startMono_);
  succeeded_ = r.ok();
  attempted_ = true;
  if (succeeded_) {
    latency_ = latency;
    lastErr_.clear();
    failedOnce_ = false;
    attemptsOk_++;
    secondsOk_ += std::chrono::duration<double>(latency).count();
    recentLatencies_.push_back(latency);
    if (recentLatencies_.size() > kRecentHistSize) recentLatencies_.pop_front();
  } else {
    latency_ = std::chrono::nanoseconds(0);
    lastErr_ = r.error();
    failedOnce_ = true;
    attemptsFail_++;
    secondsFail_ += std::chrono::duration<double>(latency).count();
    LOG_WARN("probe {}: {}", name_, lastErr_);
  }
  recentResults_.push_back(succeeded_);
  if (recentResults_.size() > kRecentHistSize) recentResults_.pop_front();
  return infoLocked();
}

ProbeInfo Probe::info() const {
  std::lock_guard<std::mutex> lock(mu_);
  return infoLocked();
}

ProbeInfo Probe::infoLocked() const {
  ProbeInfo pi;
  pi.name = name_;
  pi.cls = class_.cls;
  pi.interval = interval_;
  pi.labels = labels_;
  pi.start = start_;
  pi.end = end_;
  if (end_ < start_) {
    pi.status = ProbeStatus::Running;
  } else if (succeeded_) {
    pi.status = ProbeStatus::Succeeded;
  } else if (failedOnce_) {
    pi.status = ProbeStatus::Failed;
    pi.error = lastErr_;
  }
  pi.latency = latency_;
  pi.recentResults.assign(recentResults_.begin(), recentResults_.end());
  pi.recentLatencies.assign(recentLatencies_.begin(), recentLatencies_.end());
  return pi;
}

void Probe::metrics(const std::string& ns, std::vector<FlatMetric>& out) const {
  std::vector<std::pair<std::string, std::string>> base(labels_.begin(), labels_.end());
  auto add = [&](const std::string& name, const std::string& help, const std::string& type, double v,
                 std::vector<std::pair<std::string, std::string>> labels) {
    std::string fam = ns + "_" + name;
    out.push_back(FlatMetric{fam, fam, help, type, std::move(labels), v});
  };
  std::lock_guard<std::mutex> lock(mu_);
  add("interval_secs", "Probe interval in seconds", "gauge", double(interval_.count()) / 1000.0, base);
  if (start_.time_since_epoch().count() != 0) {
    add("start_secs", "Latest probe start time (seconds since epoch)", "gauge", unixSeconds(start_), base);
  }
  if (!attempted_ && !continuous()) return;  // periodic and never ended: nothing more yet
  add("end_secs", "Latest probe end time (seconds since epoch)", "gauge", unixSeconds(end_), base);
  add("result", "Latest probe result (1 = success, 0 = failure)", "gauge", succeeded_ ? 1 : 0, base);
  add("latency_millis", "Latest probe latency (ms)", "gauge",
      double(std::chrono::duration_cast<std::chrono::milliseconds>(latency_).count()), base);
  auto withStatus = [&](const char* status) {
    auto l = base;
    l.emplace_back("status", status);
    std::sort(l.begin(), l.end());
    return l;
  };
  // As client_golang's CounterVec at the reference: a status appears once
  // it has been counted.
  if (attemptsOk_) {
    add("attempts_total", "Total number of probing attempts", "counter", double(attemptsOk_), withStatus("ok"));
    add("seconds_total", "Total amount of time spent executing the probe", "counter", secondsOk_,
        withStatus("ok"));
  }
  if (attemptsFail_) {
    add("attempts_total", "Total number of probing attempts", "counter", double(attemptsFail_),
        withStatus("fail"));
    add("seconds_total", "Total amount of time spent executing the probe", "counter", secondsFail_,
        withStatus("fail"));
  }
  if (!class_.metrics) return;
  for (const MetricSample& m : class_.metrics()) {
    std::string fam = ns + "_" + m.name;
    switch (m.kind) {
      case MetricSample::Kind::Counter:
        out.push_back(FlatMetric{fam, fam, m.help, "counter", base, m.value});
        break;
      case MetricSample::Kind::Gauge:
        out.push_back(FlatMetric{fam, fam, m.help, "gauge", base, m.value});
        break;
      case MetricSample::Kind::Histogram: {
        for (size_t i = 0; i < m.bounds.size() && i < m.bucketCounts.size(); ++i) {
          auto l = base;
          l.emplace_back("le", formatGoFloat(m.bounds[i]));
          out.push_back(FlatMetric{fam, fam + "_bucket", m.help, "histogram", std::move(l),
                                   double(m.bucketCounts[i])});
        }
        auto l = base;
        l.emplace_back("le", "+Inf");
        out.push_back(FlatMetric{fam, fam + "_bucket", m.help, "histogram", std::move(l), double(m.count)});
        out.push_back(FlatMetric{fam, fam + "_sum", m.help, "histogram", base, m.sum});
        out.push_back(FlatMetric{fam, fam + "_count", m.help, "histogram", base, double(m.count)});
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Prober

Prober::~Prober() { stopAll(); }

std::chrono::milliseconds Prober::initialDelay(const std::string& name, std::chrono::milliseconds interval) {
  if (interval.count() <= 0) return std::chrono::milliseconds(0);
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return std::chrono::milliseconds(int64_t(h % uint64_t(interval.count())));
}

Result<void> Prober::run(const std::string& name, std::chrono::milliseconds interval, const Labels& labels,
                         ProbeClass pc) {
  std::shared_ptr<Probe> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return makeError("the prober is stopping");
    if (probes_.count(name)) return makeError("probe named \"" + name + "\" already registered");
    p = std::make_shared<Probe>(*this, name, interval, labels, std::move(pc));
    probes_[name] = p;
  }
  p->start();
  return okResult();
}

bool Prober::remove(const std::string& name) {
  std::shared_ptr<Probe> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = probes_.find(name);
    if (it == probes_.end()) return false;
    p = it->second;
    probes_.erase(it);
  }
  p->stop();
  return true;
}

bool Prober::has(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return probes_.count(name) != 0;
}

std::vector<std::string> Prober::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [n, _] : probes_) out.push_back(n);
  return out;
}

std::shared_ptr<Probe> Prober::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = probes_.find(name);
  return it == probes_.end() ? nullptr : it->second;
}

void Prober::wait() {
  // Probes may add probes (the map probe): poll until every one known is
  // done and no new one appeared. Bounded by the probes' own timeouts.
  for (;;) {
    std::vector<std::shared_ptr<Probe>> ps;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [_, p] : probes_) ps.push_back(p);
    }
    bool all = std::all_of(ps.begin(), ps.end(), [](const auto& p) { return p->done(); });
    if (all) {
      std::lock_guard<std::mutex> lock(mu_);
      if (probes_.size() == ps.size()) return;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Prober::stopAll() {
  std::map<std::string, std::shared_ptr<Probe>> ps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    ps.swap(probes_);
  }
  for (auto& [_, p] : ps) p->stop();
}

std::vector<ProbeInfo> Prober::infos() const {
  std::vector<std::shared_ptr<Probe>> ps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, p] : probes_) ps.push_back(p);
  }
  std::vector<ProbeInfo> out;
  for (const auto& p : ps) out.push_back(p->info());
  return out;
}

std::vector<FlatMetric> Prober::flatMetrics() const {
  std::vector<std::shared_ptr<Probe>> ps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, p] : probes_) ps.push_back(p);
  }
  std::vector<FlatMetric> out;
  for (const auto& p : ps) p->metrics(settings_.ns, out);
  return out;
}

}  // namespace derpd::probe
