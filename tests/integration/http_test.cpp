// HTTP endpoints of derp-worker (PROTOCOL.md §7, §2.3) against the real
// derper's captured exchanges in tests/vectors/http/ (README §5).
#include <string>
#include <vector>

#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

bool vectorServerClosed(const std::string& name) {
  auto idx = loadVectorJson("http/index.json");
  for (auto& e : idx["exchanges"]) {
    if (e["name"] == name) return e["server_closed_connection"].get<bool>();
  }
  ADD_FAILURE() << "no " << name << " in http/index.json";
  return false;
}

class HttpVectorTest : public WorkerTest, public ::testing::WithParamInterface<std::string> {};

// The request bytes of the vector sent as they are; the response compared
// with the real derper's (plain HTTP derper with the vectors' server key).
TEST_P(HttpVectorTest, MatchesDerper) {
  const std::string name = GetParam();
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  std::string request = readVectorFile("http/" + name + ".request");
  std::string want = readVectorFile("http/" + name + ".response");
  auto got = rawHttp(w->port(), request);
  ASSERT_TRUE(got.error.empty()) << got.error;
  EXPECT_TRUE(httpSameExceptDate(got.data, want)) << "vector http/" << name;
  EXPECT_EQ(got.serverClosed, vectorServerClosed(name))
      << "whether the server closed the connection after the response (keep-alive)";
}

INSTANTIATE_TEST_SUITE_P(
    Vectors, HttpVectorTest,
    ::testing::Values("get_root", "get_unknown_path", "get_robots_txt", "generate_204_valid_challenge",
                      "generate_204_challenge_64", "generate_204_challenge_65",
                      "generate_204_invalid_challenge", "generate_204_no_challenge", "derp_probe_get",
                      "derp_probe_head", "derp_probe_post", "derp_latency_check_get",
                      "derp_latency_check_head", "derp_no_upgrade", "derp_weird_upgrade",
                      "derp_upgrade_websocket_without_derp_subprotocol", "debug_forbidden_xff"),
    [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

class HttpTest : public WorkerTest {};

// Several requests written at once on one keep-alive connection are answered
// in order, each as the vector says.
TEST_F(HttpTest, PipelinedKeepAliveRequests) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  const std::vector<std::string> names = {"get_robots_txt", "derp_probe_head", "generate_204_valid_challenge",
                                          "derp_latency_check_get", "derp_probe_post", "get_robots_txt"};
  std::string request;
  for (auto& n : names) request += readVectorFile("http/" + n + ".request");
  auto got = rawHttp(w->port(), request);
  ASSERT_TRUE(got.error.empty()) << got.error;
  EXPECT_FALSE(got.serverClosed);
  std::string_view rest = got.data;
  for (auto& n : names) {
    SCOPED_TRACE(n);
    bool head = n.find("_head") != std::string::npos;
    size_t used = 0;
    auto r = parseHttpResponse(rest, head, &used);
    ASSERT_TRUE(r.has_value()) << "no complete response in '" << std::string(rest.substr(0, 300)) << "'";
    EXPECT_TRUE(httpSameExceptDate(std::string(rest.substr(0, used)), readVectorFile("http/" + n + ".response")));
    rest.remove_prefix(used);
  }
  EXPECT_TRUE(rest.empty()) << "extra bytes after the responses: '" << std::string(rest) << "'";
}

// /debug/varz from 127.0.0.1: Prometheus text with derper's metric names
// (PROTOCOL.md §11), every drop reason and type present from the start.
TEST_F(HttpTest, DebugVarzFromLoopback) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto r = httpGet(*w, "/debug/varz");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200) << r->statusLine;
  EXPECT_NE(r->body.find("derp_accepts"), std::string::npos);
  auto m = parsePrometheus(r->body);
  const char* const kNames[] = {
      "derp_accepts",
      "derp_current_connections",
      "derp_current_home_connections",
      "derp_clients_total",
      "derp_clients_local",
      "derp_clients_remote",
      "derp_current_dup_client_keys",
      "derp_current_dup_client_conns",
      "derp_total_dup_client_conns",
      "derp_watchers",
      "derp_bytes_received",
      "derp_packets_received",
      "derp_bytes_sent",
      "derp_packets_sent",
      "derp_packets_dropped",
      "derp_packets_dropped_reason{reason=\"unknown_dest\"}",
      "derp_packets_dropped_reason{reason=\"unknown_dest_on_fwd\"}",
      "derp_packets_dropped_reason{reason=\"gone_disconnected\"}",
      "derp_packets_dropped_reason{reason=\"queue_head\"}",
      "derp_packets_dropped_reason{reason=\"queue_tail\"}",
      "derp_packets_dropped_reason{reason=\"write_error\"}",
      "derp_packets_dropped_reason{reason=\"dup_client\"}",
      "derp_packets_dropped_type{type=\"disco\"}",
      "derp_packets_dropped_type{type=\"other\"}",
      "derp_packets_forwarded_in",
      "derp_packets_forwarded_out",
      "derp_home_moves_in",
      "derp_home_moves_out",
      "derp_got_ping",
      "derp_sent_pong",
      "derp_peer_gone_disconnected_frames",
      "derp_peer_gone_not_here_frames",
      "derp_unknown_frames",
      "derp_websocket_accepts",
  };
  for (const char* n : kNames) {
    auto it = m.find(n);
    ASSERT_NE(it, m.end()) << "missing metric " << n;
    EXPECT_EQ(it->second, 0) << n << " on a fresh server";
  }
  // Refused when the request came through a proxy (§7.2).
  auto xff = httpGet(*w, "/debug/varz", {{"X-Forwarded-For", "203.0.113.9"}});
  ASSERT_TRUE(xff.ok()) << xff.error();
  EXPECT_EQ(xff->status, 403) << xff->statusLine;
  EXPECT_EQ(xff->body, "debug access denied\n");
}

// Each accepted DERP upgrade counts in derp_accepts; plain HTTP requests do not.
TEST_F(HttpTest, AcceptsCountsDerpUpgradesOnly) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto before = metric(*w, "derp_accepts");
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(*before, 0);
  auto robots = httpGet(*w, "/robots.txt");
  ASSERT_TRUE(robots.ok()) << robots.error();
  {
    DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
    DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
    EXPECT_TRUE(waitForMetric(*w, "derp_accepts", [](double v) { return v == 2; }));
    EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
    EXPECT_TRUE(waitForMetric(*w, "derp_clients_local", [](double v) { return v == 2; }));
    EXPECT_TRUE(waitForMetric(*w, "derp_clients_total", [](double v) { return v == 2; }));
    EXPECT_TRUE(waitForMetric(*w, "derp_clients_remote", [](double v) { return v == 0; }));
  }
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_accepts", [](double v) { return v == 2; }));
}

// A head just under the 16 KiB limit is an ordinary request.
TEST_F(HttpTest, LargeHeadUnderLimitIsServed) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  std::string req = "GET /robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + std::string(15000, 'f') +
                    "\r\nConnection: close\r\n\r\n";
  ASSERT_LT(req.size(), 16u * 1024);
  auto got = rawHttp(w->port(), req);
  ASSERT_TRUE(got.error.empty()) << got.error;
  auto r = parseHttpResponse(got.data);
  ASSERT_TRUE(r.has_value()) << got.data.substr(0, 300);
  EXPECT_EQ(r->status, 200) << r->statusLine;
  EXPECT_EQ(r->body, "User-agent: *\nDisallow: /\n");
}

// -derp=false: /derp answers 404 (PROTOCOL.md §2.3 step 2) even with an
// Upgrade header; everything else is still served.
TEST_F(HttpTest, DerpDisabled) {
  WorkerConfig cfg;
  cfg.extra = {"-derp=false"};
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  auto got = rawHttp(w->port(),
                     "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n");
  auto r = parseHttpResponse(got.data);
  ASSERT_TRUE(r.has_value()) << got.data.substr(0, 300);
  EXPECT_EQ(r->status, 404) << r->statusLine;
  EXPECT_EQ(r->body, "derp server disabled\n");
  auto c = dial(*w, keys::alice());
  EXPECT_FALSE(c.ok()) << "a DERP client connected to a -derp=false server";
  auto robots = httpGet(*w, "/robots.txt");
  ASSERT_TRUE(robots.ok()) << robots.error();
  EXPECT_EQ(robots->status, 200);
  auto probe = httpGet(*w, "/derp/probe");
  ASSERT_TRUE(probe.ok()) << probe.error();
  EXPECT_EQ(probe->status, 200);
}

// The exact 101 of PROTOCOL.md §2.3 step 3, with the ServerKey frame right
// after it; the Upgrade token is case-insensitive (§12.12).
TEST_F(HttpTest, UpgradeResponseBytes) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  const std::string want101 = std::string(
                                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                                  "Derp-Version: 2\r\nDerp-Public-Key: ") +
                              kServerPublicHex + "\r\n\r\n";
  Bytes serverKeyFrame = concat({asBytes(std::string_view("\x01\x00\x00\x00\x28", 5)),
                                 ByteView(derp::kMagic.data(), derp::kMagic.size()),
                                 keys::serverPublic().bytes()});
  for (const char* upgrade : {"DERP", "derp", "DeRp"}) {
    SCOPED_TRACE(upgrade);
    auto got = rawHttp(w->port(), std::string("GET /derp HTTP/1.1\r\nHost: derp.example.com\r\n"
                                              "Connection: Upgrade\r\nUpgrade: ") +
                                      upgrade + "\r\n\r\n",
                       false, "", "", Millis(500));
    EXPECT_EQ(got.data, want101 + std::string(asChars(serverKeyFrame)));
  }
  // The method is not checked (§2.3).
  auto post = rawHttp(w->port(),
                      "POST /derp HTTP/1.1\r\nHost: derp.example.com\r\nConnection: Upgrade\r\n"
                      "Upgrade: DERP\r\nContent-Length: 0\r\n\r\n",
                      false, "", "", Millis(500));
  EXPECT_EQ(post.data, want101 + std::string(asChars(serverKeyFrame)));
  // Fast start: no HTTP bytes at all, ServerKey first (§2.3 step 3).
  auto fast = rawHttp(w->port(),
                      "GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nConnection: Upgrade\r\n"
                      "Upgrade: DERP\r\nDerp-Fast-Start: 1\r\n\r\n",
                      false, "", "", Millis(500));
  EXPECT_EQ(fast.data, std::string(asChars(serverKeyFrame)));
}

}  // namespace
}  // namespace derpd::test
