#include "http_server.hpp"

#include <arpa/inet.h>

#include <Poco/Exception.h>
#include <Poco/Net/HTMLForm.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/URI.h>

#include <cstring>

#include "common/net/listener.hpp"
#include "common/log/log.hpp"
#include "probe/report.hpp"

namespace derpd::probe {

namespace {

using Poco::Net::HTTPResponse;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

void browserHeaders(HTTPServerResponse& res) {
  res.set("Content-Security-Policy",
          "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
          "block-all-mixed-content; object-src 'none'; style-src 'self' 'unsafe-inline'");
  res.set("Strict-Transport-Security", "max-age=63072000; includeSubDomains");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("X-Frame-Options", "DENY");
}

void send(HTTPServerResponse& res, HTTPResponse::HTTPStatus status, const std::string& type,
          const std::string& body) {
  res.setStatus(status);
  res.setContentType(type);
  res.setContentLength(std::streamsize(body.size()));
  res.send() << body;
}

class Handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(Prober& p) : prober_(p) {}

  void handleRequest(HTTPServerRequest& req, HTTPServerResponse& res) override {
    try {
      serve(req, res);
    } catch (const Poco::Exception& e) {
      LOG_DEBUG("http {}: {}", req.getURI(), e.displayText());
    } catch (const std::exception& e) {
      LOG_DEBUG("http {}: {}", req.getURI(), e.what());
    }
  }

 private:
  void serve(HTTPServerRequest& req, HTTPServerResponse& res) {
    Poco::URI uri(req.getURI());
    const std::string path = uri.getPath();
    browserHeaders(res);
    if (path == "/healthz") {
      send(res, HTTPResponse::HTTP_OK, "text/plain", "ok\n");
      return;
    }
    if (path == "/metrics") {
      send(res, HTTPResponse::HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", prober_.prometheusText());
      return;
    }
    if (path == "/debug" ) {
      res.redirect("/debug/", HTTPResponse::HTTP_MOVED_PERMANENTLY);
      return;
    }
    if (path.rfind("/debug/", 0) == 0) {
      if (!debugAllowedFrom(req.clientAddress().host().toString())) {
        send(res, HTTPResponse::HTTP_FORBIDDEN, "text/plain; charset=utf-8", "debug access denied\n");
        return;
      }
      if (path == "/debug/varz") {
        send(res, HTTPResponse::HTTP_OK, "text/plain; charset=utf-8", prober_.prometheusText());
        return;
      }
      if (path == "/debug/probe-run") {
        probeRun(req, res, uri);
        return;
      }
      if (path == "/debug/") {
        send(res, HTTPResponse::HTTP_OK, "text/html; charset=utf-8",
             "<html><body><h1>derpd-probe debug</h1><ul><li><a href=\"/debug/varz\">/debug/varz</a></li>"
             "<li>/debug/probe-run?name=NAME</li></ul></body></html>\n");
        return;
      }
      send(res, HTTPResponse::HTTP_NOT_FOUND, "text/plain; charset=utf-8", "404 page not found\n");
      return;
    }
    // Everything else is the status page, as derpprobe's "/" handler.
    send(res, HTTPResponse::HTTP_OK, "text/html; charset=utf-8", statusPage(prober_.infos(), SysClock::now()));
  }

  void probeRun(HTTPServerRequest& req, HTTPServerResponse& res, const Poco::URI& uri) {
    std::string name;
    for (const auto& [k, v] : uri.getQueryParameters()) {
      if (k == "name") {
        name = v;
        break;
      }
    }
    if (name.empty()) {
      send(res, HTTPResponse::HTTP_BAD_REQUEST, "text/plain; charset=utf-8", "missing name parameter\n");
      return;
    }
    auto p = prober_.find(name);
    if (!p || p->continuous()) {
      send(res, HTTPResponse::HTTP_NOT_FOUND, "text/plain; charset=utf-8", "unknown probe \"" + name + "\"\n");
      return;
    }
    ProbeInfo prev = p->info();
    ProbeInfo now = p->runNow();
    auto status = now.status == ProbeStatus::Succeeded ? HTTPResponse::HTTP_OK
                                                       : HTTPResponse::HTTPStatus(424);  // Failed Dependency
    if (req.get("Accept", "") == "application/json") {
      send(res, status, "application/json", probeRunJson(now, prev));
    } else {
      send(res, status, "text/plain; charset=utf-8", probeRunText(now, prev));
    }
  }

  Prober& prober_;
};

class Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(Prober& p) : prober_(p) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const HTTPServerRequest&) override {
    return new Handler(prober_);
  }

 private:
  Prober& prober_;
};

}  // namespace

bool debugAllowedFrom(const std::string& ipIn) {
  std::string ip = ipIn;
  if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) ip = ip.substr(7);
  in_addr a4{};
  if (::inet_pton(AF_INET, ip.c_str(), &a4) == 1) {
    uint32_t v = ntohl(a4.s_addr);
    if ((v >> 24) == 127) return true;
    if ((v & 0xffc00000u) == 0x64400000u) return (v & 0xfffffe00u) != 0x64735c00u;  // 100.64/10 minus 100.115.92/23
    return false;
  }
  in6_addr a6{};
  if (::inet_pton(AF_INET6, ip.c_str(), &a6) == 1) {
    static const uint8_t loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(a6.s6_addr, loop, 16) == 0) return true;
    static const uint8_t ts[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0};
    return std::memcmp(a6.s6_addr, ts, 6) == 0;
  }
  return false;
}

Result<std::unique_ptr<StatusServer>> StatusServer::start(const std::string& listen, Prober& prober) {
  auto hp = net::splitHostPort(listen);
  if (!hp) return makeError("-listen " + listen + ": " + hp.error());
  if (hp->host.empty()) hp->host = "0.0.0.0";  // ":port": every IPv4 address
  std::unique_ptr<StatusServer> s(new StatusServer());
  try {
    Poco::Net::SocketAddress sa(hp->host, uint16_t(hp->port));
    Poco::Net::ServerSocket sock;
    sock.bind(sa, true);
    sock.listen(64);
    auto* params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(4);
    params->setMaxQueued(64);
    params->setKeepAlive(false);
    params->setTimeout(Poco::Timespan(10, 0));
    const bool v6 = hp->host.find(':') != std::string::npos;
    s->address_ = (v6 ? "[" + hp->host + "]" : hp->host) + ":" + std::to_string(sock.address().port());
    s->server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(prober), sock, params);
    s->server_->start();
  } catch (const Poco::Exception& e) {
    return makeError("-listen " + listen + ": " + e.displayText());
  }
  return s;
}

StatusServer::~StatusServer() {
  if (server_) server_->stopAll(true);
}

}  // namespace derpd::probe
