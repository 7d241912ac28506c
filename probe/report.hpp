// What derpd-probe shows: the --once table, derpprobe's HTML status page
// and the /debug/probe-run answers. Pure functions of probe snapshots.
// Included by derpd-probe and its tests.
#pragma once

#include <string>
#include <vector>

#include "probe/prober.hpp"

namespace derpd::probe {

// True when every probe finished and succeeded (and there is at least one).
bool allGood(const std::vector<ProbeInfo>& infos);

// The --once table: one row per probe, sorted by name, columns PROBE,
// RESULT (good / bad / not run), LATENCY (Go duration) and ERROR; then a
// summary line "N probes, K failed".
std::string onceTable(std::vector<ProbeInfo> infos);

// derpprobe's status page ("DERP Prober"): the headline "All N probes are
// healthy" or "K out of N probes failed or never ran", then a table of Name,
// Class & Labels, Interval, Last Attempt, Success, Latency, Last Error, with
// links to /debug/varz and /debug/probe-run?name=…
std::string statusPage(std::vector<ProbeInfo> infos, SysClock::time_point now);

// /debug/probe-run's JSON ({ProbeInfo, PreviousSuccessRatio,
// PreviousMedianLatency}, Go's field names, durations in ns, times RFC 3339)
// and its plain-text form.
std::string probeRunJson(const ProbeInfo& now, const ProbeInfo& previous);
std::string probeRunText(const ProbeInfo& now, const ProbeInfo& previous);

}  // namespace derpd::probe
