#!/usr/bin/env bash
# The .deb's life cycle, in a root directory of its own (dpkg --root, the
# maintainer scripts run chrootless with DPKG_ROOT set): install, upgrade
# to a rebuilt package with a higher version, remove, purge, checking the
# files at each step; and the package's contents and lintian (check_deb).
# Packages the debug binary the test suite built (no release build), so
# build that first; scripts/test runs this after the tests. Needs root.
set -euo pipefail
self="$(realpath "$0")"
cd "$(dirname "$self")/../.."
. scripts/lib/package.sh

[ "$(id -u)" = 0 ] || { echo "package_test.sh: needs root (dpkg --root)" >&2; exit 1; }
# The maintainer scripts talk to systemd when /run/systemd/system exists:
# hide it, so that a test run never restarts the host's services.
if [ -d /run/systemd/system ] && [ -z "${DIALTONE_PACKAGE_TEST_UNSHARED:-}" ]; then
    exec env DIALTONE_PACKAGE_TEST_UNSHARED=1 unshare --mount --propagation private \
        sh -c 'mount -t tmpfs none /run/systemd && exec "$0"' "$self"
fi

started=$(date +%s)
work="$(mktemp -d /tmp/dialtone-package.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
fail() { echo "package test: $*" >&2; exit 1; }
exists() { for p in "$@"; do [ -e "$root$p" ] || [ -L "$root$p" ] || fail "/$p missing ($step)"; done; }
absent() { for p in "$@"; do [ ! -e "$root$p" ] && [ ! -L "$root$p" ] || fail "$p still there ($step)"; done; }
status() { dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Version} ${db:Status-Abbrev}' dialtone 2>/dev/null || true; }
# --force-depends: the root holds no systemd or libc package to satisfy them.
dpkg_root() {
    dpkg --root="$root" --log=/dev/null --force-script-chrootless --force-depends --no-triggers "$@" </dev/null >&2
}

# check_credentials_drop_in ROOT DROP_IN: the example drop-in passes
# `systemd-analyze verify` with the packaged unit (which exits 0 on lines it
# ignores, so any complaint naming the drop-in fails), and every credential
# it loads is one the default config or the drop-in reads from the unit's
# credentials folder.
check_credentials_drop_in() {
    local root="$1" drop_in="$2" units="$work/units" said id
    [ -f "$drop_in" ] || fail "no example drop-in $drop_in"
    mkdir -p "$units/dialtone.service.d"
    sed "s#/usr/bin/dialtone#$root/usr/bin/dialtone#g" "$root$unit" >"$units/dialtone.service"
    cp "$drop_in" "$units/dialtone.service.d/credentials.conf"
    if command -v systemd-analyze >/dev/null 2>&1; then
        said="$(systemd-analyze verify "$units/dialtone.service" 2>&1)" || fail "systemd-analyze verify: $said"
        ! grep -q "credentials.conf" <<<"$said" || fail "systemd-analyze on the example drop-in: $said"
    fi
    local readers
    readers="$(cat "$root/etc/dialtone/dialtone.toml"; grep -v '^#' "$drop_in")"
    for id in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$drop_in"); do
        grep -q "/run/credentials/dialtone.service/$id\b" <<<"$readers" \
            || fail "nothing reads the credential $id the example drop-in loads"
    done
    [ -n "${id:-}" ] || fail "the example drop-in loads no credential"
}

ensure_cargo_deb
v1="$(default_deb_version)"
v2="${v1%-*}-2"
deb1="$(build_deb dev "$work/v1" "$v1" --fast)"
deb2="$(build_deb dev "$work/v2" "$v2" --fast)"
check_deb "$deb1"

mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
touch "$root/var/lib/dpkg/status"
unit=/usr/lib/systemd/system/dialtone.service
wants=/etc/systemd/system/multi-user.target.wants/dialtone.service
installed=(/usr/bin/dialtone "$unit" /etc/dialtone/dialtone.toml /usr/share/dialtone/monitoring/alerts.yml
    /usr/share/bash-completion/completions/dialtone /usr/share/man/man1/dialtone.1.gz)
state=(/var/lib/dialtone /var/lib/private/dialtone/dialtone.db /var/lib/private/dialtone/dialtone.key)

step=install
dpkg_root -i "$deb1"
[ "$(status)" = "$v1 ii " ] || fail "status after install: $(status)"
exists "${installed[@]}" "$wants"
[ "$(readlink "$root$wants")" = "$unit" ] || fail "the unit is not enabled: $(readlink "$root$wants")"
"$root/usr/bin/dialtone" --config "$root/etc/dialtone/dialtone.toml" check-config >/dev/null
# The service's transient user reads /etc/dialtone as any local user does:
# nobody but root may change it, and its secrets come as credentials.
[ "$(stat -c '%a %U:%G' "$root/etc/dialtone" "$root/etc/dialtone/dialtone.toml" | tr '\n' ' ')" \
    = "755 root:root 644 root:root " ] || fail "/etc/dialtone's modes: $(stat -c '%n %a %U:%G' "$root"/etc/dialtone{,/dialtone.toml})"
! grep -q "Environment=DIALTONE_SECRETS__KEY" "$root/etc/dialtone/dialtone.toml" \
    || fail "dialtone.toml puts the key in the unit's environment, which any local user reads"
check_credentials_drop_in "$root" "$root/usr/share/doc/dialtone/examples/credentials.conf"
# What the service would leave: systemd keeps a DynamicUser's state in
# /var/lib/private with a symlink beside. The packaged binary creates it,
# with the packaged config and the database moved into the root.
mkdir -p "$root/var/lib/private/dialtone"
ln -s private/dialtone "$root/var/lib/dialtone"
"$root/usr/bin/dialtone" --config "$root/etc/dialtone/dialtone.toml" \
    --database-url "sqlite://$root/var/lib/dialtone/dialtone.db" demo >/dev/null
exists "${state[@]}"
# The default config's comments name the key file the code creates.
grep -q "/var/lib/dialtone/$(basename "$(ls "$root"/var/lib/private/dialtone/*.key)")" \
    "$root/etc/dialtone/dialtone.toml" || fail "dialtone.toml names another key file"
echo "# a local edit" >>"$root/etc/dialtone/dialtone.toml"

step=upgrade
dpkg_root -i "$deb2"
[ "$(status)" = "$v2 ii " ] || fail "status after upgrade: $(status)"
exists "${installed[@]}" "$wants" "${state[@]}"
grep -q "^# a local edit$" "$root/etc/dialtone/dialtone.toml" || fail "the upgrade lost a local edit of the config"
[ "$(cat "$root/usr/share/doc/dialtone/changelog.Debian.gz" | gzip -dc | head -1)" = "dialtone ($v2) unstable; urgency=medium" ] \
    || fail "the upgrade did not replace the package's files"

step=remove
dpkg_root -r dialtone
[ "$(status)" = "$v2 rc " ] || fail "status after remove: $(status)"
absent /usr/bin/dialtone "$unit" /usr/share/man/man1/dialtone.1.gz
# The conffile, with its edit, and the state stay for a reinstall.
exists /etc/dialtone/dialtone.toml "${state[@]}"

step=purge
dpkg_root -P dialtone
[ -z "$(status)" ] || [ "$(status)" = " un " ] || fail "status after purge: $(status)"
absent /etc/dialtone /var/lib/dialtone /var/lib/private/dialtone
left="$(cd "$root" && find . -path ./var/lib/dpkg -prune -o -name '*dialtone*' -print)"
[ -z "$left" ] || fail "purge left: $left"

echo "==> package life cycle OK ($(($(date +%s) - started)) s)"
