# Mirrored LDAP source bench (issue 18), sourced by scripts/bench. Needs
# services.sh.
#
# A generated directory of MIRROR_ENTRIES (100,000) entries in a slapd of
# its own, logging every operation (`-d stats`), so that searches can be
# counted. Measured:
# - the full sync of a release `dialtone serve` (its own `last_full_ms`),
#   against the baseline of slapd returning the same pages to a plain paged
#   search (`ldapsearch -E pr=500/noprompt`, best of 3, after a warm-up);
# - memory per mirrored entry: the server's RSS before the source exists
#   and after its first sync, over the entries mirrored;
# - misses: in process (the lookup service over the synced mirror, µs per
#   miss), and through HTTP with wrk against /healthz; slapd's SRCH lines
#   before and after all of them must be equal.

bench_mirror_slapd() {
    local dir="$1" ldif="$2" port="$3" slapd
    slapd="$(command -v slapd || echo /usr/sbin/slapd)"
    mkdir -p "$dir/db"
    cat >"$dir/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $dir/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 4294967296
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw secret
directory $dir/db
index objectClass eq
index modifyTimestamp eq
CONF
    "$(dirname "$slapd")/slapadd" -q -f "$dir/slapd.conf" -l "$ldif" >"$dir/slapadd.log" 2>&1 \
        || { cat "$dir/slapadd.log" >&2; return 1; }
    # In the foreground with `-d stats`: each operation is a line of its log.
    "$slapd" -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" -d stats 2>"$dir/stats.log" &
    MIRROR_SLAPD_PID=$!
    local i
    for i in $(seq 1 100); do
        ldapsearch -x -H "ldap://127.0.0.1:$port/" -b "" -s base >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench slapd did not start" >&2
    return 1
}

srch_count() {
    grep -c ' SRCH base=' "$1" || true
}

rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# Whether a directory source's JSON (the admin API's) shows a finished
# full sync: its time and its duration.
mirror_synced() {
    python3 -c 'import json, sys
m = json.loads(sys.argv[1] or "{}").get("mirror") or {}
sys.exit(0 if m.get("last_full_sync") and m.get("last_full_ms") is not None else 1)' "$1" 2>/dev/null
}

bench_mirror() {
    command -v wrk >/dev/null 2>&1 || apt_install wrk
    local entries="${MIRROR_ENTRIES:-100000}"
    local d="$SERVICES_DIR/mirror" bin="$PWD/target/release/dialtone"
    local out="$d/results.jsonl" port ldap base
    mkdir -p "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    cargo build --release -q -p dialtone-directory --example mirror_bench
    target/release/examples/mirror_bench gen-ldif "$entries" "$d/directory.ldif"
    port="$(free_port)"
    ldap="ldap://127.0.0.1:$port/"
    base="ou=people,dc=example,dc=com"
    log "loading $entries entries into a slapd of the bench's own"
    bench_mirror_slapd "$d/ldap" "$d/directory.ldif" "$port"

    local filter='(&(objectClass=inetOrgPerson)(|(telephoneNumber=*)(mobile=*)(homePhone=*)))'
    local attrs=(displayName cn telephoneNumber mobile homePhone modifyTimestamp)
    local search=(ldapsearch -x -LLL -o ldif-wrap=no -H "$ldap" -D cn=admin,dc=example,dc=com -w secret -b "$base"
        -E pr=500/noprompt "$filter" "${attrs[@]}")
    log "baseline: slapd's paged search (warm-up, then best of 3)"
    "${search[@]}" >"$d/warm.ldif"
    local got
    got="$(grep -c '^dn: ' "$d/warm.ldif")"
    local best=999999 t0 t1 ms i
    for i in 1 2 3; do
        t0=$(date +%s%N)
        "${search[@]}" >/dev/null
        t1=$(date +%s%N)
        ms=$(((t1 - t0) / 1000000))
        [ "$ms" -lt "$best" ] && best=$ms
    done
    echo "{\"step\":\"baseline\",\"ms\":$best,\"entries\":$got}" >>"$out"

    export DIALTONE_DATABASE__URL="sqlite://$d/bench.db"
    export DIALTONE_LOOKUP__SOURCE_NETWORKS='["public", "127.0.0.0/8"]'
    echo '{"tenants":[{"slug":"bench","name":"Bench","default_region":"US"}]}' >"$d/tenant.json"
    "$bin" import "$d/tenant.json" >/dev/null
    local admin key api
    admin="$("$bin" token create --scope global-admin --name bench 2>/dev/null)"
    key="$("$bin" token create --scope lookup --tenant bench --name pbx 2>/dev/null)"
    api="127.0.0.1:$(free_port)"
    # wrk on one tenant's key: past lookup.tenant_rate this would measure
    # 429s, not lookups.
    DIALTONE_LOOKUP__TENANT_RATE=1000000 DIALTONE_LOOKUP__TENANT_BURST=1000000 \
    "$bin" serve --listen "$api" --provisioning-listen "127.0.0.1:$(free_port)" \
        --tftp-listen "127.0.0.1:$(free_port)" 2>"$d/serve.log" &
    local pid=$! ready=""
    for i in $(seq 1 100); do
        curl -sf "http://$api/readyz" >/dev/null 2>&1 && ready=1 && break
        sleep 0.1
    done
    [ -n "$ready" ] || { log "dialtone serve never became ready: $(tail -1 "$d/serve.log")"; kill "$pid"; return 1; }
    sleep 1
    local rss_before rss_after
    rss_before="$(rss_kib "$pid")"
    log "dialtone: full sync of the mirrored source"
    # No incremental syncs: every search slapd logs from here on is either
    # the full sync or a lookup's, and lookups must send none.
    curl -sf -X POST "http://$api/v1/tenants/bench/directory-sources" \
        -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        -d "{\"name\":\"ad\",\"kind\":\"ldap\",\"secret\":\"secret\",\"settings\":{\"url\":\"$ldap\",
             \"bind_dn\":\"cn=admin,dc=example,dc=com\",\"base_dn\":\"$base\",\"filter\":\"(objectClass=inetOrgPerson)\",
             \"number_attributes\":[\"telephoneNumber\",\"mobile\",\"homePhone\"],\"name_attributes\":[\"displayName\",\"cn\"],
             \"mode\":\"mirror\",\"page_size\":500,\"incremental_interval_s\":0}}" >/dev/null
    local status="{}" synced=""
    for i in $(seq 1 1200); do
        status="$(curl -sf -H "Authorization: Bearer $admin" "http://$api/v1/tenants/bench/directory-sources/ad" || echo '{}')"
        mirror_synced "$status" && synced=1 && break
        sleep 0.1
    done
    if [ -z "$synced" ]; then
        log "the full sync did not finish within 120 s: $status"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        return 1
    fi
    sleep 1
    rss_after="$(rss_kib "$pid")"
    echo "{\"step\":\"sync\",\"status\":$status,\"rss_before_kib\":$rss_before,\"rss_after_kib\":$rss_after}" >>"$out"

    local searches_before searches_after
    searches_before="$(srch_count "$d/ldap/stats.log")"
    log "misses through HTTP: wrk, then /healthz"
    # A miss is a 200 with an empty body; wrk only counts statuses, so one
    # is checked in full first (a refused key would be a 401 each time).
    local answer
    answer="$(curl -s -o "$d/miss.body" -w '%{http_code}' "http://$api/v1/lookup?number=15550110000&key=$key")"
    if [ "$answer" != 200 ] || [ -s "$d/miss.body" ]; then
        log "a miss answered $answer: $(head -c 200 "$d/miss.body")"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        return 1
    fi
    cat >"$d/miss.lua" <<'LUA'
local key = os.getenv("LOOKUP_KEY")
local counter = 0
request = function()
  counter = counter + 1
  -- Each number once (1 555 011 0000 up): a cached "no" would measure the cache.
  return wrk.format("GET", "/v1/lookup?number=1555" .. string.format("%07d", 110000 + counter % 2000000) .. "&key=" .. key)
end
LUA
    local seconds="${LOOKUP_SECONDS:-5}"
    LOOKUP_KEY="$key" wrk -t2 -c16 -d"${seconds}s" --latency -s "$d/miss.lua" "http://$api" >"$d/misses.txt"
    wrk -t2 -c16 -d"${seconds}s" --latency "http://$api/healthz" >"$d/healthz.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    sleep 0.5
    searches_after="$(srch_count "$d/ldap/stats.log")"
    echo "{\"step\":\"searches\",\"before\":$searches_before,\"after\":$searches_after}" >>"$out"
    log "misses in process (the example syncs its own mirror first)"
    local flavor
    for flavor in multi-thread current-thread; do
        target/release/examples/mirror_bench misses "$ldap" "${MIRROR_MISSES:-200000}" "$d/ldap/stats.log" "$flavor" \
            >>"$out" 2>"$d/inproc.log" || { cat "$d/inproc.log" >&2; return 1; }
    done
    kill "$MIRROR_SLAPD_PID"; wait "$MIRROR_SLAPD_PID" 2>/dev/null || true
    MIRROR_SLAPD_PID=""

    python3 - "$d" "$out" "$entries" <<'PY'
import json, re, sys
d, out, generated = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [json.loads(l) for l in open(out) if l.strip()]
rows = {r["step"]: r for r in lines}
inproc = {r["runtime"]: r for r in lines if r["step"] == "misses"}
def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p = {q: float(v) * unit[u] for q in ("50", "99")
         for v, u in [re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", text, re.M).groups()]}
    # wrk counts answers other than 2xx/3xx, and connections that failed,
    # but exits 0 either way.
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return rps, p["50"], p["99"], errors
m = rows["sync"]["status"].get("mirror") or {}
base = rows["baseline"]
full_ms = m.get("last_full_ms")
failed = []
if full_ms is None:
    failed.append("no full sync (last_full_ms missing)")
    full_ms = float("nan")
entries = m.get("entries") or 0
rss = (rows["sync"]["rss_after_kib"] - rows["sync"]["rss_before_kib"]) * 1024
print()
print(f"mirrored LDAP source: {generated:,} generated entries, {base['entries']:,} with a number attribute, "
      f"{entries:,} mirrored (numbers that read as numbers in region US)")
print(f"{'measure':<48} {'value':>12}  target")
print(f"{'full sync, dialtone (last_full_ms)':<48} {full_ms:>10.0f} ms  <= 5000 ms")
print(f"{'paged search alone, ldapsearch pr=500 (best of 3)':<48} {base['ms']:>10.0f} ms")
print(f"{'ratio sync / paged search':<48} {full_ms / max(base['ms'], 1):>12.2f}")
print(f"{'RSS of serve, after sync - before':<48} {rss / 2**20:>9.1f} MiB")
print(f"{'per mirrored entry':<48} {rss / max(entries, 1):>10.0f} B")
for runtime, label in (("multi-thread", " (serve's)"), ("current-thread", "")):
    inp = inproc.get(runtime, {})
    print(f"{f'miss in process, {runtime} runtime{label}':<48} {inp.get('miss_us', float('nan')):>9.2f} us  <= 100 us")
    print(f"{'  of which reading the number (libphonenumber)':<48} {inp.get('normalize_us', float('nan')):>9.2f} us")
    print(f"{'  one number again, cache dropped each time':<48} {inp.get('memoized_miss_us', float('nan')):>9.2f} us")
misses, healthz = wrk(f"{d}/misses.txt"), wrk(f"{d}/healthz.txt")
print(f"{'misses through HTTP (wrk -c16), req/s':<48} {misses[0]:>12.0f}  p50 {misses[1]:.2f} ms, p99 {misses[2]:.2f} ms")
print(f"{'/healthz baseline, req/s':<48} {healthz[0]:>12.0f}  p50 {healthz[1]:.2f} ms, p99 {healthz[2]:.2f} ms")
print(f"{'ratio misses/s / healthz/s':<48} {misses[0] / healthz[0]:>12.2f}")
print(f"{'HTTP misses not 2xx, or failed (wrk)':<48} {misses[3]:>12}  must be 0")
s = rows["searches"]
http_searches = s["after"] - s["before"]
inproc_searches = sum(r["searches"] for r in inproc.values())
print(f"{'slapd SRCH lines during HTTP misses':<48} {http_searches:>12}  must be 0")
print(f"{'slapd SRCH lines during in-process misses':<48} {inproc_searches:>12}  must be 0")
if misses[3]:
    failed.append(f"{misses[3]} HTTP misses not answered 2xx")
if healthz[3]:
    failed.append(f"{healthz[3]} /healthz requests not answered 2xx")
if http_searches or inproc_searches:
    failed.append(f"slapd searched during misses ({http_searches} HTTP, {inproc_searches} in process)")
if set(inproc) != {"multi-thread", "current-thread"}:
    failed.append(f"in-process misses measured on {sorted(inproc)} only")
if failed:
    sys.exit("bench mirror FAILED: " + "; ".join(failed))
PY
}
