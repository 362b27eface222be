#!/usr/bin/env bash
# Issue 7 (fault matrix): 200,000 distinct new flows against max_pending_flows = 10,000, with the
# daemon stalled (SIGSTOP) and a question deadline (30 s) longer than the flood, so every flow the
# filter asks about stays pending. Each flow is one UDP datagram from its own 127.x.y.z source to
# a receiver in the namespace, numbered so the receiver can tell which ones came through. The
# sender keeps the filter's NFQUEUE backlog under 8,192 unread packets (it reads the kernel's
# queue_total), so the filter sees every flow and nothing here is the kernel's overflow (the
# nfqueue_overflow case covers that). Once per policy:
#   - the first 10,000 flows are pending (questions to the stalled daemon, their datagram held in
#     the kernel's queue: exactly 10,000 queued); the other 190,000 overflow at once, counted
#     (overflow=190000) and released by the policy: fail_open passes them (the receiver gets
#     exactly those 190,000, none of the first 10,000), fail_closed drops them (it gets none);
#   - `pending` never exceeds 10,000 (sampled while the flood runs) and ends at exactly 10,000;
#   - memory is bounded: the filter's peak RSS (VmHWM) after all 200,000 flows is at most 4 MiB
#     above what it was after the first 20,000 (table full, overflow under way): the 180,000 more
#     flows cost nothing to keep; and the whole growth from before the flood stays under 24 MiB.
#     Measured: 5.5 MiB (debug build), 9 MiB (ASan) for the 10,000 pending flows (flow table,
#     the channel's pending questions, the messages waiting for the stalled daemon); keeping
#     state for all 200,000 flows at that cost would take 110 MiB or more;
#   - after SIGCONT the daemon answers the 10,000 (allow): they are delivered, none falls back, and
#     questions = answered + fallbacks, nothing pending.
#   bash tests/faults/pending_flood_test.sh TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/../integration/filter_lib.sh"
LOAD=$(realpath "${5:?usage: $0 TOLLGATED PROBE FILTER CONNECT_PROBE FAULT_LOAD}")

readonly max_pending=10000 first=20000 flows=200000
readonly hwm_slack_kib=4096 growth_bound_kib=$((24 * 1024))
write_config
start_daemon_by_hand "$W/tollgated.log"

# start_send OUT COUNT OFFSET [UNPACED]: COUNT flows numbered from OFFSET, in the background
# (SENDER), the filter's unread backlog bounded unless UNPACED; sent_all OUT COUNT then checks
# that it sent them all.
start_send() {
  local pace=(--nfq-backlog "0:$((max_pending + 8192))")
  [[ -z ${4:-} ]] || pace=()
  in_ns "$LOAD" udp-send --port "$port" --count "$2" --src-offset "$3" "${pace[@]}" >"$1" 2>&1 &
  SENDER=$!
  pids+=("$SENDER")
}
sent_all() {
  check "$policy: the sender ends" wait_exit "$SENDER" 60000
  echo "   $(cat "$1")"
  check_eq "$policy: the sender sent $2 datagrams" "$2 none" \
    "$(counter sent "$(cat "$1")") $(counter error "$(cat "$1")")"
}

# flood POLICY PORT OFFSET: one run as described above.
flood() {
  local policy=$1 port=$2 offset=$3
  echo "== $policy"
  udp_receiver "$port" $((offset + max_pending))
  start_filter "$W/filter-$policy.log" --fallback "$policy" --deadline-ms 30000 \
    --max-pending "$max_pending"
  must "$policy: the filter is connected to the daemon" wait_filter_session 1
  filter_counters
  local c0=$COUNTERS rss0 hwm0
  rss0=$(proc_kib "$FILTER_PID" VmRSS)
  hwm0=$(proc_kib "$FILTER_PID" VmHWM)
  echo "   before: VmRSS ${rss0} KiB, VmHWM ${hwm0} KiB"

  echo "-- $policy: the daemon stops (SIGSTOP); $first flows"
  kill -STOP "$DAEMON_PID"
  # The first $max_pending reach the filter at once (it is stopped meanwhile; they fit in its
  # socket), so it reads them in large batches and its questions to the stopped daemon go out in
  # full messages: the filter keeps at most 256 unsent messages while the daemon does not read,
  # and a question in a message dropped past that waits for its deadline even once the daemon is
  # back. A trickle of flows, one small message per loop turn, would hit that first.
  kill -STOP "$FILTER_PID"
  start_send "$W/send0-$policy.out" "$max_pending" "$offset" unpaced
  sent_all "$W/send0-$policy.out" "$max_pending"
  kill -CONT "$FILTER_PID"
  check "$policy: the filter saw the first $max_pending" \
    wait_until 20000 counter_at_least packets "$(($(counter packets "$c0") + max_pending))"
  start_send "$W/send1-$policy.out" $((first - max_pending)) $((offset + max_pending))
  sent_all "$W/send1-$policy.out" $((first - max_pending))
  check "$policy: the filter saw all $first" \
    wait_until 20000 counter_at_least packets "$(($(counter packets "$c0") + first))"
  local c1=$COUNTERS hwm1
  hwm1=$(proc_kib "$FILTER_PID" VmHWM)
  echo "   after $first: VmRSS $(proc_kib "$FILTER_PID" VmRSS) KiB, VmHWM ${hwm1} KiB"
  echo "   $c1"
  check_eq "$policy: after $first flows, $max_pending pending" "$max_pending" \
    "$(counter pending "$c1")"
  check_eq "$policy: after $first flows, $((first - max_pending)) overflowed" \
    "$((first - max_pending))" "$(($(counter overflow "$c1") - $(counter overflow "$c0")))"

  echo "-- $policy: $((flows - first)) more flows"
  start_send "$W/send2-$policy.out" $((flows - first)) $((offset + first))
  local samples=0 over_bound=0 p
  while ! exited "$SENDER"; do
    filter_counters
    p=$(counter pending)
    samples=$((samples + 1))
    ((p <= max_pending)) || over_bound=$((over_bound + 1))
    sleep 0.2
  done
  sent_all "$W/send2-$policy.out" $((flows - first))
  check "$policy: the filter saw all $flows" \
    wait_until 20000 counter_at_least packets "$(($(counter packets "$c0") + flows))"
  local c2=$COUNTERS hwm2 rss2
  hwm2=$(proc_kib "$FILTER_PID" VmHWM)
  rss2=$(proc_kib "$FILTER_PID" VmRSS)
  echo "   after $flows: VmRSS ${rss2} KiB, VmHWM ${hwm2} KiB"
  echo "   $c2"
  check "$policy: pending sampled while the flood ran ($samples samples)" test "$samples" -ge 1
  check_eq "$policy: samples where pending exceeded $max_pending" 0 "$over_bound"
  check_eq "$policy: $max_pending pending" "$max_pending" "$(counter pending "$c2")"
  check_eq "$policy: the kernel holds one datagram per pending flow" "$max_pending" \
    "$(nfq_stat total)"
  check_eq "$policy: new flows asked about" "$max_pending" \
    "$(($(counter questions "$c2") - $(counter questions "$c0")))"
  check_eq "$policy: overflow counted" "$((flows - max_pending))" \
    "$(($(counter overflow "$c2") - $(counter overflow "$c0")))"
  check_eq "$policy: every flow seen (new or overflow): none lost in the kernel (nfq_lost)" \
    "$(counter nfq_lost "$c0")" "$(counter nfq_lost "$c2")"
  local released
  if [[ $policy == fail_open ]]; then released=pass; else released=drop; fi
  check_eq "$policy: the overflow was released as '$released'" "$((flows - max_pending))" \
    "$(($(counter "$released" "$c2") - $(counter "$released" "$c0")))"
  check_eq "$policy: no fallback while the daemon is stopped (the deadline is 30 s)" \
    "$(counter fallbacks "$c0")" "$(counter fallbacks "$c2")"
  local what="peak RSS grew by at most $hwm_slack_kib KiB over the last $((flows - first)) flows"
  check "$policy: $what ($((hwm2 - hwm1)) KiB)" test $((hwm2 - hwm1)) -le "$hwm_slack_kib"
  check "$policy: peak RSS grew by at most $growth_bound_kib KiB in all ($((hwm2 - rss0)) KiB)" \
    test $((hwm2 - rss0)) -le "$growth_bound_kib"

  local want
  if [[ $policy == fail_open ]]; then want=$((flows - max_pending)); else want=0; fi
  wait_until 5000 received_at_least "$want" || true
  sleep 0.3
  receiver_report
  echo "   receiver: $RECEIVED"
  check_eq "$policy: delivered during the stall" "$want" "$(counter distinct "$RECEIVED")"
  check_eq "$policy: none of the pending flows was delivered during the stall" 0 \
    "$(counter below_split "$RECEIVED")"

  echo "-- $policy: the daemon resumes (SIGCONT)"
  kill -CONT "$DAEMON_PID"
  check "$policy: the daemon answers the $max_pending pending flows" \
    wait_until 20000 counter_at_least answered "$(($(counter answered "$c0") + max_pending))"
  local c3=$COUNTERS
  echo "   $c3"
  check_eq "$policy: nothing pending" 0 "$(counter pending "$c3")"
  check_eq "$policy: allowed by the daemon" "$max_pending" \
    "$(($(counter allow "$c3") - $(counter allow "$c0")))"
  check_eq "$policy: no fallback" "$(counter fallbacks "$c0")" "$(counter fallbacks "$c3")"
  check_eq "$policy: no late answer" "$(counter late "$c0")" "$(counter late "$c3")"
  check_eq "$policy: questions = answered + fallbacks" \
    "$(($(counter questions "$c3") - $(counter questions "$c0")))" \
    "$(($(counter answered "$c3") - $(counter answered "$c0") + $(counter fallbacks "$c3") - \
      $(counter fallbacks "$c0")))"
  if [[ $policy == fail_open ]]; then want=$flows; else want=$max_pending; fi
  wait_until 5000 received_at_least "$want" || true
  sleep 0.3
  receiver_report
  echo "   receiver: $RECEIVED"
  check_eq "$policy: delivered in all" "$want" "$(counter distinct "$RECEIVED")"
  check_eq "$policy: the pending flows were delivered once answered" "$max_pending" \
    "$(counter below_split "$RECEIVED")"
  check_eq "$policy: no datagram delivered twice" 0 "$(counter duplicates "$RECEIVED")"

  kill_filter TERM 5000
  check_eq "$policy: tollgate-filter exit status after SIGTERM" 0 "${EXIT_STATUS:-none}"
}

# fail_closed first: its dropped flows leave no conntrack entries behind, so the namespace's
# conntrack table (nf_conntrack_max) has room for fail_open's 200,000.
flood fail_closed 7001 0
flood fail_open 7002 1000000
stop_daemon "$DAEMON_PID" "$W/tollgated.log"
