#!/usr/bin/env bash
# Issue 3: SYN retransmits while a question is pending get the same verdict as the flow.
# The daemon is stopped (SIGSTOP) so the questions wait; the deadline is long (8 s) so they do not
# fall back. Two real clients: 127.0.0.1:40001 -> 8080 (allowed) and 127.0.0.1:40002 -> 2424
# (deny rule). Their SYNs wait in the queue.
#
# Kernel fact (Linux >= 3.16, seen on 6.18): TCP does not retransmit a SYN whose first copy is
# still held in NFQUEUE. The queued clone keeps the socket's fclone busy, so the retransmit timer
# only counts TcpExtTCPSpuriousRtxHostQueues and sends nothing. A local client's own retransmit
# therefore never reaches the filter while its question is pending. What does reach it is a SYN
# from another skb with the same addresses and ports: a remote peer's retransmit, or a
# duplicate. The test sends such retransmits itself. While the daemon is stopped (after the 1 s
# retransmit time, so the kernel's attempt is past too), one SYN per flow goes out through a raw
# socket with the flow's addresses and ports: the same headers as a retransmit of that SYN.
#
# Then SIGCONT:
#   - each retransmit joined its flow's pending question: joined +2, questions +2 exactly (one
#     per flow, none for a retransmit);
#   - each was released with its flow's verdict: allow +2 and deny +2 packets, and no packet
#     passed or was dropped by a default (pass, drop, fallbacks unchanged);
#   - the allowed client connects and gets its echo;
#   - the denied client never connects; its later real retransmit (the first copy was dropped,
#     so the kernel sends it) is answered from the filter's memory (remembered_hits), still
#     without a new question.
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

write_config
add_rule drop-2424 deny tcp port=2424
tcp_echo_server 8080 2424
start_daemon_by_hand "$W/tollgated.log"
start_filter "$W/filter.log" --fallback fail_closed --deadline-ms 8000
must "the filter is connected to the daemon" wait_filter_session 1

# raw_syn SPORT DPORT SEQ: one TCP SYN 127.0.0.1:SPORT -> 127.0.0.1:DPORT from a raw socket in
# NS (20-byte header, no options, checksum over the pseudo-header).
raw_syn() {
  local sport=$1 dport=$2 seq=$3 w out=
  local words=("$sport" "$dport" $(((seq >> 16) & 0xffff)) $((seq & 0xffff)) 0 0 $((0x5002)) 65535 0 0)
  local sum=$((0x7f00 + 0x0001 + 0x7f00 + 0x0001 + 6 + 20))
  for w in "${words[@]}"; do sum=$((sum + w)); done
  while ((sum >> 16)); do sum=$(((sum & 0xffff) + (sum >> 16))); done
  words[8]=$((~sum & 0xffff))
  for w in "${words[@]}"; do out+=$(printf '\\x%02x\\x%02x' $((w >> 8)) $((w & 0xff))); done
  printf '%b' "$out" | in_ns socat -u - IP4-SENDTO:127.0.0.1:6
}

# client NAME SPORT DPORT TIMEOUT_S: a real client in the background; its outcome (tcp_try's
# words) goes to $W/NAME.outcome when it ends.
client() {
  spawn "$W/$1.outcome" "$W/$1.client.log" ip netns exec "$NS" bash -c \
    "$(declare -f tcp_try); tcp_try 127.0.0.1 \"\$2\" \"\$3\" \"\$1\"" _ "$2" "$3" "$4"
  CLIENT_PID=$SPAWNED
}

spurious() { in_ns nstat -az TcpExtTCPSpuriousRtxHostQueues | awk '$1 == "TcpExtTCPSpuriousRtxHostQueues" { print $2 }'; }

filter_counters
c0=$COUNTERS
spurious0=$(spurious)
kill -STOP "$DAEMON_PID"
start_ms=$(now_ms)
client allowed 40001 8080 20
allowed_pid=$CLIENT_PID
client denied 40002 2424 8
denied_pid=$CLIENT_PID
pending_two() { counter_at_least pending 2; }
must "both SYNs wait in the filter (pending 2)" wait_until 5000 pending_two

# Past the first retransmit time (1 s) of both clients, with a margin.
sleep_ms=$((start_ms + 1300 - $(now_ms)))
((sleep_ms <= 0)) || sleep "$((sleep_ms / 1000)).$(printf '%03d' $((sleep_ms % 1000)))"
filter_counters
echo "   held: $COUNTERS"
echo "   kernel retransmits held back while the SYN is queued (TcpExtTCPSpuriousRtxHostQueues):" \
  "+$(($(spurious) - spurious0))"
check_eq "the daemon is stopped: nothing answered yet" "$(counter answered "$c0")" \
  "$(counter answered)"

raw_syn 40001 8080 1000001
raw_syn 40002 2424 2000002
joined_two() { counter_at_least joined $(($(counter joined "$c0") + 2)); }
check "both retransmits joined their pending flows (joined +2)" wait_until 5000 joined_two
check_eq "still 2 pending flows (a retransmit is no new flow)" 2 "$(counter pending)"

kill -CONT "$DAEMON_PID"
check "the allowed client ends" wait_exit "$allowed_pid" 10000
check_eq "the allowed flow connects and echoes" echoed "$(cat "$W/allowed.outcome")"
settled() { counter_at_least answered $(($(counter answered "$c0") + 2)); }
check "both questions are answered" wait_until 5000 settled
c1=$COUNTERS
echo "   released: $c1"
delta() { echo $(($(counter "$1" "$c1") - $(counter "$1" "$c0"))); }
check_eq "questions: exactly one per flow" 2 "$(delta questions)"
check_eq "new flows" 2 "$(delta new_flows)"
check_eq "joined (one retransmit per flow)" 2 "$(delta joined)"
check_eq "released with allow: the allowed SYN and its retransmit" 2 "$(delta allow)"
# The denied client's next real retransmit may already have been denied from memory by now (it is
# due a second after the drop); those releases are counted in remembered_hits too, not questions.
check_eq "released with deny by the verdict: the denied SYN and its retransmit" 2 \
  "$(($(delta deny) - $(delta remembered_hits)))"
check_eq "none passed by default" 0 "$(delta pass)"
check_eq "none dropped by default" 0 "$(delta drop)"
check_eq "no fallback" 0 "$(delta fallbacks)"
check_eq "nothing pending" 0 "$(counter pending "$c1")"

# The denied client's SYN was dropped with its flow, so the kernel retransmits it (every second at
# first: Linux >= 6.9 backs off linearly for tcp_syn_linear_timeouts = 4 tries): those are
# answered from memory, not asked again.
remembered() { counter_at_least remembered_hits $(($(counter remembered_hits "$c0") + 1)); }
check "the denied client's next real retransmit is denied from memory" \
  wait_until 8000 remembered
check_eq "still exactly one question per flow" 2 \
  "$(($(counter questions) - $(counter questions "$c0")))"
check "the denied client ends (its 8 s bound)" wait_exit "$denied_pid" 12000
check_eq "the denied flow never connected" timeout "$(cat "$W/denied.outcome")"
filter_counters
echo "   end: $COUNTERS"
check_eq "still exactly one question per flow, at the end" 2 \
  "$(($(counter questions) - $(counter questions "$c0")))"
check_eq "no fallback, at the end" "$(counter fallbacks "$c0")" "$(counter fallbacks)"

kill_filter TERM 5000
check_eq "tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
