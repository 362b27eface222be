#!/usr/bin/env bash
# scripts/bench connect: the cost of a new loopback TCP connection, in a fresh network namespace,
# four ways in one run: no filter, a minimal accept-all NFQUEUE reader (the floor), Tollgate as
# installed (filter + daemon, allow rule, the default settings: after the first flow the daemon's
# port-only allow is reused by the filter for the destination, each flow still logged by the
# daemon), and Tollgate asking the daemon about every new flow ([filter] reuse_verdicts = false,
# the `tollgate_asked_*` fields). Prints one JSON object.
# Needs root. Loopback only.
set -euo pipefail
b=$(cd "${1:?usage: connect_bench.sh BUILD_DIR}" && pwd)
count=${TOLLGATE_BENCH_CONNECTIONS:-3000}
[[ $(id -u) == 0 ]] || { echo "bench connect needs root (network namespaces, NFQUEUE)" >&2; exit 1; }

ns=tg-bench-$$
dir=$(mktemp -d /tmp/tg-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 130" INT TERM
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up

ip netns exec "$ns" "$b/bench/connect-probe" server --port 8080 >"$dir/server.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$dir/server.out" 2>/dev/null && break; sleep 0.05; done

json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

# 1. No filter.
none=$(in_ns "$b/bench/connect-probe" latency --port 8080 --count "$count")
none_rate=$(in_ns "$b/bench/connect-probe" rate --port 8080 --seconds 3 --parallel 64)

# 2. The floor: every SYN through an accept-all NFQUEUE reader.
in_ns iptables -t mangle -A OUTPUT -p tcp --syn -j NFQUEUE --queue-num 7
ip netns exec "$ns" "$b/bench/nfq-floor" --queue 7 >/dev/null 2>&1 &
floor_pid=$!
pids+=($floor_pid)
sleep 0.3
floor=$(in_ns "$b/bench/connect-probe" latency --port 8080 --count "$count")
floor_rate=$(in_ns "$b/bench/connect-probe" rate --port 8080 --seconds 3 --parallel 64)
kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true
in_ns iptables -t mangle -D OUTPUT -p tcp --syn -j NFQUEUE --queue-num 7

# 3. Tollgate: daemon (allow rule) + filter in the namespace, default settings.
mkdir -p "$dir/rules.d"
cat >"$dir/tollgate.toml" <<TOML
[tollgate]
group = "root"
runtime_dir = "$dir/run"
[daemon]
rules_dir = "$dir/rules.d"
default_action = "deny"
log_level = "warning"
# Every decision logged, as in a real deployment, but in the bench's temp dir, not the host's.
flow_log = "$dir/flows.db"
[filter]
fallback = "fail_closed"
${TOLLGATE_BENCH_REPLY_SPIN_US:+reply_spin_us = $TOLLGATE_BENCH_REPLY_SPIN_US}
TOML
cat >"$dir/rules.d/bench.toml" <<'TOML'
[[rule]]
name = "bench-server"
action = "allow"
protocol = "tcp"
port = 8080
TOML
"$b/src/daemon/tollgated" --config "$dir/tollgate.toml" 2>"$dir/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [[ -S $dir/run/analysis.sock ]] && break; sleep 0.05; done
chains_in() { in_ns iptables -t mangle -S 2>/dev/null | grep -q TOLLGATE-OUT; }
# with_filter CONFIG LOG LATENCY_VAR RATE_VAR: the filter with CONFIG while the probe measures
# latency and rate; the filter's chains are gone again when it returns.
with_filter() {
  ip netns exec "$ns" "$b/src/filter/tollgate-filter" --config "$1" --log-level warning 2>"$2" &
  local filter_pid=$!
  pids+=($filter_pid)
  for _ in $(seq 100); do chains_in && break; sleep 0.05; done
  sleep 0.3
  printf -v "$3" '%s' "$(in_ns "$b/bench/connect-probe" latency --port 8080 --count "$count")"
  printf -v "$4" '%s' "$(in_ns "$b/bench/connect-probe" rate --port 8080 --seconds 3 --parallel 64)"
  kill -TERM "$filter_pid"
  wait "$filter_pid" 2>/dev/null || true
  for _ in $(seq 100); do chains_in || break; sleep 0.05; done
}
tollgate="" rate="" asked="" asked_rate=""
with_filter "$dir/tollgate.toml" "$dir/filter.log" tollgate rate

# 4. The same asking the daemon about every new flow: a round trip per connection.
sed 's/^\[filter\]$/[filter]\nreuse_verdicts = false/' "$dir/tollgate.toml" >"$dir/asked.toml"
with_filter "$dir/asked.toml" "$dir/filter-asked.log" asked asked_rate

n50=$(json_field "$none" p50_us); n99=$(json_field "$none" p99_us)
f50=$(json_field "$floor" p50_us); f99=$(json_field "$floor" p99_us)
t50=$(json_field "$tollgate" p50_us); t99=$(json_field "$tollgate" p99_us)
fps=$(json_field "$rate" flows_per_s)
a50=$(json_field "$asked" p50_us); a99=$(json_field "$asked" p99_us)
afps=$(json_field "$asked_rate" flows_per_s)
nfps=$(json_field "$none_rate" flows_per_s); ffps=$(json_field "$floor_rate" flows_per_s)
added_ratio() { awk -v n="$n50" -v f="$f50" -v t="$1" 'BEGIN { d = f - n; if (d <= 0) d = 0.001; printf "%.2f", (t - n) / d }'; }
ratio=$(added_ratio "$t50")
aratio=$(added_ratio "$a50")
printf '{"connections":%s,"none_p50_us":%s,"none_p99_us":%s,"none_flows_per_s":%s,"nfq_floor_p50_us":%s,"nfq_floor_p99_us":%s,"nfq_floor_flows_per_s":%s,"tollgate_p50_us":%s,"tollgate_p99_us":%s,"tollgate_flows_per_s":%s,"added_p50_ratio_vs_floor":%s,"tollgate_asked_p50_us":%s,"tollgate_asked_p99_us":%s,"tollgate_asked_flows_per_s":%s,"added_p50_ratio_asked_vs_floor":%s,"none":%s,"floor":%s,"tollgate":%s,"rate":%s,"asked":%s,"asked_rate":%s}\n' \
  "$count" "$n50" "$n99" "$nfps" "$f50" "$f99" "$ffps" "$t50" "$t99" "$fps" "$ratio" "$a50" "$a99" "$afps" "$aratio" \
  "$none" "$floor" "$tollgate" "$rate" "$asked" "$asked_rate"
