#!/usr/bin/env bash
# The tollgate CLI end to end against the real tollgated, started by hand with its control socket
# bound next to analysis.sock: status, rules add/test/list/export/rm, reload, stats, metrics,
# flows, with --json parsed by jq and the documented exit codes (docs/cli.md) for the daemon's
# errors (a duplicate rule, a rule not managed by the CLI) and for no daemon at all.
# The --json outputs of status, stats, rules list and rules test are also compared whole with
# golden files, tests/data/cli_golden/NAME.json, after jq normalises what differs from run to run
# (times, uptime, pids, uids, the version, the test's temporary directory, written <W>).
# TOLLGATE_UPDATE_GOLDEN=1 rewrites the golden files from this run (then review the diff).
#   bash tests/integration/cli_test.sh TOLLGATED PROBE TOLLGATE
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"
TOLLGATE=$(realpath "${3:?usage: $0 TOLLGATED PROBE TOLLGATE}")

write_config
# Unprivileged, make the caller's primary group the admin group, so the daemon serves it as it
# would serve an operator (as root, the group is root's and nobody stays outside it).
sed -i "s/^\[tollgate\]$/[tollgate]\nadmin_group = \"$APP_GROUP\"/" "$CONFIG"
write_telnet_rule
log=$W/tollgated.log
start_daemon_by_hand "$log"
CTL=$RUNTIME_DIR/control.sock
must "the control socket $CTL exists" wait_until 5000 test -S "$CTL"

# tg NAME ARGS...: runs `tollgate ARGS... --socket $CTL`, stdout to $W/NAME.out, stderr to
# $W/NAME.err, exit status in $TG_STATUS.
tg() {
  local name=$1
  shift
  TG_STATUS=0
  timeout -k 2 30 "$TOLLGATE" "$@" --socket "$CTL" >"$W/$name.out" 2>"$W/$name.err" ||
    TG_STATUS=$?
}

GOLDEN_DIR=$(realpath "$(dirname "$0")/../data/cli_golden")
# golden NAME FILE [JQ_NORMALISE]: FILE (a --json output) with the test's directory written <W>,
# normalised by JQ_NORMALISE and keys sorted, must equal tests/data/cli_golden/NAME.json.
golden() {
  local name=$1 file=$2 normalise=${3:-.} got=$W/golden-$1.json
  jq -S --arg w "$W" \
    "walk(if type == \"string\" then (split(\$w) | join(\"<W>\")) else . end) | $normalise" \
    "$file" >"$got" 2>&1 || true
  if [[ -n ${TOLLGATE_UPDATE_GOLDEN:-} ]]; then cp "$got" "$GOLDEN_DIR/$name.json"; fi
  check "$name --json matches tests/data/cli_golden/$name.json" diff -u "$GOLDEN_DIR/$name.json" "$got"
}
# What differs from run to run in GetStatus's Status, and in a FilterConnection.
NORMALISE_CONNECTION='.pid = 0 | .uid = 0 | .exe = "<exe>" | .connected_since = "<time>"
  | if .report then .report.reported_at = "<time>" | .report.report_age_ms = 0 else . end'
NORMALISE_STATUS=".status.version = \"<version>\" | .status.uptime_seconds = 0
  | .status.rules_loaded_at = \"<time>\" | .status.filters[] |= ($NORMALISE_CONNECTION)"

# A channel client that stays connected: a probe (not a filter), which asked 3 questions.
spawn "$W/probe-linger.out" "$W/probe-linger.log" "$PROBE" --daemon-uid "$DAEMON_UID" \
  --socket "$SOCKET" --count 3 --ports 80,23 --linger-ms 30000
probe_pid=$SPAWNED
probe_counted() {
  tg status_wait status --json
  [[ $(jq -r '"\(.status.filters | length) \(.status.verdicts)"' "$W/status_wait.out") == "1 3" ]]
}
must "the probe is connected and its 3 questions answered" wait_until 10000 probe_counted

tg status_json status --json
check_eq "status --json: exit 0" 0 "$TG_STATUS"
jcheck "status --json: 1 rule loaded" "$W/status_json.out" .status.rules_loaded 1
jcheck "status --json: default action" "$W/status_json.out" .status.default_action allow
jcheck "status --json: a probe reports nothing" "$W/status_json.out" '.status.filters[0].report' null
golden status "$W/status_json.out" "$NORMALISE_STATUS"
tg status status
check_eq "status: exit 0" 0 "$TG_STATUS"
check "status: a table for people" log_has "$W/status.out" '^rules: +1 loaded'
check "status: the filters' totals" log_has "$W/status.out" '^filter reports: fallbacks 0, queue drops 0, reused verdicts 0$'
check "status: the probe's row, without a report" \
  log_has "$W/status.out" "^$probe_pid +probe .* 3 +3 +- +- +- +-\$"
tg stats_json stats --json
check_eq "stats --json: exit 0" 0 "$TG_STATUS"
golden stats "$W/stats_json.out" '.uptime_seconds = 0 | .filters[].pid = 0'
kill -TERM "$probe_pid"
check "the probe ends on SIGTERM" wait_exit "$probe_pid" 5000

tg test23 rules test --proto tcp --dst 127.0.0.1 --port 23 --json
check_eq "rules test port 23: exit 0" 0 "$TG_STATUS"
jcheck "rules test port 23: deny by no-telnet" "$W/test23.out" '"\(.action) \(.rule)"' "deny no-telnet"
golden rules_test "$W/test23.out"

tg add rules add $'[[rule]]\nname = "no-web"\naction = "reject"\nprotocol = "tcp"\nport = 80\n' --json
check_eq "rules add: exit 0" 0 "$TG_STATUS"
jcheck "rules add: the rule it added" "$W/add.out" .rule.name no-web
tg test80 rules test --proto tcp --dst 127.0.0.1 --port 80
check_eq "rules test port 80: exit 0" 0 "$TG_STATUS"
check "rules test port 80: reject by no-web (human output)" \
  log_has "$W/test80.out" '^action +reject$'
check "rules test port 80: names the rule" log_has "$W/test80.out" '^rule +no-web$'

tg list rules list --json
jcheck "rules list --json: both rules" "$W/list.out" '[.rules[].name] | sort | join(",")' \
  "no-telnet,no-web"
golden rules_list "$W/list.out"
tg export rules export
check "rules export: the added rule as TOML" log_has "$W/export.out" '^name = "no-web"'

printf '[[rule]]\nname = "no-web"\naction = "deny"\n' >"$W/dup.toml"
tg dup rules add --file "$W/dup.toml" --json
check_eq "rules add with a used name: exit 8 (daemon error)" 8 "$TG_STATUS"
jcheck "rules add with a used name: RuleInvalid" "$W/dup.out" .error.varlink_error \
  io.tollgate.Control.RuleInvalid
check "rules add with a used name: says refused" log_has "$W/dup.err" 'the rule was refused'

tg rm rules rm no-web
check_eq "rules rm: exit 0" 0 "$TG_STATUS"
tg test80b rules test --proto tcp --dst 127.0.0.1 --port 80 --json
jcheck "rules test port 80 after rm: the default" "$W/test80b.out" .action allow
tg rm_unmanaged rules rm no-telnet
check_eq "rules rm of a file's rule: exit 8" 8 "$TG_STATUS"
check "rules rm of a file's rule: names its file" log_has "$W/rm_unmanaged.err" "10-base.toml"

tg reload reload --json
check_eq "reload: exit 0" 0 "$TG_STATUS"
jcheck "reload: 1 rule in force" "$W/reload.out" .rules_loaded 1
tg stats stats --json
jcheck "stats --json: counters are numbers" "$W/stats.out" '.questions | type' number
tg metrics metrics
check_eq "metrics: exit 0" 0 "$TG_STATUS"
check "metrics: Prometheus text" log_has "$W/metrics.out" '^# (HELP|TYPE) '
tg flows flows --json --since 1h
if ((TG_STATUS == 0)); then
  jcheck "flows --json: an array" "$W/flows.out" '.flows | type' array
else
  check_eq "flows without a flow log: exit 8" 8 "$TG_STATUS"
  jcheck "flows without a flow log: FlowLogUnavailable" "$W/flows.out" .error.varlink_error \
    io.tollgate.Control.FlowLogUnavailable
fi

if ((EUID == 0)); then
  # nobody is neither root nor in the admin group: refused by the socket's mode (6) or by the
  # daemon's credential check (7), never served.
  TG_STATUS=0
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$TOLLGATE" status --socket "$CTL" >"$W/nobody.out" 2>"$W/nobody.err" || TG_STATUS=$?
  check "status as nobody: permission denied (6) or refused (7), got $TG_STATUS" \
    test "$TG_STATUS" -eq 6 -o "$TG_STATUS" -eq 7
  check "status as nobody: points at tollgate-admin" log_has "$W/nobody.err" tollgate-admin
fi

stop_daemon "$DAEMON_PID" "$log"
tg after status --json
check "status with the daemon stopped: not running (5) or not installed (4), got $TG_STATUS" \
  test "$TG_STATUS" -eq 5 -o "$TG_STATUS" -eq 4
jcheck "status with the daemon stopped: --json says why" "$W/after.out" \
  '.error.kind | test("not_running|not_installed")' true
