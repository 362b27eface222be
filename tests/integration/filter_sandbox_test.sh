#!/usr/bin/env bash
# Issue 3: the sandbox holds in the real filter, after start-up (docs/sandbox.md).
#   - the start-up log says what holds: cap_net_admin only, no_new_privs, Landlock, seccomp;
#   - --test-sandbox-probe (test builds): a fresh filter per probe, each after it is filtering:
#       open   /etc/hostname          -> refused (Landlock: EACCES); the filter lives on and decides
#       socket AF_INET                -> refused (seccomp: EAFNOSUPPORT); the filter lives on
#       exec   /bin/true              -> killed by SIGSYS after "forbidden system call execve"
#       ptrace PTRACE_TRACEME         -> killed by SIGSYS after "forbidden system call ptrace"
#     and a filter killed that way leaves chains that still follow its policy (fail_closed:
#     blocked; fail_open: bypass), which the next start replaces;
#   - --user nobody: the filter runs as uid 65534 with CAP_NET_ADMIN only (effective, permitted,
#     bounding), keeps the app group (a group made for this test, given to tollgated) as a
#     supplementary group so the daemon admits it, and still decides flows.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

# The app group, made for this test: the daemon admits root and its members only.
APP_GROUP=tg-test-$$
groupadd --system "$APP_GROUP"
at_cleanup groupdel "$APP_GROUP"
app_gid=$(getent group "$APP_GROUP" | cut -d: -f3)
# nobody must be able to reach $RUNTIME_DIR/analysis.sock (the daemon makes run/ 0751, its sockets 0660 for the group).
chmod 0711 "$W"

write_config
add_rule reject-2323 reject tcp port=2323
tcp_echo_server 8080 2323
start_daemon_by_hand "$W/tollgated.log"

# sandbox_re UID GID: the start-up line (see docs/sandbox.md for an example).
sandbox_re() {
  echo "sandbox: uid $1 gid $2; capabilities: cap_net_admin only .*; no_new_privs; Landlock ABI [0-9]+.*; seccomp: [0-9]+ system calls allowed"
}
summary_re=$(sandbox_re 0 0)

if "$FILTER" --help 2>&1 | grep -q -- --test-sandbox-probe; then
  for probe in open socket; do
    echo "== probe $probe"
    start_filter "$W/filter-$probe.log" --fallback fail_closed --test-sandbox-probe "$probe"
    check "$probe: the start-up log states the sandbox" log_has "$FILTER_LOG" "$summary_re"
    check "$probe: the probe is refused" \
      wait_until 5000 log_has "$FILTER_LOG" "sandbox probe $probe: refused \\("
    check "$probe: the probe was not allowed" not log_has "$FILTER_LOG" 'ALLOWED'
    sed -n "s/.*\\(sandbox probe $probe: .*\\)/   \\1/p" "$FILTER_LOG"
    check "$probe: the filter is still running" not exited "$FILTER_PID"
    tcp_outcome 127.0.0.1 2323
    check_eq "$probe: it still decides (tcp 2323 refused by the daemon's rule)" refused "$OUTCOME"
    kill_filter TERM 5000
    check_eq "$probe: exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
  done
  check "open is refused with EACCES" log_has "$W/filter-open.log" \
    'sandbox probe open: refused \(Permission denied\)'
  check "socket(AF_INET) is refused with EAFNOSUPPORT" log_has "$W/filter-socket.log" \
    'sandbox probe socket: refused \(Address family not supported'

  declare -A policy=([exec]=fail_closed [ptrace]=fail_open)
  declare -A syscall=([exec]=execve [ptrace]=ptrace)
  for probe in exec ptrace; do
    echo "== probe $probe (${policy[$probe]})"
    start_filter "$W/filter-$probe.log" --fallback "${policy[$probe]}" --test-sandbox-probe "$probe"
    check "$probe: the start-up log states the sandbox" log_has "$FILTER_LOG" "$summary_re"
    check "$probe: the filter dies within 5 s" wait_exit "$FILTER_PID" 5000
    check_eq "$probe: killed by SIGSYS (128 + 31)" 159 "${EXIT_STATUS:-none}"
    check "$probe: one clear log line names the call" log_has "$FILTER_LOG" \
      "sandbox: forbidden system call ${syscall[$probe]} \\(nr [0-9]+\\); exiting"
    grep -hE 'forbidden system call' "$FILTER_LOG" | sed 's/^/   /'
    check "$probe: the probe was not allowed" not log_has "$FILTER_LOG" 'ALLOWED'
    check "$probe: the chains stay" test -n "$(tollgate_rules iptables)"
    if [[ ${policy[$probe]} == fail_closed ]]; then
      tcp_outcome 127.0.0.1 8080 2
      check_eq "$probe: fail_closed holds after the kill (tcp 8080 blocked)" timeout "$OUTCOME"
    else
      tcp_outcome 127.0.0.1 8080
      check_eq "$probe: fail_open holds after the kill (tcp 8080 passes)" echoed "$OUTCOME"
    fi
  done
else
  echo "SKIP: the probes: $FILTER was built without TOLLGATE_TEST_HOOKS"
fi

echo "== --user nobody"
start_filter "$W/filter-nobody.log" --user nobody
check "nobody: the start-up log states the sandbox as uid 65534" \
  log_has "$FILTER_LOG" "$(sandbox_re 65534 65534)"
sed -n 's/.*\(sandbox: .*\)/   \1/p' "$FILTER_LOG"
check "nobody: the filter is connected to the daemon" wait_filter_session 1
check "nobody: the daemon admitted it as uid 65534" \
  log_has "$W/tollgated.log" 'filter connected: uid 65534 '
status=$(cat "/proc/$FILTER_PID/status")
field() { awk -v f="$1:" '$1 == f { $1 = ""; sub(/^ /, ""); print }' <<<"$status"; }
check_eq "nobody: Uid (real, effective, saved, fs)" "65534 65534 65534 65534" "$(field Uid)"
check_eq "nobody: Gid" "65534 65534 65534 65534" "$(field Gid)"
check_eq "nobody: supplementary groups: the app group only" "$app_gid" "$(field Groups | xargs)"
check_eq "nobody: CapEff is CAP_NET_ADMIN only" 0000000000001000 "$(field CapEff)"
check_eq "nobody: CapPrm is CAP_NET_ADMIN only" 0000000000001000 "$(field CapPrm)"
check_eq "nobody: CapBnd is CAP_NET_ADMIN only" 0000000000001000 "$(field CapBnd)"
check_eq "nobody: CapInh empty" 0000000000000000 "$(field CapInh)"
check_eq "nobody: CapAmb empty" 0000000000000000 "$(field CapAmb)"
check_eq "nobody: NoNewPrivs" 1 "$(field NoNewPrivs)"
check_eq "nobody: Seccomp mode 2 (filter)" 2 "$(field Seccomp)"
tcp_outcome 127.0.0.1 8080
check_eq "nobody: tcp 8080 (allowed) echoes" echoed "$OUTCOME"
tcp_outcome 127.0.0.1 2323
check_eq "nobody: tcp 2323 is refused (the daemon's reject)" refused "$OUTCOME"
filter_counters
check "nobody: the daemon answered both questions" test "$(counter answered)" -ge 2
check_eq "nobody: no fallback" 0 "$(counter fallbacks)"
kill_filter TERM 5000
check_eq "nobody: exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
check "nobody: the keeper (still root) removed the chains" log_has "$FILTER_LOG" 'chains removed'
check_eq "nobody: no TOLLGATE chain left (IPv4)" "" "$(tollgate_rules iptables)"
check_eq "nobody: no TOLLGATE chain left (IPv6)" "" "$(tollgate_rules ip6tables)"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
