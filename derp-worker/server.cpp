#include "server.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>
#include <set>
#include <string_view>

#include "client_conn.hpp"
#include "common/log/log.hpp"
#include "common/util/version.hpp"
#include "common/net/listener.hpp"

namespace derpd::worker {

// Accepts on one listening socket for one loop. Every loop registers the
// same socket with EPOLLEXCLUSIVE, so the kernel spreads accepts over loops.
struct Server::Acceptor final : IoHandler {
  Acceptor(Server& s, Loop& l, int fd, bool tls, bool port80)
      : server(s), loop(l), fd(fd), tls(tls), port80(port80) {}
  // Out of descriptors (or kernel memory), accept fails while the listener
  // stays readable: level-triggered epoll would wake this loop for it at
  // once, forever (a busy loop and a log flood). Go's http server backs off
  // 5 ms doubling to 1 s; so does this, with the listener out of epoll
  // meanwhile, and the back-off resets after an accept that works.
  static constexpr std::chrono::milliseconds kBackoffMin{5};
  static constexpr std::chrono::milliseconds kBackoffMax{1000};

  void onIo(uint32_t) override {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage peer{};
      socklen_t len = sizeof peer;
      int c = ::accept4(fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        const int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED) return;
        AcceptError kind = AcceptError::Other;
        if (e == EMFILE) kind = AcceptError::Emfile;
        if (e == ENFILE) kind = AcceptError::Enfile;
        if (e == ENOBUFS) kind = AcceptError::Enobufs;
        if (e == ENOMEM) kind = AcceptError::Enomem;
        loop.stats().acceptErrors[size_t(kind)].add();
        backoff = backoff.count() == 0 ? kBackoffMin : std::min(backoff * 2, kBackoffMax);
        if (auto suppressed = acceptLog().admit()) {
          LOG_WARN("accept on {}: {}{}; not accepting for {} ms{}", port80 ? "the port-80 listener" : "the DERP listener",
                   std::strerror(e), kind == AcceptError::Other ? "" : " (out of a resource: descriptors or memory)",
                   backoff.count(),
                   *suppressed ? " (" + std::to_string(*suppressed) + " more such failures since the last line)" : "");
        }
        loop.pauseFd(fd, EPOLLIN | EPOLLEXCLUSIVE, this, loop.now() + backoff);
        return;
      }
      backoff = std::chrono::milliseconds(0);
      if (!port80 && !server.admitAccepted(loop)) {
        ::close(c);  // as derper's limiter: accepted, then closed at once
        continue;
      }
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      int idle = 600;  // -tcp-keepalive-time 10m
      ::setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
      unsigned int userTimeout = 15000;  // -tcp-user-timeout 15s
      ::setsockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT, &userTimeout, sizeof userTimeout);
      SSL* ssl = nullptr;
      if (tls) {
        ssl = SSL_new(server.sslCtx());
        if (!ssl || SSL_set_fd(ssl, c) != 1) {
          LOG_WARN("SSL_new: {}", opensslErrors());
          if (ssl) SSL_free(ssl);
          ::close(c);
          continue;
        }
        SSL_set_accept_state(ssl);
        loop.stats().tlsAccepted.add();
      }
      Conn* conn = loop.adopt(std::make_unique<Conn>(loop, c, peer, server.nextConnNum(), ssl, port80));
      if (!port80) conn->markPending();
      conn->start();
    }
  }
  // One line a second at most for every acceptor of the process together.
  static log::Repeats& acceptLog() {
    static log::Repeats r(std::chrono::seconds(1));
    return r;
  }
  Server& server;
  Loop& loop;
  int fd;
  bool tls;
  bool port80;
  std::chrono::milliseconds backoff{0};  // loop thread
};

AcceptLimiter::AcceptLimiter(double rate, int64_t burst)
    : rate_(rate),
      burst_(double(burst)),
      unlimited_(std::isinf(rate) && rate > 0),
      tokens_(double(burst)) {}

bool AcceptLimiter::allow(std::chrono::steady_clock::time_point now) {
  if (unlimited_) return true;
  std::lock_guard<std::mutex> lock(mu_);
  if (last_.time_since_epoch().count() != 0 && now > last_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
  }
  last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

bool Server::admitAccepted(Loop& loop) {
  LoopStats& st = loop.stats();
  if (!acceptLimiter_.allow(std::chrono::steady_clock::now())) {
    st.acceptRejected[size_t(AcceptReject::Rate)].add();
    return false;
  }
  if (cfg_.maxConnections > 0) {
    int64_t live = 0;
    for (const auto& l : loops_) live += int64_t(l->liveConns());
    if (live >= cfg_.maxConnections) {
      st.acceptRejected[size_t(AcceptReject::Connections)].add();
      return false;
    }
  }
  if (cfg_.maxHandshakes > 0 && pendingConns_.load(std::memory_order_relaxed) >= cfg_.maxHandshakes &&
      !loop.evictOldestPending()) {
    st.acceptRejected[size_t(AcceptReject::Handshakes)].add();
    return false;
  }
  return true;
}

Server::Server(ServerConfig cfg)
    : cfg_(std::move(cfg)),
      publicKey_(cfg_.privateKey.publicKey()),
      registry_(gauges_, publicKey_),
      startUnix_(long(std::time(nullptr))),
      startSteady_(std::chrono::steady_clock::now()) {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) == 0) machine_ = host;
  procFdDir_ = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  procStatm_ = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  int n = cfg_.threads > 0 ? cfg_.threads : 1;
  for (int i = 0; i < n; ++i) loops_.push_back(std::make_unique<Loop>(*this, i));
}

Server::~Server() {
  stop();
  join();
  acceptors_.clear();
  loops_.clear();
  if (listenFd_ >= 0) ::close(listenFd_);
  if (port80Fd_ >= 0) ::close(port80Fd_);
  if (procFdDir_ >= 0) ::close(procFdDir_);
  if (procStatm_ >= 0) ::close(procStatm_);
}

bool Server::meshKeyMatches(const std::string& presented) const {
  std::lock_guard lk(mu_);
  if (cfg_.meshKey.empty() || presented.size() != cfg_.meshKey.size()) return false;
  // Case-insensitive for hex (HEAD parses the key as bytes), constant time.
  unsigned diff = 0;
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= unsigned(std::tolower(static_cast<unsigned char>(presented[i])) ^
                     std::tolower(static_cast<unsigned char>(cfg_.meshKey[i])));
  }
  return diff == 0;
}

std::string Server::meshKey() const {
  std::lock_guard lk(mu_);
  return cfg_.meshKey;
}

bool Server::hasMeshKey() const {
  std::lock_guard lk(mu_);
  return !cfg_.meshKey.empty();
}

void Server::setMeshKey(std::string key) {
  std::lock_guard lk(mu_);
  std::fill(cfg_.meshKey.begin(), cfg_.meshKey.end(), '\0');
  cfg_.meshKey = std::move(key);
}

void Server::setPeerMetrics(std::vector<ipc::RoleMetrics> roles) {
  std::lock_guard lk(mu_);
  peerMetrics_ = std::move(roles);
}

Result<void> Server::listen(const std::string& addr, int httpPort) {
  auto hp = net::splitHostPort(addr);
  if (!hp) return makeError(hp.error());
  mainHost_ = hp->host;
  auto fd = net::listenTcp(hp->host, hp->port);
  if (!fd) return makeError(fd.error());
  int fd80 = -1;
  if (cfg_.tls && httpPort >= 0) {
    auto r80 = net::listenTcp(hp->host, httpPort);
    if (!r80) {
      ::close(*fd);
      return makeError("port-80 listener: " + r80.error());
    }
    fd80 = *r80;
  }
  adoptListeners(*fd, fd80);
  return {};
}

void Server::adoptListeners(int mainFd, int port80Fd) {
  listenFd_ = mainFd;
  mainPort_ = net::localPort(mainFd);
  if (port80Fd >= 0) {
    port80Fd_ = port80Fd;
    port80Port_ = net::localPort(port80Fd);
  }
}

Result<void> Server::start() {
  for (auto& l : loops_) {
    if (auto r = l->init(); !r) return r;
    auto a = std::make_unique<Acceptor>(*this, *l, listenFd_, cfg_.tls != nullptr, false);
    if (!l->addFd(listenFd_, EPOLLIN | EPOLLEXCLUSIVE, a.get()))
      return makeError(std::string("epoll add listener: ") + std::strerror(errno));
    acceptors_.push_back(std::move(a));
    if (port80Fd_ >= 0) {
      auto a80 = std::make_unique<Acceptor>(*this, *l, port80Fd_, false, true);
      if (!l->addFd(port80Fd_, EPOLLIN | EPOLLEXCLUSIVE, a80.get()))
        return makeError(std::string("epoll add port-80 listener: ") + std::strerror(errno));
      acceptors_.push_back(std::move(a80));
    }
  }
  for (size_t i = 0; i < cfg_.meshHosts.size(); ++i) {
    Loop& l = *loops_[i % loops_.size()];
    meshLinks_.push_back(std::make_unique<MeshLink>(l, cfg_.meshHosts[i], cfg_.meshSslCtxs.at(i).get()));
    MeshLink* link = meshLinks_.back().get();
    l.post([link] { link->start(); });
  }
  for (auto& l : loops_) {
    Loop* lp = l.get();
    threads_.emplace_back([this, lp] {
      lp->run();
      for (auto& link : meshLinks_) {
        if (&link->loop() == lp) link->stop();
      }
      lp->closeAll();
    });
  }
  return {};
}

void Server::setMeshAddresses(const ipc::MeshPeer& peer) {
  for (auto& link : meshLinks_) {
    if (link->spec().entry != peer.host) continue;
    MeshLink* l = link.get();
    l->loop().post([l, addrs = peer.addrs, error = peer.error]() mutable { l->setAddresses(std::move(addrs), error); });
  }
}

void Server::stop() {
  for (auto& l : loops_) l->stop();
}

size_t Server::drain(std::chrono::milliseconds deadline) {
  std::vector<int> fds = {listenFd_};
  if (port80Fd_ >= 0) fds.push_back(port80Fd_);
  // Clients may reconnect at once (another process holds the socket, or we
  // come back); they keep trying for the drain period and then some.
  uint32_t tryFor = uint32_t(std::min<int64_t>(deadline.count() + 30000, UINT32_MAX));
  for (auto& l : loops_) {
    Loop* lp = l.get();
    lp->post([lp, fds, tryFor] { lp->drainAll(fds, 0, tryFor); });
  }
  auto until = std::chrono::steady_clock::now() + deadline;
  size_t live = 0;
  for (;;) {
    live = 0;
    for (auto& l : loops_) live += l->liveConns();
    if (live == 0 || std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a counter, bounded by the deadline
  }
  return live;
}

void Server::join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

double Server::averageQueueMs() const {
  double sum = 0;
  for (const auto& l : loops_) sum += l->stats().avgQueueMs.load(std::memory_order_relaxed);
  return loops_.empty() ? 0 : sum / double(loops_.size());
}

// Both read through descriptors opened at start, so they work in a chroot.
static int64_t countOpenFds(int dirFd) {
  if (dirFd < 0) return 0;
  int dup = ::openat(dirFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) return 0;
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return 0;
  }
  int64_t n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory stream itself
}

static uint64_t residentBytes(int statmFd) {
  char buf[128];
  if (statmFd < 0) return 0;
  ssize_t n = ::pread(statmFd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  unsigned long long size = 0, rss = 0;
  if (std::sscanf(buf, "%llu %llu", &size, &rss) != 2) return 0;
  return rss * uint64_t(::sysconf(_SC_PAGESIZE));
}

namespace {

// A JSON string as Go's %q writes metric names (they are plain ASCII).
std::string jsonQuote(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    auto b = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (b < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", b);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A number as Go's encoding/json writes it: integers plainly, other values
// in the shortest form that reads back the same ('f' between 1e-6 and 1e21,
// else 'e'); JSON has no NaN or infinity.
std::string jsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::trunc(v) && std::fabs(v) < 9.2e18) return std::to_string(int64_t(v));
  char buf[64];
  double a = std::fabs(v);
  auto fmt = (a >= 1e-6 && a < 1e21) ? std::chars_format::fixed : std::chars_format::scientific;
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, fmt);
  if (ec != std::errc()) return "null";
  std::string s(buf, end);
  // encoding/json writes e-7, not e-07 (positive exponents here are >= 21).
  if (auto e = s.find("e-0"); e != std::string::npos && s.size() == e + 4) s.erase(e + 2, 1);
  return s;
}

// The label value of a one-label body `k="v"`; the whole body otherwise.
std::string labelKey(const std::string& labels) {
  auto eq = labels.find("=\"");
  if (eq != std::string::npos && labels.size() >= eq + 3 && labels.back() == '"' &&
      labels.find('"', eq + 2) == labels.size() - 1) {
    return labels.substr(eq + 2, labels.size() - eq - 3);
  }
  return labels;
}

}  // namespace

// Receives every metric once with both of its names and builds the two
// exports: /debug/varz through VarzWriter, and /debug/vars as derper's
// expvar JSON. An expvar path is "name" for a top-level expvar or
// "set.key" for a key inside one of derper's expvar maps ("derp",
// "tls_listener"), with derper's raw names (gauge_/counter_ prefixes, which
// its varz strips). Labelled metrics become nested maps as expvar renders a
// metrics.LabelMap: {"label value": n, ...}, keys sorted.
struct Server::MetricSink {
  VarzWriter varz;
  std::map<std::string, std::string> top;                            // expvar -> JSON
  std::map<std::string, std::map<std::string, std::string>> sets;    // set -> key -> JSON
  std::set<std::string> own;                                         // Prometheus names

  void put(std::string_view path, std::string json) {
    auto dot = path.find('.');
    if (dot == std::string_view::npos) {
      top[std::string(path)] = std::move(json);
    } else {
      sets[std::string(path.substr(0, dot))][std::string(path.substr(dot + 1))] = std::move(json);
    }
  }
  template <typename T>
  static std::string jsonMap(const std::vector<std::pair<std::string, T>>& values) {
    std::map<std::string, std::string> m;
    for (const auto& [k, v] : values) m[k] = jsonNumber(double(v));
    return renderMap(m);
  }
  // expvar.Map.String(): {"k": v, "k2": v2}.
  static std::string renderMap(const std::map<std::string, std::string>& m) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : m) {
      if (!first) out += ", ";
      first = false;
      out += jsonQuote(k) + ": " + v;
    }
    return out + "}";
  }

  void counter(const std::string& prom, std::string_view path, uint64_t v) {
    own.insert(prom);
    varz.counter(prom, v);
    put(path, std::to_string(v));
  }
  void gauge(const std::string& prom, std::string_view path, int64_t v) {
    own.insert(prom);
    varz.gauge(prom, v);
    put(path, std::to_string(v));
  }
  void untyped(const std::string& prom, std::string_view path, double v) {
    own.insert(prom);
    varz.untyped(prom, v);
    put(path, jsonNumber(v));
  }
  void labeledCounter(const std::string& prom, std::string_view path, const std::string& label,
                      const std::vector<std::pair<std::string, uint64_t>>& values) {
    own.insert(prom);
    varz.labeledCounter(prom, label, values);
    put(path, jsonMap(values));
  }
  void labeledGauge(const std::string& prom, std::string_view path, const std::string& label,
                    const std::vector<std::pair<std::string, int64_t>>& values) {
    own.insert(prom);
    varz.labeledGauge(prom, label, values);
    put(path, jsonMap(values));
  }
  // One role's metrics (derpd's snapshot): top-level expvars named as
  // derper's varz rules would need to print them (counter_NAME, gauge_NAME),
  // one nested map per labelled name. As in varz, a name already present
  // (ours, or an earlier role's) wins.
  void peerMetrics(const std::vector<ipc::Metric>& metrics) {
    varz.peerMetrics(metrics);
    std::map<std::string, std::string> plain;
    std::map<std::string, std::map<std::string, std::string>> labelled;
    std::set<std::string> names;
    for (const ipc::Metric& m : metrics) {
      if (own.count(m.name)) continue;
      names.insert(m.name);
      std::string name = (m.type == ipc::MetricType::Counter ? "counter_" : "gauge_") + m.name;
      if (m.labels.empty()) {
        plain[name] = jsonNumber(m.value);
      } else {
        labelled[name][labelKey(m.labels)] = jsonNumber(m.value);
      }
    }
    for (auto& [name, value] : plain) {
      if (auto it = labelled.find(name); it != labelled.end()) {
        it->second[""] = value;  // both shapes under one name: the unlabelled value keyed ""
      } else {
        top[name] = value;
      }
    }
    for (auto& [name, values] : labelled) top[name] = renderMap(values);
    own.insert(names.begin(), names.end());
  }
  // expvar's handler: "{\n" + `"name": value` joined by ",\n" + "\n}\n".
  std::string renderVars() const {
    std::map<std::string, std::string> all = top;
    for (const auto& [name, m] : sets) all[name] = renderMap(m);
    std::string out = "{\n";
    bool first = true;
    for (const auto& [k, v] : all) {
      if (!first) out += ",\n";
      first = false;
      out += jsonQuote(k) + ": " + v;
    }
    return out + "\n}\n";
  }
};

std::string Server::bootstrapDnsBody(std::string_view q, const std::string& peerIp) const {
  if (!cfg_.bootstrapDns) return "";
  return cfg_.bootstrapDns->handle(q, ClientIp::parse(peerIp)).body;
}

std::vector<uint64_t> Server::loopTicks() const {
  std::vector<uint64_t> v;
  v.reserve(loops_.size());
  for (const auto& l : loops_) v.push_back(l->ticks());
  return v;
}

void Server::stallLoopForTest(size_t index, int ms) {
  if (index >= loops_.size()) return;
  LOG_WARN("test hook: event loop {} stalls for {} ms", index, ms);
  loops_[index]->post([ms] { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
}

uint64_t Server::totalAccepts() const {
  uint64_t s = 0;
  for (const auto& l : loops_) s += l->stats().accepts.get();
  return s;
}

void Server::collectMetrics(MetricSink& w) const {
  auto sum = [&](auto field) {
    uint64_t s = 0;
    for (const auto& l : loops_) s += field(l->stats()).get();
    return s;
  };
#define SUM(member) sum([](const LoopStats& st) -> const Counter& { return st.member; })
  w.counter("derp_accepts", "derp.accepts", SUM(accepts));
  w.untyped("derp_average_queue_duration_ms", "derp.average_queue_duration_ms", averageQueueMs());
  w.counter("derp_bytes_received", "derp.bytes_received", SUM(bytesReceived));
  w.counter("derp_bytes_sent", "derp.bytes_sent", SUM(bytesSent));
  w.counter("derp_packets_received", "derp.packets_received", SUM(packetsReceived));
  w.counter("derp_packets_sent", "derp.packets_sent", SUM(packetsSent));
  w.labeledCounter("derp_packets_received_kind", "derp.counter_packets_received_kind", "kind",
                   {{"disco", SUM(packetsReceivedDisco)}, {"other", SUM(packetsReceivedOther)}});
  std::vector<std::pair<std::string, uint64_t>> reasons;
  uint64_t droppedTotal = 0;
  for (size_t i = 0; i < size_t(DropReason::kCount); ++i) {
    uint64_t v = sum([i](const LoopStats& st) -> const Counter& { return st.dropped[i]; });
    droppedTotal += v;
    reasons.emplace_back(dropReasonName(DropReason(i)), v);
  }
  std::sort(reasons.begin(), reasons.end());
  w.labeledCounter("derp_packets_dropped_reason", "derp.counter_packets_dropped_reason", "reason", reasons);
  w.counter("derp_packets_dropped", "derp.packets_dropped", droppedTotal);
  w.labeledCounter("derp_packets_dropped_type", "derp.counter_packets_dropped_type", "type",
                   {{"disco", SUM(droppedDisco)}, {"other", SUM(droppedOther)}});
  w.counter("derp_packets_forwarded_in", "derp.packets_forwarded_in", SUM(forwardedIn));
  w.counter("derp_packets_forwarded_out", "derp.packets_forwarded_out", SUM(forwardedOut));
  w.counter("derp_home_moves_in", "derp.home_moves_in", SUM(homeMovesIn));
  w.counter("derp_home_moves_out", "derp.home_moves_out", SUM(homeMovesOut));
  w.counter("derp_got_ping", "derp.got_ping", SUM(gotPing));
  w.counter("derp_sent_pong", "derp.sent_pong", SUM(sentPong));
  w.counter("derp_peer_gone_disconnected_frames", "derp.peer_gone_disconnected_frames",
            SUM(peerGoneDisconnectedFrames));
  w.counter("derp_peer_gone_not_here_frames", "derp.peer_gone_not_here_frames", SUM(peerGoneNotHereFrames));
  w.counter("derp_unknown_frames", "derp.unknown_frames", SUM(unknownFrames));
  w.counter("derp_websocket_accepts", "derp_websocket_accepts", SUM(websocketAccepts));
  w.counter("derp_total_dup_client_conns", "derp.counter_total_dup_client_conns", gauges_.totalDupClientConns.load());
  w.gauge("derp_current_connections", "derp.gauge_current_connections", gauges_.currentConnections.load());
  w.gauge("derp_current_home_connections", "derp.gauge_current_home_connections",
          gauges_.currentHomeConnections.load());
  w.gauge("derp_current_dup_client_keys", "derp.gauge_current_dup_client_keys", gauges_.dupClientKeys.load());
  w.gauge("derp_current_dup_client_conns", "derp.gauge_current_dup_client_conns", gauges_.dupClientConns.load());
  w.gauge("derp_clients_local", "derp.gauge_clients_local", gauges_.clientsLocal.load());
  int64_t remote;
  {
    std::shared_lock lk(registry_.mu);
    remote = int64_t(registry_.remoteKeyCountLocked());
  }
  w.gauge("derp_clients_total", "derp.gauge_clients_total", gauges_.clientsLocal.load() + remote);
  w.gauge("derp_clients_remote", "derp.gauge_clients_remote", remote);
  w.counter("derp_multiforwarder_created", "derp.multiforwarder_created", gauges_.multiForwarderCreated.load());
  w.counter("derp_multiforwarder_deleted", "derp.multiforwarder_deleted", gauges_.multiForwarderDeleted.load());
  w.counter("derp_packet_forwarder_delete_other_value", "derp.packet_forwarder_delete_other_value",
            gauges_.forwarderDeleteOther.load());
  if (!meshLinks_.empty()) {
    std::map<std::string, int64_t> states;
    for (MeshLinkState st : {MeshLinkState::NoAddress, MeshLinkState::Waiting, MeshLinkState::Dialing,
                             MeshLinkState::Up, MeshLinkState::Self, MeshLinkState::Stopped}) {
      states[meshLinkStateName(st)] = 0;
    }
    uint64_t connects = 0, drops = 0;
    int64_t learned = 0;
    for (const auto& link : meshLinks_) {
      ++states[meshLinkStateName(link->state())];
      connects += link->connects();
      drops += link->forwardDrops();
      learned += int64_t(link->peersLearned());
    }
    w.labeledGauge("derpd_mesh_links", "gauge_derpd_mesh_links", "state", {states.begin(), states.end()});
    w.counter("derpd_mesh_link_connects", "counter_derpd_mesh_link_connects", connects);
    w.counter("derpd_mesh_forward_drops", "counter_derpd_mesh_forward_drops", drops);
    w.gauge("derpd_mesh_peers_learned", "gauge_derpd_mesh_peers_learned", learned);
  }
  w.gauge("derp_watchers", "derp.gauge_watchers", gauges_.watchers.load());
  w.gauge("derp_current_file_descriptors", "derp.gauge_current_file_descriptors", countOpenFds(procFdDir_));
  w.gauge("derp_memstats_sys0", "derp.gauge_memstats_sys0", int64_t(residentBytes(procStatm_)));
  std::vector<std::pair<std::string, uint64_t>> closes;
  for (size_t i = 0; i < size_t(CloseReason::kCount); ++i) {
    closes.emplace_back(closeReasonName(CloseReason(i)),
                        sum([i](const LoopStats& st) -> const Counter& { return st.closes[i]; }));
  }
  std::sort(closes.begin(), closes.end());
  w.labeledCounter("derpd_conn_closes", "counter_derpd_conn_closes", "reason", closes);
  std::vector<std::pair<std::string, uint64_t>> rejected;
  for (size_t i = 0; i < size_t(AcceptReject::kCount); ++i) {
    rejected.emplace_back(acceptRejectName(AcceptReject(i)),
                          sum([i](const LoopStats& st) -> const Counter& { return st.acceptRejected[i]; }));
  }
  w.labeledCounter("derpd_accept_rejected", "counter_derpd_accept_rejected", "reason", rejected);
  std::vector<std::pair<std::string, uint64_t>> acceptErrors;
  for (size_t i = 0; i < size_t(AcceptError::kCount); ++i) {
    acceptErrors.emplace_back(acceptErrorName(AcceptError(i)),
                              sum([i](const LoopStats& st) -> const Counter& { return st.acceptErrors[i]; }));
  }
  w.labeledCounter("derpd_accept_errors", "counter_derpd_accept_errors", "errno", acceptErrors);
  w.gauge("derpd_handshakes_pending", "gauge_derpd_handshakes_pending", pendingConns_.load());
  w.counter("derpd_http_requests", "counter_derpd_http_requests", SUM(httpRequests));
  w.counter("derpd_http_head_too_large", "counter_derpd_http_head_too_large", SUM(httpHeadTooLarge));
  if (cfg_.tls) {
    w.counter("tls_listener_accepted_connections", "tls_listener.counter_accepted_connections", SUM(tlsAccepted));
    w.counter("tls_listener_rejected_connections", "tls_listener.counter_rejected_connections",
              sum([](const LoopStats& st) -> const Counter& { return st.acceptRejected[size_t(AcceptReject::Rate)]; }));
    w.counter("derpd_tls_handshake_errors", "counter_derpd_tls_handshake_errors", SUM(tlsHandshakeErrors));
    static const char* kVer[] = {"1.0", "1.1", "1.2", "1.3", "unknown"};
    std::vector<std::pair<std::string, uint64_t>> req;
    std::vector<std::pair<std::string, int64_t>> act;
    for (size_t i = 0; i < size_t(TlsVersionLabel::kCount); ++i) {
      req.emplace_back(kVer[i], sum([i](const LoopStats& st) -> const Counter& { return st.tlsRequestVersion[i]; }));
      act.emplace_back(kVer[i], gauges_.tlsActive[i].load());
    }
    w.labeledCounter("derper_tls_request_version", "derper_tls_request_version", "version", req);
    w.labeledGauge("derper_tls_active_version", "gauge_derper_tls_active_version", "version", act);
  }
#undef SUM
  w.counter("uptime_sec", "counter_uptime_sec", uint64_t(std::time(nullptr) - startUnix_));
  w.gauge("process_resident_memory_bytes", "gauge_process_resident_memory_bytes", int64_t(residentBytes(procStatm_)));
  w.gauge("process_open_fds", "gauge_process_open_fds", countOpenFds(procFdDir_));
  w.untyped("process_start_unix_time", "process_start_unix_time", double(startUnix_));
  if (cfg_.bootstrapDns) {
    const std::vector<ipc::Metric> bm = cfg_.bootstrapDns->metrics();
    for (size_t i = 0; i < bm.size() && i < kBootstrapDnsExpvarNames.size(); ++i) {
      w.counter(bm[i].name, kBootstrapDnsExpvarNames[i], uint64_t(bm[i].value));
    }
  }
  {
    std::lock_guard lk(mu_);
    for (const ipc::RoleMetrics& rm : peerMetrics_) w.peerMetrics(rm.metrics);
  }
}

std::string Server::varz() const {
  MetricSink w;
  collectMetrics(w);
  return w.varz.render();
}

std::string Server::vars() const {
  MetricSink w;
  collectMetrics(w);
  return w.renderVars();
}

DebugInfo Server::debugInfo() const {
  DebugInfo info;
  auto up = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - startSteady_);
  info.uptimeSec = long((up.count() + 500) / 1000);  // Go: time.Since(start).Round(time.Second)
  info.version = std::string(DERPD_VERSION "-") + gitRev();
  info.machine = machine_;
  info.tlsHostname = cfg_.hostname;
  info.meshKey = hasMeshKey();
  return info;
}

}  // namespace derpd::worker
