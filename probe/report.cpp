#include "report.hpp"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/config/config.hpp"
#include "common/util/text.hpp"

namespace derpd::probe {

namespace {

void sortByName(std::vector<ProbeInfo>& v) {
  std::sort(v.begin(), v.end(), [](const ProbeInfo& a, const ProbeInfo& b) { return a.name < b.name; });
}

std::string dur(std::chrono::nanoseconds d) { return config::formatGoDuration(d); }

// A latency for people: whole microseconds under 1 ms ("412µs", never "0s"),
// else tenths of a millisecond ("1.3ms").
std::string latencyText(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d < milliseconds(1)) return dur(duration_cast<microseconds>(d + nanoseconds(500)));
  return dur(duration_cast<microseconds>(d + microseconds(50)) / 100 * 100);
}

// RFC 3339 with nanoseconds in UTC, as Go's time.Time marshals ("0001-01-01T00:00:00Z" for never).
std::string rfc3339(SysClock::time_point t) {
  if (t.time_since_epoch().count() == 0) return "0001-01-01T00:00:00Z";
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = std::time_t(ns / 1000000000);
  long frac = long(ns % 1000000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string s = buf;
  if (frac) {
    char f[16];
    std::snprintf(f, sizeof f, ".%09ld", frac);
    std::string fs = f;
    while (fs.back() == '0') fs.pop_back();
    s += fs;
  }
  return s + "Z";
}

}  // namespace

bool allGood(const std::vector<ProbeInfo>& infos) {
  if (infos.empty()) return false;
  return std::all_of(infos.begin(), infos.end(),
                     [](const ProbeInfo& i) { return i.status == ProbeStatus::Succeeded; });
}

std::string onceTable(std::vector<ProbeInfo> infos) {
  sortByName(infos);
  struct Row {
    std::string name, result, latency, error;
  };
  std::vector<Row> rows;
  size_t w0 = 5, w1 = 6, w2 = 7;
  size_t failed = 0;
  for (const ProbeInfo& i : infos) {
    Row r{i.name, "good", latencyText(i.latency), ""};
    if (i.status != ProbeStatus::Succeeded) {
      failed++;
      r.result = i.status == ProbeStatus::Failed ? "bad" : "not run";
      r.latency = "-";
      r.error = i.error;
    }
    w0 = std::max(w0, r.name.size());
    w1 = std::max(w1, r.result.size());
    w2 = std::max(w2, r.latency.size());
    rows.push_back(std::move(r));
  }
  auto pad = [](const std::string& s, size_t w) { return s + std::string(w - s.size() + 2, ' '); };
  std::string out = pad("PROBE", w0) + pad("RESULT", w1) + pad("LATENCY", w2) + "ERROR\n";
  for (const Row& r : rows) {
    std::string line = pad(r.name, w0) + pad(r.result, w1) + pad(r.latency, w2) + r.error;
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  out += std::to_string(infos.size()) + " probes, " + std::to_string(failed) + " failed\n";
  return out;
}

namespace {
std::string urlQueryEscape(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += char(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}
}  // namespace

std::string statusPage(std::vector<ProbeInfo> infos, SysClock::time_point now) {
  sortByName(infos);
  size_t failed = 0;
  for (const ProbeInfo& i : infos) {
    if (!i.healthy()) failed++;
  }
  std::string headline = failed == 0 ? "All " + std::to_string(infos.size()) + " probes are healthy"
                                     : std::to_string(failed) + " out of " + std::to_string(infos.size()) +
                                           " probes failed or never ran";
  std::string h;
  h += "<!DOCTYPE html>\n<html>\n<head><title>DERP Prober</title>\n<style>\n"
       "body { font-family: sans-serif; margin: 1em auto; max-width: 120em; }\n"
       "table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; "
       "text-align: left; vertical-align: top; }\n"
       ".good { color: #080; } .bad { color: #c00; } .labels { font-size: 80%; }\n"
       "</style></head>\n<body>\n<h1>DERP Prober</h1>\n";
  h += "<p class=\"" + std::string(failed ? "bad" : "good") + "\" id=\"summary\">" + htmlEscape(headline) +
       "</p>\n";
  h += "<p>Links: <a href=\"/debug/varz\">Prober metrics</a> · <a href=\"/metrics\">/metrics</a> · "
       "<a href=\"/healthz\">/healthz</a></p>\n";
  h += "<table>\n<tr><th>Name</th><th>Class &amp; Labels</th><th>Interval</th><th>Last Attempt</th>"
       "<th>Success</th><th>Latency</th><th>Last Error</th></tr>\n";
  for (const ProbeInfo& i : infos) {
    std::string labels;
    for (const auto& [k, v] : i.labels) {
      if (k == "name" || k == "class") continue;
      labels += "<li>" + htmlEscape(k) + "=" + htmlEscape(v) + "</li>";
    }
    std::string interval = i.interval.count() < 0 ? "continuous" : dur(i.interval);
    std::string attempt = "never";
    if (i.finished()) {
      attempt = dur(std::chrono::duration_cast<std::chrono::seconds>(now - i.end)) + " ago";
    }
    const bool ok = i.healthy();
    std::string success = i.status == ProbeStatus::Running ? "running" : (ok ? "yes" : "no");
    if (!i.recentResults.empty()) {
      success += " (" + std::to_string(int(i.recentSuccessRatio() * 100)) + "% of the last " +
                 std::to_string(i.recentResults.size()) + ")";
    }
    std::string latency = ok ? latencyText(i.latency) : "";
    if (!i.recentLatencies.empty()) latency += " (median " + latencyText(i.recentMedianLatency()) + ")";
    h += "<tr class=\"" + std::string(ok ? "good" : "bad") + "\"><td>" + htmlEscape(i.name);
    if (i.interval.count() >= 0) {
      h += " <a href=\"/debug/probe-run?name=" + htmlEscape(urlQueryEscape(i.name)) + "\">Run Probe</a>";
    }
    h += "</td><td>" + htmlEscape(i.cls) + "<ul class=\"labels\">" + labels + "</ul></td><td>" + interval +
         "</td><td>" + attempt + "</td><td>" + success + "</td><td>" + latency + "</td><td>" +
         htmlEscape(i.error) + "</td></tr>\n";
  }
  h += "</table>\n</body>\n</html>\n";
  return h;
}

namespace {
nlohmann::json infoJson(const ProbeInfo& i) {
  nlohmann::json j;
  j["Name"] = i.name;
  j["Class"] = i.cls;
  j["Interval"] = int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(i.interval).count());
  j["Labels"] = nlohmann::json::object();
  for (const auto& [k, v] : i.labels) j["Labels"][k] = v;
  j["Start"] = rfc3339(i.start);
  j["End"] = rfc3339(i.end);
  j["Latency"] = int64_t(i.latency.count());
  j["Status"] = statusName(i.status);
  j["Error"] = i.error;
  j["RecentResults"] = i.recentResults;
  std::vector<int64_t> lat;
  for (auto l : i.recentLatencies) lat.push_back(int64_t(l.count()));
  j["RecentLatencies"] = lat;
  return j;
}
}  // namespace

std::string probeRunJson(const ProbeInfo& now, const ProbeInfo& previous) {
  nlohmann::json j;
  j["ProbeInfo"] = infoJson(now);
  j["PreviousSuccessRatio"] = previous.recentSuccessRatio();
  j["PreviousMedianLatency"] = int64_t(previous.recentMedianLatency().count());
  return j.dump() + "\n";
}

std::string probeRunText(const ProbeInfo& now, const ProbeInfo& previous) {
  std::string stats = "Last " + std::to_string(previous.recentResults.size()) + " probes: success rate " +
                      std::to_string(int(previous.recentSuccessRatio() * 100)) + "%, median latency " +
                      dur(previous.recentMedianLatency()) + "\n";
  if (now.status == ProbeStatus::Succeeded) return "Probe succeeded in " + dur(now.latency) + "\n" + stats;
  return "Probe failed: " + now.error + "\n" + stats;
}

}  // namespace derpd::probe
