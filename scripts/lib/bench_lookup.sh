# Caller-name lookup bench, sourced by scripts/bench. Needs services.sh.
#
# Hits: wrk with keep-alive against /v1/lookup on a release `dialtone serve`
# (1,000 cached numbers in rotation), with /healthz on the same server as
# the baseline: the ratio is what a lookup costs on top of the HTTP stack.
# Misses: lookups that go to LDAP (slapd on loopback), against a direct
# ldap3 search for the same number on an open connection.

bench_lookup() {
    command -v wrk >/dev/null 2>&1 || apt_install wrk
    start_slapd
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    cargo build --release -q -p dialtone-directory --example lookup_bench
    local d="$SERVICES_DIR/lookup" bin=target/release/dialtone out="$SERVICES_DIR/lookup.jsonl"
    mkdir -p "$d"
    export DIALTONE_DATABASE__URL="sqlite://$d/bench.db"
    python3 - "$d/data.json" <<'PY'
import json, sys
entries = [{"tenant": "bench", "external_id": f"e{i}", "name": f"Contact {i}",
            "numbers": [{"number": f"+1 (555) 010-{1000 + i}"}]} for i in range(1000)]
json.dump({"tenants": [{"slug": "bench", "name": "Bench", "default_region": "US"}],
           "directory": entries}, open(sys.argv[1], "w"))
PY
    "$bin" import "$d/data.json" >/dev/null
    local key api
    key="$("$bin" token create --scope lookup --tenant bench --name bench 2>/dev/null)"
    api="127.0.0.1:$(free_port)"
    # One tenant's key at wrk's rate: past lookup.tenant_rate this would
    # measure 429s, not cache hits.
    DIALTONE_LOOKUP__TENANT_RATE=1000000 DIALTONE_LOOKUP__TENANT_BURST=1000000 \
    "$bin" serve --listen "$api" --provisioning-listen "127.0.0.1:$(free_port)" \
        --tftp-listen "127.0.0.1:$(free_port)" 2>"$d/serve.log" &
    local pid=$!
    local i
    for i in $(seq 1 100); do
        curl -sf "http://$api/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    cat >"$d/rotate.lua" <<'LUA'
local key = os.getenv("LOOKUP_KEY")
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/lookup?number=1555010" .. (1000 + counter % 1000) .. "&key=" .. key)
end
LUA
    local seconds="${LOOKUP_SECONDS:-10}" conns="${LOOKUP_CONNECTIONS:-64}"
    log "warming the cache"
    LOOKUP_KEY="$key" wrk -t2 -c"$conns" -d3s -s "$d/rotate.lua" "http://$api" >/dev/null
    log "cache hits through HTTP: wrk -t2 -c$conns -d${seconds}s (keep-alive), then /healthz"
    LOOKUP_KEY="$key" wrk -t2 -c"$conns" -d"${seconds}s" --latency -s "$d/rotate.lua" "http://$api" >"$d/hits.txt"
    wrk -t2 -c"$conns" -d"${seconds}s" --latency "http://$api/healthz" >"$d/healthz.txt"
    curl -s "http://$api/v1/lookup?number=15550101042&key=$key" >"$d/sample.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    log "misses through LDAP vs direct LDAP search"
    target/release/examples/lookup_bench in-process 1000000 >>"$out"
    target/release/examples/lookup_bench ldap-miss "$DIALTONE_TEST_LDAP_URL" "${LOOKUP_MISSES:-2000}" >>"$out"
    stop_slapd
    python3 - "$d" "$out" <<'PY'
import json, re, sys
d, out = sys.argv[1], sys.argv[2]
def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    p = {q: ms(*re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", text, re.M).groups()) for q in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, p["50"], p["99"], int(errors.group(1)) if errors else 0
sample = open(f"{d}/sample.txt").read()
assert sample == "Contact 42", f"unexpected lookup answer {sample!r}"
hits, base = wrk(f"{d}/hits.txt"), wrk(f"{d}/healthz.txt")
rows = [json.loads(l) for l in open(out) if l.strip()]
inproc = next(r for r in rows if r["step"] == "in-process")
miss = next(r for r in rows if r["step"] == "ldap-miss")
print()
print("caller-name lookups, cache hits through HTTP (keep-alive, wrk on the same 2 cores)")
print(f"{'endpoint':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
print(f"{'/v1/lookup (1,000 numbers, hits)':<34} {hits[0]:>9.0f} {hits[1]:>8.2f} {hits[2]:>8.2f} {hits[3]:>8}")
print(f"{'/healthz (baseline)':<34} {base[0]:>9.0f} {base[1]:>8.2f} {base[2]:>8.2f} {base[3]:>8}")
print(f"ratio lookups/s / healthz/s: {hits[0] / base[0]:.2f}   target: >= 50,000 lookups/s")
print(f"in process: {inproc['hit_us']:.2f} us per cache hit; normalizing alone {inproc['normalize_us']:.2f} us (memoized on the hot path)")
print()
print(f"cache misses through LDAP, {miss['lookups']} lookups of one number")
print(f"{'measure':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for name, m in (("lookup, cache invalidated each time", miss["ours"]),
                ("LDAP source alone (all spellings, no cache)", miss["source"]),
                ("direct ldap3 search, one open connection", miss["direct"])):
    print(f"{name:<44} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} {m['max_ms']:>8.3f}")
print(f"ratio p50 lookup / direct search: {miss['ours']['p50_ms'] / miss['direct']['p50_ms']:.2f}")
PY
}
