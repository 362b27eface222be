#!/usr/bin/env bash
# Issue 3: tollgated SIGKILLed under a stream of new connections, once per fallback policy.
# A client starts a connection every 50 ms to a server that writes one byte on accept; each
# client waits at most 2.5 s (past the SYN retransmit at 1 s) for that byte and records when it
# started and whether the byte came. The daemon is killed mid-stream; the stream goes on for
# 1.5 s, then stops and drains; only then is a new daemon started by hand on the same runtime
# directory, so every client started during the outage lived and died without a daemon.
#   fail_open:   every connection of the stream completes, before, during and after the kill.
#   fail_closed: none of the connections started while the daemon is down gets its byte.
# Then, without restarting the filter, decisions resume: the filter makes a second session,
# new connections complete, and ports 2323 (reject) and 2424 (deny) get the daemon's verdicts,
# not the fallback (a refusal is never a fallback; the deny shows in the counters as a deny
# answered by the daemon, with no new fallback).
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
add_rule reject-2323 reject tcp port=2323
add_rule drop-2424 deny tcp port=2424
byte_server 8080
tcp_echo_server 2323 2424

# stream OUT STOP_FILE PORT TIMEOUT_S INTERVAL_S (inside NS): a client every INTERVAL_S until
# STOP_FILE exists; each appends "start_ms end_ms what_it_read" (none: nothing) to OUT.
stream() {
  local out=$1 stop=$2 port=$3 t=$4 iv=$5
  one() {
    local r
    r=$(timeout -k 1 "$t" socat -u "TCP4:127.0.0.1:$port" - 2>/dev/null) || true
    echo "$1 $((${EPOCHREALTIME/./} / 1000)) ${r:-none}" >>"$out"
  }
  while [[ ! -e $stop ]]; do
    one "$((${EPOCHREALTIME/./} / 1000))" &
    sleep "$iv"
  done
  wait
}

# outage POLICY DAEMON_LOG_BEFORE DAEMON_LOG_AFTER: one run as described above.
outage() {
  local policy=$1 out=$W/stream-$1.txt stop=$W/stream-$1.stop
  echo "== $policy"
  # The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
  start_filter "$W/filter-$policy.log" --fallback "$policy" --deadline-ms 300 --no-reuse
  must "$policy: the filter is connected to the daemon" wait_filter_session 1

  spawn /dev/null "$W/stream-$policy.log" ip netns exec "$NS" \
    bash -c "$(declare -f stream); stream \"\$@\"" _ "$out" "$stop" 8080 2.5 0.05
  local streamer=$SPAWNED
  sleep 0.7
  kill -KILL "$DAEMON_PID"
  check "$policy: the daemon is dead" wait_exit "$DAEMON_PID" 5000
  local killed_ms
  killed_ms=$(now_ms)
  check "$policy: the filter noticed the lost channel" \
    wait_until 5000 log_has "$FILTER_LOG" 'analysis channel lost'
  sleep 1.5
  touch "$stop"
  check "$policy: the stream drains (every client ends within its 2.5 s)" \
    wait_exit "$streamer" 10000
  local restart_ms
  restart_ms=$(now_ms)

  local before_total before_ok during_total during_ok
  before_total=$(awk -v k="$killed_ms" '$2 < k' "$out" | wc -l)
  before_ok=$(awk -v k="$killed_ms" '$2 < k && $3 == "x"' "$out" | wc -l)
  during_total=$(awk -v k="$killed_ms" -v r="$restart_ms" '$1 > k && $1 < r' "$out" | wc -l)
  during_ok=$(awk -v k="$killed_ms" -v r="$restart_ms" '$1 > k && $1 < r && $3 == "x"' "$out" |
    wc -l)
  echo "   stream: $(wc -l <"$out") clients; ended before the kill: $before_ok/$before_total got" \
    "the byte; started during the outage: $during_ok/$during_total got it"
  check "$policy: clients ran before the kill" test "$before_total" -ge 3
  check_eq "$policy: every client that ended before the kill got its byte" \
    "$before_total" "$before_ok"
  check "$policy: clients started during the outage" test "$during_total" -ge 5
  if [[ $policy == fail_open ]]; then
    check_eq "fail_open: every connection of the stream completed" \
      "$(wc -l <"$out")" "$(awk '$3 == "x"' "$out" | wc -l)"
  else
    check_eq "fail_closed: no connection started during the outage got a byte" 0 "$during_ok"
  fi

  echo "-- $policy: the daemon returns (by hand, same runtime directory)"
  start_daemon_by_hand "$W/tollgated-after-$policy.log"
  check "$policy: the filter made a new session, without a restart" wait_filter_session 2
  check "$policy: the new daemon saw the filter connect" \
    log_has "$W/tollgated-after-$policy.log" 'filter connected: '
  filter_counters
  local c0=$COUNTERS
  check_eq "$policy: channel state" connected "$(counter channel)"
  local ok=0
  for _ in 1 2 3 4 5; do
    in_ns timeout 3 socat -u TCP4:127.0.0.1:8080 - 2>/dev/null | grep -q x && ok=$((ok + 1))
  done
  check_eq "$policy: new connections after the return get their byte" 5 "$ok"
  tcp_outcome 127.0.0.1 2323
  check_eq "$policy: port 2323 is refused (the daemon's reject rule)" refused "$OUTCOME"
  tcp_outcome 127.0.0.1 2424 2
  check_eq "$policy: port 2424 gets no answer (the daemon's deny rule)" timeout "$OUTCOME"
  filter_counters
  echo "   $COUNTERS"
  check_eq "$policy: no fallback since the return" "$(counter fallbacks "$c0")" \
    "$(counter fallbacks)"
  check "$policy: the daemon answered them (answered +7)" \
    test "$(counter answered)" -ge $(($(counter answered "$c0") + 7))
  check "$policy: a deny verdict was given" test "$(counter deny)" -gt "$(counter deny "$c0")"
  check "$policy: a reject verdict was given" \
    test "$(counter reject)" -gt "$(counter reject "$c0")"

  kill_filter TERM 5000
  check_eq "$policy: tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
}

start_daemon_by_hand "$W/tollgated.log"
outage fail_open
outage fail_closed
stop_daemon "$DAEMON_PID" "$W/tollgated-after-fail_closed.log"
