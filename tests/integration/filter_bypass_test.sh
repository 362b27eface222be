#!/usr/bin/env bash
# Issue 3: decided flows bypass userspace. After the first verdict an allowed TCP flow carries
# 100 MB (thousands of segments on loopback, and as many ACKs back), and the filter sees none of
# it: its `packets=` counter (SIGUSR1) rises by the flow's SYN only (a small allowance for a
# retransmit), while the kernel's hot-path rule (ctmark allow -> RETURN) counts the segments.
# The same for a 100 MB transfer over IPv6.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

readonly bytes=$((100 * 1024 * 1024))
readonly port=8090

write_config
start_daemon_by_hand "$W/tollgated.log"
start_filter "$W/filter.log"
must "the filter is connected to the daemon" wait_filter_session 1

# hot_path_packets CMD: packets that left TOLLGATE-OUT by the ctmark-allow RETURN (rule 1 here).
hot_path_packets() {
  in_ns "$1" -w 5 -t mangle -L TOLLGATE-OUT -v -x -n |
    awk '$3 == "RETURN" && /connmark match +0x100000\/0x700000/ { print $1; exit }'
}

# bulk NAME HOST CMD: one 100 MB flow from the client to a sink server in NS; checks it arrived
# whole and that the filter saw only its first packet.
bulk() {
  local name=$1 host=$2 cmd=$3 listen connect
  if [[ $host == *:* ]]; then
    listen="TCP6-LISTEN:$port,bind=[$host],reuseaddr" connect="TCP6:[$host]:$port"
  else
    listen="TCP4-LISTEN:$port,bind=$host,reuseaddr" connect="TCP4:$host:$port"
  fi
  echo "== $name: $bytes bytes to $host:$port"
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's arguments
  spawn "$W/sink-$name.out" "$W/sink-$name.log" ip netns exec "$NS" \
    bash -c 'socat -u "$1" - | wc -c' _ "$listen"
  local sink=$SPAWNED
  must "the sink listens" wait_until 5000 _listening -t "$port"

  filter_counters
  local before=$COUNTERS hot_before
  hot_before=$(hot_path_packets "$cmd")
  local rc=0
  # shellcheck disable=SC2016
  in_ns timeout -k 2 60 bash -c 'head -c "$1" /dev/zero | socat -u - "$2"' _ "$bytes" "$connect" ||
    rc=$?
  check_eq "$name: the sender finished" 0 "$rc"
  check "$name: the sink finished" wait_exit "$sink" 10000
  check_eq "$name: bytes received" "$bytes" "$(tr -d ' \n' <"$W/sink-$name.out")"
  filter_counters
  local after=$COUNTERS hot_after
  hot_after=$(hot_path_packets "$cmd")
  echo "   before: $before"
  echo "   after:  $after"
  local d_packets=$(($(counter packets "$after") - $(counter packets "$before")))
  local d_questions=$(($(counter questions "$after") - $(counter questions "$before")))
  local d_allow=$(($(counter allow "$after") - $(counter allow "$before")))
  local d_hot=$((hot_after - hot_before))
  echo "   queued packets: +$d_packets; kernel hot path (ctmark allow -> RETURN): +$d_hot packets"
  check_eq "$name: one question for the flow" 1 "$d_questions"
  check_eq "$name: one packet released with allow (the SYN)" 1 "$d_allow"
  check "$name: the queue saw at most 3 packets of the flow (+$d_packets)" \
    test "$d_packets" -ge 1 -a "$d_packets" -le 3
  # 100 MB is >= 1,600 segments of 64 KiB (loopback's GSO size), plus ACKs; >= 200 even with
  # 512 KiB BIG TCP super-packets. The count proves the flow went through our chain, in the kernel.
  check "$name: the kernel passed the rest itself (+$d_hot >= 200 hot-path packets)" \
    test "$d_hot" -ge 200
  check_eq "$name: nothing pending" 0 "$(counter pending "$after")"
}

bulk ipv4 127.0.0.1 iptables
bulk ipv6 ::1 ip6tables
check_eq "no question fell back" 0 "$(counter fallbacks)"
check_eq "no packet lost by the queue" 0 "$(counter nfq_lost)"

kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
