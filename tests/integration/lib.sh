# shellcheck shell=bash disable=SC2034  # sets variables for the tests that source it
# Shared by the integration tests in this folder (sourced, not run). They drive the real tollgated
# and the real channel client (tollgate-probe) over real AF_UNIX sockets, each test in its own
# temporary directory, and ctest runs them (label `integration`):
#   bash tests/integration/<name>_test.sh TOLLGATED PROBE
#
# What this gives a test:
#   - check/check_eq/jcheck: one line per assertion, "PASS: name" or "FAIL: name: why"; a failed
#     check does not stop the test (later checks still say what else broke), the exit code does;
#   - spawn: background processes, each in its own session, killed by the EXIT trap whatever
#     happens, and the temporary directory removed; on failure the logs are printed first;
#   - wait_until/wait_exit: bounded polling, never an unbounded sleep;
#   - at_cleanup: more for the EXIT trap to undo (a network namespace, a group), after the kills;
#   - require_root: exit 77 (ctest SKIP_RETURN_CODE) without root, or a failure under
#     TOLLGATE_REQUIRE_PRIVILEGED=1 (CI), where a skipped privileged test would hide a broken setup.
#
# Tests that do not need root also run unprivileged: the daemon then runs as the calling user,
# the app group is the user's primary group and the probe accepts the user's uid as the daemon's.
#
# Debugging: TOLLGATE_TEST_KEEP=1 keeps the temporary directory (logs, probe JSON);
# TOLLGATE_TEST_EUID=1000 makes require_root act as if not root (to check the skip logic as root).

set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 TOLLGATED TOLLGATE_PROBE" >&2
  exit 2
fi
TOLLGATED=$(realpath "$1")
PROBE=$(realpath "$2")
for bin in "$TOLLGATED" "$PROBE"; do
  [[ -x $bin ]] || { echo "FAIL: $bin is not an executable; build it first" >&2; exit 1; }
done
for tool in jq systemd-socket-activate setpriv setsid timeout; do
  command -v "$tool" >/dev/null || {
    echo "FAIL: $tool is missing; run ./scripts/bootstrap" >&2
    exit 1
  }
done

# The skip logic only: lets the skip and the CI-failure paths be checked without a second account.
TEST_EUID=${TOLLGATE_TEST_EUID:-$EUID}

require_root() {
  ((TEST_EUID == 0)) && return 0
  if [[ ${TOLLGATE_REQUIRE_PRIVILEGED:-} == 1 ]]; then
    echo "FAIL: $(basename "$0") needs root ($*), and TOLLGATE_REQUIRE_PRIVILEGED=1 forbids skipping"
    exit 1
  fi
  echo "SKIP: $(basename "$0") needs root ($*)"
  exit 77
}

if ((EUID == 0)); then
  APP_GROUP=root
else
  APP_GROUP=$(id -gn)
fi
DAEMON_UID=$EUID

# /tmp rather than $TMPDIR: socket paths must fit in sun_path (108 bytes).
W=$(mktemp -d /tmp/tollgate-it.XXXXXX)
mkdir "$W/rules.d"
CONFIG=$W/tollgate.toml
RUNTIME_DIR=$W/run
SOCKET=$RUNTIME_DIR/analysis.sock

failures=0
checks=0
pids=()
cleanup_hooks=()

# at_cleanup COMMAND...: run by the EXIT trap after every spawned process is gone, last added
# first (a network namespace, a group made for the test). A failing hook does not stop the others.
at_cleanup() {
  cleanup_hooks+=("$(printf '%q ' "$@")")
}

check() {  # check NAME COMMAND...: passes when COMMAND succeeds
  local name=$1
  shift
  checks=$((checks + 1))
  if "$@"; then
    echo "PASS: $name"
  else
    echo "FAIL: $name (failed: $*)"
    failures=$((failures + 1))
  fi
}

check_eq() {  # check_eq NAME EXPECTED ACTUAL
  checks=$((checks + 1))
  if [[ $2 == "$3" ]]; then
    echo "PASS: $1 ($3)"
  else
    echo "FAIL: $1: expected $2, got $3"
    failures=$((failures + 1))
  fi
}

jcheck() {  # jcheck NAME JSON_FILE JQ_FILTER EXPECTED
  local actual
  actual=$(jq -r "$3" "$2" 2>&1) || actual="unreadable JSON in $2: $actual"
  check_eq "$1" "$4" "$actual"
}

must() {  # like check, but the test cannot go on without it
  local before=$failures
  check "$@"
  ((failures == before)) || exit 1
}

not() { ! "$@"; }  # for check: check "no X" not COMMAND...

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

wait_until() {  # wait_until TIMEOUT_MS COMMAND...: polls every 20 ms; 1 when it timed out
  local end=$(($(now_ms) + $1))
  shift
  until "$@"; do
    (($(now_ms) < end)) || return 1
    sleep 0.02
  done
}

log_has() { grep -qE -- "$2" "$1" 2>/dev/null; }
log_count() { grep -cE -- "$2" "$1" 2>/dev/null || true; }

# spawn OUT ERR COMMAND...: runs COMMAND in the background in its own session, so the trap can
# kill it with whatever it started. Sets SPAWNED to its pid (the session's process group id).
spawn() {
  local out=$1 err=$2
  shift 2
  setsid "$@" >"$out" 2>"$err" &
  SPAWNED=$!
  pids+=("$SPAWNED")
}

exited() {  # whether pid $1 (our child) has exited: gone, or a zombie waiting to be reaped
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat:0:1} == Z ]]
}

# wait_exit PID TIMEOUT_MS: reaps PID and sets EXIT_STATUS; returns 1 if it did not exit in time.
wait_exit() {
  EXIT_STATUS=
  wait_until "$2" exited "$1" || return 1
  EXIT_STATUS=0
  wait "$1" 2>/dev/null || EXIT_STATUS=$?
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  local i
  for ((i = ${#cleanup_hooks[@]} - 1; i >= 0; i--)); do
    eval "${cleanup_hooks[i]}" || echo "cleanup: failed: ${cleanup_hooks[i]}"
  done
  if ((rc != 0 && rc != 77)) || ((failures > 0)); then
    local f
    for f in "$W"/*.log "$W"/*.json; do
      [[ -s $f ]] || continue
      echo "----- ${f#"$W"/} (last 40 lines) -----"
      tail -n 40 "$f"
    done
  fi
  [[ -n ${TOLLGATE_TEST_KEEP:-} ]] || rm -rf "$W"
  if ((rc == 0 && failures > 0)); then rc=1; fi
  echo "$(basename "$0"): $checks checks, $failures failed, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

write_config() {  # write_config [EXTRA_DAEMON_TOML_LINE...]
  {
    echo "[tollgate]"
    echo "group = \"$APP_GROUP\""
    echo "runtime_dir = \"$RUNTIME_DIR\""
    echo "[daemon]"
    echo "rules_dir = \"$W/rules.d\""
    echo "default_action = \"allow\""
    echo "log_level = \"info\""
    # Never the host's /var/lib/tollgate/flows.db, unless the test names its own log.
    [[ " $* " == *" flow_log = "* ]] || echo "flow_log = \"\""
    local line
    for line in "$@"; do echo "$line"; done
  } >"$CONFIG"
}

write_telnet_rule() {
  cat >"$W/rules.d/10-base.toml" <<'EOF'
[[rule]]
name = "no-telnet"
action = "deny"
protocol = "tcp"
port = 23
EOF
}

# probe OUT_JSON [PROBE_FLAGS...]: one probe run as the calling user, bounded; stdout's last line
# (the JSON object) goes to OUT_JSON, the whole stdout to OUT_JSON.out, stderr to OUT_JSON.log.
# Sets PROBE_STATUS (0 iff every question settled exactly once).
probe() {
  local out=$1
  shift
  PROBE_STATUS=0
  timeout -k 2 60 "$PROBE" --daemon-uid "$DAEMON_UID" "$@" >"$out.out" 2>"${out%.json}.probe.log" ||
    PROBE_STATUS=$?
  tail -n 1 "$out.out" >"$out"
}

# start_daemon_by_hand LOG [FLAGS...]: tollgated binding $SOCKET itself; waits until it is ready.
start_daemon_by_hand() {
  local log=$1
  shift
  spawn /dev/null "$log" "$TOLLGATED" --config "$CONFIG" --runtime-dir "$RUNTIME_DIR" "$@"
  DAEMON_PID=$SPAWNED
  must "tollgated (pid $DAEMON_PID) is ready within 5 s" \
    wait_until 5000 log_has "$log" 'ready \(protocol'
}

# stop_daemon PID LOG: SIGTERM, then it must exit by itself with status 0 and say so.
stop_daemon() {
  kill -TERM "$1"
  check "tollgated (pid $1) exits within 5 s of SIGTERM" wait_exit "$1" 5000
  check_eq "tollgated (pid $1) exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
  check "tollgated (pid $1) logs its exit counters" log_has "$2" 'exiting: accepted='
}

# exit_counter LOG NAME: the value of NAME= in the daemon's last `exiting:` line.
exit_counter() {
  grep -E 'exiting: ' "$1" | tail -n 1 | grep -oE "(^| )$2=[0-9]+" | cut -d= -f2
}
