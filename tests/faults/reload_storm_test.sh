#!/usr/bin/env bash
# Issue 7 (fault matrix): a rule reload storm during traffic. 100 SIGHUP reloads, every third one
# with a broken file, while clients ask the daemon a steady stream of questions (ports 80 and 23,
# alternating). The rule set is two files whose rules only give the right answers together:
#   10-web.toml   allow tcp/80, priority 10, named web-gN
#   20-tcp.toml   deny tcp (every port),     named tcp-gN
# With both in force, 80 is allowed and 23 denied. Without 10-web, 80 would be denied; without
# 20-tcp, 23 would be allowed (default allow). So:
#   - every question during the storm gets the daemon's answer (none falls back), 80 allowed by a
#     web-g rule and 23 denied by a tcp-g rule: no verdict was made with a half-loaded rule set;
#   - a broken reload writes generation N of one file valid and the other broken: afterwards both
#     reasons still name generation N-1, so a broken file never replaces a good one, not even the
#     good half of a reload; the next good reload puts generation N+1 in force, both halves;
#   - the daemon logs exactly one outcome per reload: as many "reload failed" as broken reloads,
#     and as many "rules in force" as good ones (plus the start).
# Runs unprivileged.
#   bash tests/faults/reload_storm_test.sh TOLLGATED PROBE [FILTER CONNECT_PROBE (unused)]
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/../integration/lib.sh"

reloads=100
write_config

# write_rules GEN [BROKEN_FILE]: both files at generation GEN, each replaced atomically (rename), so
# the daemon reads a whole file or the previous one, never half a file. BROKEN_FILE (web or tcp)
# is written broken instead: a TOML syntax error (web) or a bad value (tcp).
write_rules() {
  local gen=$1 broken=${2:-} tmp=$W/rules.tmp
  if [[ $broken == web ]]; then
    printf '[[rule]]\nname = "web-g%s"\naction = "allow\nprotocol = "tcp"\n' "$gen" >"$tmp"
  else
    printf '[[rule]]\nname = "web-g%s"\naction = "allow"\nprotocol = "tcp"\nport = 80\npriority = 10\n' \
      "$gen" >"$tmp"
  fi
  mv -f "$tmp" "$W/rules.d/10-web.toml"
  if [[ $broken == tcp ]]; then
    printf '[[rule]]\nname = "tcp-g%s"\naction = "deny"\nprotocol = "tcp"\nport = "all"\n' "$gen" >"$tmp"
  else
    printf '[[rule]]\nname = "tcp-g%s"\naction = "deny"\nprotocol = "tcp"\n' "$gen" >"$tmp"
  fi
  mv -f "$tmp" "$W/rules.d/20-tcp.toml"
}

log=$W/tollgated.log
write_rules 0
start_daemon_by_hand "$log"
check "2 rules in force at start" log_has "$log" "2 rules in force from $W/rules.d"

# reasons_name GEN: two questions (80, 23), answered by rules web-gGEN and tcp-gGEN.
reasons_name() {
  probe "$W/check-$1.json" --socket "$SOCKET" --count 2 --ports 80,23 --deadline-ms 5000 \
    --print-decisions
  [[ $PROBE_STATUS == 0 ]] &&
    grep -E '^decision .*action=allow .*web-g'"$1"'\b' "$W/check-$1.json.out" >/dev/null &&
    grep -E '^decision .*action=deny .*tcp-g'"$1"'\b' "$W/check-$1.json.out" >/dev/null
}
check "before the storm: the reasons name generation 0" reasons_name 0

# The traffic: probes back to back, 2,000 questions each at 4,000 a second, until the storm ends.
traffic() {
  local i=0
  while [[ ! -e $W/storm-done ]]; do
    i=$((i + 1))
    timeout -k 2 60 "$PROBE" --daemon-uid "$DAEMON_UID" --socket "$SOCKET" --count 2000 \
      --rate 4000 --ports 80,23 --deadline-ms 5000 --print-decisions \
      >"$W/traffic-$i.out" 2>"$W/traffic-$i.log" || echo "probe $i: exit $?" >>"$W/traffic-errors"
  done
}
traffic &
traffic_pid=$!
pids+=("$traffic_pid")

# One reload: SIGHUP, then wait for its outcome line (so the next one starts after it).
outcomes() { log_count "$log" 'reload failed|rules in force from'; }
more_outcomes() { (($(outcomes) > $1)); }
good=0 bad=0 gen=0 bad_checks_ok=0
for ((r = 1; r <= reloads; r++)); do
  before=$(outcomes)
  if ((r % 3 == 0)); then
    if ((r % 2 == 0)); then kind=web; else kind=tcp; fi
    write_rules $((gen + 1)) "$kind"
    kill -HUP "$DAEMON_PID"
    must "reload $r (broken $kind) has an outcome within 5 s" wait_until 5000 more_outcomes "$before"
    bad=$((bad + 1))
    # Every tenth broken reload, look inside: both halves still at the last good generation.
    if ((bad % 10 == 1)) && reasons_name "$gen"; then bad_checks_ok=$((bad_checks_ok + 1)); fi
  else
    gen=$((gen + 1))
    write_rules "$gen"
    kill -HUP "$DAEMON_PID"
    must "reload $r (good, generation $gen) has an outcome within 5 s" \
      wait_until 5000 more_outcomes "$before"
    good=$((good + 1))
  fi
done
touch "$W/storm-done"
check "the traffic ends" wait_exit "$traffic_pid" 30000

check_eq "one 'reload failed' per broken reload" "$bad" "$(log_count "$log" 'reload failed')"
check_eq "one 'rules in force' per good reload, plus the start" "$((good + 1))" \
  "$(log_count "$log" '2 rules in force from')"
check_eq "after each of the sampled broken reloads both reasons named the last good generation" \
  "$(((bad + 9) / 10))" "$bad_checks_ok"
check "after the storm: generation $gen is in force, both halves" reasons_name "$gen"

check "no traffic probe failed" not test -e "$W/traffic-errors"
cat "$W"/traffic-*.out | grep '^decision ' >"$W/decisions.txt" || true
total=$(wc -l <"$W/decisions.txt")
probes=$(find "$W" -maxdepth 1 -name "traffic-*.out" | wc -l)
echo "   traffic: $probes probes, $total decisions during $reloads reloads"
check "traffic ran during the storm (at least 2,000 decisions)" test "$total" -ge 2000
check_eq "every decision came from the daemon (none fell back)" "$total" \
  "$(grep -c ' source=daemon ' "$W/decisions.txt" || true)"
check_eq "every decision is allow by a web-g rule or deny by a tcp-g rule" "$total" \
  "$(grep -cE ' action=(allow .*web-g[0-9]+|deny .*tcp-g[0-9]+)\b' "$W/decisions.txt" || true)"
check_eq "as many allows as denies (ports alternate)" \
  "$(grep -c ' action=allow ' "$W/decisions.txt" || true)" \
  "$(grep -c ' action=deny ' "$W/decisions.txt" || true)"
check "the daemon is still the same process" kill -0 "$DAEMON_PID"
stop_daemon "$DAEMON_PID" "$log"
