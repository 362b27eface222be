#!/usr/bin/env bash
# Issue 7 (fault matrix): 10,000 new connections as fast as a client pool (64 at a time) opens
# them, while tollgated is SIGKILLed twice. The daemon is socket-activated: a stand-in service
# manager (systemd-socket-activate running a small loop, as in idle_exit_test.sh) keeps the
# listening socket and starts tollgated again when a connection waits, which the filter's
# immediate reconnect makes happen, 0.5 s late (longer than the 200 ms question deadline, so the
# questions asked meanwhile get the fallback). Each connection comes from its own 127.x.y.z
# source (a new flow) to one-byte servers on 8080 (allowed by default) or 2323 (a reject rule),
# alternately, and may take at most 5 s (the client's deadline). Once per policy:
#   fail_open:   every connection completes or is refused, none times out: all 5,000 to 8080
#                complete; those to 2323 are refused when the daemon decided (exactly as many as
#                the filter's reject verdicts) and complete when they got the fallback. The
#                counters add up: 10,000 new flows, one question each, questions = answered +
#                fallbacks, the fallbacks released as pass, allow + reject + pass = 10,000.
#   fail_closed: the same, except that a fallback drops the SYN and the client's retransmit
#                (1 s later) asks again: all 5,000 to 8080 complete, all 5,000 to 2323 are
#                refused, questions = 10,000 + fallbacks = answered + fallbacks, and every
#                fallback dropped exactly one packet.
# Both kills land while the connections are being made (the load tool sends them as it opens
# connection 2,500 and 6,000); each daemon run killed ends with SIGKILL, and the filter makes a
# session with each of the 3 runs it meets without being restarted. The test prints the
# connections per second the pool held through the kills.
#   bash tests/faults/daemon_kill_storm_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/../integration/filter_lib.sh"
LOAD=$(realpath "${5:?usage: $0 TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD}")

readonly connections=10000 parallel=64
write_config
add_rule reject-2323 reject tcp port=2323
byte_server 8080
byte_server 2323
mkdir -m 0750 "$RUNTIME_DIR"

# The service manager: holds fd 3 (the listening socket) across daemon runs and starts each run
# after the first 0.5 s late. LISTEN_PID must name the process that reads the socket, so each run
# is a subshell that sets it to its own pid and execs.
# shellcheck disable=SC2016
keeper='
probe=$1 tollgated=$2 config=$3 runs=0
while "$probe" --wait-readable-fd 3 --timeout-ms 60000 >/dev/null; do
  runs=$((runs + 1))
  # A restart takes a while (systemd, start-up, loading lists): longer than a question deadline.
  if ((runs > 1)); then sleep 0.5; fi
  echo "keeper: starting tollgated, run $runs" >&2
  status=0
  (export LISTEN_PID=$BASHPID; exec "$tollgated" --config "$config") || status=$?
  echo "keeper: tollgated run $runs exited with status $status" >&2
done
echo "keeper: no connection for 60 s, stopping" >&2'
keeper_log=$W/keeper.log
spawn /dev/null "$keeper_log" systemd-socket-activate --seqpacket -l "$SOCKET" --fdname=analysis \
  bash -c "$keeper" keeper "$PROBE" "$TOLLGATED" "$CONFIG"
keeper_pid=$SPAWNED
must "the service manager listens" wait_until 5000 log_has "$keeper_log" "Listening on $SOCKET"

runs_started() { log_count "$keeper_log" '^keeper: starting tollgated'; }
daemon_running() {
  DAEMON_PID=$(pgrep -P "$keeper_pid" -x tollgated | head -n 1) && [[ -n $DAEMON_PID ]]
}

# run_storm POLICY SRC_OFFSET: one run as described above. The load tool itself SIGKILLs the
# running daemon (the service manager's tollgated child) as it opens connection 2,500 and 6,000,
# and notes each pid it killed, so both kills land while connections are being made.
run_storm() {
  policy=$1
  local offset=$2
  echo "== $policy"
  # The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
  start_filter "$W/filter-$policy.log" --fallback "$policy" --no-reuse
  must "$policy: the filter is connected to the daemon" wait_filter_session 1
  must "$policy: a daemon is running" daemon_running
  local runs0 kills=$W/kills-$policy
  runs0=$(runs_started)
  filter_counters
  local c0=$COUNTERS out=$W/storm-$policy.out
  local kill_cmd="d=\$(pgrep -P $keeper_pid -x tollgated) && echo \$d >>$kills && kill -KILL \$d"
  spawn "$out" "$W/storm-$policy.log" ip netns exec "$NS" "$LOAD" connect --ports 8080,2323 \
    --count "$connections" --parallel "$parallel" --deadline-ms 5000 --src-offset "$offset" \
    --at 2500,6000 --run "$kill_cmd"
  storm=$SPAWNED
  check "$policy: every connection ends (each within its 5 s)" wait_exit "$storm" 60000
  check_eq "$policy: the load tool's exit status" 0 "${EXIT_STATUS:-none}"
  local r
  r=$(tail -n 1 "$out")
  echo "   $r"
  check_eq "$policy: the 2 kills ran, each found a daemon to kill" "2 0" \
    "$(counter hooks_run "$r") $(counter hook_failures "$r")"
  check_eq "$policy: 2 different daemon runs killed" 2 "$(sort -u "$kills" 2>/dev/null | wc -l)"
  check "$policy: the service manager started the daemon again after each kill" \
    wait_until 10000 test "$(runs_started)" -eq $((runs0 + 2))
  check "$policy: the filter reconnected by itself after each kill" wait_filter_session 3
  echo "   $policy: held $(counter conn_per_s "$r") connections/s through 2 daemon kills"
  filter_counters
  local c1=$COUNTERS
  echo "   $c1"
  d() { echo $(($(counter "$1" "$c1") - $(counter "$1" "$c0"))); }

  check_eq "$policy: connections accounted for" "$connections" \
    "$(($(counter completed "$r") + $(counter refused "$r") + $(counter timeout "$r") + \
      $(counter other "$r")))"
  check_eq "$policy: none hung past its deadline, none failed otherwise" "0 0" \
    "$(counter timeout "$r") $(counter other "$r")"
  check_eq "$policy: every connection to 8080 completed" $((connections / 2)) \
    "$(counter completed_8080 "$r")"
  check_eq "$policy: every connection completed or was refused" "$connections" \
    "$(($(counter completed "$r") + $(counter refused "$r")))"
  check_eq "$policy: no refusal except on 2323" 0 "$(counter refused_8080 "$r")"
  check_eq "$policy: each connection to 2323 refused is one reject verdict of the daemon" \
    "$(d reject)" "$(counter refused_2323 "$r")"
  check_eq "$policy: questions = answered + fallbacks" "$(d questions)" \
    "$(($(d answered) + $(d fallbacks)))"
  check_eq "$policy: one question per new flow" "$(d new_flows)" "$(d questions)"
  check_eq "$policy: nothing pending" 0 "$(counter pending "$c1")"
  check_eq "$policy: no overflow, nothing lost in the kernel, no verdict refused" "0 0 0" \
    "$(d overflow) $(d nfq_lost) $(counter verdict_errors "$c1")"
  if [[ $policy == fail_open ]]; then
    check_eq "fail_open: one new flow per connection" "$connections" "$(d new_flows)"
    check_eq "fail_open: each fallback let its flow through (pass)" "$(d fallbacks)" "$(d pass)"
    check_eq "fail_open: allow + reject + pass = one release per connection" "$connections" \
      "$(($(d allow) + $(d reject) + $(d pass)))"
    check "fail_open: each connection to 2323 that completed had the fallback (at most $(d pass))" \
      test "$(counter completed_2323 "$r")" -le "$(d pass)"
    check "fail_open: some connections to 2323 completed by the fallback" \
      test "$(counter completed_2323 "$r")" -gt 0
  else
    check_eq "fail_closed: every connection to 2323 refused" $((connections / 2)) \
      "$(counter refused_2323 "$r")"
    check_eq "fail_closed: each fallback dropped one SYN" "$(d fallbacks)" "$(d drop)"
    check_eq "fail_closed: questions = connections + one per dropped SYN (its retransmit)" \
      "$((connections + $(d fallbacks)))" "$(d questions)"
    check_eq "fail_closed: the daemon allowed each connection to 8080 once" \
      $((connections / 2)) "$(d allow)"
    check_eq "fail_closed: the daemon rejected each connection to 2323 once" \
      $((connections / 2)) "$(d reject)"
  fi
  echo "   $policy: fallbacks $(d fallbacks), late answers $(d late), sessions $(filter_sessions)"
  check "$policy: the outages made fallbacks ($(d fallbacks))" test "$(d fallbacks)" -gt 0
  check_eq "$policy: the filter had a session with each of the 3 daemon runs" 3 "$(filter_sessions)"
  kill_filter TERM 5000
  check_eq "$policy: tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
}

run_storm fail_open 0
run_storm fail_closed 1000000

# Run 3 outlives the first filter and serves the second one until kill 1 of fail_closed.
check_eq "the service manager started 5 daemon runs" 5 "$(runs_started)"
check_eq "each killed run ended by SIGKILL (status 137)" 4 \
  "$(log_count "$keeper_log" '^keeper: tollgated run [0-9]+ exited with status 137$')"
must "a daemon is running" daemon_running
kill -TERM "$DAEMON_PID"
check "the last run exits on SIGTERM with status 0" \
  wait_until 5000 log_has "$keeper_log" '^keeper: tollgated run 5 exited with status 0$'
