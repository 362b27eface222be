#!/usr/bin/env bash
# Issue 2: the daemon is started on demand by socket activation (the first connect launches it)
# and answers 10,000 questions correctly: a rule denies tcp port 23, the default allows, and the
# probe alternates ports 80 and 23, so odd question ids must be allowed and even ones denied, all
# by the daemon, none twice, none lost, none by fallback.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

write_config
write_telnet_rule
mkdir -m 0750 "$RUNTIME_DIR"
daemon_log=$W/tollgated.log

spawn /dev/null "$daemon_log" systemd-socket-activate --seqpacket -l "$SOCKET" \
  --fdname=analysis "$TOLLGATED" --config "$CONFIG"
activator=$SPAWNED
must "systemd-socket-activate listens on $SOCKET" \
  wait_until 5000 log_has "$daemon_log" "Listening on $SOCKET"
check "socket file exists" test -S "$SOCKET"

# Not started yet: the activator has not exec'd tollgated, and nothing of tollgated is in the log.
# Give it a moment to prove it waits for a connection rather than starting late.
sleep 0.3
check_eq "before the first connect, pid $activator is still systemd-socket-activate" \
  "$(command -v systemd-socket-activate | xargs realpath)" "$(realpath "/proc/$activator/exe")"
check "before the first connect, tollgated has logged nothing" not log_has "$daemon_log" 'tollgated:'
tollgated_running() {  # any process running our tollgated with our config
  local p
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/exe" 2>/dev/null) == "$TOLLGATED" ]] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "--config $CONFIG" && return 0
  done
  return 1
}
check "before the first connect, no tollgated --config \$CONFIG runs" not tollgated_running

probe "$W/probe.json" --socket "$SOCKET" --count 10000 --ports 80,23 --deadline-ms 5000 \
  --print-decisions
check_eq "probe exit status (every question settled exactly once)" 0 "$PROBE_STATUS"

check_eq "the first connect exec'd tollgated in place of the activator" \
  "$TOLLGATED" "$(realpath "/proc/$activator/exe" 2>/dev/null || echo gone)"
check "now a tollgated --config \$CONFIG runs" tollgated_running
check "tollgated says it was socket-activated" \
  log_has "$daemon_log" 'ready \(protocol [0-9.]+, socket-activated\)'
check "tollgated logged the probe's handshake" \
  log_has "$daemon_log" "probe connected: uid $EUID "

j=$W/probe.json
jcheck "asked" "$j" .asked 10000
jcheck "settled" "$j" .settled 10000
jcheck "lost" "$j" .lost 0
jcheck "duplicates" "$j" .duplicates 0
jcheck "unknown ids" "$j" .unknown 0
jcheck "answered by the daemon" "$j" .answered 10000
jcheck "fallbacks" "$j" .fallbacks 0
jcheck "late verdicts" "$j" .late_verdicts 0
jcheck "allowed (port 80)" "$j" .actions.allow 5000
jcheck "denied (port 23)" "$j" .actions.deny 5000
jcheck "every decision came from the daemon" "$j" '.sources | to_entries | map("\(.key)=\(.value)") | join(",")' daemon=10000
jcheck "one session" "$j" .sessions 1
jcheck "still connected" "$j" .state connected

# Question i asks about port 80 when i is odd and port 23 when even (ids start at 1).
wrong=$(awk '/^decision / {
    split($2, id, "="); split($3, act, "=");
    want = (id[2] % 2 == 1) ? "allow" : "deny";
    if (act[2] != want) bad++;
    if (want == "deny" && $0 !~ /reason=deny: rule "no-telnet" \(tcp port 23\)/) bad++;
    if (want == "allow" && $0 !~ /reason=default: no rule matched/) bad++;
    n++ }
  END { print n + 0, bad + 0 }' "$j.out")
check_eq "decisions printed, and decisions with the wrong action or reason" "10000 0" "$wrong"

stop_daemon "$activator" "$daemon_log"
check_eq "daemon counted 10000 questions" 10000 "$(exit_counter "$daemon_log" questions)"
check_eq "daemon sent 10000 verdicts" 10000 "$(exit_counter "$daemon_log" verdicts)"
check_eq "daemon accepted one connection" 1 "$(exit_counter "$daemon_log" accepted)"
