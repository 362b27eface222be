#!/usr/bin/env bash
# Issue 3: with [filter] reuse_verdicts (the default), a verdict the daemon marked reusable for its destination
# decides the next new flows to that destination in the filter, without a question; each is
# reported to the daemon afterwards; a rule change makes the filter forget what it kept.
#   - rules: tcp/8080 allowed, tcp/2323 rejected (port-only rules: nothing but the tuple is used);
#   - 5 connections to each: the first of each is asked (answered 2), the other 8 are reused;
#     every 8080 one connects and every 2323 one is refused, exactly as the daemon decided;
#   - the daemon counts the 8 as decided by the filter (decided_by_filters);
#   - the rules change (SIGHUP: 8080 rejected now): the daemon sends Forget, the filter drops what
#     it kept, and the next 8080 connection is asked again and refused;
#   - a rule that needs the process (exe) is never reused: every such flow is asked;
#   - the daemon stops: the filter forgets what it kept, so a daemon started with other rules
#     (2323 allowed now) is asked about the next 2323 connection, which then connects.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
printf '[filter]\nreuse_verdicts = true\n' >>"$CONFIG"
add_rule reject-2323 reject tcp port=2323
tcp_echo_server 8080 2323 2424
start_daemon_by_hand "$W/tollgated.log"
start_filter "$W/filter.log" --fallback fail_closed --deadline-ms 2000
must "the filter is connected to the daemon" wait_filter_session 1

filter_counters
c0=$COUNTERS
outcomes=()
for port in 8080 2323; do
  for _ in 1 2 3 4 5; do
    tcp_outcome 127.0.0.1 "$port"
    outcomes+=("$port:$OUTCOME")
  done
done
check_eq "every 8080 connection echoed, every 2323 one refused" \
  "8080:echoed 8080:echoed 8080:echoed 8080:echoed 8080:echoed 2323:refused 2323:refused 2323:refused 2323:refused 2323:refused" \
  "${outcomes[*]}"
filter_counters
check_eq "filter: 10 new flows, 2 asked and answered, 8 decided from kept verdicts" "10 2 8" \
  "$(since "$c0" questions answered reused)"
check_eq "filter: no fallback, and 2 verdicts kept" "0 2" "$(since "$c0" fallbacks) $(counter reuse_kept)"
# The notices wait up to 20 ms for company (decided_delay), so the last may not have gone yet.
check "filter: the 8 reused flows were reported to the daemon (within 2 s)" wait_until 2000 eval \
  'filter_counters; [[ "$(since "$c0" decided_sent decided_dropped)" == "8 0" ]]'

# The rules change: 8080 is rejected now.
add_rule reject-8080 reject tcp port=8080
kill -HUP "$DAEMON_PID"
must "the daemon reloaded its rules" wait_until 5000 log_has "$W/tollgated.log" '2 rules in force'
must "the filter forgot what it kept" wait_until 5000 eval \
  'filter_counters; [[ $(counter reuse_kept) == 0 ]]'
c1=$COUNTERS
tcp_outcome 127.0.0.1 8080
check_eq "after the change 8080 is refused" refused "$OUTCOME"
filter_counters
check_eq "that flow was asked again, not reused" "1 1 0" \
  "$(since "$c1" questions answered reused)"

# A rule that needs the process: the decision used more than the tuple, so nothing is kept.
add_rule socat-2424 allow tcp port=2424 'exe="/usr/bin/socat"'
kill -HUP "$DAEMON_PID"
must "the daemon reloaded its rules again" wait_until 5000 log_has "$W/tollgated.log" '3 rules in force'
sleep 0.2
filter_counters
c2=$COUNTERS
for _ in 1 2 3; do tcp_outcome 127.0.0.1 2424; done
filter_counters
check_eq "process-dependent decisions are never reused: 3 flows, 3 asked" "3 3 0" \
  "$(since "$c2" questions answered reused)"

stop_daemon "$DAEMON_PID" "$W/tollgated.log"
check_eq "daemon: 8 flows decided by the filter, a Forget per rule change" "8 2" \
  "$(exit_counter "$W/tollgated.log" decided_by_filters) $(exit_counter "$W/tollgated.log" forgets_sent)"

# What the filter kept came from a daemon's rules: when its session ends, it is forgotten, so a
# daemon started with other rules (edited while none ran) decides the next flow itself.
start_daemon_by_hand "$W/tollgated-2.log"
tcp_outcome 127.0.0.1 2323
tcp_outcome 127.0.0.1 2323
check_eq "a new daemon, the same rules: 2323 refused" refused "$OUTCOME"
must "the filter keeps that reject" eval 'filter_counters; (($(counter reuse_kept) >= 1))'
# The reused flow's notice waits up to 20 ms; stopping the daemon before it goes would make the
# filter reconnect to deliver it, and this daemon (started by hand) is not there to take it.
must "the filter reported every reused flow" wait_until 2000 eval \
  'filter_counters; (($(counter decided_sent) == $(counter reused)))'
stop_daemon "$DAEMON_PID" "$W/tollgated-2.log"
must "the filter forgot it when the session ended" wait_until 5000 eval \
  'filter_counters; [[ $(counter reuse_kept) == 0 ]]'
add_rule allow-2323 allow tcp port=2323 priority=100
start_daemon_by_hand "$W/tollgated-3.log"
filter_counters
c3=$COUNTERS
tcp_outcome 127.0.0.1 2323
filter_counters
check_eq "the next daemon allows 2323 (its rules), and the filter asked it" "echoed 1 1 0" \
  "$OUTCOME $(since "$c3" questions answered reused)"
kill_filter TERM 5000
