#!/usr/bin/env bash
# packaging.units: installs this build tree into a temporary root (cmake --install, prefix /usr)
# and checks the systemd side of it offline, without touching the host:
#   - systemd-analyze verify (systemd 252) on the installed units: no message at all, since an
#     unknown or misspelt directive is only a warning with exit status 0;
#   - a misspelt copy is caught, so the check above can fail;
#   - the settings the daemon and the filter rely on (fd names from socket_activation.h, socket
#     groups and modes, the filter's user and capabilities, ordering before network-pre.target);
#   - systemd-analyze security --offline stays at or below an exposure of 3.0;
#   - sysusers.d and tmpfiles.d applied to the temporary root give the users, groups and modes.
# Usage: units_test.sh BUILD_DIR PACKAGING_SOURCE_DIR
set -euo pipefail
build=$1
src=$2
root=$(mktemp -d /tmp/tollgate-units.XXXXXX)
trap 'rm -rf "$root"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

DESTDIR=$root cmake --install "$build" --prefix /usr >/dev/null
units=$root/usr/lib/systemd/system
for u in tollgated.socket tollgated-control.socket tollgated.service tollgate-filter.service; do
  [[ -f $units/$u ]] || fail "$u not installed in /usr/lib/systemd/system"
done

# Every Exec*= program must exist in the installed tree, or (a tool of a dependency such as
# procps' /bin/kill) on this host, from where it is copied into the root for verify.
for cmd in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$units"/*.service); do
  if [[ -x $root$cmd ]]; then
    continue
  elif [[ -x $cmd && $cmd != /usr/sbin/tollgate* ]]; then
    mkdir -p "$root$(dirname "$cmd")"
    cp "$cmd" "$root$cmd"
  else
    fail "unit runs $cmd, which is neither installed nor on this host"
  fi
done

# verify ROOT UNIT...: units by their path inside ROOT (with --root, systemd-analyze 252 reads
# relative paths from the working directory and resolves everything else inside ROOT). Prints
# systemd-analyze's messages and returns non-zero if there are any.
verify() {
  local r=$1 out rc=0
  shift
  out=$(cd "$r" && systemd-analyze verify --man=no --root="$r" "$@" 2>&1) || rc=$?
  [[ -z $out && $rc -eq 0 ]] && return 0
  echo "$out"
  return 1
}
unitrel=usr/lib/systemd/system
if out=$(verify "$root" $unitrel/tollgated.socket $unitrel/tollgated-control.socket \
  $unitrel/tollgated.service $unitrel/tollgate-filter.service); then
  pass "systemd-analyze verify: all four units clean"
else
  fail "systemd-analyze verify:"$'\n'"$out"
fi

# The check can fail: a misspelt directive and a bad value must be reported.
cp "$units/tollgated.service" "$units/tollgated-broken.service"
sed -i 's/^ProtectHome=yes/ProtectHomee=yes\nProtectSystem=stricter/' "$units/tollgated-broken.service"
if out=$(verify "$root" $unitrel/tollgated-broken.service); then
  fail "verify did not notice a misspelt directive"
elif grep -q ProtectHomee <<<"$out" && grep -q stricter <<<"$out"; then
  pass "verify reports a misspelt directive and a bad value"
else
  fail "verify output did not name both mistakes: $out"
fi
rm -f "$units/tollgated-broken.service"

# key = value must be present in unit (exact line).
has() {
  if grep -qxF "$2" "$units/$1"; then pass "$1: $2"; else fail "$1 lacks the line '$2'"; fi
}
analysis_name=$(sed -n 's/.*kAnalysisSocketName\[\] = "\(.*\)";/\1/p' \
  "$src/../src/platform/linux/socket_activation.h")
control_name=$(sed -n 's/.*kControlSocketName\[\] = "\(.*\)";/\1/p' \
  "$src/../src/platform/linux/socket_activation.h")
[[ -n $analysis_name && -n $control_name ]] || fail "fd names not found in socket_activation.h"
has tollgated.socket "ListenSequentialPacket=/run/tollgate/analysis.sock"
has tollgated.socket "FileDescriptorName=$analysis_name"
has tollgated.socket "SocketGroup=tollgate"
has tollgated.socket "SocketMode=0660"
has tollgated.socket "Service=tollgated.service"
has tollgated.socket "WantedBy=sockets.target"
has tollgated-control.socket "ListenStream=/run/tollgate/control.sock"
has tollgated-control.socket "FileDescriptorName=$control_name"
has tollgated-control.socket "SocketGroup=tollgate-admin"
has tollgated-control.socket "SocketMode=0660"
has tollgated-control.socket "Service=tollgated.service"
has tollgated.service "Type=notify"
has tollgated.service "ExecStart=/usr/sbin/tollgated"
has tollgated.service "ProtectSystem=strict"
has tollgated.service "NoNewPrivileges=yes"
has tollgated.service "StateDirectory=tollgate"
if grep -q '^\[Install\]' "$units/tollgated.service" &&
  ! grep -q '^WantedBy=' "$units/tollgated.service"; then
  pass "tollgated.service is never enabled by itself (Also= only)"
else
  fail "tollgated.service must not be WantedBy anything: it starts on demand"
fi
has tollgate-filter.service "ExecStart=/usr/sbin/tollgate-filter"
has tollgate-filter.service "Type=notify"
has tollgate-filter.service "User=tollgate-filter"
has tollgate-filter.service "SupplementaryGroups=tollgate"
has tollgate-filter.service "AmbientCapabilities=CAP_NET_ADMIN"
has tollgate-filter.service "CapabilityBoundingSet=CAP_NET_ADMIN"
has tollgate-filter.service "RestrictAddressFamilies=AF_NETLINK AF_UNIX"
has tollgate-filter.service "DefaultDependencies=no"
has tollgate-filter.service "Before=network-pre.target shutdown.target"
has tollgate-filter.service "Wants=network-pre.target"
has tollgate-filter.service "WantedBy=sysinit.target"
if grep -Eq '^(Requires|BindsTo|Requisite|Wants)=.*tollgated' "$units/tollgate-filter.service"; then
  fail "tollgate-filter.service must not depend on the daemon"
else
  pass "tollgate-filter.service has no dependency on tollgated"
fi
# The filter's seccomp and Landlock calls must be allowed by the unit's own filter.
for call in seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self; do
  grep -Eq "^SystemCallFilter=.*\b$call\b" "$units/tollgate-filter.service" ||
    fail "tollgate-filter.service: SystemCallFilter= does not allow $call (the sandbox needs it)"
done

for svc in tollgated.service tollgate-filter.service; do
  if out=$(cd "$root" && systemd-analyze security --offline=yes --root="$root" --threshold=30 \
    "$units/$svc" 2>&1); then
    pass "$svc: $(tail -n1 <<<"$out")"
  else
    fail "$svc: exposure above 3.0: $(tail -n1 <<<"$out")"
  fi
done

# sysusers.d and tmpfiles.d, applied to the temporary root only.
systemd-sysusers --root="$root" >/dev/null 2>&1 || fail "systemd-sysusers --root failed"
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$root/etc/group"; }
tg=$(gid_of tollgate)
[[ -n $tg && -n $(gid_of tollgate-admin) ]] || fail "groups tollgate / tollgate-admin not created"
if awk -F: '$1 == "tollgate" { print $4 }' "$root/etc/group" | tr ',' '\n' | grep -qx tollgate-filter
then
  pass "tollgate-filter is a member of tollgate"
else
  fail "tollgate-filter is not a member of tollgate"
fi
shell=$(awk -F: '$1 == "tollgate-filter" { print $7 }' "$root/etc/passwd")
[[ $shell == /usr/sbin/nologin ]] || fail "tollgate-filter has shell '$shell'"
if [[ $(id -u) -ne 0 ]]; then
  # Owners need chown: checked only as root (CI runs as root).
  echo "skip: tmpfiles.d owners and modes (not root)"
else
  systemd-tmpfiles --root="$root" --create >/dev/null 2>&1 || fail "systemd-tmpfiles --root failed"
  mode() { stat -c '%a %u %g' "$root$1"; }
  [[ $(mode /run/tollgate) == "751 0 $tg" ]] || fail "/run/tollgate is '$(mode /run/tollgate)'"
  [[ $(mode /etc/tollgate/rules.d) == "755 0 0" ]] ||
    fail "rules.d is '$(mode /etc/tollgate/rules.d)'"
  [[ $(mode /var/lib/tollgate) == "750 0 0" ]] ||
    fail "/var/lib/tollgate is '$(mode /var/lib/tollgate)'"
  pass "tmpfiles.d owners and modes"
fi

if ((failures > 0)); then
  echo "packaging.units: $failures failure(s)" >&2
  exit 1
fi
echo "packaging.units: all checks passed"
