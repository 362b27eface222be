#!/usr/bin/env bash
# The control API of the real tollgated, started by hand, over control.sock with socat (varlink:
# NUL-terminated JSON): status, rules add/test/remove/reload, a bad rule refused with
# file:line:col and nothing changed, a rule in an operator's file not removable, errors for
# malformed and unknown calls and for an oversize request, a live Subscribe stream and the flow
# log of decisions the probe asked for, and metrics. Runs unprivileged too (the admin group is
# then absent and the daemon's own uid is root-equivalent only when root: see below).
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

command -v socat >/dev/null || { echo "FAIL: socat is missing; run ./scripts/bootstrap"; exit 1; }

# Unprivileged, the caller is neither root nor (usually) in an admin group: make its primary group
# the admin group so the control API admits it, as it would admit an operator.
write_config "flow_log = \"$W/flows.db\""
sed -i "s/^\[tollgate\]$/[tollgate]\nadmin_group = \"$APP_GROUP\"/" "$CONFIG"
write_telnet_rule
log=$W/tollgated.log
start_daemon_by_hand "$log"
CONTROL=$RUNTIME_DIR/control.sock
must "control.sock exists" test -S "$CONTROL"

call() {  # call JSON [OUT]: one request, the replies as JSON lines in OUT (default $W/reply.json)
  local out=${2:-$W/reply.json}
  printf '%s\0' "$1" | timeout 10 socat -t 5 - "UNIX-CONNECT:$CONTROL" | tr '\0' '\n' >"$out"
}

call '{"method":"io.tollgate.Control.GetStatus"}'
jcheck "GetStatus: one rule loaded" "$W/reply.json" .parameters.status.rules_loaded 1
jcheck "GetStatus: default action" "$W/reply.json" .parameters.status.default_action allow
jcheck "GetStatus: flow log path" "$W/reply.json" .parameters.status.flow_log "$W/flows.db"
jcheck "GetStatus: not enforcing (no filter)" "$W/reply.json" .parameters.status.enforcing false
jcheck "GetStatus: no filter, so no reported fallbacks or queue drops" "$W/reply.json" \
  '"\(.parameters.status.fallbacks) \(.parameters.status.queue_lost)"' "0 0"
v1=$(jq -r .parameters.status.rule_set_version "$W/reply.json")

call '{"method":"org.varlink.service.GetInfo"}'
jcheck "GetInfo names the interface" "$W/reply.json" '.parameters.interfaces[1]' io.tollgate.Control
call '{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"io.tollgate.Control"}}'
check "the description has the filters' reports" \
  grep -q 'report: ?FilterReport' <(jq -r .parameters.description "$W/reply.json")

call '{"method":"io.tollgate.Control.AddRule","parameters":{"toml":"[[rule]]\nname = \"no-web\"\naction = \"deny\"\nprotocol = \"tcp\"\nport = 80\n"}}'
jcheck "AddRule: the rule in force" "$W/reply.json" .parameters.rule.conditions "tcp port 80"
jcheck "AddRule: the version moved on" "$W/reply.json" .parameters.rule_set_version $((v1 + 1))
check "AddRule wrote the managed file" grep -q 'name = "no-web"' "$W/rules.d/90-tollgate-cli.toml"

cp "$W/rules.d/90-tollgate-cli.toml" "$W/managed.before"
call '{"method":"io.tollgate.Control.AddRule","parameters":{"toml":"[[rule]]\nname = \"bad\"\naction = \"deny\"\nport = \"http\"\n"}}'
jcheck "a bad rule is RuleInvalid" "$W/reply.json" .error io.tollgate.Control.RuleInvalid
check "its message has line:col" grep -q 'AddRule:4:8: ' "$W/reply.json"
check "the managed file did not change" cmp -s "$W/managed.before" "$W/rules.d/90-tollgate-cli.toml"

call '{"method":"io.tollgate.Control.TestFlow","parameters":{"flow":{"protocol":"tcp","direction":"outbound","src":"127.0.0.1","src_port":40000,"dst":"127.0.0.1","dst_port":80}}}'
jcheck "TestFlow: port 80 denied by no-web" "$W/reply.json" '"\(.parameters.action) \(.parameters.rule)"' "deny no-web"

call '{"method":"io.tollgate.Control.RemoveRule","parameters":{"name":"no-telnet"}}'
jcheck "a rule of the operator's file is not removable" "$W/reply.json" .error io.tollgate.Control.RuleNotManaged
call '{"method":"io.tollgate.Control.RemoveRule","parameters":{"name":"nope"}}'
jcheck "an unknown rule is RuleNotFound" "$W/reply.json" .error io.tollgate.Control.RuleNotFound

# Errors that must not disturb the daemon.
call 'this is not json'
jcheck "malformed JSON: InvalidRequest" "$W/reply.json" .error io.tollgate.Control.InvalidRequest
call '{"method":"io.tollgate.Control.Explode"}'
jcheck "unknown method: MethodNotFound" "$W/reply.json" .error org.varlink.service.MethodNotFound
call '{"method":"io.tollgate.Control.RemoveRule","parameters":{"name":5}}'
jcheck "wrong type: InvalidParameter" "$W/reply.json" .parameters.parameter name
head -c 70000 /dev/zero | tr '\0' 'a' | timeout 10 socat -t 5 - "UNIX-CONNECT:$CONTROL" |
  tr '\0' '\n' >"$W/reply.json" || true
jcheck "oversize request: RequestTooLarge" "$W/reply.json" .error io.tollgate.Control.RequestTooLarge

# A live stream while the probe asks 10 questions (5 to port 80, 5 to 23). The write side stays
# open (sleep) because a subscriber that hangs up is dropped.
(printf '%s\0' '{"method":"io.tollgate.Control.Subscribe","more":true,"parameters":{"action":"deny"}}'
  sleep 8) | timeout 10 socat -t 1 - "UNIX-CONNECT:$CONTROL" >"$W/stream.raw" 2>/dev/null &
sub_pid=$!
subscribed() {
  call '{"method":"io.tollgate.Control.GetStatus"}' "$W/status.json"
  [[ $(jq -r .parameters.status.subscribers "$W/status.json") == 1 ]]
}
must "the subscriber is registered" wait_until 5000 subscribed
probe "$W/probe.json" --socket "$SOCKET" --count 10 --ports 80,23 --deadline-ms 5000
jcheck "probe: all 10 answered" "$W/probe.json" .answered 10
streamed() { (($(tr '\0' '\n' <"$W/stream.raw" | grep -c '"continues":true') >= 10)); }
check "all 10 denials streamed" wait_until 5000 streamed
kill "$sub_pid" 2>/dev/null || true
wait "$sub_pid" 2>/dev/null || true

logged() {
  call '{"method":"io.tollgate.Control.QueryFlows","parameters":{"action":"deny","limit":100}}' \
    "$W/flows.json"
  [[ $(jq -r '.parameters.flows | length' "$W/flows.json") == 10 ]]
}
check "QueryFlows: the 10 denials are in the flow log" wait_until 5000 logged
jcheck "QueryFlows: newest first, with rule and reason" "$W/flows.json" \
  '.parameters.flows[0] | "\(.action) \(.rule != null) \(.reason | startswith("deny: rule"))"' \
  "deny true true"

call '{"method":"io.tollgate.Control.GetMetrics"}'
jq -r .parameters.text "$W/reply.json" >"$W/metrics.txt"
check "metrics: 10 denials" grep -qx 'tollgate_verdicts_total{action="deny"} 10' "$W/metrics.txt"
check "metrics: 10 questions in the histogram" grep -qx "tollgate_question_seconds_count 10" "$W/metrics.txt"
check "metrics: rules loaded" grep -qx 'tollgate_rules_loaded 2' "$W/metrics.txt"
check "metrics: the filter fallbacks family" \
  grep -qx '# TYPE tollgate_filter_fallbacks_total counter' "$W/metrics.txt"
check "metrics: the filter queue drops family" \
  grep -qx '# TYPE tollgate_filter_queue_drops_total counter' "$W/metrics.txt"
check "metrics: no filter series from a probe (it reports nothing)" \
  not grep -q '^tollgate_filter_[a-z_]*{' "$W/metrics.txt"

# Reload after a hand edit of another file; then the managed rule goes away.
cat >"$W/rules.d/20-more.toml" <<'R'
[[rule]]
name = "no-ssh"
action = "reject"
protocol = "tcp"
port = 22
R
call '{"method":"io.tollgate.Control.Reload"}'
jcheck "Reload: three rules" "$W/reply.json" .parameters.rules_loaded 3
call '{"method":"io.tollgate.Control.RemoveRule","parameters":{"name":"no-web"}}'
jcheck "RemoveRule: success" "$W/reply.json" ".error // \"ok\"" ok
check "RemoveRule: gone from the file" not grep -q 'no-web' "$W/rules.d/90-tollgate-cli.toml"
call '{"method":"io.tollgate.Control.ListRules"}'
jcheck "ListRules: the two hand-written rules" "$W/reply.json" '[.parameters.rules[].name] | sort | join(",")' "no-ssh,no-telnet"

stop_daemon "$DAEMON_PID" "$log"
