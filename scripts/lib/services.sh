# Throwaway test services: PostgreSQL, slapd and Kamailio on free loopback
# ports, in temp dirs, stopped on exit. Sourced by scripts/test and
# scripts/bench. Exports DIALTONE_TEST_PG_URL, DIALTONE_TEST_PG_BIN,
# DIALTONE_TEST_PG_CA, DIALTONE_TEST_LDAP_URL, DIALTONE_TEST_SIP_PROXY and
# friends for the tests.

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

# The newest PostgreSQL installed: Debian ships one version a release (15 in
# Debian 12, 17 in 13), installed as the `postgresql` package.
PG_LIB_DIR="${PG_LIB_DIR:-/usr/lib/postgresql}"
find_pg_bin() {
    local d
    for d in "$PG_LIB_DIR"/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; fi
    done | sort -V | tail -1
}

# apt_install_no_start PKG...: install packages whose daemons must not start
# (the tests run their own) behind a policy-rc.d that refuses; one that was
# there before is put back afterwards, or by the EXIT trap if the install
# fails midway.
POLICY_RC="${POLICY_RC:-/usr/sbin/policy-rc.d}"
POLICY_RC_RESTORE=""
apt_install_no_start() {
    if [ -e "$POLICY_RC" ]; then
        as_root mv "$POLICY_RC" "$POLICY_RC.dialtone-saved"
        POLICY_RC_RESTORE="$POLICY_RC.dialtone-saved"
    else
        POLICY_RC_RESTORE=remove
    fi
    trap stop_services EXIT
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY_RC" >/dev/null
    as_root chmod +x "$POLICY_RC"
    apt_install "$@"
    restore_policy_rc
}

restore_policy_rc() {
    case "$POLICY_RC_RESTORE" in
        "") ;;
        remove) as_root rm -f "$POLICY_RC" ;;
        *) as_root mv -f "$POLICY_RC_RESTORE" "$POLICY_RC" ;;
    esac
    POLICY_RC_RESTORE=""
}

# wait_ready NAME LOG TRIES CMD...: runs CMD every 0.2 s until it succeeds;
# after TRIES failures, fails showing the end of the service's LOG.
wait_ready() {
    local name="$1" logfile="$2" tries="$3" i
    shift 3
    for i in $(seq 1 "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    not_ready "$name" "$logfile"
}

# not_ready NAME LOG: says so with the end of the service's LOG; fails.
not_ready() {
    log "$1 never became ready; the end of $2:"
    tail -n 40 "$2" >&2 2>/dev/null || true
    return 1
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
    [ -n "$(find_pg_bin)" ] || want+=(postgresql)
    command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || want+=(slapd)
    command -v ldapsearch >/dev/null 2>&1 || want+=(ldap-utils)
    command -v curl >/dev/null 2>&1 || want+=(curl)
    # The test PostgreSQL's throwaway CA and server certificate.
    command -v openssl >/dev/null 2>&1 || want+=(openssl)
    command -v atftp >/dev/null 2>&1 || want+=(atftp)
    command -v tftp >/dev/null 2>&1 || want+=(tftp-hpa)
    # TFTP servers phlem's client is tested against.
    [ -x /usr/sbin/in.tftpd ] || want+=(tftpd-hpa)
    [ -x /usr/sbin/dnsmasq ] || want+=(dnsmasq-base)
    # The admin page's browser test: Debian's Chromium, driven by node.
    [ -x /usr/bin/chromium ] || want+=(chromium)
    command -v node >/dev/null 2>&1 || want+=(nodejs npm)
    # The SIP proxy and registrar resync NOTIFYs go through.
    [ -x /usr/sbin/kamailio ] || want+=(kamailio)
    # Alert rules are checked and unit-tested with promtool; the .deb with lintian.
    command -v promtool >/dev/null 2>&1 || want+=(prometheus)
    command -v lintian >/dev/null 2>&1 || want+=(lintian)
    if [ ${#want[@]} -gt 0 ]; then
        log "installing ${want[*]}"
        # Keep the packages' own slapd, postgres and prometheus from starting: we run ours.
        apt_install_no_start "${want[@]}"
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

# make_pg_certs DIR: a throwaway CA (DIR/ca.crt) and a server certificate
# it signed for 127.0.0.1 and localhost (DIR/server.crt, DIR/server.key),
# so that tests can connect with sslmode=verify-full. The CA's key is
# deleted once it has signed: nothing else should pass for this server.
make_pg_certs() {
    local dir="$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=dialtone test PostgreSQL CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        >"$dir/openssl.log" 2>&1 &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" >>"$dir/openssl.log" 2>&1 &&
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/server.ext" &&
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial 1 -days 30 \
            -extfile "$dir/server.ext" -out "$dir/server.crt" >>"$dir/openssl.log" 2>&1 \
        || { cat "$dir/openssl.log" >&2; return 1; }
    rm -f "$dir/ca.key" "$dir/server.csr" "$dir/server.ext"
    # PostgreSQL refuses a key others can read or that is not its user's.
    chmod 600 "$dir/server.key"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/server.key"
    return 0
}

start_postgres() {
    local bin port dir
    bin="$(find_pg_bin)"
    port="$(free_port)"
    dir="$SERVICES_DIR/pg"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir" "$SERVICES_DIR"
    make_pg_certs "$dir" || return 1
    log "starting PostgreSQL ($bin) on 127.0.0.1:$port"
    pg_as "$bin/initdb" -D "$dir/data" -U dialtone --auth=trust -E UTF8 --no-sync >"$SERVICES_DIR/initdb.log" 2>&1 \
        || { cat "$SERVICES_DIR/initdb.log" >&2; return 1; }
    pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=300 -c synchronous_commit=off -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
        start >&2 || not_ready PostgreSQL "$dir/log"
    export DIALTONE_TEST_PG_URL="postgres://dialtone@127.0.0.1:$port/postgres"
    export DIALTONE_TEST_PG_BIN="$bin"
    export DIALTONE_TEST_PG_DATA="$dir/data"
    export DIALTONE_TEST_PG_CA="$dir/ca.crt"
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
    # In the foreground (`-d none`), so that errors reach its log.
    "$slapd" -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" -d none >"$dir/slapd.log" 2>&1 &
    wait_ready slapd "$dir/slapd.log" 50 ldapsearch -x -H "ldap://127.0.0.1:$port/" -b "" -s base || return 1
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

# Kamailio as the platform's proxy and registrar: whoever REGISTERs (any
# domain, no auth) is kept in memory, and a request outside a dialog for a
# registered AOR is relayed to its contact, 404 otherwise. The AOR includes
# the domain, as tenants may reuse extensions under their own registrar.
start_kamailio() {
    local port dir modules
    port="$(free_port)"
    dir="$SERVICES_DIR/kamailio"
    mkdir -p "$dir/run"
    modules="$(dirname "$(dpkg -L kamailio | grep '/modules/tm\.so$' | head -1)")"
    cat >"$dir/kamailio.cfg" <<CONF
#!KAMAILIO
debug=1
log_stderror=yes
children=2
disable_tcp=yes
dns=no
rev_dns=no
auto_aliases=no
listen=udp:127.0.0.1:$port

mpath="$modules/"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "xlog.so"

modparam("usrloc", "db_mode", 0)
modparam("usrloc", "use_domain", 1)
modparam("registrar", "max_expires", 7200)
# Longer than the final-response timer a resync sender runs in tests, so
# that what fails a silent phone is the sender's own timer F.
modparam("tm", "fr_timer", 8000)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("REGISTER")) {
        if (!save("location")) {
            sl_reply_error();
        }
        exit;
    }
    if (has_totag()) {
        sl_send_reply("481", "No Such Dialog");
        exit;
    }
    if (is_method("OPTIONS") && \$rU == \$null) {
        sl_send_reply("200", "Alive");
        exit;
    }
    if (is_method("ACK")) {
        t_relay();
        exit;
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    if (!t_relay()) {
        sl_reply_error();
    }
}
CONF
    log "starting Kamailio on 127.0.0.1:$port"
    kamailio -DD -E -f "$dir/kamailio.cfg" -Y "$dir/run" -m 64 -M 8 >"$dir/kamailio.log" 2>&1 &
    KAMAILIO_PID=$!
    # Ready once it answers an OPTIONS.
    if ! python3 - "$port" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.2)
me = s.getsockname()[1]
msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKprobe{int(time.time())}\r\n"
       f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1:{port}>\r\n"
       f"Call-ID: probe-{me}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
for _ in range(100):
    s.sendto(msg.encode(), ("127.0.0.1", port))
    try:
        if s.recv(4096).startswith(b"SIP/2.0 200"):
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
PY
    then
        not_ready Kamailio "$dir/kamailio.log"
    fi
    export DIALTONE_TEST_SIP_PROXY="127.0.0.1:$port"
}

stop_kamailio() {
    if [ -n "${KAMAILIO_PID:-}" ]; then
        kill "$KAMAILIO_PID" 2>/dev/null || true
        wait "$KAMAILIO_PID" 2>/dev/null || true
        KAMAILIO_PID=""
    fi
}

start_services() {
    SERVICES_DIR="$(mktemp -d /tmp/dialtone-test.XXXXXX)"
    chmod 755 "$SERVICES_DIR"
    trap stop_services EXIT
    start_postgres
    start_slapd
    start_kamailio
}

stop_services() {
    restore_policy_rc
    stop_kamailio
    stop_slapd
    stop_postgres
    if [ -n "$SERVICES_DIR" ]; then rm -rf "$SERVICES_DIR"; fi
}
