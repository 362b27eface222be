#!/usr/bin/env bash
# Issue 2: the daemon SIGKILLed with questions in flight. Every question gets exactly one decision
# (the daemon's or, by its deadline, the fallback), none is lost or answered twice, and the client
# reconnects by itself once a new daemon is back on the same runtime directory.
#   A. Mid-run: 1,000 questions asked over ~1 s; the daemon is killed ~0.3 s in and a new one
#      started ~1 s later. Those answered before the kill come from the daemon; those in flight,
#      or asked while it was away, get the fallback.
#   B. All 1,000 in flight: the daemon is stopped (SIGSTOP) so it answers nothing, the client
#      asks 1,000 questions at once, and the daemon is killed while they wait. Every one must get
#      the fallback, by its deadline.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

write_config
write_telnet_rule
readonly deadline_ms=300
# The fallback must come by the deadline. The bound is on behaviour, not speed: 500 ms of
# scheduling slack for a loaded 2-core machine.
readonly slack_us=500000

echo "== A: SIGKILL mid-run, restart ~1 s later"
log1=$W/tollgated-1.log
start_daemon_by_hand "$log1"
first=$DAEMON_PID
spawn "$W/crash-a.json.out" "$W/crash-a.probe.log" "$PROBE" --daemon-uid "$DAEMON_UID" \
  --socket "$SOCKET" --count 1000 --rate 1000 --ports 80,23 --deadline-ms "$deadline_ms" \
  --linger-ms 10000 --until-sessions 2
probe_a=$SPAWNED
must "the probe is connected to the first daemon" \
  wait_until 5000 log_has "$log1" 'probe connected: '
sleep 0.3  # ~300 questions in
kill -KILL "$first"
check "the first daemon is dead" wait_exit "$first" 5000
check_eq "the first daemon died of SIGKILL" 137 "$EXIT_STATUS"
check "the probe noticed the lost connection" \
  wait_until 5000 log_has "$W/crash-a.probe.log" 'analysis channel lost'
sleep 1  # the daemon stays away ~1 s: the probe goes on asking meanwhile
log2=$W/tollgated-2.log
start_daemon_by_hand "$log2"
second=$DAEMON_PID
check "the probe ends by itself once reconnected" wait_exit "$probe_a" 20000
check_eq "probe exit status (every question settled exactly once)" 0 "$EXIT_STATUS"
tail -n 1 "$W/crash-a.json.out" >"$W/crash-a.json"
j=$W/crash-a.json
jcheck "asked" "$j" .asked 1000
jcheck "settled" "$j" .settled 1000
jcheck "lost" "$j" .lost 0
jcheck "duplicates" "$j" .duplicates 0
jcheck "unknown ids" "$j" .unknown 0
jcheck "some answered by the first daemon before the kill" "$j" '.answered > 0' true
jcheck "some got the fallback (in flight, or asked while the daemon was away)" "$j" \
  '.fallbacks > 0' true
jcheck "answered + fallbacks == 1000" "$j" '.answered + .fallbacks' 1000
jcheck "decision sources add up to 1000" "$j" '[.sources[]] | add' 1000
jcheck "the fallback was fail_open: no denial other than the daemon's" "$j" \
  '(.actions.deny // 0) <= .answered' true
jcheck "every fallback came by its deadline (+500 ms slack)" "$j" \
  ".max_over_deadline_us <= $slack_us" true
jcheck "no verdict arrived for a question already settled" "$j" .late_verdicts 0
jcheck "the probe reconnected by itself: state" "$j" .state connected
jcheck "the probe reconnected by itself: sessions" "$j" .sessions 2
check "the second daemon saw the probe reconnect" log_has "$log2" 'probe connected: '

echo "== B: SIGKILL with all 1,000 questions in flight"
spawn "$W/crash-b.json.out" "$W/crash-b.probe.log" "$PROBE" --daemon-uid "$DAEMON_UID" \
  --socket "$SOCKET" --wait-connected-ms 5000 --pause-after 0 --pause-ms 1500 --count 1000 \
  --ports 80,23 --deadline-ms "$deadline_ms" --linger-ms 10000 --until-sessions 2
probe_b=$SPAWNED
must "the probe is connected to the second daemon" \
  wait_until 5000 bash -c "[[ \$(grep -c 'probe connected: ' '$log2') -ge 2 ]]"
kill -STOP "$second"  # from now on it answers nothing; the probe asks after its 1.5 s pause
must "the probe asked its 1000 questions" \
  wait_until 5000 log_has "$W/crash-b.probe.log" 'asked 1000 questions'
kill -KILL "$second"
check "the second daemon is dead" wait_exit "$second" 5000
sleep 1
log3=$W/tollgated-3.log
start_daemon_by_hand "$log3"
third=$DAEMON_PID
check "the probe ends by itself once reconnected" wait_exit "$probe_b" 20000
check_eq "probe exit status (every question settled exactly once)" 0 "$EXIT_STATUS"
tail -n 1 "$W/crash-b.json.out" >"$W/crash-b.json"
j=$W/crash-b.json
jcheck "asked" "$j" .asked 1000
jcheck "settled" "$j" .settled 1000
jcheck "lost" "$j" .lost 0
jcheck "duplicates" "$j" .duplicates 0
jcheck "none answered (the daemon was stopped, then killed)" "$j" .answered 0
jcheck "all 1000 got the fallback" "$j" .fallbacks 1000
jcheck "fallback is fail_open" "$j" .actions.allow 1000
jcheck "every fallback came by its deadline (+500 ms slack)" "$j" \
  ".max_over_deadline_us <= $slack_us" true
jcheck "the probe reconnected by itself: state" "$j" .state connected
jcheck "the probe reconnected by itself: sessions" "$j" .sessions 2
check "the third daemon saw the probe reconnect" log_has "$log3" 'probe connected: '
stop_daemon "$third" "$log3"
