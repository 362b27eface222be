#!/usr/bin/env bash
# A reload (SIGHUP) with a broken rule file keeps the rules in force, and says where the mistake
# is (file:line:col); once the file is fixed, the next SIGHUP puts the new rules in force.
# In force at first: deny tcp/23, default allow. The new file also denies tcp/80.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

write_config
write_telnet_rule
log=$W/tollgated.log
start_daemon_by_hand "$log"
check "1 rule in force at start" log_has "$log" "1 rules in force from $W/rules.d"

ask() {  # ask NAME: 100 questions alternating ports 80 and 23 -> $W/NAME.json
  probe "$W/$1.json" --socket "$SOCKET" --count 100 --ports 80,23 --deadline-ms 5000
  check_eq "$1: probe exit status" 0 "$PROBE_STATUS"
  jcheck "$1: all answered by the daemon" "$W/$1.json" .answered 100
}
reload() {  # reload PATTERN: SIGHUP, then wait for one more log line matching PATTERN
  local before
  before=$(log_count "$log" "$1")
  kill -HUP "$DAEMON_PID"
  must "the daemon logs the reload's outcome within 5 s" \
    wait_until 5000 bash -c "(( \$(grep -cE -- '$1' '$log') > $before ))"
}

ask before
jcheck "before: port 80 allowed, port 23 denied" "$W/before.json" \
  '"\(.actions.allow)/\(.actions.deny)"' 50/50

# First not even TOML (an unterminated string on line 5), then TOML with a bad value.
broken=$W/rules.d/20-web.toml
cat >"$broken" <<'EOF'
# line 1
[[rule]]
name = "no-web"
action = "deny"
protocol = "tcp
port = 80
EOF
reload 'reload failed'
check "the TOML syntax error names file:line:col (line 5)" \
  log_has "$log" "reload failed, the rules in force stay in force: $broken:5:[0-9]+: "
ask after-syntax-error
jcheck "after the syntax error: the old verdicts (80 allowed, 23 denied)" \
  "$W/after-syntax-error.json" '"\(.actions.allow)/\(.actions.deny)"' 50/50

cat >"$broken" <<'EOF'
# line 1
[[rule]]
name = "no-web"
action = "deny"
protocol = "tcp"
port = "http"
EOF
reload 'reload failed'
check "the bad value's error names file:line:col (6:8)" \
  log_has "$log" "reload failed, the rules in force stay in force: $broken:6:8: rule \"no-web\": port "
ask after-bad-value
jcheck "after the bad value: the old verdicts (80 allowed, 23 denied)" \
  "$W/after-bad-value.json" '"\(.actions.allow)/\(.actions.deny)"' 50/50

sed -i 's/^port = "http"$/port = 80/' "$broken"
reload '2 rules in force'
ask after-fix
jcheck "after the fixed reload: the new verdicts (80 and 23 denied)" \
  "$W/after-fix.json" '"\(.actions.allow // 0)/\(.actions.deny)"' 0/100
check "the daemon is still the same process" kill -0 "$DAEMON_PID"
stop_daemon "$DAEMON_PID" "$log"
