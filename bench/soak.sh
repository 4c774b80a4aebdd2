#!/usr/bin/env bash
# The soak (bench/RESULTS.md, "Soak"; issue 8): the real server under mixed load with
# cancellations for a long while, checked for errors and for memory that grows. Not run in CI.
#
#   bench/soak.sh [--duration S] [--warmup S] [--rate R] [--interval S] [--max_queue N] [--out DIR]
#
# Starts build/server/imagegen-server ($IMAGEGEN_BUILD_DIR overrides build/) on the default model
# (models/fashion-mnist-ldm) with metrics on a free port, then runs imagegen-loadgen twice: a
# warm-up of --warmup seconds (default 300), then the measured load of --duration seconds (default
# 600). The warm-up is as long as the growth that every process shows first: in three runs with a
# 60 s warm-up, RSS rose ~40 MiB over the first five minutes of mixed load (the allocators and
# LibTorch meeting the shapes of the mix) and then crept by a few MiB (bench/RESULTS.md, "Soak"). The load is Poisson arrivals at --rate requests/s (default 9), each request of its own
# shape (--mix: 1-4 images, 5-40 steps, any sampler, guidance, three sizes, previews off, latent
# or VAE-decoded, some image to image); 10% cancel their own call mid-stream, 10% are cancelled
# by a CancelJob call, 10% carry a deadline of 10-300 ms. A queue of --max_queue (default 4)
# refuses bursts with RESOURCE_EXHAUSTED. The server's VmRSS, threads and open files are sampled
# every --interval seconds (default 5) into DIR/rss.csv.
#
# PASS when: no request or CancelJob call ended unexpectedly (loadgen's own accounting: OK,
# RESOURCE_EXHAUSTED of a full queue, the cancels and deadlines it provoked are expected, nothing
# else); resident memory is flat within 10% (start: the median of the first minute of the
# measured load, after the warm-up; end: the median of its last minute; a minute or a fifth of
# --duration, whichever is shorter); /metrics shows no job queued or running once the load has
# ended; and the server drains and exits 0 on SIGTERM. Prints a markdown report; exits 1 on FAIL.
# DIR (default: a new temporary folder, kept) holds rss.csv, the loadgen JSON, the server log and
# the last /metrics scrape.
# Needs imagegen-server, imagegen and imagegen-loadgen built; takes --warmup + --duration + ~20 s.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${IMAGEGEN_BUILD_DIR:-"$root/build"}
duration=600 warmup=300 rate=9 interval=5 max_queue=4 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --max_queue) max_queue=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/soak.sh [--duration S] [--warmup S] [--rate R] [--interval S] [--max_queue N] [--out DIR]" >&2
       exit 2 ;;
  esac
done
[ -n "$out" ] || out=$(mktemp -d /tmp/imagegen-soak.XXXXXX)
mkdir -p "$out"
server_pid="" sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  true
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
phase() { echo "$1" >"$out/phase"; }
scrape() { /usr/bin/python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
             "http://127.0.0.1:$metrics_port/metrics"; }
gauge() { sed -n "s/^$1 //p" "$out/metrics.txt"; }

port=$(free_port)
metrics_port=$(free_port)
"$build/server/imagegen-server" --listen="127.0.0.1:$port" --metrics_listen="127.0.0.1:$metrics_port" \
    --model_dir="$root/models/fashion-mnist-ldm" --max_queue="$max_queue" >"$out/server.log" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 120); do  # ready once it answers ListModels
  "$build/client/imagegen" models --server "127.0.0.1:$port" >/dev/null 2>&1 && { ready=1; break; }
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.5
done
[ -n "$ready" ] || { echo "the server did not start: $(tail -3 "$out/server.log")" >&2; exit 1; }

# The sampler: one CSV row every $interval seconds while the server lives.
phase startup
echo "t_s,phase,rss_kb,threads,open_files" >"$out/rss.csv"
(
  t0=$(date +%s%N)
  while [ -r "/proc/$server_pid/status" ]; do
    rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")
    threads=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$server_pid/status")
    files=$(ls "/proc/$server_pid/fd" 2>/dev/null | wc -l)
    ds=$((($(date +%s%N) - t0) / 100000000))  # tenths of a second
    [ -n "$rss" ] && echo "$((ds / 10)).$((ds % 10)),$(cat "$out/phase"),$rss,$threads,$files" >>"$out/rss.csv"
    sleep "$interval"
  done
) &
sampler_pid=$!

loadgen() {  # $1: name, $2: seconds, $3: seed
  local rc=0
  "$build/client/imagegen-loadgen" --server="127.0.0.1:$port" --mode=poisson --rate="$rate" \
      --duration_s="$2" --seed="$3" --mix --cancel_fraction=0.1 --cancel_job_fraction=0.1 \
      --deadline_fraction=0.1 --short_timeout_s=0.3 --json="$out/$1.json" \
      >/dev/null 2>"$out/$1.txt" || rc=$?
  if [ ! -s "$out/$1.json" ]; then
    echo "imagegen-loadgen ($1) failed with status $rc: $(tail -3 "$out/$1.txt")" >&2
    exit 1
  fi
}

started=$(date -u +'%Y-%m-%d %H:%M UTC')
sleep "$interval"  # one sample of the idle server before any load
phase warmup
loadgen warmup "$warmup" 1000000001
phase load
loadgen load "$duration" 1
phase idle
# Every call has ended on the client; the server ends a cancelled job at its next step. Give the
# gauges up to 10 s to come back to 0.
settled=""
for i in $(seq 20); do
  scrape >"$out/metrics.txt"
  if [ "$(gauge imagegen_queue_depth)" = 0 ] && [ "$(gauge imagegen_active_jobs)" = 0 ]; then
    settled=$(/usr/bin/python3 -c "print($i * 0.5 - 0.5)"); break
  fi
  sleep 0.5
done
sleep "$interval"  # one sample of the idle server after the load
kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""
drain_rc=0
kill -TERM "$server_pid"; wait "$server_pid" || drain_rc=$?
server_pid=""

/usr/bin/python3 - "$out" "$duration" "$warmup" "$rate" "$max_queue" "$interval" "$started" \
    "$settled" "$drain_rc" <<'EOF'
import csv, json, re, statistics, subprocess, sys
out, duration, warmup, rate, max_queue, interval, started, settled, drain_rc = sys.argv[1:]
duration, warmup = float(duration), float(warmup)
runs = {name: json.load(open(f"{out}/{name}.json")) for name in ("warmup", "load")}
rows = list(csv.DictReader(open(f"{out}/rss.csv")))
load = [r for r in rows if r["phase"] == "load"]
mib = lambda kb: int(kb) / 1024

window = min(60.0, duration / 5)
t_first, t_last = float(load[0]["t_s"]), float(load[-1]["t_s"])
first = [int(r["rss_kb"]) for r in load if float(r["t_s"]) <= t_first + window]
last = [int(r["rss_kb"]) for r in load if float(r["t_s"]) >= t_last - window]
start_kb, end_kb = statistics.median(first), statistics.median(last)
ratio = end_kb / start_kb
peak = max(rows, key=lambda r: int(r["rss_kb"]))
idle_before = [r for r in rows if r["phase"] == "startup"]
idle_after = [r for r in rows if r["phase"] == "idle"]

metrics = open(f"{out}/metrics.txt").read()
def metric(name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else None
server_outcomes = {m.group(1): int(float(m.group(2))) for m in re.finditer(
    r'^imagegen_requests_total\{[^}]*outcome="([a-z_]+)"[^}]*\} (\S+)$', metrics, re.M)}
log_outcomes = {}
other_lines = []
for line in open(f"{out}/server.log"):
    if '"event":"request"' in line:
        o = json.loads(line)["outcome"]
        log_outcomes[o] = log_outcomes.get(o, 0) + 1
    elif not line.startswith("imagegen-server: "):
        other_lines.append(line.rstrip())

unexpected = sum(r["unexpected"] for r in runs.values())
flat = abs(ratio - 1) <= 0.10
gauges_zero = metric("imagegen_queue_depth") == 0 and metric("imagegen_active_jobs") == 0
drained = drain_rc == "0"
verdict = unexpected == 0 and flat and gauges_zero and drained

cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = re.search(r"^Model name:\s*(.*)$", cpu, re.M)
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
fmt = lambda counts: ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"

print(f"Machine: {cores} cores, {model.group(1) if model else '?'}; started {started}")
print(f"Load: Poisson {rate} requests/s, mixed shapes, 10% self-cancelled, 10% CancelJob, "
      f"10% short deadlines; --max_queue={max_queue}; warm-up {warmup:.0f} s, then {duration:.0f} s; "
      f"RSS every {interval} s")
print()
print("| run | requests | by plan and end | unexpected |")
print("|---|---|---|---|")
for name, r in runs.items():
    plans = "; ".join(f"{p}: {fmt(c)}" for p, c in r["by_plan"].items())
    calls = f"; CancelJob calls: {fmt(r['cancel_job_calls'])}" if r["cancel_job_calls"] else ""
    print(f"| {name} ({r['wall_s']:.0f} s) | {r['requests']} | {plans}{calls} | {r['unexpected']} "
          f"{fmt(r['unexpected_by_code']) if r['unexpected'] else ''}|")
r = runs["load"]
print()
print(f"Latency of the OK requests (load): p50 {r['latency_ms']['p50']:.0f} ms, p95 "
      f"{r['latency_ms']['p95']:.0f} ms; {r['images_per_s']:.1f} images/s; at most "
      f"{r['max_in_flight']} calls in flight; CancelJob found the job after its last step "
      f"{r['cancel_job_late']} times")
print(f"Server's own count (every request, warm-up and the two init images included): "
      f"metrics {fmt(server_outcomes)}; request log {fmt(log_outcomes)}")
if other_lines:
    print(f"Server log lines other than requests and its own notices: {len(other_lines)}, first: {other_lines[0][:200]}")
print()
print("| resident memory (VmRSS) | MiB | threads | open files |")
print("|---|---|---|---|")
if idle_before:
    r0 = idle_before[-1]
    print(f"| idle, before the warm-up | {mib(r0['rss_kb']):.1f} | {r0['threads']} | {r0['open_files']} |")
print(f"| start: median of the first {window:.0f} s of the load (t = {t_first:.0f}-{t_first + window:.0f} s) "
      f"| {start_kb / 1024:.1f} | {load[0]['threads']} | {load[0]['open_files']} |")
print(f"| end: median of the last {window:.0f} s of the load (t = {t_last - window:.0f}-{t_last:.0f} s) "
      f"| {end_kb / 1024:.1f} | {load[-1]['threads']} | {load[-1]['open_files']} |")
print(f"| peak (t = {float(peak['t_s']):.0f} s, {peak['phase']}) | {mib(peak['rss_kb']):.1f} | {peak['threads']} | {peak['open_files']} |")
if idle_after:
    r1 = idle_after[-1]
    print(f"| idle, after the load | {mib(r1['rss_kb']):.1f} | {r1['threads']} | {r1['open_files']} |")
print()
print(f"- unexpected ends: {unexpected} (expected 0): {'ok' if unexpected == 0 else 'FAIL'}")
print(f"- RSS end / start = {ratio:.3f} (flat within 10%): {'ok' if flat else 'FAIL'}")
print(f"- after the load: imagegen_queue_depth {metric('imagegen_queue_depth'):g}, imagegen_active_jobs "
      f"{metric('imagegen_active_jobs'):g}" + (f" (0 after {settled} s)" if settled else "") +
      f": {'ok' if gauges_zero else 'FAIL'}")
print(f"- SIGTERM: the server drained and exited {drain_rc}: {'ok' if drained else 'FAIL'}")
print()
print(f"**{'PASS' if verdict else 'FAIL'}**  (samples, JSON, logs: {out})")
sys.exit(0 if verdict else 1)
EOF
