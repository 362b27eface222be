#!/usr/bin/env bash
# Issue 3: a kept verdict that used names (a rule table with a host rule) holds only until a DNS
# reply names its address; the filter drops it as it passes the reply on, before any application
# can use the new name. Real dnsmasq, getent and TCP in a network namespace (127.0.0.0/8 only):
#   - dnsmasq gives a.test and b.test the same address, 127.0.0.5; a rule rejects b.test;
#   - getent a.test, then 3 connections to 127.0.0.5:8080: allowed (its only name is a.test); the
#     first is asked, the other 2 decided from the verdict the daemon let the filter keep;
#   - getent b.test: the reply names 127.0.0.5 again, so the filter drops that verdict
#     (reuse_renamed); the next connection is asked again and refused by the b.test rule. Kept, the
#     allow would have let it through;
#   - the reject, itself decided by a name, is kept and reused for the next connection.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

for tool in dnsmasq getent; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing; run ./scripts/bootstrap" >&2; exit 1; }
done
netns_resolver  # getent in NS resolves through our dnsmasq only

write_config
printf '[filter]\nreuse_verdicts = true\n' >>"$CONFIG"
add_rule reject-b-test reject tcp 'host="b.test"'
start_dnsmasq --address=/a.test/127.0.0.5 --address=/b.test/127.0.0.5 --local-ttl=3600
tcp_echo_server 8080
start_daemon_by_hand "$W/tollgated.log" --log-level debug  # a line per decision
start_filter "$W/filter.log" --fallback fail_closed --deadline-ms 2000
must "the filter is connected to the daemon" wait_filter_session 1

# resolve NAME: getent in NS; sets RESOLVED to the first address (empty if none).
resolve() { RESOLVED=$(in_ns timeout -k 1 5 getent hosts "$1" | awk 'NR == 1 { print $1 }'); }

echo "== a.test"
resolve a.test
check_eq "a.test resolves to 127.0.0.5 through dnsmasq" 127.0.0.5 "$RESOLVED"
filter_counters
c0=$COUNTERS
outcomes=()
for _ in 1 2 3; do
  tcp_outcome 127.0.0.5 8080
  outcomes+=("$OUTCOME")
done
check_eq "3 connections to 127.0.0.5:8080 (a.test) echo" "echoed echoed echoed" "${outcomes[*]}"
filter_counters
check_eq "3 flows: 1 asked, 2 decided from the kept verdict" "3 1 2" \
  "$(since "$c0" questions answered reused)"

echo "== b.test names the same address"
resolve b.test
check_eq "b.test resolves to 127.0.0.5" 127.0.0.5 "$RESOLVED"
filter_counters
c1=$COUNTERS
tcp_outcome 127.0.0.5 8080
check_eq "the next connection to 127.0.0.5:8080 is refused (rule reject-b-test)" refused "$OUTCOME"
filter_counters
check_eq "it was asked, not decided from the allow kept before the reply" "1 1 0" \
  "$(since "$c1" questions answered reused)"
check "the filter dropped the kept allow (reuse_renamed)" test "$(counter reuse_renamed)" -ge 1
check "the daemon's reason names b.test via DNS" log_has "$W/tollgated.log" \
  'reject: rule "reject-b-test" \(tcp host b\.test via DNS\)'

echo "== the reject is kept until the next reply"
c2=$COUNTERS
tcp_outcome 127.0.0.5 8080
check_eq "refused again" refused "$OUTCOME"
filter_counters
check_eq "decided from the kept reject" "1 0 1" \
  "$(since "$c2" questions answered reused)"
check_eq "no fallback" 0 "$(counter fallbacks)"

stop_daemon "$DAEMON_PID" "$W/tollgated.log"
kill_filter TERM 5000
