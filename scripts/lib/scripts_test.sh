#!/usr/bin/env bash
# Checks of scripts/lib/services.sh and build_disk.sh themselves, on
# stand-ins (no apt, no real service, no real disk): a service that never
# becomes ready fails with its log's tail, an existing policy-rc.d is put
# back, the newest PostgreSQL is found whatever its version; the test
# build's disk plan; fuzzers' caches are not committed. scripts/test runs
# this first.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/services.sh

tmp="$(mktemp -d /tmp/dialtone-scripts-test.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "scripts test: $*" >&2; exit 1; }

# wait_ready: fails after its tries, showing the end of the log.
printf 'starting\nFATAL: could not bind\n' >"$tmp/service.log"
if out="$(wait_ready stand-in "$tmp/service.log" 2 false 2>&1)"; then fail "wait_ready succeeded"; fi
grep -q "stand-in never became ready" <<<"$out" || fail "no failure line: $out"
grep -q "FATAL: could not bind" <<<"$out" || fail "no log tail: $out"
wait_ready stand-in "$tmp/service.log" 2 true || fail "wait_ready failed a ready service"

# apt_install_no_start: a refusing policy-rc.d during the install, the
# previous one back afterwards, or none if there was none.
as_root() { "$@"; }
apt_install() { seen_policy="$(cat "$POLICY_RC")"; }
POLICY_RC="$tmp/policy-rc.d"
printf '#!/bin/sh\nexit 0\n' >"$POLICY_RC"
apt_install_no_start stand-in
grep -q "exit 101" <<<"$seen_policy" || fail "no refusing policy-rc.d during the install"
[ "$(cat "$POLICY_RC")" = "$(printf '#!/bin/sh\nexit 0\n')" ] || fail "policy-rc.d not restored"
rm "$POLICY_RC"
apt_install_no_start stand-in
[ ! -e "$POLICY_RC" ] || fail "a policy-rc.d left behind"
trap 'rm -rf "$tmp"' EXIT
# ...and by the EXIT trap when the install fails midway (set -e exits).
printf 'mine\n' >"$POLICY_RC"
if POLICY_RC="$POLICY_RC" bash -c 'set -euo pipefail; . scripts/lib/services.sh
    as_root() { "$@"; }; apt_install() { return 1; }
    apt_install_no_start stand-in; echo "went on past a failed install"' >&2; then
    fail "a failed install succeeded"
fi
[ "$(cat "$POLICY_RC")" = mine ] || fail "policy-rc.d not restored after a failed install"

# find_pg_bin: the newest version present, 9.6 < 15 < 17.
for v in 9.6 15 17; do mkdir -p "$tmp/pg/$v/bin" && touch "$tmp/pg/$v/bin/initdb" "$tmp/pg/$v/bin/pg_ctl" && chmod +x "$tmp/pg/$v/bin/"*; done
[ "$(PG_LIB_DIR="$tmp/pg" find_pg_bin)" = "$tmp/pg/17/bin" ] || fail "find_pg_bin: $(PG_LIB_DIR="$tmp/pg" find_pg_bin)"
rm -rf "$tmp/pg/17"
[ "$(PG_LIB_DIR="$tmp/pg" find_pg_bin)" = "$tmp/pg/15/bin" ] || fail "find_pg_bin without 17"

# plan_build_disk: incremental compilation off under CI or a short disk,
# left alone when the caller chose; a warning when the build may not fit.
plan() {
    (
        . scripts/lib/build_disk.sh
        stand_in_free="$1"
        target_free_mib() { echo "$stand_in_free"; }
        unset CI CARGO_INCREMENTAL
        [ -z "$2" ] || export CI="$2"
        [ -z "$3" ] || export CARGO_INCREMENTAL="$3"
        plan_build_disk 2>"$tmp/plan.log"
        echo "${CARGO_INCREMENTAL-unset}"
    )
}
[ "$(plan 50000 "" "")" = unset ] || fail "incremental turned off on a roomy disk"
[ "$(plan 50000 true "")" = 0 ] || fail "incremental left on under CI"
[ "$(plan 5000 "" "")" = 0 ] || fail "incremental left on with 5000 MiB free"
[ "$(plan 5000 "" 1)" = 1 ] || fail "an explicit CARGO_INCREMENTAL overridden"
plan 2000 "" "" >/dev/null
grep -q "only 2000 MiB are free" "$tmp/plan.log" || fail "no warning with 2000 MiB free: $(cat "$tmp/plan.log")"
[ "$(plan unknown "" "")" = unset ] || fail "an unreadable df changed the build"

# Caches of the tools scripts/fuzz runs stay out of the repository.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git check-ignore -q --no-index .schemathesis/default/cache || fail ".schemathesis/ is not ignored"
    [ -z "$(git ls-files .schemathesis)" ] || fail ".schemathesis/ is committed: git rm -r --cached .schemathesis"
fi

echo "==> scripts checks OK"
