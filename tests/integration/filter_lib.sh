# shellcheck shell=bash disable=SC2034  # sets variables for the tests that source it
# Shared by the filter_*_test.sh integration tests (sourced after nothing else; it sources lib.sh):
# the real tollgate-filter and tollgated deciding real loopback traffic in a network namespace
# made for the test. ctest runs them as root (label `integration`):
#   bash tests/integration/filter_<name>_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE
#
# On top of lib.sh (checks, spawn, bounded waits, the EXIT trap) this gives a test:
#   - NS: a fresh network namespace (lo up, 127.0.0.0/8 and ::1 only), deleted at exit with
#     everything in it, including the filter's iptables chains; in_ns runs a command inside;
#   - start_filter / filter_counters / counter: the filter in NS, and its SIGUSR1 counters;
#   - servers (tcp_echo_server, udp_echo_server, byte_server) and clients that name what happened
#     (tcp_outcome: echoed | refused | timeout | other; udp_outcome: echoed | silent);
#   - tollgate_rules / jump_count: what of ours is in iptables-save inside NS.
# Without root these tests exit 77 (skipped), or fail under TOLLGATE_REQUIRE_PRIVILEGED=1.

# shellcheck source=tests/integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# < 4)); then
  echo "usage: $0 TOLLGATED TOLLGATE_PROBE TOLLGATE_FILTER CONNECT_PROBE" >&2
  exit 2
fi
FILTER=$(realpath "$3")
CONNECT_PROBE=$(realpath "$4")
for bin in "$FILTER" "$CONNECT_PROBE"; do
  [[ -x $bin ]] || { echo "FAIL: $bin is not an executable; build it first" >&2; exit 1; }
done

require_root "network namespaces, NFQUEUE and iptables"

for tool in ip iptables-save ip6tables-save iptables ss socat ping nstat pgrep; do
  command -v "$tool" >/dev/null || {
    echo "FAIL: $tool is missing; run ./scripts/bootstrap" >&2
    exit 1
  }
done

# tg-<test name>-<pid>, short enough for a namespace name.
NS=$(basename "$0" _test.sh)
NS=tg-${NS#filter_}
NS=${NS:0:16}-$$
ip netns add "$NS"
at_cleanup ip netns delete "$NS"
ip netns exec "$NS" ip link set lo up

in_ns() { ip netns exec "$NS" "$@"; }

# add_rule NAME ACTION PROTOCOL [KEY=TOML_VALUE...]: one [[rule]] in rules.d/10-test.toml, e.g.
#   add_rule no-telnet reject tcp port=2323;  add_rule no-ping deny icmp 'cidr="127.0.0.2/32"'
add_rule() {
  local kv
  {
    echo "[[rule]]"
    echo "name = \"$1\""
    echo "action = \"$2\""
    echo "protocol = \"$3\""
    shift 3
    for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    echo
  } >>"$W/rules.d/10-test.toml"
}

# netns_resolver: programs in NS resolve through 127.0.0.1 only (ip netns exec bind-mounts
# /etc/netns/NS/* over /etc/*), with a hosts file that knows localhost alone. Removed at exit,
# before the namespace.
netns_resolver() {
  mkdir -p "/etc/netns/$NS"
  at_cleanup rm -rf "/etc/netns/$NS"
  printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:1\n' >"/etc/netns/$NS/resolv.conf"
  printf '127.0.0.1 localhost\n' >"/etc/netns/$NS/hosts"
}

# start_dnsmasq [DNSMASQ_ARGS...]: dnsmasq answering on 127.0.0.1:53 in NS from its arguments
# alone (no upstream, no hosts file); log in $W/dnsmasq.log.
start_dnsmasq() {
  spawn /dev/null "$W/dnsmasq.log" ip netns exec "$NS" dnsmasq --keep-in-foreground --no-resolv \
    --no-hosts --bind-interfaces --listen-address=127.0.0.1 --port=53 --user=root \
    --pid-file="$W/dnsmasq.pid" --log-facility=- "$@"
  must "dnsmasq listens on 127.0.0.1:53" wait_until 5000 _listening -u 53
}

# start_filter LOG [FLAGS...]: tollgate-filter in NS with $CONFIG; waits until it filters.
# Sets FILTER_PID (the filter itself: ip netns exec execs it) and FILTER_LOG. The filter connects
# at once (--connect-at-start), so a test can wait for its session before sending traffic; the
# default, connecting at the first question, is what the boot test (tests/boot) checks.
start_filter() {
  FILTER_LOG=$1
  shift
  spawn /dev/null "$FILTER_LOG" ip netns exec "$NS" "$FILTER" --config "$CONFIG" \
    --connect-at-start "$@"
  FILTER_PID=$SPAWNED
  must "tollgate-filter (pid $FILTER_PID) installs its chains and filters within 10 s" \
    wait_until 10000 log_has "$FILTER_LOG" 'filtering; daemon at '
}

# wait_filter_session N [TIMEOUT_MS]: the filter has made its Nth session with the daemon. The
# client retries with capped exponential backoff (at most ~6 s apart), hence the default bound.
filter_sessions() { log_count "$FILTER_LOG" 'connected to .*, session [0-9]+'; }
has_filter_sessions() { (($(filter_sessions) >= $1)); }
wait_filter_session() {
  wait_until "${2:-10000}" has_filter_sessions "$1"
}

# filter_counters: SIGUSR1 to the filter, then the `counters:` line it logs is in COUNTERS.
_counter_lines_above() { (($(log_count "$FILTER_LOG" ' counters: ') > $1)); }
filter_counters() {
  local before
  before=$(log_count "$FILTER_LOG" ' counters: ')
  COUNTERS=
  kill -USR1 "$FILTER_PID" || return 1
  wait_until 5000 _counter_lines_above "$before" || {
    echo "FAIL: tollgate-filter logged no counters within 5 s of SIGUSR1"
    failures=$((failures + 1))
    return 1
  }
  COUNTERS=$(grep -E ' counters: ' "$FILTER_LOG" | tail -n 1)
}
# counter NAME [LINE]: NAME's value in LINE (default: the last filter_counters); "missing" if absent.
counter() {
  local v
  v=$(grep -oE "(^| )$1=[^ ]+" <<<"${2:-$COUNTERS}" | head -n 1 | cut -d= -f2)
  echo "${v:-missing}"
}
# since BEFORE NAME...: how much each counter NAME grew from the counters line BEFORE to the last
# filter_counters, space-separated.
since() {
  local before=$1 name out=()
  shift
  for name in "$@"; do out+=("$(($(counter "$name") - $(counter "$name" "$before")))"); done
  echo "${out[*]}"
}
# counter_at_least NAME MIN: takes fresh counters; for wait_until.
counter_at_least() {
  filter_counters >/dev/null || return 1
  local v
  v=$(counter "$1")
  [[ $v =~ ^[0-9]+$ ]] && ((v >= $2))
}

# Servers in NS, each until the test ends. A listener behind every port a test uses, so a refusal
# or a timeout is the filter's doing, never an empty port.
_listening() { in_ns ss -H -ln "$1" "sport = :$2" | grep -q .; }
tcp_echo_server() {  # tcp_echo_server PORT...: IPv4 and IPv6, echoes what it reads
  local p
  for p in "$@"; do
    spawn /dev/null "$W/echo-tcp-$p.log" ip netns exec "$NS" \
      socat "TCP6-LISTEN:$p,ipv6only=0,reuseaddr,fork" PIPE
    must "tcp echo server on port $p listens" wait_until 5000 _listening -t "$p"
  done
}
udp_echo_server() {  # udp_echo_server PORT...: IPv4 and IPv6
  local p
  for p in "$@"; do
    spawn /dev/null "$W/echo-udp-$p.log" ip netns exec "$NS" \
      socat "UDP6-LISTEN:$p,ipv6only=0,reuseaddr,fork" PIPE
    must "udp echo server on port $p listens" wait_until 5000 _listening -u "$p"
  done
}
byte_server() {  # byte_server PORT: IPv4; writes one byte ("x") on accept, closes
  spawn "$W/byte-server-$1.out" "$W/byte-server-$1.log" ip netns exec "$NS" \
    "$CONNECT_PROBE" server --port "$1"
  must "one-byte server on port $1 listens" wait_until 5000 _listening -t "$1"
}

# tcp_try HOST PORT TIMEOUT_S [SOURCE_PORT]: runs inside NS (via bash -c); sends a line, prints
# what happened: echoed (the server echoed it: both directions work), refused (RST: "Connection
# refused"), timeout (no answer within TIMEOUT_S), or other:<socat's error>. With SOURCE_PORT the
# client binds it, so a test knows the flow's 5-tuple in advance.
tcp_try() {
  local host=$1 port=$2 t=$3 sport=${4:-} msg="tollgate-$RANDOM" addr out err rc=0
  if [[ $host == *:* ]]; then addr="TCP6:[$host]:$port"; else addr="TCP4:$host:$port"; fi
  if [[ -n $sport ]]; then
    if [[ $host == *:* ]]; then addr+=",bind=[$host]:$sport"; else addr+=",bind=$host:$sport"; fi
  fi
  err=$(mktemp)
  out=$(printf '%s' "$msg" | timeout -k 1 "$t" socat -t 2 - "$addr" 2>"$err") || rc=$?
  if [[ $out == "$msg" ]]; then
    echo echoed
  elif ((rc == 124 || rc == 137)); then
    echo timeout
  elif grep -q 'Connection refused' "$err"; then
    echo refused
  else
    echo "other:rc=$rc:$(tr '\n' ' ' <"$err")"
  fi
  rm -f "$err"
}
# tcp_outcome HOST PORT [TIMEOUT_S]: tcp_try from inside NS; sets OUTCOME.
tcp_outcome() {
  OUTCOME=$(in_ns bash -c "$(declare -f tcp_try); tcp_try \"\$@\"" _ "$1" "$2" "${3:-3}")
}

# udp_outcome HOST PORT [TIMEOUT_S]: one datagram from inside NS; sets OUTCOME to echoed or silent.
udp_try() {
  local msg="tollgate-$RANDOM" reply=
  exec 3<>"/dev/udp/$1/$2" || { echo "other:cannot open /dev/udp/$1/$2"; return; }
  printf '%s' "$msg" >&3
  read -r -t "$3" -N "${#msg}" reply <&3 || true
  exec 3>&-
  if [[ $reply == "$msg" ]]; then echo echoed; else echo silent; fi
}
udp_outcome() {
  OUTCOME=$(in_ns bash -c "$(declare -f udp_try); udp_try \"\$@\"" _ "$1" "$2" "${3:-2}")
}

# ping_outcome HOST [TIMEOUT_S]: one ICMP(v6) echo request from inside NS; OUTCOME replied|silent.
ping_outcome() {
  if in_ns ping -n -c 1 -W "${2:-2}" "$1" >/dev/null 2>&1; then OUTCOME=replied; else OUTCOME=silent; fi
}

# tollgate_rules CMD: our lines in `CMD-save` inside NS (chains, jumps, rules), counters zeroed.
tollgate_rules() {
  in_ns "$1-save" | grep -E 'TOLLGATE' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/' || true
}
# jump_count CMD TABLE CHAIN TARGET: rules in TABLE's built-in CHAIN that jump to TARGET.
jump_count() {
  in_ns "$1-save" -t "$2" | grep -cE -- "^-A $3 (.* )?-j $4( |\$)" || true
}

# keeper_of PID: the filter's rules keeper (its child, named tollgate-keeper).
keeper_of() { pgrep -P "$1" -x tollgate-keeper | head -n 1; }

# kill_filter SIGNAL TIMEOUT_MS: signals the filter and reaps it; EXIT_STATUS as wait_exit.
kill_filter() {
  kill "-$1" "$FILTER_PID"
  check "tollgate-filter (pid $FILTER_PID) exits within $(($2 / 1000)) s of SIG$1" \
    wait_exit "$FILTER_PID" "$2"
}

# --- For the fault matrix (tests/faults/) ---

# nfq_stat FIELD [QUEUE]: one number of NFQUEUE QUEUE (default 0) in NS, from
# /proc/net/netfilter/nfnetlink_queue: total (packets waiting for a verdict), dropped (refused
# because the queue was full, without fail-open), user_dropped (refused because the reader's
# socket was full, without fail-open), id (the last packet id given out; a packet refused for a
# full socket took one, one refused for a full queue did not). "missing" without that queue.
nfq_stat() {
  local col
  case $1 in
    total) col=3 ;;
    dropped) col=6 ;;
    user_dropped) col=7 ;;
    id) col=8 ;;
    *) echo "nfq_stat: unknown field $1" >&2; return 1 ;;
  esac
  # shellcheck disable=SC2016  # awk's own $1, $c
  in_ns awk -v q="${2:-0}" -v c="$col" \
    '$1 == q { print $c; found = 1 } END { if (!found) print "missing" }' \
    /proc/net/netfilter/nfnetlink_queue
}

# proc_kib PID FIELD: FIELD (VmRSS, VmHWM, ...) of /proc/PID/status in KiB.
proc_kib() {
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# The tests' UDP receiver ($LOAD: tollgate-fault-load udp-recv) in NS: udp_receiver PORT SPLIT starts it
# (RECEIVER_PID, RECEIVER_OUT); receiver_report puts its current counts in RECEIVED (a line of
# key=value pairs, read with `counter NAME "$RECEIVED"`).
udp_receiver() {
  RECEIVER_OUT=$W/udp-recv-$1.out
  spawn "$RECEIVER_OUT" "$W/udp-recv-$1.log" ip netns exec "$NS" "$LOAD" udp-recv --port "$1" \
    --split "$2"
  RECEIVER_PID=$SPAWNED
  must "udp receiver on port $1 is ready" wait_until 5000 log_has "$RECEIVER_OUT" '^ready'
}
_report_lines_above() { (($(log_count "$RECEIVER_OUT" '^now ') > $1)); }
receiver_report() {
  local before
  before=$(log_count "$RECEIVER_OUT" '^now ')
  kill -USR1 "$RECEIVER_PID"
  wait_until 5000 _report_lines_above "$before" || {
    echo "FAIL: the udp receiver did not report within 5 s"
    failures=$((failures + 1))
    RECEIVED=
    return 1
  }
  RECEIVED=$(grep -E '^now ' "$RECEIVER_OUT" | tail -n 1)
}
# received_at_least N: fresh counts; for wait_until (distinct datagrams).
received_at_least() {
  receiver_report >/dev/null || return 1
  (($(counter distinct "$RECEIVED") >= $1))
}
