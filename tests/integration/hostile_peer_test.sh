#!/usr/bin/env bash
# Issue 2: garbage and oversized messages from an authorised peer. The daemon closes that one
# connection and counts it; a client that was connected all along is not disturbed, and the next
# client is served.
#   - garbage: a 512-byte message that is no FlatBuffer, sent after a proper handshake;
#   - oversize: a 128 KiB message (the limit is 64 KiB), sent before any Hello.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

write_config
write_telnet_rule
log=$W/tollgated.log
start_daemon_by_hand "$log"

# A well-behaved client asks throughout (2,000 questions over ~1 s) while the others misbehave.
spawn "$W/bystander.json.out" "$W/bystander.probe.log" "$PROBE" --daemon-uid "$DAEMON_UID" \
  --socket "$SOCKET" --count 2000 --rate 2000 --ports 80,23 --deadline-ms 5000
bystander=$SPAWNED
must "the bystander is connected" wait_until 5000 log_has "$log" 'probe connected: '

probe "$W/garbage.json" --socket "$SOCKET" --send-raw garbage --timeout-ms 5000
check_eq "garbage sender: probe exit status (the daemon closed the connection)" 0 "$PROBE_STATUS"
jcheck "garbage sender was welcomed first (an authorised peer)" "$W/garbage.json" .welcomed true
jcheck "garbage sender: the daemon closed the connection" "$W/garbage.json" \
  .closed_by_daemon true
jcheck "garbage sender: no reply to the garbage" "$W/garbage.json" .messages_after 0
check "the daemon logs why it closed it" log_has "$log" '[a-z]+ \(uid [0-9]+ pid [0-9]+\): malformed message'

probe "$W/oversize.json" --socket "$SOCKET" --send-raw oversize --raw-skip-hello --timeout-ms 5000
check_eq "oversize sender: probe exit status (the daemon closed the connection)" 0 "$PROBE_STATUS"
jcheck "oversize sender sent 128 KiB" "$W/oversize.json" .sent_bytes 131072
jcheck "oversize sender: the daemon closed the connection" "$W/oversize.json" \
  .closed_by_daemon true
check "the daemon logs why it closed it" log_has "$log" '[a-z]+ \(uid [0-9]+ pid [0-9]+\): oversize message'

check "the bystander finishes" wait_exit "$bystander" 20000
check_eq "bystander: exit status" 0 "$EXIT_STATUS"
tail -n 1 "$W/bystander.json.out" >"$W/bystander.json"
j=$W/bystander.json
jcheck "bystander: all 2000 answered by the daemon" "$j" .answered 2000
jcheck "bystander: no fallbacks" "$j" .fallbacks 0
jcheck "bystander: never disconnected" "$j" .disconnects 0
jcheck "bystander: one session" "$j" .sessions 1

probe "$W/next.json" --socket "$SOCKET" --count 1000 --ports 80,23 --deadline-ms 5000
check_eq "next client: exit status" 0 "$PROBE_STATUS"
jcheck "next client: all answered by the daemon" "$W/next.json" .answered 1000
jcheck "next client: port 23 denied" "$W/next.json" .actions.deny 500
jcheck "next client: no fallbacks" "$W/next.json" .fallbacks 0

stop_daemon "$DAEMON_PID" "$log"
check_eq "exit line: malformed" 1 "$(exit_counter "$log" malformed)"
check_eq "exit line: oversize" 1 "$(exit_counter "$log" oversize)"
check_eq "exit line: protocol_errors" 0 "$(exit_counter "$log" protocol_errors)"
check_eq "exit line: accepted (bystander, garbage, oversize, next)" 4 \
  "$(exit_counter "$log" accepted)"
check_eq "exit line: questions" 3000 "$(exit_counter "$log" questions)"
check_eq "exit line: verdicts" 3000 "$(exit_counter "$log" verdicts)"
