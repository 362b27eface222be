#!/usr/bin/env bash
# Issue 4: host rules decide real clients by the names they use, through the real filter and
# daemon, in a network namespace (127.0.0.0/8 only):
#   - names served by a local dnsmasq: curl resolves allowed.test and blocked.test; the filter
#     passes the DNS replies to the daemon, which maps the addresses to the names;
#   - TLS (curl against openssl s_server): a name learnt from DNS decides at the first packet; a
#     name given to curl with --resolve (no DNS seen) is learnt by inspection, from the SNI;
#   - plain HTTP: the Host header decides an inspected flow;
#   - a CNAME to a blocked name is blocked;
#   - attribution: a rule on exe=/usr/bin/curl rejects curl and lets socat through to the same port,
#     so the daemon found the right executable behind each flow;
#   - the daemon's reasons say which rule and how the name was learnt (via DNS / SNI / Host).
# shellcheck source=tests/integration/filter_lib.sh
source "$(dirname "$0")/filter_lib.sh"

for tool in dnsmasq curl openssl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing; run ./scripts/bootstrap" >&2; exit 1; }
done

netns_resolver  # curl in NS resolves through our dnsmasq only

write_config
cat >"$W/rules.d/10-names.toml" <<'TOML'
[[rule]]
name = "blocked-names"
action = "reject"
host = ["blocked.test", "*.blocked.test"]

[[rule]]
name = "no-curl-to-7000"
action = "reject"
priority = 10
port = 7000
exe = "/usr/bin/curl"
TOML

echo "== servers: dnsmasq, openssl s_server (TLS), an HTTP responder"
start_dnsmasq --address=/allowed.test/127.0.0.10 --address=/blocked.test/127.0.0.11 \
  --host-record=www.blocked.test,127.0.0.15 --cname=alias.allowed2.test,www.blocked.test

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=tollgate-test -keyout "$W/key.pem" -out "$W/cert.pem" 2>"$W/openssl-req.log"
# s_server serves one connection at a time, and a flow rejected after inspection leaves the
# server's end open (the RST goes to the client only), so the case that does that has its own.
for port in 4433 4434; do
  spawn /dev/null "$W/s_server-$port.log" ip netns exec "$NS" openssl s_server -quiet -www \
    -accept "$port" -cert "$W/cert.pem" -key "$W/key.pem"
  must "openssl s_server listens on $port" wait_until 5000 _listening -t "$port"
done
printf '#!/bin/sh\nread -r line\nprintf "HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nhi\\n"\n' \
  >"$W/http-responder.sh"
chmod +x "$W/http-responder.sh"
spawn /dev/null "$W/http.log" ip netns exec "$NS" socat TCP4-LISTEN:8080,reuseaddr,fork \
  EXEC:"$W/http-responder.sh"
must "http responder listens on 8080" wait_until 5000 _listening -t 8080
tcp_echo_server 7000

spawn /dev/null "$W/tollgated.log" ip netns exec "$NS" "$TOLLGATED" --config "$CONFIG" \
  --runtime-dir "$RUNTIME_DIR" --log-level debug
DAEMON_PID=$SPAWNED
must "tollgated is ready within 5 s" wait_until 5000 log_has "$W/tollgated.log" 'ready \(protocol'
start_filter "$W/filter.log"
must "the filter is connected to the daemon" wait_filter_session 1

# curl_outcome URL [CURL_ARGS...]: ok (HTTP 200 received) or failed:<curl exit code>, bounded.
curl_outcome() {
  local url=$1 rc=0
  shift
  in_ns timeout -k 1 10 curl -sk -o /dev/null --max-time 6 "$@" "$url" || rc=$?
  if ((rc == 0)); then OUTCOME=ok; else OUTCOME=failed:$rc; fi
}

echo "== names learnt from DNS"
curl_outcome https://allowed.test:4433/
check_eq "curl https://allowed.test:4433 (resolved by dnsmasq) completes" ok "$OUTCOME"
curl_outcome https://blocked.test:4433/
check_eq "curl https://blocked.test:4433 is rejected (curl: connection refused, 7)" failed:7 "$OUTCOME"
curl_outcome https://alias.allowed2.test:4433/
check_eq "curl via a CNAME to www.blocked.test is rejected" failed:7 "$OUTCOME"

echo "== names learnt by inspection (no DNS seen for the address)"
# The handshake passes (inspect), the ClientHello or request is held and read, then the verdict:
# a rejected flow is reset by the kernel at that point, so curl reports a reset (35 in the TLS
# handshake, 56 while receiving), not "connection refused".
curl_outcome https://fine.example:4433/ --resolve fine.example:4433:127.0.0.12
check_eq "curl --resolve fine.example (SNI only, no rule) completes" ok "$OUTCOME"
curl_outcome https://sni.blocked.test:4434/ --resolve sni.blocked.test:4434:127.0.0.12
check "curl --resolve sni.blocked.test (SNI only) is reset" \
  test "$OUTCOME" = failed:35 -o "$OUTCOME" = failed:56
curl_outcome http://fine.example:8080/ --resolve fine.example:8080:127.0.0.13
check_eq "curl http://fine.example (Host only, no rule) completes" ok "$OUTCOME"
curl_outcome http://host.blocked.test:8080/ --resolve host.blocked.test:8080:127.0.0.13
check_eq "curl http://host.blocked.test (Host only) is reset" failed:56 "$OUTCOME"

echo "== attribution: the executable behind the flow"
curl_outcome http://127.0.0.1:7000/
check_eq "curl to port 7000 (exe rule) is rejected" failed:7 "$OUTCOME"
tcp_outcome 127.0.0.1 7000
check_eq "socat to port 7000 passes (not curl)" echoed "$OUTCOME"

echo "== the daemon's reasons"
dlog=$W/tollgated.log
check "blocked.test: rule via DNS" log_has "$dlog" \
  'reject: rule "blocked-names" \(host blocked\.test via DNS\)'
check "alias via CNAME: rule via DNS" log_has "$dlog" \
  'reject: rule "blocked-names" \(host \*\.blocked\.test via DNS: www\.blocked\.test\)'
check "SNI-only flow was inspected first" log_has "$dlog" \
  'inspect: rule "blocked-names" \(host blocked\.test,\*\.blocked\.test\) needs the host name'
check "SNI-only flow: rule via SNI" log_has "$dlog" \
  'reject: rule "blocked-names" \(host \*\.blocked\.test via SNI: sni\.blocked\.test\)'
check "Host-only flow: rule via Host" log_has "$dlog" \
  'reject: rule "blocked-names" \(host \*\.blocked\.test via Host: host\.blocked\.test\)'
check "curl attributed: rule on exe" log_has "$dlog" \
  'reject: rule "no-curl-to-7000" \(port 7000 exe /usr/bin/curl\)'
filter_counters
check "the filter sent DNS replies to the daemon" test "$(counter dns_observations)" -ge 2

kill -TERM "$DAEMON_PID"
check "tollgated exits within 5 s of SIGTERM" wait_exit "$DAEMON_PID" 5000
check "tollgated counted SNI and Host names" log_has "$dlog" 'sni=[1-9][0-9]* http_host=[1-9]'

