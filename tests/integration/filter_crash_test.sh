#!/usr/bin/env bash
# Issue 3: tollgate-filter SIGKILLed. Its rules keeper exits too and the chains stay, so the
# fallback policy holds in the kernel:
#   fail_open   -> the decision rules carry --queue-bypass: with no reader, new flows pass;
#   fail_closed -> no bypass: new flows are dropped (TCP and ICMP).
# A restart replaces the leftovers: every TOLLGATE chain and every jump to one exists exactly
# once (iptables-save and ip6tables-save inside the namespace), our jumps are rule 1, someone
# else's rules in the same chains are kept, and the filter decides flows again. After the
# fail_closed crash the restarted filter's ruleset is the one it had before the crash, line for
# line. A clean SIGTERM then removes every TOLLGATE chain and jump and nothing else.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
add_rule reject-2323 reject tcp port=2323
tcp_echo_server 8080 2323
start_daemon_by_hand "$W/tollgated.log"

# Someone else's rules, in chains we jump from: they must survive everything below.
for cmd in iptables ip6tables; do
  in_ns "$cmd" -w 5 -t mangle -A OUTPUT -p tcp --dport 9 -j RETURN
  in_ns "$cmd" -w 5 -t filter -A INPUT -p udp --dport 9 -j ACCEPT
done
foreign_count() {  # foreign_count CMD: how many of the two foreign rules are there
  local n
  n=$(in_ns "$1-save" | grep -cE -- '^-A (OUTPUT -p tcp -m tcp --dport 9 -j RETURN|INPUT -p udp -m udp --dport 9 -j ACCEPT)$' || true)
  echo "$n"
}

# installed_once WHEN: ours exactly once in both families, jumps first, foreign rules kept.
installed_once() {
  local cmd
  for cmd in iptables ip6tables; do
    local rules
    rules=$(tollgate_rules "$cmd")
    check_eq "$1, $cmd: TOLLGATE chains declared once each" \
      ":TOLLGATE-IN :TOLLGATE-OUT :TOLLGATE-REJECT" \
      "$(grep -oE '^:TOLLGATE-[A-Z]+' <<<"$rules" | sort | tr '\n' ' ' | sed 's/ $//')"
    check_eq "$1, $cmd: jumps (mangle OUTPUT, mangle INPUT, filter OUTPUT, filter INPUT)" \
      "1 1 1 1" \
      "$(jump_count "$cmd" mangle OUTPUT TOLLGATE-OUT) $(jump_count "$cmd" mangle INPUT TOLLGATE-IN) $(jump_count "$cmd" filter OUTPUT TOLLGATE-REJECT) $(jump_count "$cmd" filter INPUT TOLLGATE-REJECT)"
    check_eq "$1, $cmd: jumps to TOLLGATE chains in all" 4 \
      "$(in_ns "$cmd-save" | grep -cE -- '^-A [A-Z]+ (.* )?-j TOLLGATE-' || true)"
    check_eq "$1, $cmd: our jump is rule 1 of mangle OUTPUT" "-A OUTPUT -j TOLLGATE-OUT" \
      "$(in_ns "$cmd-save" -t mangle | grep -m 1 -E '^-A OUTPUT ')"
    check_eq "$1, $cmd: the foreign rules are there, once each" 2 "$(foreign_count "$cmd")"
  done
}

# decides WHEN: the running filter decides new flows with the daemon's rules.
decides() {
  tcp_outcome 127.0.0.1 8080
  check_eq "$1: tcp 8080 (allowed) echoes" echoed "$OUTCOME"
  tcp_outcome 127.0.0.1 2323
  check_eq "$1: tcp 2323 is refused (the daemon's reject)" refused "$OUTCOME"
  tcp_outcome ::1 2323
  check_eq "$1: tcp [::1]:2323 is refused (the daemon's reject)" refused "$OUTCOME"
}

# crash WHEN: SIGKILL; the keeper follows, the chains stay.
crash() {
  local keeper
  keeper=$(keeper_of "$FILTER_PID")
  check "$1: the filter has its rules keeper" test -n "$keeper"
  kill_filter KILL 5000
  check_eq "$1: the filter died of SIGKILL" 137 "${EXIT_STATUS:-none}"
  [[ -z $keeper ]] || check "$1: the rules keeper (pid $keeper) exits too" \
    wait_until 5000 exited "$keeper"
  check "$1: the chains stay (IPv4)" test -n "$(tollgate_rules iptables)"
  check "$1: the chains stay (IPv6)" test -n "$(tollgate_rules ip6tables)"
  check_eq "$1: the keeper removed nothing" "" "$(grep -E 'chains removed' "$FILTER_LOG" || true)"
}

echo "== fail_open: start, crash"
start_filter "$W/filter-1.log" --fallback fail_open
must "the filter is connected to the daemon" wait_filter_session 1
installed_once "first start"
decides "first start"
crash "fail_open crash"
tcp_outcome 127.0.0.1 8080
check_eq "after the fail_open crash: tcp 8080 still echoes (--queue-bypass)" echoed "$OUTCOME"
tcp_outcome 127.0.0.1 2323
check_eq "after the fail_open crash: tcp 2323 passes too (nobody decides)" echoed "$OUTCOME"
tcp_outcome ::1 8080
check_eq "after the fail_open crash: tcp [::1]:8080 echoes" echoed "$OUTCOME"
ping_outcome 127.0.0.1
check_eq "after the fail_open crash: ping 127.0.0.1 is answered" replied "$OUTCOME"

echo "== fail_closed: restart over fail_open's leftovers, crash"
start_filter "$W/filter-2.log" --fallback fail_closed
must "the restarted filter is connected to the daemon" wait_filter_session 1
installed_once "restart over leftovers"
check_eq "restart: fail_open's --queue-bypass is gone from the decision rules" 0 \
  "$(tollgate_rules iptables | grep -E 'ctstate NEW' | grep -c -- '--queue-bypass' || true)"
decides "restart over leftovers"
ruleset_v4=$(tollgate_rules iptables)
ruleset_v6=$(tollgate_rules ip6tables)
crash "fail_closed crash"
tcp_outcome 127.0.0.1 8080 2
check_eq "after the fail_closed crash: tcp 8080 is blocked (no answer in 2 s)" timeout "$OUTCOME"
tcp_outcome ::1 8080 2
check_eq "after the fail_closed crash: tcp [::1]:8080 is blocked" timeout "$OUTCOME"
ping_outcome 127.0.0.1 1
check_eq "after the fail_closed crash: ping 127.0.0.1 is blocked" silent "$OUTCOME"

echo "== fail_closed: restart over its own leftovers"
start_filter "$W/filter-3.log" --fallback fail_closed
must "the restarted filter is connected to the daemon" wait_filter_session 1
installed_once "second restart"
same_text() {  # same_text EXPECTED ACTUAL: equal, or the diff is printed
  [[ $1 == "$2" ]] && return 0
  diff <(echo "$1") <(echo "$2") | sed 's/^/   /'
  return 1
}
check "second restart: IPv4 ruleset identical to before the crash ($(wc -l <<<"$ruleset_v4") lines)" \
  same_text "$ruleset_v4" "$(tollgate_rules iptables)"
check "second restart: IPv6 ruleset identical to before the crash ($(wc -l <<<"$ruleset_v6") lines)" \
  same_text "$ruleset_v6" "$(tollgate_rules ip6tables)"
decides "second restart"
ping_outcome 127.0.0.1
check_eq "second restart: ping 127.0.0.1 is answered" replied "$OUTCOME"

echo "== clean exit"
keeper=$(keeper_of "$FILTER_PID")
kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
check "the keeper says the chains are removed" log_has "$FILTER_LOG" 'chains removed'
[[ -z $keeper ]] || check "the keeper exits" wait_until 5000 exited "$keeper"
for cmd in iptables ip6tables; do
  check_eq "$cmd-save shows no TOLLGATE chain or jump" "" "$(tollgate_rules "$cmd")"
  check_eq "$cmd: the foreign rules are still there, once each" 2 "$(foreign_count "$cmd")"
done
tcp_outcome 127.0.0.1 2323
check_eq "without the filter: tcp 2323 echoes (nothing left that rejects)" echoed "$OUTCOME"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
