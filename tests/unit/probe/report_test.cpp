// derpd-probe's outputs: the --once table, the status page, /debug/probe-run
// answers, the monitor's metric conversion and the /debug/ access rule.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "probe/http_server.hpp"
#include "probe/monitor.hpp"
#include "probe/report.hpp"

namespace derpd::probe {
namespace {

using std::chrono::milliseconds;

ProbeInfo info(std::string name, ProbeStatus st, std::string err = "", milliseconds lat = milliseconds(0)) {
  ProbeInfo i;
  i.name = std::move(name);
  i.cls = "derp_mesh";
  i.interval = milliseconds(15000);
  i.labels = {{"name", i.name}, {"class", i.cls}, {"region", "loc"}};
  i.status = st;
  i.error = std::move(err);
  i.latency = lat;
  i.start = SysClock::now() - std::chrono::seconds(3);
  i.end = SysClock::now() - std::chrono::seconds(2);
  if (st != ProbeStatus::Unknown) i.recentResults = {st == ProbeStatus::Succeeded};
  if (st == ProbeStatus::Succeeded) i.recentLatencies = {lat};
  return i;
}

TEST(OnceTable, RowsSortedWithResultsAndErrors) {
  std::vector<ProbeInfo> v = {info("derp/loc/b/tls", ProbeStatus::Failed, "one of the certs expires in 72h0m0s"),
                              info("derp/loc/a/tls", ProbeStatus::Succeeded, "", milliseconds(31)),
                              info("derpmap-probe", ProbeStatus::Unknown)};
  EXPECT_EQ(onceTable(v),
            "PROBE           RESULT   LATENCY  ERROR\n"
            "derp/loc/a/tls  good     31ms\n"
            "derp/loc/b/tls  bad      -        one of the certs expires in 72h0m0s\n"
            "derpmap-probe   not run  -\n"
            "3 probes, 2 failed\n");
  EXPECT_FALSE(allGood(v));
  EXPECT_TRUE(allGood({info("x", ProbeStatus::Succeeded)}));
  EXPECT_FALSE(allGood({}));
}

// Loopback latencies are often under a millisecond: microseconds, not "0s".
TEST(OnceTable, SubMillisecondLatenciesInMicroseconds) {
  ProbeInfo fast = info("derp/loc/a/tls", ProbeStatus::Succeeded);
  fast.latency = std::chrono::microseconds(412);
  ProbeInfo slow = info("derp/loc/b/tls", ProbeStatus::Succeeded);
  slow.latency = std::chrono::microseconds(1349);
  const std::string t = onceTable({fast, slow});
  EXPECT_NE(t.find("412µs"), std::string::npos) << t;
  EXPECT_NE(t.find("1.3ms"), std::string::npos) << t;
  EXPECT_EQ(t.find(" 0s"), std::string::npos) << t;
  fast.recentLatencies = {fast.latency};
  const std::string page = statusPage({fast}, SysClock::now());
  EXPECT_NE(page.find("412µs (median 412µs)"), std::string::npos) << page;
}

TEST(StatusPage, HeadlineTableAndEscaping) {
  auto ok = info("derp/loc/a/a/mesh", ProbeStatus::Succeeded, "", milliseconds(7));
  auto bad = info("derp/loc/<b>/tls", ProbeStatus::Failed, "x < y & \"z\"");
  std::string page = statusPage({ok, bad}, SysClock::now());
  EXPECT_NE(page.find("<title>DERP Prober</title>"), std::string::npos);
  EXPECT_NE(page.find("1 out of 2 probes failed or never ran"), std::string::npos);
  EXPECT_NE(page.find("derp/loc/&lt;b&gt;/tls"), std::string::npos);
  EXPECT_NE(page.find("x &lt; y &amp; &#34;z&#34;"), std::string::npos);
  EXPECT_NE(page.find("/debug/probe-run?name=derp%2Floc%2Fa%2Fa%2Fmesh"), std::string::npos);
  EXPECT_NE(page.find("/debug/varz"), std::string::npos);
  EXPECT_EQ(page.find("<b>"), std::string::npos);
  EXPECT_NE(statusPage({ok}, SysClock::now()).find("All 1 probes are healthy"), std::string::npos);
  // A continuous (qd) probe is running for as long as it is fine.
  auto qd = info("derp/loc/a/a/qd", ProbeStatus::Running);
  qd.interval = milliseconds(-10000);
  qd.end = SysClock::time_point{};
  EXPECT_NE(statusPage({ok, qd}, SysClock::now()).find("All 2 probes are healthy"), std::string::npos);
  auto periodic = info("derp/loc/a/tls", ProbeStatus::Running);
  EXPECT_NE(statusPage({ok, periodic}, SysClock::now()).find("1 out of 2 probes failed or never ran"),
            std::string::npos);
}

TEST(ProbeRun, JsonHasGoFieldNames) {
  auto now = info("p", ProbeStatus::Failed, "boom");
  auto prev = info("p", ProbeStatus::Succeeded, "", milliseconds(5));
  auto j = nlohmann::json::parse(probeRunJson(now, prev));
  EXPECT_EQ(j["ProbeInfo"]["Name"], "p");
  EXPECT_EQ(j["ProbeInfo"]["Status"], "failed");
  EXPECT_EQ(j["ProbeInfo"]["Error"], "boom");
  EXPECT_EQ(j["ProbeInfo"]["Interval"], 15000000000LL);
  EXPECT_EQ(j["PreviousSuccessRatio"], 1.0);
  EXPECT_EQ(j["PreviousMedianLatency"], 5000000);
  EXPECT_EQ(probeRunText(now, prev), "Probe failed: boom\nLast 1 probes: success rate 100%, median latency 5ms\n");
}

TEST(Monitor, MetricsForTheControlPlane) {
  std::vector<FlatMetric> m = {
      {"derpprobe_result", "derpprobe_result", "h", "gauge", {{"class", "tls"}, {"name", "n"}}, 1},
      {"derpprobe_attempts_total", "derpprobe_attempts_total", "h", "counter", {{"status", "ok"}}, 3},
      {"derpprobe_result", "derpprobe_result", "h", "gauge", {{"hostname", std::string(300, 'h')}}, 1},
  };
  bool cut = false;
  auto out = Monitor::toIpc(m, 10, &cut);
  ASSERT_EQ(out.size(), 2u);  // the 300-byte label body cannot travel
  EXPECT_EQ(out[0].labels, "class=\"tls\",name=\"n\"");
  EXPECT_EQ(out[0].type, ipc::MetricType::Gauge);
  EXPECT_EQ(out[1].type, ipc::MetricType::Counter);
  EXPECT_FALSE(cut);
  out = Monitor::toIpc(m, 1, &cut);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_TRUE(cut);
}

TEST(DebugAccess, LoopbackAndTailscaleAddressesOnly) {
  EXPECT_TRUE(debugAllowedFrom("127.0.0.1"));
  EXPECT_TRUE(debugAllowedFrom("127.3.4.5"));
  EXPECT_TRUE(debugAllowedFrom("::1"));
  EXPECT_TRUE(debugAllowedFrom("::ffff:127.0.0.1"));
  EXPECT_TRUE(debugAllowedFrom("100.64.0.1"));
  EXPECT_TRUE(debugAllowedFrom("100.127.255.255"));
  EXPECT_FALSE(debugAllowedFrom("100.115.92.1"));
  EXPECT_FALSE(debugAllowedFrom("100.128.0.1"));
  EXPECT_TRUE(debugAllowedFrom("fd7a:115c:a1e0::1"));
  EXPECT_FALSE(debugAllowedFrom("192.0.2.1"));
  EXPECT_FALSE(debugAllowedFrom("2001:db8::1"));
  EXPECT_FALSE(debugAllowedFrom("not an ip"));
}

}  // namespace
}  // namespace derpd::probe
