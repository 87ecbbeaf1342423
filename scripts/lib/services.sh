# Throwaway test services: PostgreSQL and slapd on free loopback ports, in
# temp dirs, stopped on exit. Sourced by scripts/test and scripts/bench.
# Exports DIALTONE_TEST_PG_URL, DIALTONE_TEST_PG_BIN, DIALTONE_TEST_LDAP_URL
# and friends for the tests.

SERVICES_DIR=""
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >&2
}

find_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; fi
    done | sort -V | tail -1
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

ensure_packages() {
    local want=()
    [ -n "$(find_pg_bin)" ] || want+=(postgresql-15)
    command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || want+=(slapd)
    command -v ldapsearch >/dev/null 2>&1 || want+=(ldap-utils)
    command -v curl >/dev/null 2>&1 || want+=(curl)
    command -v atftp >/dev/null 2>&1 || want+=(atftp)
    command -v tftp >/dev/null 2>&1 || want+=(tftp-hpa)
    # TFTP servers phlem's client is tested against.
    [ -x /usr/sbin/in.tftpd ] || want+=(tftpd-hpa)
    [ -x /usr/sbin/dnsmasq ] || want+=(dnsmasq-base)
    # The admin page's browser test: Debian's Chromium, driven by node.
    [ -x /usr/bin/chromium ] || want+=(chromium)
    command -v node >/dev/null 2>&1 || want+=(nodejs npm)
    if [ ${#want[@]} -gt 0 ]; then
        log "installing ${want[*]}"
        # Keep the package's own slapd/postgres from starting: we run ours.
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        apt_install "${want[@]}"
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /var/lib/postgresql postgres
    ensure_atftpd
    ensure_playwright
}

# playwright-core (no browser of its own: it drives /usr/bin/chromium), at a
# pinned version, in a cache dir the browser test runs its script from.
ensure_playwright() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/dialtone-test/ui" version=1.65.1
    if [ ! -f "$dir/node_modules/playwright-core/package.json" ] ||
        ! grep -q "\"version\": \"$version\"" "$dir/node_modules/playwright-core/package.json"; then
        log "installing playwright-core $version into $dir"
        mkdir -p "$dir"
        (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent \
            "playwright-core@$version" >&2)
    fi
    export DIALTONE_TEST_UI_DIR="$dir"
}

# atftpd conflicts with tftpd-hpa as a package, so its binary is unpacked
# from the .deb into a cache dir instead of installed.
ensure_atftpd() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/dialtone-test/atftpd"
    if [ -x /usr/sbin/atftpd ]; then
        export DIALTONE_TEST_ATFTPD=/usr/sbin/atftpd
        return
    fi
    if [ ! -x "$dir/usr/sbin/atftpd" ]; then
        log "unpacking atftpd into $dir"
        mkdir -p "$dir"
        [ -n "$apt_updated" ] || { as_root apt-get update -qq >&2; apt_updated=1; }
        (cd "$dir" && apt-get download atftpd >&2 2>/dev/null && dpkg-deb -x atftpd_*.deb . && rm -f atftpd_*.deb)
    fi
    export DIALTONE_TEST_ATFTPD="$dir/usr/sbin/atftpd"
}

# Runs a PostgreSQL binary as the postgres user when we are root (initdb and
# postgres refuse to run as root).
pg_as() {
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    else
        "$@"
    fi
}

start_postgres() {
    local bin port dir
    bin="$(find_pg_bin)"
    port="$(free_port)"
    dir="$SERVICES_DIR/pg"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir" "$SERVICES_DIR"
    log "starting PostgreSQL ($bin) on 127.0.0.1:$port"
    pg_as "$bin/initdb" -D "$dir/data" -U dialtone --auth=trust -E UTF8 --no-sync >"$SERVICES_DIR/initdb.log" 2>&1 \
        || { cat "$SERVICES_DIR/initdb.log" >&2; return 1; }
    pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=300 -c synchronous_commit=off" \
        start >&2
    export DIALTONE_TEST_PG_URL="postgres://dialtone@127.0.0.1:$port/postgres"
    export DIALTONE_TEST_PG_BIN="$bin"
    export DIALTONE_TEST_PG_DATA="$dir/data"
}

stop_postgres() {
    if [ -n "${DIALTONE_TEST_PG_DATA:-}" ] && [ -d "$DIALTONE_TEST_PG_DATA" ]; then
        pg_as "$DIALTONE_TEST_PG_BIN/pg_ctl" -D "$DIALTONE_TEST_PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

start_slapd() {
    local port dir slapd
    slapd="$(command -v slapd || echo /usr/sbin/slapd)"
    port="$(free_port)"
    dir="$SERVICES_DIR/ldap"
    mkdir -p "$dir/db"
    cat >"$dir/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $dir/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw secret
directory $dir/db
index objectClass eq
CONF
    # The test directory every LDAP test reads (tests that need to stop or
    # reconfigure a server start their own from the same file).
    "$(dirname "$slapd")/slapadd" -f "$dir/slapd.conf" -l "$ROOT/directory/tests/data/directory.ldif" >"$dir/slapadd.log" 2>&1 \
        || { cat "$dir/slapadd.log" >&2; return 1; }
    log "starting slapd on 127.0.0.1:$port"
    "$slapd" -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" >"$dir/slapd.log" 2>&1
    local i
    for i in $(seq 1 50); do
        ldapsearch -x -H "ldap://127.0.0.1:$port/" -b "" -s base >/dev/null 2>&1 && break
        sleep 0.2
    done
    export DIALTONE_TEST_LDAP_URL="ldap://127.0.0.1:$port/"
    export DIALTONE_TEST_LDAP_BASE="dc=example,dc=com"
    export DIALTONE_TEST_LDAP_BIND_DN="cn=admin,dc=example,dc=com"
    export DIALTONE_TEST_LDAP_BIND_PASSWORD="secret"
    SLAPD_PIDFILE="$dir/slapd.pid"
}

stop_slapd() {
    if [ -n "${SLAPD_PIDFILE:-}" ] && [ -f "$SLAPD_PIDFILE" ]; then
        kill "$(cat "$SLAPD_PIDFILE")" 2>/dev/null || true
    fi
}

start_services() {
    SERVICES_DIR="$(mktemp -d /tmp/dialtone-test.XXXXXX)"
    chmod 755 "$SERVICES_DIR"
    trap stop_services EXIT
    start_postgres
    start_slapd
}

stop_services() {
    stop_slapd
    stop_postgres
    [ -n "$SERVICES_DIR" ] && rm -rf "$SERVICES_DIR"
}
