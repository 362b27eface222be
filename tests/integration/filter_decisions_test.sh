#!/usr/bin/env bash
# Issue 3: tollgate-filter decides real loopback flows with tollgated's rules, IPv4 and IPv6.
# Allow by default, with: reject tcp 2323, deny (drop) tcp 2424, deny udp 9001, deny icmp to
# 127.0.0.2. Every port has a listener, so a refusal or a timeout is the filter's doing.
#   - an allowed TCP flow connects and carries data both ways (an echo), on 127.0.0.1 and ::1;
#   - a rejected one fails fast with "Connection refused" (the kernel's RST), on 127.0.0.1 and ::1;
#   - a denied one gets no answer (a bounded wait of 1-2 s ends it: an answer on loopback takes
#     well under a millisecond, and the SYN retransmit at 1 s must be denied too);
#   - UDP: allowed datagrams are echoed, denied ones get nothing;
#   - ICMP: ping 127.0.0.1 and ::1 are answered, ping 127.0.0.2 is not;
#   - the daemon's debug log gives each decision its reason (the rule, or the default) and the
#     local uid of the client (65534 for a client run as nobody);
#   - the filter's counters agree: every flow was a question answered by the daemon or decided
#     from a verdict it let the filter keep, none fell back, and the retried denied flows were
#     answered from the filter's memory.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
add_rule reject-2323 reject tcp port=2323
add_rule drop-2424 deny tcp port=2424
add_rule drop-udp-9001 deny udp port=9001
add_rule no-ping-127-0-0-2 deny icmp 'cidr="127.0.0.2/32"'

tcp_echo_server 8080 2323 2424
udp_echo_server 9000 9001
start_daemon_by_hand "$W/tollgated.log" --log-level debug  # debug: one line per decision
start_filter "$W/filter.log"
must "the filter is connected to the daemon" wait_filter_session 1

echo "== TCP"
tcp_outcome 127.0.0.1 8080
check_eq "tcp 127.0.0.1:8080 (allowed) connects and echoes" echoed "$OUTCOME"
tcp_outcome 127.0.0.1 2323
check_eq "tcp 127.0.0.1:2323 (reject) is refused at once" refused "$OUTCOME"
tcp_outcome 127.0.0.1 2424 2
check_eq "tcp 127.0.0.1:2424 (deny) gets no answer in 2 s" timeout "$OUTCOME"
# A second try of each: the rejected and denied flows are answered again (from memory or anew).
tcp_outcome 127.0.0.1 2323
check_eq "tcp 127.0.0.1:2323 is refused again" refused "$OUTCOME"
tcp_outcome 127.0.0.1 8080
check_eq "tcp 127.0.0.1:8080 echoes again" echoed "$OUTCOME"

echo "== TCP over IPv6 (::1)"
tcp_outcome ::1 8080
check_eq "tcp [::1]:8080 (allowed) connects and echoes" echoed "$OUTCOME"
tcp_outcome ::1 2323
check_eq "tcp [::1]:2323 (reject) is refused at once" refused "$OUTCOME"
tcp_outcome ::1 2424 2
check_eq "tcp [::1]:2424 (deny) gets no answer in 2 s" timeout "$OUTCOME"

echo "== UDP"
udp_outcome 127.0.0.1 9000
check_eq "udp 127.0.0.1:9000 (allowed) is echoed" echoed "$OUTCOME"
udp_outcome 127.0.0.1 9001 1
check_eq "udp 127.0.0.1:9001 (deny) gets no reply in 1 s" silent "$OUTCOME"
udp_outcome ::1 9000
check_eq "udp [::1]:9000 (allowed) is echoed" echoed "$OUTCOME"
udp_outcome ::1 9001 1
check_eq "udp [::1]:9001 (deny) gets no reply in 1 s" silent "$OUTCOME"

echo "== ICMP"
ping_outcome 127.0.0.1
check_eq "ping 127.0.0.1 (allowed) is answered" replied "$OUTCOME"
ping_outcome 127.0.0.2 1
check_eq "ping 127.0.0.2 (deny icmp to 127.0.0.2/32) gets no reply in 1 s" silent "$OUTCOME"
ping_outcome ::1
check_eq "ping ::1 (icmpv6, allowed) is answered" replied "$OUTCOME"

echo "== the local user reaches the daemon (NFQUEUE uid)"
out=$(printf 'as-nobody' | in_ns setpriv --reuid=65534 --regid=65534 --clear-groups \
  timeout 3 socat -t 2 - TCP4:127.0.0.1:8080 2>&1) || true
check_eq "tcp 8080 as uid 65534 echoes" as-nobody "$out"

echo "== the daemon's reasons (tollgated --log-level debug: one line per decision)"
dlog=$W/tollgated.log
reason() {  # reason NAME REGEX: a decision line in the daemon's log matches
  check "$1" log_has "$dlog" "tollgated: $2"
}
reason "tcp 8080: the default" 'tcp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:8080 uid 0: default: no rule matched'
reason "tcp 2323: rule reject-2323" 'tcp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:2323 uid 0: reject: rule "reject-2323"'
reason "tcp 2424: rule drop-2424" 'tcp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:2424 uid 0: deny: rule "drop-2424"'
reason "tcp [::1]:2323: rule reject-2323" 'tcp ::1:[0-9]+ -> ::1:2323 uid 0: reject: rule "reject-2323"'
reason "udp 9001: rule drop-udp-9001" 'udp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:9001 uid 0: deny: rule "drop-udp-9001"'
reason "udp [::1]:9001: rule drop-udp-9001" 'udp ::1:[0-9]+ -> ::1:9001 uid 0: deny: rule "drop-udp-9001"'
reason "icmp 127.0.0.2: rule no-ping-127-0-0-2" 'icmp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.2:[0-9]+ uid 0: deny: rule "no-ping-127-0-0-2"'
reason "icmpv6 ::1: the default" 'icmpv6 ::1:[0-9]+ -> ::1:[0-9]+ uid 0: default'
reason "the client's uid (65534) is in its question" 'tcp 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:8080 uid 65534: default'

echo "== the filter's account"
filter_counters
echo "   $COUNTERS"
check_eq "channel" connected "$(counter channel)"
check_eq "no question fell back (the daemon decided every flow)" 0 "$(counter fallbacks)"
# Each question was answered by the daemon or, for a repeat destination, decided from the
# verdict the daemon let the filter keep (reuse_verdicts, the default).
check_eq "every question was answered or decided from a kept verdict" "$(counter questions)" \
  "$(($(counter answered) + $(counter reused)))"
check "14+ questions (one per new flow)" test "$(counter questions)" -ge 14
check "reject verdicts were given" test "$(counter reject)" -ge 3
check "deny verdicts were given" test "$(counter deny)" -ge 4
check "retried denied/rejected flows were answered from memory" \
  test "$(counter remembered_hits)" -ge 1
check_eq "nothing pending" 0 "$(counter pending)"
check_eq "no packet lost by the queue" 0 "$(counter nfq_lost)"
check_eq "no verdict failed" 0 "$(counter verdict_errors)"

kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
check "its chains are removed (IPv4)" test -z "$(tollgate_rules iptables)"
check "its chains are removed (IPv6)" test -z "$(tollgate_rules ip6tables)"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
