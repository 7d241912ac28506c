// /bootstrap-dns: see bootstrap_dns.hpp. Mirrors cmd/derper/bootstrap_dns.go.
#include "bootstrap_dns.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "common/log/log.hpp"
#include "common/proto/dns/dns.hpp"
#include "common/util/go_json.hpp"

namespace derpd::worker {

namespace {

__extension__ typedef unsigned __int128 U128;

constexpr U128 u128(uint64_t hi, uint64_t lo) { return (U128(hi) << 64) | lo; }

// math/rand/v2 PCG constants (pcg.go): state = state * mul + inc (mod 2^128).
constexpr U128 kPcgMul = u128(2549297995355413924ull, 4865540595714422341ull);
constexpr U128 kPcgInc = u128(6364136223846793005ull, 1442695040888963407ull);
constexpr uint64_t kDxsmMul = 0xda942042e4dd58b5ull;

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

double defaultCoin() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return double(rng() >> 11) / double(uint64_t(1) << 53);
}


// strconv.Atoi for a value that must land in 0..100: optional sign, decimal
// digits only; nullopt for anything else (including out-of-range values).
std::optional<int> atoiPercent(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool neg = false;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + uint64_t(c - '0');
    if (v > 1000) v = 1000;  // saturate: anything past 100 is rejected anyway
  }
  if (neg && v != 0) return std::nullopt;
  if (v > 100) return std::nullopt;
  return int(v);
}

std::vector<std::string> splitComma(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    out.push_back(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Client IP, rollout gate, rendering

std::optional<ClientIp> ClientIp::fromSockaddr(const sockaddr_storage& ss) {
  ClientIp c;
  if (ss.ss_family == AF_INET) {
    const auto& sin = reinterpret_cast<const sockaddr_in&>(ss);
    c.as16[10] = c.as16[11] = 0xff;
    std::memcpy(c.as16.data() + 12, &sin.sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(ss);
    std::memcpy(c.as16.data(), &sin6.sin6_addr, 16);
  } else {
    return std::nullopt;
  }
  bool mapped = c.as16[10] == 0xff && c.as16[11] == 0xff;
  for (size_t i = 0; i < 10 && mapped; i++) mapped = c.as16[i] == 0;
  if (mapped) {
    c.loopback = c.as16[12] == 127;
  } else {
    c.loopback = true;
    for (size_t i = 0; i < 15 && c.loopback; i++) c.loopback = c.as16[i] == 0;
    c.loopback = c.loopback && c.as16[15] == 1;
  }
  return c;
}

std::optional<ClientIp> ClientIp::parse(std::string_view ip) {
  std::string s(ip.substr(0, ip.find('%')));
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else if (::inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
  } else {
    return std::nullopt;
  }
  return fromSockaddr(ss);
}

double rolloutDraw(const std::array<uint8_t, 16>& ip16) {
  U128 state = u128(le64(ip16.data()), le64(ip16.data() + 8));
  state = state * kPcgMul + kPcgInc;
  uint64_t hi = uint64_t(state >> 64);
  const uint64_t lo = uint64_t(state);
  hi ^= hi >> 32;
  hi *= kDxsmMul;
  hi ^= hi >> 48;
  hi *= (lo | 1);
  return double(hi << 11 >> 11) / double(uint64_t(1) << 53);
}

bool rolloutMatches(double fraction, const std::optional<ClientIp>& client, const std::function<double()>& coin) {
  if (fraction == 0) return false;
  if (fraction == 1) return true;
  if (!client) return false;
  if (client->loopback) return coin() < 0.5;  // derper: "For local testing."
  return fraction > rolloutDraw(client->as16);
}

std::string renderBootstrapJson(const std::map<std::string, std::vector<std::string>>& ips) {
  if (ips.empty()) return "null";
  std::string out = "{";
  bool firstKey = true;
  for (const auto& [name, addrs] : ips) {
    out += firstKey ? "\n\t" : ",\n\t";
    firstKey = false;
    appendGoJsonString(out, name);
    out += ": ";
    if (addrs.empty()) {
      out += "[]";
      continue;
    }
    out += '[';
    for (size_t i = 0; i < addrs.size(); i++) {
      out += i == 0 ? "\n\t\t" : ",\n\t\t";
      appendGoJsonString(out, addrs[i]);
    }
    out += "\n\t]";
  }
  out += "\n}";
  return out;
}

// ---------------------------------------------------------------------------
// BootstrapDns

BootstrapDns::Resolver BootstrapDns::dnsResolver(net::DnsServer server, net::HostsFile hosts,
                                                 std::chrono::milliseconds perQueryTimeout) {
  auto h = std::make_shared<const net::HostsFile>(std::move(hosts));
  Resolver r;
  r.lookupIp = [server, h, perQueryTimeout](const std::string& name,
                                            const std::atomic<bool>& cancel) -> Result<std::vector<std::string>> {
    if (auto fromHosts = h->lookup(name); !fromHosts.empty()) return fromHosts;
    return net::resolveAddrs(server, name, perQueryTimeout, &cancel);
  };
  r.lookupTxt = [server, perQueryTimeout](const std::string& name, const std::atomic<bool>& cancel) {
    return net::resolveTxt(server, name, perQueryTimeout, &cancel);
  };
  return r;
}

namespace {
BootstrapDns::Options withDefaults(BootstrapDns::Options o) {
  if (!o.coin) o.coin = defaultCoin;
  if (o.shuffleSeed == 0) o.shuffleSeed = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();
  return o;
}
}  // namespace

BootstrapDns::BootstrapDns(Options opts, Resolver resolver)
    : opts_(withDefaults(std::move(opts))), resolver_(std::move(resolver)), rng_(opts_.shuffleSeed) {}

BootstrapDns::~BootstrapDns() { stop(); }

void BootstrapDns::start() {
  if (!enabled()) return;
  std::lock_guard<std::mutex> tl(threadMu_);
  if (thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
  }
  thread_ = std::thread([this] { run(); });
}

void BootstrapDns::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    cancel_.store(true);
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> tl(threadMu_);
  if (thread_.joinable()) thread_.join();
}

void BootstrapDns::run() {
  for (;;) {
    refreshNow();
    std::unique_lock<std::mutex> l(mu_);
    if (cv_.wait_for(l, opts_.refreshInterval, [this] { return stopping_; })) return;
  }
}

// resolveList: for each comma-separated entry "name" or "name/txtname", in
// order; a failed address lookup skips the entry; "name" alone is 100 %;
// with a TXT name the last record that is an integer 0..100 wins, a failed
// TXT lookup leaves the percentage unset (0).
BootstrapDns::Entries BootstrapDns::resolveList(const std::string& list) {
  Entries ret;
  for (const std::string& ent : splitComma(list)) {
    if (cancel_.load()) break;
    const size_t slash = ent.find('/');
    const std::string name = ent.substr(0, slash);
    const std::string txtName = slash == std::string::npos ? std::string() : ent.substr(slash + 1);
    auto addrs = resolver_.lookupIp(name, cancel_);
    if (!addrs) {
      LOG_WARN("bootstrap DNS lookup \"{}\": {}", name, addrs.error());
      continue;
    }
    ret.ips[name] = std::move(*addrs);
    if (txtName.empty()) {
      ret.percent[name] = 1.0;
      continue;
    }
    auto vals = resolver_.lookupTxt(txtName, cancel_);
    if (!vals) {
      LOG_WARN("bootstrap DNS lookup \"{}\": {}", txtName, vals.error());
      continue;
    }
    for (const std::string& v : *vals) {
      if (auto p = atoiPercent(v)) ret.percent[name] = double(*p) / 100;
    }
  }
  return ret;
}

void BootstrapDns::refreshNow() {
  std::lock_guard<std::mutex> rl(refreshMu_);
  std::shared_ptr<const Published> pub;
  std::shared_ptr<const Entries> unpub;
  if (!opts_.publishedNames.empty()) {
    Entries e = resolveList(opts_.publishedNames);
    // "Randomize the order of the IPs for each name to avoid the client
    // biasing to IPv6" (derper).
    for (auto& [_, v] : e.ips) std::shuffle(v.begin(), v.end(), rng_);
    std::string body = renderBootstrapJson(e.ips);
    pub = std::make_shared<const Published>(Published{std::move(e), std::move(body)});
  }
  if (!opts_.unpublishedNames.empty()) unpub = std::make_shared<const Entries>(resolveList(opts_.unpublishedNames));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cancel_.load()) return;  // a cancelled refresh may be partial: keep the old results
    if (pub) published_ = std::move(pub);
    if (unpub) unpublished_ = std::move(unpub);
    refreshes_++;
  }
  cv_.notify_all();
}

uint64_t BootstrapDns::refreshes() const {
  std::lock_guard<std::mutex> l(mu_);
  return refreshes_;
}

bool BootstrapDns::waitForRefreshes(uint64_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, timeout, [&] { return refreshes_ >= n; });
}

std::string BootstrapDns::publishedBody() const {
  std::lock_guard<std::mutex> l(mu_);
  return published_ ? published_->body : std::string();
}

size_t BootstrapDns::queriedDomains() const {
  std::lock_guard<std::mutex> l(namesMu_);
  return remembered_.size();
}

BootstrapDns::Response BootstrapDns::handle(std::string_view q, const std::optional<ClientIp>& client) {
  Response resp;
  auto bump = [&](std::atomic<uint64_t>& c, Bump b) {
    c.fetch_add(1, std::memory_order_relaxed);
    resp.bumped |= b;
  };
  bump(counters_.requests, kBumpRequests);

  std::shared_ptr<const Published> pub;
  std::shared_ptr<const Entries> unpub;
  {
    std::lock_guard<std::mutex> l(mu_);
    pub = published_;
    unpub = unpublished_;
  }

  if (!q.empty()) {
    const std::string name(q);
    {
      std::lock_guard<std::mutex> l(namesMu_);
      remembered_.insert(name);
      if (remembered_.size() > kMaxRememberedNames) remembered_.clear();  // "defensive"
    }
    if (unpub) {
      auto it = unpub->ips.find(name);
      if (it != unpub->ips.end() && !it->second.empty()) {
        bump(counters_.unpublishedHits, kBumpUnpublishedHit);
        auto pit = unpub->percent.find(name);
        const double percent = pit == unpub->percent.end() ? 0.0 : pit->second;
        if (rolloutMatches(percent, client, opts_.coin)) {
          // Only the asked name, not everything.
          resp.body = renderBootstrapJson({{name, it->second}});
          resp.unpublished = true;
          return resp;
        }
        bump(counters_.unpublishedPercentMisses, kBumpUnpublishedPercentMiss);
      }
    }
    // A q in the published set counts as a published hit or miss; one in
    // neither set as an unpublished miss.
    bool inPub = false;
    bool hasIps = false;
    if (pub) {
      auto pubIt = pub->entries.ips.find(name);
      inPub = pubIt != pub->entries.ips.end();
      hasIps = inPub && !pubIt->second.empty();
    }
    if (inPub) {
      if (hasIps) {
        bump(counters_.publishedHits, kBumpPublishedHit);
      } else {
        bump(counters_.publishedMisses, kBumpPublishedMiss);
      }
    } else {
      bump(counters_.unpublishedMisses, kBumpUnpublishedMiss);
    }
  }
  if (pub) resp.body = pub->body;
  return resp;
}

std::vector<ipc::Metric> BootstrapDns::metrics() const {
  const uint64_t values[] = {
      counters_.requests.load(std::memory_order_relaxed),
      counters_.publishedHits.load(std::memory_order_relaxed),
      counters_.publishedMisses.load(std::memory_order_relaxed),
      counters_.unpublishedHits.load(std::memory_order_relaxed),
      counters_.unpublishedMisses.load(std::memory_order_relaxed),
      counters_.unpublishedPercentMisses.load(std::memory_order_relaxed),
      uint64_t(queriedDomains()),
  };
  std::vector<ipc::Metric> out;
  out.reserve(kBootstrapDnsExpvarNames.size());
  for (size_t i = 0; i < kBootstrapDnsExpvarNames.size(); i++) {
    std::string_view n = kBootstrapDnsExpvarNames[i];
    n.remove_prefix(std::string_view("counter_").size());
    out.push_back({std::string(n), "", double(values[i]), ipc::MetricType::Counter});
  }
  return out;
}

}  // namespace derpd::worker
