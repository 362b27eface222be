#!/usr/bin/env bash
# Issue 2: a client running as an unprivileged uid outside the app group is refused, and the
# daemon keeps serving the others.
#   A. The daemon's own peer check. The socket is made reachable for everyone at the file-system
#      level (a socket-activated socket chmod 0666, in a world-searchable directory), so only the
#      daemon's check stands between nobody and the channel: nobody's questions all get the
#      fallback, its client reports the daemon's reason, the daemon logs uid 65534, and a root
#      client right after is served.
#   B. The layer before it. With the daemon binding its own socket (runtime dir 0751, socket 0660,
#      root:<group>), nobody cannot even connect: EACCES, and the daemon never sees it.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"
require_root "it runs a client as uid nobody with setpriv"

write_config
write_telnet_rule
# nobody must reach the probe binary and the sockets' parent: a CI clone lives under a 0700
# directory, so nobody runs a copy from here.
chmod 0755 "$W"
mkdir -m 0755 "$W/bin"
install -m 0755 "$PROBE" "$W/bin/tollgate-probe"
nobody_probe() {  # nobody_probe OUT_JSON PROBE_FLAGS...
  local out=$1
  shift
  PROBE_STATUS=0
  timeout -k 2 60 setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$W/bin/tollgate-probe" "$@" >"$out.out" 2>"${out%.json}.probe.log" || PROBE_STATUS=$?
  tail -n 1 "$out.out" >"$out"
}

echo "== A: socket-activated, world-connectable socket: the daemon's peer check refuses nobody"
open_dir=$W/open
mkdir -m 0755 "$open_dir"
open_socket=$open_dir/analysis.sock
log_a=$W/tollgated-activated.log
spawn /dev/null "$log_a" systemd-socket-activate --seqpacket -l "$open_socket" \
  --fdname=analysis "$TOLLGATED" --config "$CONFIG"
activator=$SPAWNED
must "systemd-socket-activate listens on $open_socket" \
  wait_until 5000 log_has "$log_a" "Listening on $open_socket"
# systemd-socket-activate binds under its own umask (0644 whatever ours is): open it up.
chmod 0666 "$open_socket"

nobody_probe "$W/nobody-a.json" --socket "$open_socket" --count 100 --deadline-ms 5000
j=$W/nobody-a.json
check_eq "nobody's probe settled every question exactly once" 0 "$PROBE_STATUS"
jcheck "nobody: asked" "$j" .asked 100
jcheck "nobody: every question got the fallback" "$j" .fallbacks 100
jcheck "nobody: none answered by the daemon" "$j" .answered 0
jcheck "nobody: fallback is fail_open (allow)" "$j" .actions.allow 100
jcheck "nobody: lost" "$j" .lost 0
jcheck "nobody: duplicates" "$j" .duplicates 0
jcheck "nobody: no session was established" "$j" .sessions 0
jcheck "nobody: last_error carries the daemon's refusal" "$j" \
  '.last_error | startswith("daemon refused us: uid 65534")' true
jcheck "nobody: the reason names the app group" "$j" \
  ".last_error | test(\"is not root and not in group \\\"$APP_GROUP\\\"\")" true
check "the daemon logs the refusal with uid 65534 and its executable" \
  log_has "$log_a" "refused peer uid 65534 pid [0-9]+ exe $W/bin/tollgate-probe: "

probe "$W/root-a.json" --socket "$open_socket" --count 1000 --ports 80,23 --deadline-ms 5000
j=$W/root-a.json
check_eq "root's probe right after: exit status" 0 "$PROBE_STATUS"
jcheck "root after nobody: all answered by the daemon" "$j" .answered 1000
jcheck "root after nobody: no fallbacks" "$j" .fallbacks 0
jcheck "root after nobody: denied (port 23)" "$j" .actions.deny 500
jcheck "root after nobody: one session" "$j" .sessions 1
stop_daemon "$activator" "$log_a"
refused=$(exit_counter "$log_a" refused)
check "the daemon counted nobody's connects as refused (got ${refused:-none})" \
  test "${refused:-0}" -ge 1
check_eq "the daemon held no handshake with nobody" 1 "$(exit_counter "$log_a" handshakes)"

echo "== B: tollgated binds its own socket: nobody cannot even connect"
log_b=$W/tollgated-by-hand.log
start_daemon_by_hand "$log_b"
check_eq "runtime dir is root:$APP_GROUP 0751" "root:$APP_GROUP 751" \
  "$(stat -c '%U:%G %a' "$RUNTIME_DIR")"
check_eq "socket is root:$APP_GROUP 0660" "root:$APP_GROUP 660" "$(stat -c '%U:%G %a' "$SOCKET")"

nobody_probe "$W/nobody-b.json" --socket "$SOCKET" --count 100
j=$W/nobody-b.json
check_eq "nobody's probe (by-hand daemon) settled every question exactly once" 0 "$PROBE_STATUS"
jcheck "nobody cannot connect: EACCES" "$j" .last_error "connect $SOCKET: Permission denied"
jcheck "nobody: every question got the fallback-unavailable" "$j" \
  '.sources["fallback-unavailable"]' 100
jcheck "nobody: no session" "$j" .sessions 0

probe "$W/root-b.json" --socket "$SOCKET" --count 100 --deadline-ms 5000
check_eq "root's probe (by-hand daemon): exit status" 0 "$PROBE_STATUS"
jcheck "root (by-hand daemon): all answered" "$W/root-b.json" .answered 100
stop_daemon "$DAEMON_PID" "$log_b"
check_eq "the by-hand daemon never saw nobody: refused" 0 "$(exit_counter "$log_b" refused)"
check_eq "the by-hand daemon accepted root's one connection" 1 "$(exit_counter "$log_b" accepted)"
