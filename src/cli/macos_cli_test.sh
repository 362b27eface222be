#!/usr/bin/env bash
# End to end for `tollgate macos`: the real binary scaffolds a tree; check reports the missing
# profiles (exit 1), is clean with a profile signed by a throwaway openssl certificate (exit 0,
# signature verified), names the one mutation made to a copy, and exits 3 / 2 on unreadable
# input / bad usage. Usage: macos_cli_test.sh PATH/TO/tollgate
set -euo pipefail
tollgate=$1
tmp=$(mktemp -d /tmp/tollgate-macos-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# run EXPECTED_EXIT CMD...: runs CMD with stdout to $tmp/out.json, checks its exit code.
run() {
  local want=$1; shift
  set +e
  "$@" >"$tmp/out.json" 2>"$tmp/err.txt"
  local got=$?
  set -e
  [[ $got -eq $want ]] || { cat "$tmp/out.json" "$tmp/err.txt" >&2; fail "$* exited $got, want $want"; }
}

run 0 "$tollgate" --help
run 2 "$tollgate" macos
run 2 "$tollgate" macos scaffold --team-id abc --bundle-id com.example.tollgate --out "$tmp/bad"
run 2 "$tollgate" macos check "$tmp" --distribution app-store

run 0 "$tollgate" macos scaffold --team-id ABCDE12345 --bundle-id com.example.tollgate \
  --out "$tmp/src" --json
[[ $(jq -r .app_group "$tmp/out.json") == ABCDE12345.com.example.tollgate ]] || fail "app_group"
[[ $(jq -r .analysis_service "$tmp/out.json") == ABCDE12345.com.example.tollgate.analysis ]] ||
  fail "analysis_service"
[[ -f $tmp/src/README.md && -f $tmp/src/LaunchDaemons/com.example.tollgate.daemon.plist ]] ||
  fail "scaffold files"
run 2 "$tollgate" macos scaffold --team-id ABCDE12345 --bundle-id com.example.tollgate \
  --out "$tmp/src"
grep -q -- "--force" "$tmp/err.txt" || fail "overwrite refusal should mention --force"

# No profile: exactly the two profile-missing findings (app and extension).
run 1 "$tollgate" macos check "$tmp/src" --json
[[ $(jq -r '.clean' "$tmp/out.json") == false ]] || fail "clean without profile"
[[ $(jq -r '[.findings[].id] | unique | join(",")' "$tmp/out.json") == profile-missing ]] ||
  fail "want only profile-missing: $(cat "$tmp/out.json")"
[[ $(jq '.findings | length' "$tmp/out.json") -eq 2 ]] || fail "want 2 findings"
jq -e '.findings[0] | .file and .what and .why and .fix' "$tmp/out.json" >/dev/null ||
  fail "finding fields"

# A throwaway signer and a Developer ID style profile covering both bundles.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tollgate-test \
  -days 2 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
expires=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)
cat >"$tmp/profile.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Name</key><string>Tollgate CLI test</string>
  <key>TeamIdentifier</key><array><string>ABCDE12345</string></array>
  <key>ExpirationDate</key><date>$expires</date>
  <key>ProvisionsAllDevices</key><true/>
  <key>Entitlements</key>
  <dict>
    <key>com.apple.application-identifier</key><string>ABCDE12345.*</string>
    <key>com.apple.security.application-groups</key>
    <array><string>ABCDE12345.com.example.tollgate</string></array>
  </dict>
</dict>
</plist>
PLIST
openssl cms -sign -nodetach -binary -outform DER -in "$tmp/profile.plist" \
  -signer "$tmp/cert.pem" -inkey "$tmp/key.pem" -out "$tmp/embedded.provisionprofile"

run 0 "$tollgate" macos check "$tmp/src" --profile "$tmp/embedded.provisionprofile" \
  --cert "$tmp/cert.pem" --json
[[ $(jq -r '.clean' "$tmp/out.json") == true && $(jq '.findings | length' "$tmp/out.json") -eq 0 ]] ||
  fail "scaffold + profile should be clean: $(cat "$tmp/out.json")"
run 0 "$tollgate" macos check "$tmp/src" --profile "$tmp/embedded.provisionprofile"
grep -q "no findings" "$tmp/out.json" || fail "human output"

# The profile alone.
run 0 "$tollgate" macos check "$tmp/embedded.provisionprofile" --cert "$tmp/cert.pem" --json
[[ $(jq -r '.kind' "$tmp/out.json") == provisioning-profile ]] || fail "profile kind"
[[ $(jq -r '.facts.signature' "$tmp/out.json") == valid ]] || fail "profile signature"

# One mutation: the daemon starts at load.
cp -r "$tmp/src" "$tmp/broken"
sed -i 's|<key>Label</key>|<key>RunAtLoad</key><true/><key>Label</key>|' \
  "$tmp/broken/LaunchDaemons/com.example.tollgate.daemon.plist"
run 1 "$tollgate" macos check "$tmp/broken" --profile "$tmp/embedded.provisionprofile" --json
[[ $(jq -r '[.findings[].id] | join(",")' "$tmp/out.json") == daemon-not-on-demand ]] ||
  fail "want daemon-not-on-demand: $(cat "$tmp/out.json")"
run 1 "$tollgate" macos check "$tmp/broken" --profile "$tmp/embedded.provisionprofile"
grep -q "daemon-not-on-demand" "$tmp/out.json" || fail "human output names the finding"

# Unreadable input: exit 3 with a message.
run 3 "$tollgate" macos check "$tmp/does-not-exist" --json
jq -e '.error' "$tmp/out.json" >/dev/null || fail "error JSON"
printf 'garbage' >"$tmp/garbage.bin"
run 3 "$tollgate" macos check "$tmp/garbage.bin"
grep -q "garbage.bin" "$tmp/err.txt" || fail "error names the file"
echo "macos cli: all checks passed"
