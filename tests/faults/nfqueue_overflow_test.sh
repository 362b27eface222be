#!/usr/bin/env bash
# Issue 7 (fault matrix): NFQUEUE overflow with the reader stalled. tollgate-filter is stopped
# (SIGSTOP) while 40,000 new UDP flows (one datagram each, each from its own 127.x.y.z source) go
# to a receiver in the namespace. The kernel queues what fits in the filter's socket and deals
# with the rest by the policy the filter configured: fail_open accepts them unseen
# (NFQA_CFG_F_FAIL_OPEN), fail_closed drops them. Once per policy:
#   - during the stall: the queue holds Q packets, fewer than its length (the filter sizes the
#     queue so that its socket, not the queue, is what fills first), and the other 40,000 - Q are
#     all delivered (fail_open) or all dropped and counted by the kernel (fail_closed); none is
#     both, none is lost track of;
#   - after SIGCONT the filter recovers by itself: it decides the Q queued flows with the daemon
#     (allow), counts the 40,000 - Q it never saw as nfq_lost (packet-id gaps, noticed at the
#     next packet: one more flow is sent for that), and each of the Q + 1 questions is answered,
#     none falls back;
#   - the receiver saw every datagram at most once: all 40,001 (fail_open) or exactly the Q + 1
#     the filter decided (fail_closed).
#   bash tests/faults/nfqueue_overflow_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/../integration/filter_lib.sh"
LOAD=$(realpath "${5:?usage: $0 TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD}")

readonly flows=40000 port=7000
write_config
start_daemon_by_hand "$W/tollgated.log"
# Each run's datagrams carry their own numbers (from its source offset), counted once each.
udp_receiver "$port" "$flows"

# overflow POLICY SRC_OFFSET: one run as described above.
overflow() {
  local policy=$1 offset=$2
  echo "== $policy"
  # A deadline long enough that the Q questions asked at once after the stall are all answered.
  # The daemon answers every new flow here (--no-reuse): this is a test of the ask path.
  start_filter "$W/filter-$policy.log" --fallback "$policy" --deadline-ms 10000 --no-reuse
  must "$policy: the filter is connected to the daemon" wait_filter_session 1
  local qlen
  qlen=$(grep -oE 'queue length [0-9]+' "$FILTER_LOG" | tail -n 1 | cut -d' ' -f3)
  check "$policy: the filter set a queue length above the kernel's default 1024 (${qlen:-none})" \
    test "${qlen:-0}" -gt 1024
  filter_counters
  local c0=$COUNTERS
  receiver_report
  local r0=$RECEIVED
  local id0 dropped0 user_dropped0
  id0=$(nfq_stat id)
  dropped0=$(nfq_stat dropped)
  user_dropped0=$(nfq_stat user_dropped)
  check_eq "$policy: nothing queued before the stall" 0 "$(nfq_stat total)"

  echo "-- $policy: the filter stops (SIGSTOP); $flows new flows"
  kill -STOP "$FILTER_PID"
  in_ns "$LOAD" udp-send --port "$port" --count "$flows" --src-offset "$offset" \
    >"$W/send-$policy.out" 2>&1 || true
  echo "   $(cat "$W/send-$policy.out")"
  check_eq "$policy: the sender handed all $flows datagrams to the kernel" "$flows" \
    "$(counter sent "$(cat "$W/send-$policy.out")")"
  local queued dropped user_dropped ids
  queued=$(nfq_stat total)
  dropped=$(($(nfq_stat dropped) - dropped0))
  user_dropped=$(($(nfq_stat user_dropped) - user_dropped0))
  ids=$(($(nfq_stat id) - id0))
  local over=$((flows - queued))
  echo "   queue: $queued held, $over did not fit (dropped by a full queue: $dropped, by a full" \
    "socket: $user_dropped, packet ids used: $ids)"
  check "$policy: the queue holds some flows ($queued)" test "$queued" -gt 0
  check "$policy: some flows did not fit ($over)" test "$over" -gt 0
  check "$policy: the queue never filled ($queued < queue length $qlen)" \
    test "$queued" -lt "${qlen:-0}"
  check_eq "$policy: every flow that did not fit overran the filter's socket (took a packet id)" \
    "$over" "$((ids - queued))"
  local want_delivered
  if [[ $policy == fail_open ]]; then
    want_delivered=$over
    check_eq "fail_open: the kernel dropped nothing" "0 0" "$dropped $user_dropped"
  else
    want_delivered=0
    check_eq "fail_closed: the kernel dropped (and counted) every flow that did not fit" \
      "$over" "$((dropped + user_dropped))"
  fi
  # Delivery of what the kernel accepted is immediate; give it a moment to show, then count.
  wait_until 5000 received_at_least "$(($(counter distinct "$r0") + want_delivered))" || true
  sleep 0.3
  receiver_report
  local r1=$RECEIVED
  check_eq "$policy: delivered during the stall" "$want_delivered" \
    "$(($(counter distinct "$r1") - $(counter distinct "$r0")))"
  check_eq "$policy: datagrams received during the stall (each once)" "$want_delivered" \
    "$(($(counter received "$r1") - $(counter received "$r0")))"
  check_eq "$policy: no datagram delivered twice" 0 "$(counter duplicates "$r1")"

  echo "-- $policy: the filter resumes (SIGCONT); one more flow"
  kill -CONT "$FILTER_PID"
  in_ns "$LOAD" udp-send --port "$port" --count 1 --src-offset $((offset + flows)) >/dev/null
  check "$policy: the filter decides the $queued queued flows and the new one" \
    wait_until 20000 counter_at_least answered "$(($(counter answered "$c0") + queued + 1))"
  check "$policy: the queue drains" wait_until 5000 test "$(nfq_stat total)" -eq 0
  filter_counters
  local c1=$COUNTERS
  echo "   $c1"
  check_eq "$policy: new flows seen by the filter = queued + 1" "$((queued + 1))" \
    "$(($(counter new_flows "$c1") - $(counter new_flows "$c0")))"
  check_eq "$policy: questions = queued + 1" "$((queued + 1))" \
    "$(($(counter questions "$c1") - $(counter questions "$c0")))"
  check_eq "$policy: every question answered by the daemon" "$((queued + 1))" \
    "$(($(counter answered "$c1") - $(counter answered "$c0")))"
  check_eq "$policy: no fallback" "$(counter fallbacks "$c0")" "$(counter fallbacks "$c1")"
  check_eq "$policy: allowed (the default)" "$((queued + 1))" \
    "$(($(counter allow "$c1") - $(counter allow "$c0")))"
  check_eq "$policy: the filter counted each flow it never saw as lost (nfq_lost)" \
    "$((over - dropped))" "$(($(counter nfq_lost "$c1") - $(counter nfq_lost "$c0")))"
  check_eq "$policy: nothing pending" 0 "$(counter pending "$c1")"
  check_eq "$policy: no verdict refused by the kernel" 0 "$(counter verdict_errors "$c1")"

  local want_total
  if [[ $policy == fail_open ]]; then want_total=$((flows + 1)); else want_total=$((queued + 1)); fi
  wait_until 5000 received_at_least "$(($(counter distinct "$r0") + want_total))" || true
  sleep 0.3
  receiver_report
  local r2=$RECEIVED
  echo "   receiver: $r2"
  check_eq "$policy: delivered in all" "$want_total" \
    "$(($(counter distinct "$r2") - $(counter distinct "$r0")))"
  check_eq "$policy: no datagram delivered twice" 0 "$(counter duplicates "$r2")"

  kill_filter TERM 5000
  check_eq "$policy: tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
}

overflow fail_open 0
overflow fail_closed 100000
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
