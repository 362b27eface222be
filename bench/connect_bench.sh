#!/usr/bin/env bash
# scripts/bench connect: the cost of a new loopback TCP connection, in a fresh network namespace,
# three ways side by side: no filter (port 8081), a minimal accept-all NFQUEUE reader (the floor,
# port 8082) and Tollgate (filter + daemon with an allow rule, port 8080). Two phases: Tollgate as
# installed (default settings: after the first flow the daemon's port-only allow is reused by the
# filter for the destination, each flow still logged by the daemon), then Tollgate asking the
# daemon about every new flow ([filter] reuse_verdicts = false, the `tollgate_asked_*` fields).
#
# This machine's speed drifts by 2x over tens of seconds, so the three are measured in short
# interleaved rounds (the order rotating each round), and each figure is the median of its
# rounds: a drift then moves all three alike and the ratios survive it. Each phase has its own
# none and floor rounds; the headline none/floor figures are the first phase's.
# Prints one JSON object. Needs root. Loopback only.
set -euo pipefail
b=$(cd "${1:?usage: connect_bench.sh BUILD_DIR}" && pwd)
count=${TOLLGATE_BENCH_CONNECTIONS:-3000}  # per way and phase
rounds=${TOLLGATE_BENCH_ROUNDS:-6}
rate_rounds=${TOLLGATE_BENCH_RATE_ROUNDS:-5}  # of 1 s each, per way and phase
[[ $(id -u) == 0 ]] || { echo "bench connect needs root (network namespaces, NFQUEUE)" >&2; exit 1; }
((count >= rounds && rounds >= 1 && rate_rounds >= 1)) || { echo "bad round counts" >&2; exit 2; }

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
# For what runs in the foreground only: in the background, $! would be a subshell, not the program.
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up

declare -A port=([tollgate]=8080 [none]=8081 [floor]=8082)
for way in tollgate none floor; do
  ip netns exec "$ns" "$b/bench/connect-probe" server --port "${port[$way]}" >"$dir/server-$way.out" &
  pids+=($!)
done
for way in tollgate none floor; do
  for _ in $(seq 100); do grep -q ready "$dir/server-$way.out" 2>/dev/null && break; sleep 0.05; done
done

# The floor: every SYN to 8082 through an accept-all reader on queue 7, for the whole run.
ip netns exec "$ns" "$b/bench/nfq-floor" --queue 7 >/dev/null 2>&1 &
pids+=($!)

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
sed 's/^\[filter\]$/[filter]\nreuse_verdicts = false/' "$dir/tollgate.toml" >"$dir/asked.toml"
"$b/src/daemon/tollgated" --config "$dir/tollgate.toml" 2>"$dir/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [[ -S $dir/run/analysis.sock ]] && break; sleep 0.05; done

json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
chains_in() { in_ns iptables -t mangle -S 2>/dev/null | grep -q TOLLGATE-OUT; }
# Ahead of Tollgate's jump (the filter puts it first when it starts; these go above it): 8081
# skips every rule of the table, and SYNs to 8082 go to the floor's queue.
bypass_rules() {
  in_ns iptables -t mangle "$1" OUTPUT -p tcp --dport "${port[none]}" -j ACCEPT
  in_ns iptables -t mangle "$1" OUTPUT -p tcp --syn --dport "${port[floor]}" -j NFQUEUE --queue-num 7
}

# phase CONFIG LOG PREFIX: the filter with CONFIG; sets PREFIX_<way>_{p50,p99,fps,failed} for
# the three ways, the medians of their rounds.
phase() {
  local config=$1 log=$2 prefix=$3
  ip netns exec "$ns" "$b/src/filter/tollgate-filter" --config "$config" --log-level warning 2>"$log" &
  local filter_pid=$!
  pids+=("$filter_pid")
  for _ in $(seq 100); do chains_in && break; sleep 0.05; done
  chains_in || { echo "bench connect: the filter installed no chains; its log:" >&2; cat "$log" >&2; exit 1; }
  bypass_rules -I
  sleep 0.3
  local per=$((count / rounds)) r way out ways=(none floor tollgate)
  declare -A p50s p99s fpss failed
  for ((r = 0; r < rounds; r++)); do
    for way in "${ways[@]}"; do
      out=$(in_ns "$b/bench/connect-probe" latency --port "${port[$way]}" --count "$per" \
        --first $((r * per)))
      p50s[$way]+=" $(json_field "$out" p50_us)"
      p99s[$way]+=" $(json_field "$out" p99_us)"
      failed[$way]=$((${failed[$way]:-0} + $(json_field "$out" failed)))
    done
    ways=("${ways[@]:1}" "${ways[0]}")  # rotate: nobody always goes first
  done
  for ((r = 0; r < rate_rounds; r++)); do
    for way in "${ways[@]}"; do
      out=$(in_ns "$b/bench/connect-probe" rate --port "${port[$way]}" --seconds 1 --parallel 64)
      fpss[$way]+=" $(json_field "$out" flows_per_s)"
      failed[$way]=$((${failed[$way]:-0} + $(json_field "$out" failed)))
    done
    ways=("${ways[@]:1}" "${ways[0]}")
  done
  bypass_rules -D
  kill -TERM "$filter_pid"
  wait "$filter_pid" 2>/dev/null || true
  for _ in $(seq 100); do chains_in || break; sleep 0.05; done
  for way in none floor tollgate; do
    # shellcheck disable=SC2086  # word splitting of the round lists is intended
    {
      printf -v "${prefix}_${way}_p50" '%s' "$(median ${p50s[$way]})"
      printf -v "${prefix}_${way}_p99" '%s' "$(median ${p99s[$way]})"
      printf -v "${prefix}_${way}_fps" '%s' "$(median ${fpss[$way]})"
    }
    printf -v "${prefix}_${way}_failed" '%s' "${failed[$way]}"
    # The rounds themselves, so a reader can see the spread the medians hide.
    local list
    list=$(tr -s ' ' ',' <<<"${p50s[$way]# }")
    printf -v "${prefix}_${way}_rounds" '%s' "[${list%,}]"
  done
}

phase "$dir/tollgate.toml" "$dir/filter.log" d
phase "$dir/asked.toml" "$dir/filter-asked.log" a

# (t - none) / (floor - none), both from the same phase.
added_ratio() { awk -v n="$1" -v f="$2" -v t="$3" 'BEGIN { d = f - n; if (d <= 0) d = 0.001; printf "%.2f", (t - n) / d }'; }
rate_ratio() { awk -v f="$1" -v t="$2" 'BEGIN { printf "%.2f", (f > 0) ? t / f : 0 }'; }
# shellcheck disable=SC2154  # set by phase through printf -v
{
  ratio=$(added_ratio "$d_none_p50" "$d_floor_p50" "$d_tollgate_p50")
  aratio=$(added_ratio "$a_none_p50" "$a_floor_p50" "$a_tollgate_p50")
  printf '{"connections":%s,"rounds":%s,' "$count" "$rounds"
  printf '"none_p50_us":%s,"none_p99_us":%s,"none_flows_per_s":%s,' \
    "$d_none_p50" "$d_none_p99" "$d_none_fps"
  printf '"nfq_floor_p50_us":%s,"nfq_floor_p99_us":%s,"nfq_floor_flows_per_s":%s,' \
    "$d_floor_p50" "$d_floor_p99" "$d_floor_fps"
  printf '"tollgate_p50_us":%s,"tollgate_p99_us":%s,"tollgate_flows_per_s":%s,' \
    "$d_tollgate_p50" "$d_tollgate_p99" "$d_tollgate_fps"
  printf '"added_p50_ratio_vs_floor":%s,"flows_per_s_ratio_vs_floor":%s,' \
    "$ratio" "$(rate_ratio "$d_floor_fps" "$d_tollgate_fps")"
  printf '"tollgate_asked_p50_us":%s,"tollgate_asked_p99_us":%s,"tollgate_asked_flows_per_s":%s,' \
    "$a_tollgate_p50" "$a_tollgate_p99" "$a_tollgate_fps"
  printf '"added_p50_ratio_asked_vs_floor":%s,"flows_per_s_ratio_asked_vs_floor":%s,' \
    "$aratio" "$(rate_ratio "$a_floor_fps" "$a_tollgate_fps")"
  printf '"asked_phase":{"none_p50_us":%s,"nfq_floor_p50_us":%s,"none_flows_per_s":%s,"nfq_floor_flows_per_s":%s},' \
    "$a_none_p50" "$a_floor_p50" "$a_none_fps" "$a_floor_fps"
  printf '"rounds_p50_us":{"none":%s,"floor":%s,"tollgate":%s,"asked_none":%s,"asked_floor":%s,"asked":%s},' \
    "$d_none_rounds" "$d_floor_rounds" "$d_tollgate_rounds" "$a_none_rounds" "$a_floor_rounds" \
    "$a_tollgate_rounds"
  printf '"failed":{"none":%s,"floor":%s,"tollgate":%s,"asked_none":%s,"asked_floor":%s,"asked":%s}}\n' \
    "$d_none_failed" "$d_floor_failed" "$d_tollgate_failed" "$a_none_failed" "$a_floor_failed" \
    "$a_tollgate_failed"
}
