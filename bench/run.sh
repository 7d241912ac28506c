#!/usr/bin/env bash
# bench/run.sh: every row of the performance table against derpd (and, when
# given, against a running Go derper), written to one results directory:
#   results.tsv   one line per row and server: the figures derpd-bench printed
#   table.md      the table for BENCHMARKS.md
#   pairs.dat, latency-<server>.cdf and, with gnuplot, pairs.png and latency.png
#
# Usage: bench/run.sh [--bin DIR] [--out DIR] [--duration 10s] [--size 1280]
#                     [--threads N] [--quick]
#                     [--derper-url https://127.0.0.1:PORT/derp --derper-pid PID
#                      [--derper-ca FILE]]
#
# The floor row (derpd-bench floor) is no server's: a plain TCP relay
# thread inside derpd-bench, the kernel's cost under the paced row.
# derpd is started here on 127.0.0.1 with TLS (a throwaway self-signed
# P-256 certificate), port 0, no STUN, and stopped at the end. A derper must
# already be running (on loopback: derpd-bench refuses anything else); its
# pid is what derpd-bench reads CPU and memory from. Every load is bounded:
# derpd-bench stops each run after --duration, and this script after the
# last row. Not a test: nothing here asserts a figure.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/build/bin"
out=""
duration=10s
size=1280
threads=2
quick=0
derper_url="" derper_pid="" derper_ca=""

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --derper-url) derper_url="$2"; shift 2 ;;
    --derper-pid) derper_pid="$2"; shift 2 ;;
    --derper-ca) derper_ca="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$derper_url" ] && [ -z "$derper_pid" ]; then
  echo "bench/run.sh: --derper-url needs --derper-pid (the process to measure)" >&2
  exit 2
fi
for b in derpd derp-worker derpd-bench; do
  [ -x "$bin/$b" ] || { echo "bench/run.sh: $bin/$b not found: run 'make build' first" >&2; exit 2; }
done
[ -n "$out" ] || out="$here/bench/results/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Rows. --quick: the same rows, shorter and smaller (a check of the script).
idle_counts="5000 10000"
sweep="1 2 4 8 16"
if [ "$quick" = 1 ]; then
  duration=1s idle_counts="200" sweep="1 2 4"
fi

# 10,000 idle clients hold two descriptors each in this machine's view
# (derpd-bench's end and derp-worker's end).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d "${TMPDIR:-/tmp}/derpd-bench.XXXXXX")"
derpd_pid=""
cleanup() {
  if [ -n "$derpd_pid" ] && kill -0 "$derpd_pid" 2>/dev/null; then
    kill -TERM "$derpd_pid" 2>/dev/null || true
    wait "$derpd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- derpd ------------------------------------------------------------------
mkdir -p "$work/certs" "$work/state"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/certs/localhost.key" -out "$work/certs/localhost.crt" 2>/dev/null
ca="$work/certs/localhost.crt"
: >"$work/empty.conf"
derpd_args=(--config "$work/empty.conf" -a 127.0.0.1:0 -c "$work/state/derper.key"
  -certmode manual -certdir "$work/certs" -hostname localhost -http-port -1 -stun=false
  --threads "$threads" --state-dir "$work/state" --max-connections 50000)
if [ "$(id -u)" -eq 0 ]; then
  # derpd drops its children's privileges to a user every system has.
  mkdir -p "$work/run" && chmod 0700 "$work/run"
  chown -R nobody "$work/certs" "$work/state"
  chmod 0755 "$work"
  derpd_args+=(--user nobody --cert-user nobody --runtime-dir "$work/run")
fi

start_derpd() {
  "$bin/derpd" "${derpd_args[@]}" "$@" >"$work/derpd.log" 2>&1 &
  derpd_pid=$!
  local i
  for i in $(seq 1 200); do  # up to 20 s for "serving DERP on"
    if grep -q "serving DERP on" "$work/derpd.log"; then break; fi
    kill -0 "$derpd_pid" 2>/dev/null || { cat "$work/derpd.log" >&2; echo "bench/run.sh: derpd exited" >&2; exit 1; }
    sleep 0.1  # waiting for a process we started to say it listens
  done
  derpd_url="$(grep -o 'serving DERP on https://[^ ]*' "$work/derpd.log" | head -n 1 | sed 's/serving DERP on //')"
  worker_pid="$(grep -o 'started derp-worker (pid [0-9]*' "$work/derpd.log" | head -n 1 | grep -o '[0-9]*$')"
  [ -n "$derpd_url" ] && [ -n "$worker_pid" ] || { cat "$work/derpd.log" >&2; echo "bench/run.sh: derpd did not come up" >&2; exit 1; }
  derpd_url="${derpd_url/localhost/127.0.0.1}"
}
stop_derpd() {
  kill -TERM "$derpd_pid" 2>/dev/null || true
  wait "$derpd_pid" 2>/dev/null || true
  derpd_pid=""
}

# --- rows -------------------------------------------------------------------
tsv="$out/results.tsv"
: >"$tsv"
# run_row SERVER ROW -- derpd-bench args...: appends "SERVER ROW k=v ..." to results.tsv.
run_row() {
  local server="$1" row="$2"; shift 3
  echo "== $server: $row" >&2
  local log="$out/$server-${row// /_}.log"
  if ! "$bin/derpd-bench" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench/run.sh: $server: $row failed (log: $log)" >&2
    printf '%s\t%s\tfailed\n' "$server" "$row" >>"$tsv"
    return 0
  fi
  sed 's/^/   /' "$log" >&2
  local line
  line="$(grep '^result ' "$log" | tail -n 1 | sed 's/^result //')"
  printf '%s\t%s\t%s\n' "$server" "$row" "$line" >>"$tsv"
}

# derp_rows SERVER URL PID CA
derp_rows() {
  local server="$1" url="$2" pid="$3" ca="$4"
  local common=(-from "$url" -to "$url" -ca-file "$ca" -size "$size" -duration "$duration" -server-pid "$pid")
  local p
  for p in $sweep; do
    run_row "$server" "$p pairs full speed" -- derp "${common[@]}" -pairs "$p"
  done
  run_row "$server" "4 pairs x 10k paced" -- derp "${common[@]}" -pairs 4 -rate 10000 \
    -latency-file "$out/latency-$server.cdf"
}

# idle_rows SERVER URL PID CA
idle_rows() {
  local server="$1" url="$2" pid="$3" ca="$4" n
  for n in $idle_counts; do
    run_row "$server" "$n idle TLS clients" -- idle -url "$url" -ca-file "$ca" -conns "$n" -duration 2s \
      -server-pid "$pid"
  done
  run_row "$server" "handshakes" -- connect -url "$url" -ca-file "$ca" -conns 5000 -duration "$duration" \
    -workers 2 -server-pid "$pid"
}

# The kernel's floor under the paced row: a relay thread doing nothing but
# epoll_wait, read and write on plain loopback TCP, under the same load.
run_row floor "4 pairs x 10k paced, plain TCP relay" -- floor -pairs 4 -size "$size" -rate 10000 \
  -duration "$duration"

start_derpd
echo "derpd $derpd_url, derp-worker pid $worker_pid, $threads thread(s)" >&2
derp_rows derpd "$derpd_url" "$worker_pid" "$ca"
idle_rows derpd "$derpd_url" "$worker_pid" "$ca"
stop_derpd

# The same full-speed load with one event loop: what the second core buys.
if [ "$threads" != 1 ]; then
  derpd_args_saved=("${derpd_args[@]}")
  derpd_args+=(--threads 1)
  start_derpd
  run_row derpd "4 pairs full speed, 1 thread" -- derp -from "$derpd_url" -to "$derpd_url" -ca-file "$ca" \
    -size "$size" -duration "$duration" -server-pid "$worker_pid" -pairs 4
  stop_derpd
  derpd_args=("${derpd_args_saved[@]}")
fi

if [ -n "$derper_url" ]; then
  derp_rows derper "$derper_url" "$derper_pid" "${derper_ca:-$ca}"
  idle_rows derper "$derper_url" "$derper_pid" "${derper_ca:-$ca}"
fi

# --- table and plots ----------------------------------------------------------
field() {  # field SERVER ROW KEY
  awk -F'\t' -v s="$1" -v r="$2" -v k="$3" '$1 == s && $2 == r {
    n = split($3, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); if (p[1] == k) print p[2] } }' "$tsv"
}
{
  echo "| server | load | delivered pkt/s | lost | MB per server CPU-second | server CPU | p50 / p99 / p99.9 ms | derpd-bench CPU |"
  echo "|---|---|---|---|---|---|---|---|"
  for server in derpd derper; do
    awk -F'\t' -v s="$server" '$1 == s && $2 ~ /pairs/ { print $2 }' "$tsv" | while IFS= read -r row; do
      printf '| %s | %s | %s | %s %% | %s | %s s | %s / %s / %s | %s s |\n' "$server" "$row" \
        "$(field "$server" "$row" pkt_s)" "$(field "$server" "$row" loss_pct)" \
        "$(field "$server" "$row" mb_per_server_cpu_s)" "$(field "$server" "$row" server_cpu_s)" \
        "$(field "$server" "$row" p50_ms)" "$(field "$server" "$row" p99_ms)" "$(field "$server" "$row" p999_ms)" \
        "$(field "$server" "$row" bench_cpu_s)"
    done
  done
  echo
  echo "| server | load | figure |"
  echo "|---|---|---|"
  for server in derpd derper; do
    awk -F'\t' -v s="$server" '$1 == s && $2 ~ /idle|handshakes/ { print $2 }' "$tsv" | while IFS= read -r row; do
      if [ "$row" = handshakes ]; then
        printf '| %s | %s | %s per second, %s per server CPU-second |\n' "$server" "$row" \
          "$(field "$server" "$row" per_s)" "$(field "$server" "$row" per_server_cpu_s)"
      else
        printf '| %s | %s | %s bytes RSS per connection; RSS %s kB before, %s kB held, %s kB after close |\n' \
          "$server" "$row" "$(field "$server" "$row" rss_per_conn_bytes)" "$(field "$server" "$row" rss_before_kb)" \
          "$(field "$server" "$row" rss_held_kb)" "$(field "$server" "$row" rss_after_kb)"
      fi
    done
  done
  row="4 pairs x 10k paced, plain TCP relay"
  if [ -n "$(field floor "$row" us_per_packet)" ]; then
    printf '| floor | %s | %s µs of relay CPU per packet, %s MB per relay CPU-second, p99 %s ms |\n' "$row" \
      "$(field floor "$row" us_per_packet)" "$(field floor "$row" mb_per_relay_cpu_s)" "$(field floor "$row" p99_ms)"
  fi
} >"$out/table.md"

# pairs.dat: pairs, then delivered pkt/s for derpd and derper ("-" if not run).
{
  echo "# pairs derpd_pkt_s derper_pkt_s"
  for p in $sweep; do
    d="$(field derpd "$p pairs full speed" pkt_s)"
    g="$(field derper "$p pairs full speed" pkt_s)"
    echo "$p ${d:--} ${g:--}"
  done
} >"$out/pairs.dat"

if command -v gnuplot >/dev/null 2>&1; then
  have_derper=0
  [ -s "$out/latency-derper.cdf" ] && have_derper=1
  gnuplot <<EOF
set terminal pngcairo size 800,500 noenhanced
set datafile missing "-"
set output "$out/pairs.png"
set title "Delivered packets/s against pairs at full speed ($size-byte packets, TLS, loopback)"
set xlabel "sender/receiver pairs"
set ylabel "delivered packets per second"
set logscale x 2
set yrange [0:*]
set key bottom left
plot "$out/pairs.dat" using 1:2 with linespoints lw 2 title "derpd" $( [ -n "$derper_url" ] && echo ", \"$out/pairs.dat\" using 1:3 with linespoints lw 2 title \"derper\"" )
set output "$out/latency.png"
set title "One-way latency at 4 pairs x 10,000 packets/s ($size-byte packets, TLS)"
unset logscale x
set logscale x 10
set xlabel "latency (ms)"
set ylabel "fraction of packets delivered within"
set yrange [0:1]
set key bottom right
plot "$out/latency-derpd.cdf" using 2:1 with lines lw 2 title "derpd" $( [ "$have_derper" = 1 ] && echo ", \"$out/latency-derper.cdf\" using 2:1 with lines lw 2 title \"derper\"" )
EOF
else
  echo "bench/run.sh: gnuplot not found (apt-get install gnuplot-nox): no plots" >&2
fi

echo "results in $out:" >&2
cat "$out/table.md"
