// The generic prober: derpprobe's result bookkeeping and Prometheus text,
// checked against derpprobe's own /debug/varz (tests/vectors/derpmap).
#include <gtest/gtest.h>

#include <atomic>
#include <sstream>

#include "probe/prober.hpp"
#include "support/vectors.hpp"

namespace derpd::probe {
namespace {

using std::chrono::milliseconds;

ProbeClass okClass(std::string cls, Labels classLabels = {}) {
  return ProbeClass{[](const ProbeContext&) { return okResult(); }, std::move(cls), std::move(classLabels), nullptr};
}

TEST(FormatGoFloat, MatchesStrconvG) {
  EXPECT_EQ(formatGoFloat(15), "15");
  EXPECT_EQ(formatGoFloat(0), "0");
  EXPECT_EQ(formatGoFloat(2), "2");
  EXPECT_EQ(formatGoFloat(1e6), "1e+06");
  EXPECT_EQ(formatGoFloat(999999), "999999");
  EXPECT_EQ(formatGoFloat(1234567), "1.234567e+06");
  EXPECT_EQ(formatGoFloat(1.795558282e9), "1.795558282e+09");
  EXPECT_EQ(formatGoFloat(0.018684773000000002), "0.018684773000000002");
  EXPECT_EQ(formatGoFloat(0.0001), "0.0001");
  EXPECT_EQ(formatGoFloat(0.00001), "1e-05");
  EXPECT_EQ(formatGoFloat(-3.5), "-3.5");
  EXPECT_EQ(formatGoFloat(1.0 / 0.0), "+Inf");
}

// The derpprobe_* lines of derpprobe's /debug/varz, without values.
std::vector<std::string> vectorShape() {
  std::string text = test::readVectorFile("derpmap/derpprobe-daemon-varz.http");
  std::istringstream in(text.substr(text.find("\r\n\r\n") + 4));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool ours = line.rfind("derpprobe_", 0) == 0 || line.rfind("# HELP derpprobe_", 0) == 0 ||
                line.rfind("# TYPE derpprobe_", 0) == 0;
    if (!ours) continue;
    if (line[0] != '#') line = line.substr(0, line.rfind(' '));
    out.push_back(line);
  }
  return out;
}

std::vector<std::string> shape(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (line[0] != '#') line = line.substr(0, line.rfind(' '));
    out.push_back(line);
  }
  return out;
}

// The probes of the vector's run (two nodes of region 900 "loc", bandwidth
// on), registered in a scrambled order: the text must come out as
// derpprobe's, line for line (names, HELP, TYPE, labels, order).
TEST(Prober, PrometheusTextHasDerpprobesShape) {
  Prober p({false, true, "derpprobe"});
  const Labels node = {{"region", "loc"}, {"region_id", "900"}, {"hostname", "localhost"}};
  auto bwMetrics = [] {
    return std::vector<MetricSample>{
        {"derp_bw_probe_size_bytes", "Payload size of the bandwidth prober", MetricSample::Kind::Gauge, 1e6, {}, {}, 0, 0},
        {"derp_bw_transfer_time_seconds_total", "Time it took to transfer data", MetricSample::Kind::Counter, 0.01, {}, {}, 0, 0},
    };
  };
  for (std::string pair : {"900b/900a", "900a/900a", "900b/900b", "900a/900b"}) {
    const char* path = pair.substr(0, 4) == pair.substr(5) ? "single" : "mesh";
    ASSERT_TRUE(p.run("derp/loc/" + pair + "/mesh", milliseconds(15000), node, okClass("derp_mesh", {{"derp_path", path}})).ok());
    ProbeClass bw = okClass("derp_bw", {{"derp_path", path}});
    bw.metrics = bwMetrics;
    ASSERT_TRUE(p.run("derp/loc/" + pair + "/bw", milliseconds(15000), node, bw).ok());
  }
  for (std::string n : {"900b", "900a"}) {
    ASSERT_TRUE(p.run("derp/loc/" + n + "/udp", milliseconds(15000), node, okClass("derp_udp")).ok());
    ASSERT_TRUE(p.run("derp/loc/" + n + "/tls", milliseconds(15000), node, okClass("tls")).ok());
  }
  ASSERT_TRUE(p.run("derpmap-probe", milliseconds(15000), {}, okClass("derp_map")).ok());
  p.wait();
  EXPECT_EQ(shape(p.prometheusText()), vectorShape());
}

TEST(Prober, ResultsLatencyAndAttemptsByStatus) {
  Prober p({false, true, "derpprobe"});
  ASSERT_TRUE(p.run("good", milliseconds(1000), {}, okClass("c")).ok());
  ASSERT_TRUE(p.run("bad", milliseconds(1000), {{"x", "y\"z"}},
                    ProbeClass{[](const ProbeContext&) -> Result<void> { return makeError("boom"); }, "c", {}, nullptr})
                  .ok());
  EXPECT_FALSE(p.run("good", milliseconds(1000), {}, okClass("c")).ok());  // names are unique
  p.wait();
  auto infos = p.infos();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(infos[0].name, "bad");
  EXPECT_EQ(infos[0].status, ProbeStatus::Failed);
  EXPECT_EQ(infos[0].error, "boom");
  EXPECT_EQ(infos[1].status, ProbeStatus::Succeeded);
  EXPECT_EQ(infos[1].recentResults, std::vector<bool>{true});
  const std::string text = p.prometheusText();
  EXPECT_NE(text.find("derpprobe_result{class=\"c\",name=\"bad\",x=\"y\\\"z\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("derpprobe_result{class=\"c\",name=\"good\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("derpprobe_attempts_total{class=\"c\",name=\"bad\",status=\"fail\",x=\"y\\\"z\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("derpprobe_attempts_total{class=\"c\",name=\"good\",status=\"ok\"} 1\n"), std::string::npos);
  EXPECT_EQ(text.find("name=\"good\",status=\"fail\""), std::string::npos);
}

TEST(Prober, ProbesAddedByAProbeAreWaitedFor) {
  Prober p({false, true, "derpprobe"});
  std::atomic<int> ran{0};
  ProbeClass adder{[&](const ProbeContext&) -> Result<void> {
                     for (int i = 0; i < 3; ++i) {
                       (void)p.run("child" + std::to_string(i), milliseconds(1000), {},
                                   ProbeClass{[&](const ProbeContext&) {
                                                ran++;
                                                return okResult();
                                              },
                                              "c", {}, nullptr});
                     }
                     return okResult();
                   },
                   "adder", {}, nullptr};
  ASSERT_TRUE(p.run("adder", milliseconds(1000), {}, adder).ok());
  p.wait();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(p.infos().size(), 4u);
}

TEST(Prober, DeadlineIsEightyPercentOfTheIntervalAndStopEndsARun) {
  Prober p({false, false, "derpprobe"});
  std::atomic<int64_t> budgetMs{-1};
  std::atomic<bool> sawStop{false};
  ASSERT_TRUE(p.run("slow", milliseconds(10000), {},
                    ProbeClass{[&](const ProbeContext& ctx) -> Result<void> {
                                 budgetMs = ctx.left().count();
                                 for (int i = 0; i < 1000 && !ctx.stopping(); ++i) {
                                   std::this_thread::sleep_for(milliseconds(10));
                                 }
                                 sawStop = ctx.stopping();
                                 return okResult();
                               },
                               "c", {}, nullptr})
                  .ok());
  for (int i = 0; i < 500 && budgetMs.load() < 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_GT(budgetMs.load(), 7000);
  EXPECT_LE(budgetMs.load(), 8000);
  EXPECT_TRUE(p.remove("slow"));
  EXPECT_TRUE(sawStop.load());
  EXPECT_FALSE(p.has("slow"));
}

TEST(Prober, InitialDelayIsStableAndInRange) {
  auto a = Prober::initialDelay("derp/loc/900a/tls", milliseconds(15000));
  EXPECT_EQ(a, Prober::initialDelay("derp/loc/900a/tls", milliseconds(15000)));
  EXPECT_LT(a.count(), 15000);
  EXPECT_NE(a, Prober::initialDelay("derp/loc/900b/tls", milliseconds(15000)));
  EXPECT_EQ(Prober::initialDelay("x", milliseconds(-10000)).count(), 0);
}

TEST(RenderPrometheus, HistogramKeepsBucketOrder) {
  std::vector<FlatMetric> m;
  m.push_back({"p_h", "p_h_bucket", "h", "histogram", {{"le", "0.5"}}, 1});
  m.push_back({"p_h", "p_h_bucket", "h", "histogram", {{"le", "+Inf"}}, 2});
  m.push_back({"p_h", "p_h_sum", "h", "histogram", {}, 0.7});
  m.push_back({"p_h", "p_h_count", "h", "histogram", {}, 2});
  m.push_back({"p_a", "p_a", "a", "gauge", {}, 1});
  EXPECT_EQ(renderPrometheus(m),
            "# HELP p_a a\n# TYPE p_a gauge\np_a 1\n# HELP p_h h\n# TYPE p_h histogram\n"
            "p_h_bucket{le=\"0.5\"} 1\np_h_bucket{le=\"+Inf\"} 2\np_h_sum 0.7\np_h_count 2\n");
}

}  // namespace
}  // namespace derpd::probe
