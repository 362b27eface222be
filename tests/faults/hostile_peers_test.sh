#!/usr/bin/env bash
# Issue 7 (fault matrix): 1,000 authorised but misbehaving analysis-channel peers at once, while
# the real filter decides real connections. The peers (tollgate-fault-load hostile, as root, so
# the daemon admits them) are 200 of each kind: never_read (a handshake, then questions until the
# daemon stops taking them; never reads a reply), silent (connected, never a Hello: the daemon
# hangs up after its 5 s handshake timeout and the peer comes back 1 s later), slow_read (a batch
# of 64 questions every 2 s, one reply read every 4 s), garbage and oversize (a bad message, the
# daemon closes, again 1 s later). The 800 others connect first; then the never_read peers
# connect all at once while tollgate-filter (deadline 200 ms) decides 20,000 new connections to
# one-byte servers on 8080 (allowed) and 2323 (a reject rule), 16 at a time, each from its own
# source. Until the daemon stops reading a never_read peer it answers what fits in that peer's
# socket (~1,700 questions each, ~340,000 for the 200); the filter's connection is dispatched
# first (docs/security.md), so that burst must not push its answers past the deadline:
#   - the real filter was served within its deadlines: every one of the 20,000 questions answered
#     by the daemon, no fallback, no late answer, one session all along; every connection to 8080
#     completed and every one to 2323 was refused (the daemon's reject), none timed out;
#   - every misbehaving peer cost only itself: each garbage and oversize message closed exactly
#     its connection and was counted by the daemon (malformed, oversize), every never_read peer
#     was throttled (its sends blocked) rather than buffered, silent peers were hung up on only
#     by the handshake timeout, no other peer was closed or refused, and the daemon accepted every
#     connection made (1 + the peers'), none over its limit;
#   - the daemon gave a verdict for every question it read (questions = verdicts on its exit
#     line), and the questions it read from the peers are at most those they sent.
#   bash tests/faults/hostile_peers_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/../integration/filter_lib.sh"
LOAD=$(realpath "${5:?usage: $0 TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD}")

readonly peers=1000 connections=20000
write_config
add_rule reject-2323 reject tcp port=2323
byte_server 8080
byte_server 2323
log=$W/tollgated.log
start_daemon_by_hand "$log"
# The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
start_filter "$W/filter.log" --fallback fail_open --no-reuse
must "the filter is connected to the daemon" wait_filter_session 1

kinds=$((peers / 5))
echo "-- $((peers - kinds)) misbehaving peers connect"
hostile_out=$W/hostile.out
spawn "$hostile_out" "$W/hostile.log" "$LOAD" hostile --socket "$SOCKET" \
  --connections $((peers - kinds)) --kinds silent,slow_read,garbage,oversize --churn-ms 1000
hostile=$SPAWNED
must "the $((peers - kinds)) peers are connected" wait_until 20000 log_has "$hostile_out" '^ready'
sleep 2  # the churners make a few rounds, the slow readers fall behind
filter_counters
c0=$COUNTERS

echo "-- $kinds never_read peers connect at once, and the filter decides $connections connections"
parked_out=$W/hostile-never-read.out
spawn "$parked_out" "$W/hostile-never-read.log" "$LOAD" hostile --socket "$SOCKET" \
  --connections "$kinds" --kinds never_read
parked=$SPAWNED
storm_out=$W/storm.out
in_ns "$LOAD" connect --ports 8080,2323 --count "$connections" --parallel 16 --deadline-ms 5000 \
  >"$storm_out" 2>"$W/storm.log" || true
r=$(tail -n 1 "$storm_out")
echo "   $r"
check "the misbehaving peers were still at it" not exited "$hostile"
check "the never_read peers had all connected" log_has "$parked_out" '^ready'
filter_counters
c1=$COUNTERS
echo "   $c1"
d() { echo $(($(counter "$1" "$c1") - $(counter "$1" "$c0"))); }
check_eq "connections: all accounted for" "$connections" \
  "$(($(counter completed "$r") + $(counter refused "$r") + $(counter timeout "$r") + \
    $(counter other "$r")))"
check_eq "connections: every one to 8080 completed" $((connections / 2)) \
  "$(counter completed_8080 "$r")"
check_eq "connections: every one to 2323 refused (the daemon's reject)" $((connections / 2)) \
  "$(counter refused_2323 "$r")"
echo "   the filter held $(counter conn_per_s "$r") connections/s"
check_eq "connections: none timed out or failed otherwise" "0 0" \
  "$(counter timeout "$r") $(counter other "$r")"
check_eq "filter: one question per connection" "$connections" "$(d questions)"
check_eq "filter: every question answered by the daemon" "$connections" "$(d answered)"
check_eq "filter: no fallback (every answer within the 200 ms deadline)" 0 "$(d fallbacks)"
check_eq "filter: no late answer" 0 "$(d late)"
check_eq "filter: allow and reject verdicts" "$((connections / 2)) $((connections / 2))" \
  "$(d allow) $(d reject)"
check_eq "filter: nothing pending" 0 "$(counter pending "$c1")"
check_eq "filter: still its first session" 1 "$(filter_sessions)"

echo "-- the misbehaving peers stop"
kill -TERM "$hostile" "$parked"
check "the misbehaving peers finish their last round" wait_exit "$hostile" 20000
check "the never_read peers end" wait_exit "$parked" 20000
h=$(tail -n 1 "$hostile_out")
p=$(tail -n 1 "$parked_out")
echo "   $p"
echo "   $h"
check_eq "peers: connects that failed, refusals, unexpected closes, rounds left open" \
  "0 0 0 0 0 0 0 0" "$(counter connect_errors "$h") $(counter refused "$h") \
$(counter closed_unexpectedly "$h") $(counter unsettled "$h") $(counter connect_errors "$p") \
$(counter refused "$p") $(counter closed_unexpectedly "$p") $(counter unsettled "$p")"
check_eq "peers: every never_read peer was throttled (its sends blocked)" "$kinds" \
  "$(counter never_read_blocked "$p")"
check_eq "peers: every slow_read peer was welcomed" "$kinds" "$(($(counter welcomed "$h") - \
  $(counter garbage_sent "$h")))"
check "peers: garbage sent, more than once per garbage peer ($(counter garbage_sent "$h"))" \
  test "$(counter garbage_sent "$h")" -gt "$kinds"
check "peers: oversize sent, more than once per oversize peer ($(counter oversize_sent "$h"))" \
  test "$(counter oversize_sent "$h")" -gt "$kinds"
check_eq "peers: the daemon closed each garbage connection" "$(counter garbage_sent "$h")" \
  "$(counter garbage_closed "$h")"
check_eq "peers: the daemon closed each oversize connection" "$(counter oversize_sent "$h")" \
  "$(counter oversize_closed "$h")"

check "the daemon is still the same process" kill -0 "$DAEMON_PID"
check_eq "filter: channel still connected" connected "$(counter channel "$c1")"
stop_daemon "$DAEMON_PID" "$log"
echo "   $(grep -E 'exiting: ' "$log" | tail -n 1)"
check_eq "daemon: malformed = garbage messages" "$(counter garbage_sent "$h")" \
  "$(exit_counter "$log" malformed)"
check_eq "daemon: oversize = oversize messages" "$(counter oversize_sent "$h")" \
  "$(exit_counter "$log" oversize)"
check_eq "daemon: accepted = the filter + every peer connection" \
  "$((1 + $(counter connects "$h") + $(counter connects "$p")))" "$(exit_counter "$log" accepted)"
check "daemon: silent peers hung up on by the handshake timeout only ($(counter silent_closed \
  "$h") <= $(exit_counter "$log" handshake_timeouts))" \
  test "$(counter silent_closed "$h")" -le "$(exit_counter "$log" handshake_timeouts)"
check_eq "daemon: refused, over its connection limit, protocol errors" "0 0 0" \
  "$(exit_counter "$log" refused) $(exit_counter "$log" over_limit) \
$(exit_counter "$log" protocol_errors)"
check_eq "daemon: a verdict for every question it read" "$(exit_counter "$log" questions)" \
  "$(exit_counter "$log" verdicts)"
filter_questions=$(counter questions "$c1")
peer_questions=$(($(exit_counter "$log" questions) - filter_questions))
sent=$(($(counter questions_sent "$h") + $(counter questions_sent "$p")))
check "daemon: questions read from the peers ($peer_questions) <= sent ($sent)" \
  test "$peer_questions" -le "$sent"
kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
