#!/usr/bin/env bash
# Idle exit under socket activation (idle_exit_seconds = 1).
#   A. Behind systemd-socket-activate: after a probe session the daemon exits by itself once idle
#      for 1 s, with status 0, and logs why. systemd-socket-activate execs the daemon in place of
#      itself, so when the daemon exits the listening socket is gone with it and nothing can start
#      it again: the "started again on the next connection" half under real systemd is covered by
#      the boot test (issue 6).
#   B. The same daemon behind a stand-in service manager that, like a systemd .socket unit, keeps
#      the listening socket across daemon runs and starts tollgated when a connection waits
#      (systemd-socket-activate execs a small bash loop that holds fd 3 and uses
#      `tollgate-probe --wait-readable-fd 3` to wait without accepting). This checks our side of
#      restart-on-demand: the daemon exits cleanly, a new client starts it again, and a client
#      that stays connected across the idle exit gets its Goodbye, reconnects when it next asks,
#      and loses no question to the fallback.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

write_config "idle_exit_seconds = 1"
write_telnet_rule
mkdir -m 0750 "$RUNTIME_DIR"

echo "== A: systemd-socket-activate, idle exit after a session"
log_a=$W/tollgated-activated.log
spawn /dev/null "$log_a" systemd-socket-activate --seqpacket -l "$SOCKET" --fdname=analysis \
  "$TOLLGATED" --config "$CONFIG"
daemon=$SPAWNED
must "systemd-socket-activate listens" wait_until 5000 log_has "$log_a" "Listening on $SOCKET"
probe "$W/session-a.json" --socket "$SOCKET" --count 100 --ports 80,23 --deadline-ms 5000
session_end=$(now_ms)
check_eq "probe: exit status" 0 "$PROBE_STATUS"
jcheck "probe: all answered by the daemon" "$W/session-a.json" .answered 100
check "the daemon exits by itself within 5 s" wait_exit "$daemon" 5000
idle_ms=$(($(now_ms) - session_end))
check_eq "the daemon's exit status" 0 "$EXIT_STATUS"
check "it stayed up ~1 s after the session (${idle_ms} ms >= 500 ms)" test "$idle_ms" -ge 500
check "it logs why it exits" \
  log_has "$log_a" 'idle for 1s: exiting; the next connection starts tollgated again'
check "it logs its exit counters" log_has "$log_a" 'exiting: accepted=1 .*questions=100 '

echo "== B: a service manager that keeps the socket: started again on demand"
rm -f "$SOCKET"
log_b=$W/keeper.log
# The loop runs as the exec'd child of systemd-socket-activate and owns fd 3. LISTEN_PID must name
# the process that reads it, so each daemon run is a subshell that sets it to its own pid and execs.
# shellcheck disable=SC2016
keeper='
probe=$1 tollgated=$2 config=$3 runs=0
while "$probe" --wait-readable-fd 3 --timeout-ms 30000 >/dev/null; do
  runs=$((runs + 1))
  echo "keeper: starting tollgated, run $runs" >&2
  status=0
  (export LISTEN_PID=$BASHPID; exec "$tollgated" --config "$config") || status=$?
  echo "keeper: tollgated run $runs exited with status $status" >&2
done
echo "keeper: no connection for 30 s, stopping" >&2'
spawn /dev/null "$log_b" systemd-socket-activate --seqpacket -l "$SOCKET" --fdname=analysis \
  bash -c "$keeper" keeper "$PROBE" "$TOLLGATED" "$CONFIG"
must "the keeper listens" wait_until 5000 log_has "$log_b" "Listening on $SOCKET"

probe "$W/run1.json" --socket "$SOCKET" --count 100 --ports 80,23 --deadline-ms 5000
check_eq "first client: exit status" 0 "$PROBE_STATUS"
jcheck "first client: all answered by the daemon" "$W/run1.json" .answered 100
check "run 1 exits by itself when idle, status 0" \
  wait_until 5000 log_has "$log_b" '^keeper: tollgated run 1 exited with status 0'
check_eq "runs started so far" 1 "$(log_count "$log_b" '^keeper: starting tollgated')"

probe "$W/run2.json" --socket "$SOCKET" --count 100 --ports 80,23 --deadline-ms 5000
check_eq "next client: exit status" 0 "$PROBE_STATUS"
jcheck "next client: all answered by a daemon started for it" "$W/run2.json" .answered 100
jcheck "next client: no fallbacks" "$W/run2.json" .fallbacks 0
check "its connection started run 2" log_has "$log_b" '^keeper: starting tollgated, run 2'

# One client across an idle exit: 50 questions, 2.5 s of silence (the daemon says Goodbye after
# 1 s and exits), then 50 more, which must reach a daemon started again for them.
probe "$W/across.json" --socket "$SOCKET" --count 100 --ports 80,23 --deadline-ms 5000 \
  --pause-after 50 --pause-ms 2500
j=$W/across.json
check_eq "client across the idle exit: exit status" 0 "$PROBE_STATUS"
jcheck "across: all 100 answered by a daemon" "$j" .answered 100
jcheck "across: no fallbacks" "$j" .fallbacks 0
jcheck "across: the Goodbye ended session 1" "$j" .disconnects 1
jcheck "across: it reconnected when it asked again" "$j" .sessions 2
jcheck "across: connected at the end" "$j" .state connected
# On a loaded machine run 2 may already have idled out before this client came, so it may have
# started run 3 itself; either way its second session must be with a run started after the first.
across_pid=$(grep -oE 'probe connected: uid [0-9]+ pid [0-9]+' "$log_b" | tail -n 1 | awk '{print $NF}')
check_eq "across: its two sessions were with two daemon runs" 2 \
  "$(log_count "$log_b" "probe connected: uid [0-9]+ pid $across_pid ")"
last_run=$(log_count "$log_b" '^keeper: starting tollgated')
check "at least 3 runs so far (got $last_run)" test "$last_run" -ge 3
check "the last run exits by itself when idle" \
  wait_until 5000 log_has "$log_b" "^keeper: tollgated run $last_run exited"
check_eq "every run exited with status 0" "$last_run" \
  "$(log_count "$log_b" '^keeper: tollgated run [0-9]+ exited with status 0$')"
check_eq "every run logged its idle exit" "$last_run" "$(log_count "$log_b" 'idle for 1s: exiting')"
