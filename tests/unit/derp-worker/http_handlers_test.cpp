// derp-worker's HTTP endpoints, byte for byte against the real derper's
// responses in tests/vectors/http/ (all but the Date header's value).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/proto/http/http.hpp"
#include "http_handlers.hpp"
#include "support/vectors.hpp"

namespace derpd::worker {
namespace {

// Replaces the value of the Date header with a fixed token.
std::string maskDate(std::string s) {
  auto p = s.find("\r\nDate: ");
  if (p == std::string::npos) return s;
  auto e = s.find("\r\n", p + 2);
  return s.substr(0, p) + "\r\nDate: <date>" + s.substr(e);
}

HttpAction run(const std::string& name, bool port80 = false) {
  std::string raw = test::readVectorFile("http/" + name + ".request");
  auto p = http::parseRequestHead(raw);
  EXPECT_EQ(p.status, http::ParseStatus::Complete) << name;
  HttpContext ctx;
  ctx.port80 = port80;
  ctx.peerIp = "127.0.0.1";
  ctx.peerIp16 = *parseIp16("127.0.0.1");
  ctx.nowUnix = 1790000000;
  ctx.varz = [] { return std::string("derp_accepts 0\n"); };
  ctx.check = [] { return std::vector<std::string>{}; };
  return handleHttpRequest(p.head, ctx);
}

class HttpVectors : public ::testing::TestWithParam<const char*> {};

TEST_P(HttpVectors, ByteExactButDate) {
  std::string name = GetParam();
  bool port80 = name.rfind("port80_", 0) == 0;
  HttpAction a = run(name, port80);
  ASSERT_EQ(a.kind, HttpAction::Kind::Respond);
  std::string want = test::readVectorFile("http/" + name + ".response");
  EXPECT_EQ(maskDate(a.response), maskDate(want));
}

INSTANTIATE_TEST_SUITE_P(
    Derper, HttpVectors,
    ::testing::Values("get_root", "get_unknown_path", "get_robots_txt", "generate_204_valid_challenge",
                      "generate_204_challenge_64", "generate_204_challenge_65", "generate_204_invalid_challenge",
                      "generate_204_no_challenge", "derp_probe_get", "derp_probe_head", "derp_probe_post",
                      "derp_latency_check_get", "derp_latency_check_head", "derp_no_upgrade",
                      "derp_weird_upgrade", "port80_get_root", "port80_get_root_xff", "port80_get_path_query",
                      "port80_get_derp", "port80_get_other_host", "port80_head_root", "port80_post_root",
                      "port80_generate_204", "debug_forbidden_xff", "debug_check"));

TEST(HttpHandlers, UpgradeKinds) {
  EXPECT_EQ(run("derp_upgrade_websocket_without_derp_subprotocol").kind, HttpAction::Kind::DerpUpgrade);
  http::RequestHead req;
  req.method = "GET";
  req.path = req.target = "/derp";
  req.headers = {{"Upgrade", "WebSocket"}, {"Sec-WebSocket-Protocol", "derp"}, {"Sec-WebSocket-Key", "x"}};
  HttpContext ctx;
  EXPECT_EQ(handleHttpRequest(req, ctx).kind, HttpAction::Kind::WebSocketUpgrade);
  req.headers = {{"Upgrade", "DERP"}};
  EXPECT_EQ(handleHttpRequest(req, ctx).kind, HttpAction::Kind::DerpUpgrade);
  ctx.derpEnabled = false;
  HttpAction off = handleHttpRequest(req, ctx);
  ASSERT_EQ(off.kind, HttpAction::Kind::Respond);
  EXPECT_NE(off.response.find("404 Not Found"), std::string::npos);
  EXPECT_NE(off.response.find("derp server disabled\n"), std::string::npos);
}

// The rule itself is tested in debug_test.cpp; here: a denied and an
// allowed request through handleHttpRequest.
TEST(HttpHandlers, DebugAccessRules) {
  http::RequestHead req;
  req.method = "GET";
  req.path = req.target = "/debug/varz";
  HttpContext ctx;
  ctx.peerIp = "192.0.2.1";
  ctx.peerIp16 = *parseIp16("192.0.2.1");
  HttpAction denied = handleHttpRequest(req, ctx);
  EXPECT_NE(denied.response.find("403 Forbidden"), std::string::npos);
  EXPECT_NE(denied.response.find("debug access denied\n"), std::string::npos);
  ctx.peerIp = "127.0.0.1";
  ctx.peerIp16 = *parseIp16("127.0.0.1");
  ctx.varz = [] { return std::string("derp_accepts 7\n"); };
  HttpAction ok = handleHttpRequest(req, ctx);
  EXPECT_NE(ok.response.find("200 OK"), std::string::npos);
  EXPECT_NE(ok.response.find("derp_accepts 7\n"), std::string::npos);
}

}  // namespace
}  // namespace derpd::worker
