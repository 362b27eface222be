#!/usr/bin/env bash
# packaging.deb: builds the .deb of this build tree with cpack (into a temporary directory; the
# binaries are whatever this tree built, test hooks included, so this package is for checking,
# never for shipping: scripts/package builds the release one) and checks it without installing:
#   - control: name, Depends (shared libraries from dpkg-shlibdeps, plus iptables/procps/systemd),
#     conffiles, maintainer scripts present, executable, and valid for sh and bash (-n);
#   - contents: exactly the expected files, with their modes, all owned by root, nothing outside
#     /usr and /etc;
#   - the unit files inside the package name the packaged programs.
# Usage: deb_test.sh BUILD_DIR PACKAGING_SOURCE_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d /tmp/tollgate-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

(cd "$tmp" && cpack --config "$build/CPackConfig.cmake" -B "$tmp" >"$tmp/cpack.log" 2>&1) || {
  cat "$tmp/cpack.log" >&2
  echo "FAIL: cpack" >&2
  exit 1
}
debs=("$tmp"/tollgate_*_*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || { echo "FAIL: no single .deb in $tmp" >&2; exit 1; }
deb=${debs[0]}
pass "built $(basename "$deb")"

field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == tollgate ]] || fail "Package is '$(field Package)'"
depends=$(field Depends)
for dep in iptables procps systemd libc6 libsystemd0 libnetfilter-queue1 libmnl0 libseccomp2 \
  libstdc++6; do
  # Package names only, versions dropped: "libc6 (>= 2.34)" -> "libc6".
  if sed 's/ ([^)]*)//g; s/, /\n/g' <<<"$depends" | grep -qxF "$dep"; then
    pass "Depends: $dep"
  else
    fail "Depends lacks $dep: $depends"
  fi
done

mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
[[ $(cat "$tmp/control/conffiles") == /etc/tollgate/tollgate.toml ]] ||
  fail "conffiles: $(cat "$tmp/control/conffiles")"
for script in postinst prerm postrm; do
  f=$tmp/control/$script
  if [[ ! -f $f ]]; then
    fail "no $script"
    continue
  fi
  [[ $(stat -c %a "$f") == 755 ]] || fail "$script has mode $(stat -c %a "$f")"
  head -n1 "$f" | grep -qx '#!/bin/sh' || fail "$script does not start with #!/bin/sh"
  if sh -n "$f" && bash -n "$f"; then pass "$script: sh -n and bash -n"; else fail "$script syntax"; fi
done
grep -q 'systemd-sysusers' "$tmp/control/postinst" || fail "postinst does not run systemd-sysusers"
grep -q 'systemd-tmpfiles --create' "$tmp/control/postinst" || fail "postinst does not run tmpfiles"
grep -q '/run/systemd/system' "$tmp/control/postinst" ||
  fail "postinst does not check for a running systemd before starting units"

# Contents: "mode owner path" of every non-directory entry, compared with the expected list.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | sort >"$tmp/contents"
sort >"$tmp/expected" <<'LIST'
-rw-r--r-- root/root ./etc/tollgate/tollgate.toml
-rwxr-xr-x root/root ./usr/bin/tollgate
-rw-r--r-- root/root ./usr/lib/systemd/system/tollgate-filter.service
-rw-r--r-- root/root ./usr/lib/systemd/system/tollgated-control.socket
-rw-r--r-- root/root ./usr/lib/systemd/system/tollgated.service
-rw-r--r-- root/root ./usr/lib/systemd/system/tollgated.socket
-rw-r--r-- root/root ./usr/lib/sysusers.d/tollgate.conf
-rw-r--r-- root/root ./usr/lib/tmpfiles.d/tollgate.conf
-rwxr-xr-x root/root ./usr/sbin/tollgate-filter
-rwxr-xr-x root/root ./usr/sbin/tollgated
-rw-r--r-- root/root ./usr/share/doc/tollgate/configuration.md
-rw-r--r-- root/root ./usr/share/doc/tollgate/examples/rules.d/10-example.toml
-rw-r--r-- root/root ./usr/share/doc/tollgate/operations.md
-rw-r--r-- root/root ./usr/share/doc/tollgate/rules.md
-rw-r--r-- root/root ./usr/share/man/man1/tollgate.1.gz
-rw-r--r-- root/root ./usr/share/man/man5/tollgate-rules.5.gz
-rw-r--r-- root/root ./usr/share/man/man5/tollgate.toml.5.gz
-rw-r--r-- root/root ./usr/share/man/man8/tollgate-filter.8.gz
-rw-r--r-- root/root ./usr/share/man/man8/tollgated.8.gz
LIST
if diff -u "$tmp/expected" "$tmp/contents"; then
  pass "file list, modes and owners as expected"
else
  fail "file list differs (- expected, + in the package)"
fi
if dpkg-deb -c "$deb" | awk '{ print $2 }' | grep -vqx 'root/root'; then
  fail "an entry is not owned by root/root"
fi
dpkg-deb -c "$deb" | awk '$1 ~ /^d/ { print $6 }' | grep -q '^\./etc/tollgate/rules\.d/$' ||
  fail "the package does not ship /etc/tollgate/rules.d/"

mkdir "$tmp/x"
dpkg-deb -x "$deb" "$tmp/x"
for svc in tollgated tollgate-filter; do
  exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$tmp/x/usr/lib/systemd/system/$svc.service")
  [[ $exe == /usr/sbin/$svc && -x $tmp/x$exe ]] || fail "$svc.service runs '$exe', not the packaged program"
done
for page in man1/tollgate.1 man8/tollgated.8 man8/tollgate-filter.8 man5/tollgate.toml.5 \
  man5/tollgate-rules.5; do
  warnings=$(zcat "$tmp/x/usr/share/man/$page.gz" | LC_ALL=C.UTF-8 MANWIDTH=80 \
    man --warnings -l - 2>&1 >/dev/null || true)
  [[ -z $warnings ]] || fail "$page: $warnings"
done
pass "units name the packaged programs; man pages render without warnings"

if ((failures > 0)); then
  echo "packaging.deb: $failures failure(s)" >&2
  exit 1
fi
echo "packaging.deb: all checks passed"
