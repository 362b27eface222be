#!/usr/bin/env bash
# Issue 7 (fault matrix): tollgated stalled (SIGSTOP) for longer than the filter's deadline, then
# resumed. In a network namespace (loopback only), fail_open, deadline 300 ms, a deny rule on
# tcp/2424, echo servers on 8080 and 2424.
#   - while the daemon is stopped, 6 connections (3 to 8080, 3 to 2424) each get the fallback
#     (allow) at the deadline, connect, and echo a first line;
#   - after SIGCONT the daemon answers those 6 questions (deny for 2424): the filter counts each
#     answer as late and ignores it: late rises by exactly 6, answered does not move, no verdict
#     error (a second verdict for a packet already let go), and the 3 connections to 2424 still
#     carry a second line, so the late deny was never applied to their conntrack entries;
#   - decisions resume: a new connection to 2424 gets no answer (the daemon's deny, answered) and
#     one to 8080 echoes;
#   - the counters add up exactly: new questions = answered + fallbacks, nothing pending.
#   bash tests/faults/daemon_stall_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/../integration/filter_lib.sh"

write_config
add_rule drop-2424 deny tcp port=2424
tcp_echo_server 8080 2424
start_daemon_by_hand "$W/tollgated.log"
# The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
start_filter "$W/filter.log" --fallback fail_open --deadline-ms 300 --no-reuse
must "the filter is connected to the daemon" wait_filter_session 1

# hold PORT GO_FILE OUT (inside NS): one connection that echoes a line, waits for GO_FILE (at most
# 30 s), echoes a second line on the same connection, and appends "PORT first second" to OUT.
hold() {
  local port=$1 go=$2 out=$3 first=none second=none i
  if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'a\n' >&3
    read -r -t 3 first <&3 || first=none
    echo "$port $first" >>"$out.first"
    for ((i = 0; i < 600; i++)); do
      [[ -e $go ]] && break
      sleep 0.05
    done
    printf 'b\n' >&3 2>/dev/null || true
    read -r -t 3 second <&3 || second=none
    exec 3>&-
  fi
  echo "$port $first $second" >>"$out"
}

tcp_outcome 127.0.0.1 2424 2
check_eq "before the stall: 2424 gets no answer (the daemon's deny)" timeout "$OUTCOME"
filter_counters
c0=$COUNTERS
echo "   before: $c0"

echo "-- the daemon stops (SIGSTOP); 6 connections during the stall"
kill -STOP "$DAEMON_PID"
go=$W/go
out=$W/held.txt
held=()
for port in 8080 8080 8080 2424 2424 2424; do
  spawn /dev/null "$W/hold-$port-${#held[@]}.log" ip netns exec "$NS" \
    bash -c "$(declare -f hold); hold \"\$@\"" _ "$port" "$go" "$out"
  held+=("$SPAWNED")
done
first_lines() { [[ -f $out.first ]] && (($(wc -l <"$out.first") >= $1)); }
check "every connection made during the stall connects (fallback allow) and echoes" \
  wait_until 10000 first_lines 6
# The stall outlasts every question's deadline several times over.
sleep 1.5
filter_counters
c1=$COUNTERS
echo "   stalled: $c1"
check_eq "during the stall: 6 more questions" "$(($(counter questions "$c0") + 6))" \
  "$(counter questions "$c1")"
check_eq "during the stall: 6 more fallbacks" "$(($(counter fallbacks "$c0") + 6))" \
  "$(counter fallbacks "$c1")"
check_eq "during the stall: nothing answered" "$(counter answered "$c0")" "$(counter answered "$c1")"
check_eq "during the stall: nothing pending" 0 "$(counter pending "$c1")"

echo "-- the daemon resumes (SIGCONT)"
kill -CONT "$DAEMON_PID"
check "the 6 late answers are counted as late" \
  wait_until 10000 counter_at_least late "$(($(counter late "$c0") + 6))"
sleep 0.5  # a seventh late answer, if one were coming, would show in the next counters
filter_counters
c2=$COUNTERS
echo "   resumed: $c2"
check_eq "exactly 6 late answers" "$(($(counter late "$c0") + 6))" "$(counter late "$c2")"
check_eq "late answers are not counted as answered" "$(counter answered "$c1")" \
  "$(counter answered "$c2")"
check_eq "no verdict was given twice (verdict_errors)" 0 "$(counter verdict_errors "$c2")"
check_eq "no new deny was applied" "$(counter deny "$c1")" "$(counter deny "$c2")"

touch "$go"
for p in "${held[@]}"; do
  check "held connection (pid $p) finishes" wait_exit "$p" 10000
done
check_eq "every held connection echoed both lines: 3 x 8080, 3 x 2424" \
  "$(printf '2424 a b\n2424 a b\n2424 a b\n8080 a b\n8080 a b\n8080 a b')" "$(sort "$out")"

echo "-- decisions resume"
tcp_outcome 127.0.0.1 2424 2
check_eq "after the stall: 2424 gets no answer (the daemon's deny)" timeout "$OUTCOME"
tcp_outcome 127.0.0.1 8080
check_eq "after the stall: 8080 echoes" echoed "$OUTCOME"
filter_counters
c3=$COUNTERS
echo "   after: $c3"
check_eq "after the stall: 2 questions answered by the daemon" \
  "$(($(counter answered "$c2") + 2))" "$(counter answered "$c3")"
check_eq "after the stall: no fallback" "$(counter fallbacks "$c2")" "$(counter fallbacks "$c3")"
check_eq "questions = answered + fallbacks (since the first counters)" \
  "$(($(counter questions "$c3") - $(counter questions "$c0")))" \
  "$(($(counter answered "$c3") - $(counter answered "$c0") + $(counter fallbacks "$c3") - \
    $(counter fallbacks "$c0")))"
check_eq "nothing pending at the end" 0 "$(counter pending "$c3")"
check_eq "still exactly 6 late answers" "$(($(counter late "$c0") + 6))" "$(counter late "$c3")"

kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
