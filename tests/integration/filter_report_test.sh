#!/usr/bin/env bash
# Issue 5: the filter's own account reaches the operator. tollgate-filter reports its counters to
# tollgated (FilterReport on the analysis channel), and the control API shows them per filter
# connection (GetStatus .filters[].report, totals .fallbacks and .queue_lost) and as metrics
# (tollgate_filter_*{pid}). In a network namespace (loopback only), fail_open, deadline 1 s (a
# loaded CI machine must not turn a slow answer into a fallback before the stall phase):
#   - right after the handshake a report is there: nothing asked, nothing pending, the filter's
#     policy, bound and queue;
#   - after 5 connections the daemon decided, the report says 5 questions, 5 answered, no fallback,
#     nothing pending, no queue drop, and agrees with the filter's own SIGUSR1 counters;
#   - the daemon stopped (SIGSTOP) past the deadline for 2 connections, then resumed: the report
#     says 2 deadline fallbacks and 2 late answers, GetStatus sums them, and the metrics carry them
#     under the filter's pid.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
tcp_echo_server 8080
start_daemon_by_hand "$W/tollgated.log"
# The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
start_filter "$W/filter.log" --fallback fail_open --deadline-ms 1000 --no-reuse
must "the filter is connected to the daemon" wait_filter_session 1
CONTROL=$RUNTIME_DIR/control.sock

call() {  # call METHOD [OUT]: one control API call, its reply as JSON in OUT
  local out=${2:-$W/reply.json}
  printf '{"method":"io.tollgate.Control.%s"}\0' "$1" |
    timeout 10 socat -t 5 - "UNIX-CONNECT:$CONTROL" | tr '\0' '\n' >"$out"
}
# report_has JQ_CONDITION: GetStatus now, and the filter's report satisfies the condition; the
# filter's connection is in $W/filter.json, the whole status in $W/status.json. For wait_until.
report_has() {
  call GetStatus "$W/status.json" || return 1
  jq ".parameters.status.filters[] | select(.pid == $FILTER_PID)" "$W/status.json" \
    >"$W/filter.json" 2>/dev/null || return 1
  [[ $(jq -r ".report != null and (.report | $1)" "$W/filter.json" 2>/dev/null) == true ]]
}
field() { jq -r "$1" "$W/filter.json"; }

echo "== right after the handshake"
check "a report arrives within 5 s of the session" wait_until 5000 report_has 'true'
jcheck "it is the filter's connection" "$W/filter.json" .role filter
jcheck "nothing asked yet" "$W/filter.json" .report.questions 0
jcheck "no fallback" "$W/filter.json" .report.fallbacks 0
jcheck "nothing pending" "$W/filter.json" .report.pending 0
jcheck "the bound: max_pending_flows (default)" "$W/filter.json" .report.max_pending 65536
jcheck "the policy" "$W/filter.json" .report.fallback fail_open
jcheck "the queue (default 0)" "$W/filter.json" '"\(.report.first_queue)-\(.report.last_queue)"' 0-0
check "reported_at is RFC 3339" \
  test "$(field '.report.reported_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$")')" = true

echo "== 5 connections decided by the daemon"
for i in 1 2 3 4 5; do
  tcp_outcome 127.0.0.1 8080
  check_eq "connection $i echoes" echoed "$OUTCOME"
done
check "the report says 5 questions (within 5 s)" wait_until 5000 report_has '.questions == 5'
jcheck "5 answered by the daemon" "$W/filter.json" .report.answered 5
jcheck "no fallback" "$W/filter.json" .report.fallbacks 0
jcheck "nothing pending" "$W/filter.json" .report.pending 0
jcheck "no packet lost by the queue" "$W/filter.json" .report.queue_lost 0
jcheck "the daemon saw the same 5 questions on this connection" "$W/filter.json" .questions 5
check "packets >= questions" test "$(field .report.packets)" -ge 5
jcheck "status: fallbacks total 0" "$W/status.json" .parameters.status.fallbacks 0
jcheck "status: queue_lost total 0" "$W/status.json" .parameters.status.queue_lost 0
filter_counters
echo "   $COUNTERS"
check_eq "the report agrees with the filter's SIGUSR1 questions" "$(counter questions)" \
  "$(field .report.questions)"
check_eq "the report agrees with the filter's SIGUSR1 answered" "$(counter answered)" \
  "$(field .report.answered)"

echo "== the daemon stalls (SIGSTOP) past the deadline for 2 connections"
kill -STOP "$DAEMON_PID"
for i in 1 2; do
  tcp_outcome 127.0.0.1 8080
  check_eq "connection $i during the stall gets the fallback (allow) and echoes" echoed "$OUTCOME"
done
kill -CONT "$DAEMON_PID"
check "the report says 2 deadline fallbacks and 2 late answers (within 5 s)" \
  wait_until 5000 report_has '.fallbacks_deadline == 2 and .late_answers == 2'
jcheck "fallbacks (total) 2" "$W/filter.json" .report.fallbacks 2
jcheck "none for the daemon being away or overflow" "$W/filter.json" \
  '.report.fallbacks_daemon_away + .report.fallbacks_overflow' 0
jcheck "7 questions, 5 answered in time" "$W/filter.json" \
  '"\(.report.questions) \(.report.answered)"' "7 5"
jcheck "nothing pending" "$W/filter.json" .report.pending 0
jcheck "status: fallbacks total 2" "$W/status.json" .parameters.status.fallbacks 2
filter_counters
check_eq "the report agrees with the filter's SIGUSR1 fallbacks" "$(counter fallbacks)" \
  "$(field .report.fallbacks)"
check_eq "the report agrees with the filter's SIGUSR1 late" "$(counter late)" \
  "$(field .report.late_answers)"

echo "== metrics"
call GetMetrics
jq -r .parameters.text "$W/reply.json" >"$W/metrics.txt"
metric() { check "metrics: $1" grep -qxF "$1" "$W/metrics.txt"; }
metric "tollgate_filter_fallbacks_total{pid=\"$FILTER_PID\",reason=\"deadline\"} 2"
metric "tollgate_filter_fallbacks_total{pid=\"$FILTER_PID\",reason=\"daemon_away\"} 0"
metric "tollgate_filter_fallbacks_total{pid=\"$FILTER_PID\",reason=\"overflow\"} 0"
metric "tollgate_filter_queue_drops_total{pid=\"$FILTER_PID\"} 0"
metric "tollgate_filter_pending{pid=\"$FILTER_PID\"} 0"
metric "tollgate_filter_questions_total{pid=\"$FILTER_PID\"} 7"
metric "tollgate_filter_late_answers_total{pid=\"$FILTER_PID\"} 2"
metric "# TYPE tollgate_filter_queue_drops_total counter"

kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
check "the daemon kept reports from the filter" \
  test "$(exit_counter "$W/tollgated.log" filter_reports)" -ge 3
check_eq "and ignored none" 0 "$(exit_counter "$W/tollgated.log" reports_ignored)"
