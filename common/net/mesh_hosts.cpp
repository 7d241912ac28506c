#include "common/net/mesh_hosts.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>

namespace derpd::net {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool validName(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  for (char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool validDialHost(std::string_view d) {
  std::string s(d);
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  in6_addr a6;
  return validName(s) || ::inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

Result<MeshHost> parseEntry(std::string_view tuple) {
  MeshHost h;
  h.entry = std::string(tuple);
  std::string_view e = tuple;
  if (size_t slash = tuple.find('/'); slash != std::string_view::npos) {
    std::string_view dial = tuple.substr(slash + 1);
    if (dial.find('/') != std::string_view::npos) {
      return makeError("too many components in -mesh-with host tuple \"" + h.entry + "\"");
    }
    if (!validDialHost(dial)) return makeError("-mesh-with entry \"" + h.entry + "\": bad dial host");
    h.dialHost = std::string(dial);
    if (h.dialHost.front() == '[') h.dialHost = h.dialHost.substr(1, h.dialHost.size() - 2);
    e = tuple.substr(0, slash);
    if (e.empty()) return makeError("-mesh-with entry \"" + h.entry + "\": no host before '/'");
  }
  h.authority = std::string(e);
  std::string_view rest;
  if (e.front() == '[') {
    size_t close = e.find(']');
    if (close == std::string_view::npos) return makeError("-mesh-with entry \"" + h.entry + "\": missing ']'");
    h.host = std::string(e.substr(1, close - 1));
    in6_addr a6;
    if (::inet_pton(AF_INET6, h.host.c_str(), &a6) != 1) {
      return makeError("-mesh-with entry \"" + h.entry + "\": not an IPv6 address in brackets");
    }
    rest = e.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      return makeError("-mesh-with entry \"" + h.entry + "\": unexpected text after ']'");
    }
  } else {
    size_t colon = e.find(':');
    if (colon != std::string_view::npos && e.find(':', colon + 1) != std::string_view::npos) {
      return makeError("-mesh-with entry \"" + h.entry + "\": an IPv6 address needs brackets ([addr]:port)");
    }
    h.host = std::string(e.substr(0, colon));
    if (colon != std::string_view::npos) rest = e.substr(colon);
    if (!validName(h.host)) return makeError("-mesh-with entry \"" + h.entry + "\": not a host name or address");
  }
  if (!rest.empty()) {
    std::string_view p = rest.substr(1);
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() || v == 0 || v > 65535) {
      return makeError("-mesh-with entry \"" + h.entry + "\": bad port");
    }
    h.port = uint16_t(v);
  }
  if (h.dialHost.empty()) h.dialHost = h.host;
  return h;
}

}  // namespace

Result<std::vector<MeshHost>> parseMeshWith(std::string_view list) {
  std::vector<MeshHost> out;
  if (trim(list).empty()) return out;
  size_t start = 0;
  for (;;) {
    size_t comma = list.find(',', start);
    std::string_view e = trim(list.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (e.empty()) return makeError("-mesh-with: empty entry in \"" + std::string(list) + "\"");
    auto h = parseEntry(e);
    if (!h) return std::move(h).takeError();
    out.push_back(std::move(*h));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

ipc::MeshPeer resolveMeshHost(const MeshHost& h) {
  ipc::MeshPeer peer;
  peer.host = h.entry;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(h.dialHost.c_str(), std::to_string(h.port).c_str(), &hints, &res);
  if (rc != 0) {
    peer.error = rc == EAI_SYSTEM ? "getaddrinfo: system error" : ::gai_strerror(rc);
    return peer;
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    std::string addr;
    if (ai->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, buf, sizeof buf);
      addr = std::string(buf) + ":" + std::to_string(h.port);
    } else if (ai->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, buf, sizeof buf);
      addr = "[" + std::string(buf) + "]:" + std::to_string(h.port);
    } else {
      continue;
    }
    if (std::find(peer.addrs.begin(), peer.addrs.end(), addr) == peer.addrs.end()) peer.addrs.push_back(addr);
  }
  ::freeaddrinfo(res);
  if (peer.addrs.empty()) peer.error = "no IPv4 or IPv6 address";
  return peer;
}

MeshResolver::MeshResolver(std::vector<MeshHost> hosts, std::chrono::milliseconds interval, OnChange onChange)
    : hosts_(std::move(hosts)), interval_(interval), onChange_(std::move(onChange)) {}

MeshResolver::~MeshResolver() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MeshResolver::start() { thread_ = std::thread([this] { run(); }); }

void MeshResolver::refresh() {
  {
    std::lock_guard g(mu_);
    refresh_ = true;
  }
  cv_.notify_all();
}

void MeshResolver::run() {
  ipc::MeshPeers last;
  bool first = true;
  for (;;) {
    ipc::MeshPeers now;
    for (const MeshHost& h : hosts_) now.peers.push_back(resolveMeshHost(h));
    if (first || !(now == last)) {
      onChange_(now);
      last = std::move(now);
      first = false;
    }
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, interval_, [this] { return stop_ || refresh_; });
    if (stop_) return;
    refresh_ = false;
  }
}

}  // namespace derpd::net
