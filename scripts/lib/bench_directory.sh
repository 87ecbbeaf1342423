# Directory imports, sourced by scripts/bench: `scripts/bench directory
# [ENTRIES]`, also part of `data`.
#
# ENTRIES directory entries (default 200,000: the per-tenant quota) of one
# tenant, as one CSV, through the release binary (BENCH_BIN runs another
# build, to compare with an older one):
#   - into an empty PostgreSQL database (baseline: psql \copy of the same
#     rows into a plain table, in the same run);
#   - the same file again (rows written counted from pg_stat_user_tables);
#   - 5% of the entries changed (their name), with a node (`dialtone
#     serve`) on the database: the import's time, then how long until the
#     node publishes the change (its `dialtone_mirror_version` moves) and
#     the CPU it spent applying it, during which no other change lands on
#     that node;
#   - the node's lookup index of the tenant (a lookup key, /v1/lookup):
#     the first lookup's wait for it (a whole build: the baseline), the
#     wait after the 5% change is published, and after one entry edited
#     through the API, each with the CPU the node spent;
#   - the node restarted with `lookup.warm_directories` on (the default;
#     the steps above run with it off, so the first lookup waits for a
#     whole build) and no readings kept: the warm-up's build, then the
#     probe's lookup;
#   - restarted once more, with the readings that build kept beside the
#     snapshot: how long after /readyz the probe's lookup first names it,
#     and the warm-up's build;
#   - into SQLite: first, again, changed.
# Names, companies and numbers are seeded random (the UK drama ranges and
# 555-01XX), not the sequence the tests use.

bench_directory() {
    local entries="${1:-200000}" d="$SERVICES_DIR/directory" bin="${BENCH_BIN:-target/release/dialtone}"
    mkdir -p "$d"
    rm -f "$d"/directory-readings-*.bin
    chmod 755 "$d"
    if [ -z "${BENCH_BIN:-}" ]; then
        log "building (release)"
        cargo build --release -q --bin dialtone -p dialtone
    fi
    local pg="${DIALTONE_TEST_PG_URL%/postgres}/directory_bench" out="$d/results.jsonl"
    : >"$out"
    DIALTONE_SECRETS__KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    export DIALTONE_SECRETS__KEY DIALTONE_PROVISIONING__BASE_URL="http://prov.example.net"
    log "writing $entries directory entries of one tenant as CSV"
    python3 - "$d" "$entries" <<'PY'
import random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(2026)
first = ["Ada", "Bea", "Cyd", "Dov", "Eli", "Fay", "Gus", "Hal", "Ida", "Jon", "Kai", "Liv", "Max", "Nia", "Oz", "Pia"]
last = ["Example", "Sample", "Testa", "Placeholder", "Fictive", "Demo", "Mock", "Dummy"]
with open(f"{d}/tenants.csv", "w") as f:
    f.write("slug,name,default_region\nbigco,Big Company,GB\nother,Other Company,US\n")
rows = []
for i in range(n):
    name = f"{rng.choice(first)} {rng.choice(last)}-{rng.randrange(10**6):06d}"
    company = rng.choice(["", "Example Ltd", "Sample plc", "Demo GmbH"])
    work = f"+44 20 7946 {rng.randrange(1000):04d}"
    mobile = f"+1 202-555-01{rng.randrange(100):02d}" if rng.random() < 0.6 else ""
    rows.append([f"bigco", f"crm-{rng.randrange(16**10):010x}-{i}", name, company, work, mobile])
# The probe the lookup steps ask for: the one entry with this number.
rows[0][4] = "+44 113 496 0000"
header = "tenant,external_id,name,company,work,mobile\n"
def write(path, rows):
    with open(path, "w") as f:
        f.write(header)
        for r in rows:
            f.write(",".join(r) + "\n")
write(f"{d}/entries.csv", rows)
for r in rows[::20]:
    r[2] = r[2] + " (moved)"
write(f"{d}/entries-changed.csv", rows)
with open(f"{d}/probe", "w") as f:
    f.write(f"{rows[0][1]}\n{rows[0][2].removesuffix(' (moved)')}\n{rows[0][2]}\n")
with open(f"{d}/columns.sql", "w") as f:
    f.write("tenant TEXT, external_id TEXT, name TEXT, company TEXT, work TEXT, mobile TEXT")
PY
    psql "$DIALTONE_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS directory_bench" -c "CREATE DATABASE directory_bench" >/dev/null
    "$bin" --database-url "$pg" migrate >/dev/null
    "$bin" --database-url "$pg" import "$d/tenants.csv" >/dev/null

    written() {
        psql "$pg" -Atc "SELECT pg_stat_force_next_flush()" >/dev/null 2>&1 || true
        psql "$pg" -Atc "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables \
            WHERE relname IN ('directory_entries', 'change_log')"
    }
    timed() { # step file database
        local before after s
        sleep 1
        before="$(written)"
        s="$( { /usr/bin/time -f '%e %M' "$bin" --database-url "$3" import "$2" >"$d/$1.out"; } 2>&1 | tail -1)"
        date +%s.%N >"$d/$1.end"
        sleep 1
        after="$(written)"
        echo "{\"step\": \"$1\", \"seconds\": ${s% *}, \"max_rss_kb\": ${s#* }, \"written\": $((after - before)), \"report\": \"$(tail -1 "$d/$1.out" | grep -oE 'directory entries [^,]*')\"}" >>"$out"
    }

    log "baseline: psql \\copy of the same rows into a plain table"
    psql "$pg" -qc "CREATE TABLE copy_baseline ($(cat "$d/columns.sql"))"
    local t0 t1
    sleep 1
    t0="$(date +%s.%N)"
    psql "$pg" -qc "\\copy copy_baseline FROM '$d/entries.csv' WITH (FORMAT csv, HEADER true)"
    t1="$(date +%s.%N)"
    echo "{\"step\": \"copy\", \"seconds\": $(awk "BEGIN { print $t1 - $t0 }")}" >>"$out"
    psql "$pg" -qc "DROP TABLE copy_baseline"

    log "import into PostgreSQL: first, then the same file again"
    timed first "$d/entries.csv" "$pg"
    psql "$pg" -qc "VACUUM (ANALYZE) directory_entries" >/dev/null
    timed again "$d/entries.csv" "$pg"

    log "5% changed, with a node on the database"
    local api pid ready="" v0 ticks0 ticks1 moved="" admin key
    admin="$("$bin" --database-url "$pg" token create --scope global-admin --name bench 2>/dev/null)"
    key="$("$bin" --database-url "$pg" token create --scope lookup --tenant bigco --name bench 2>/dev/null)"
    api="$(free_port)"
    node() { # warm_directories
        ready=""
        DIALTONE_DATABASE__URL="$pg" DIALTONE_MIRROR__SNAPSHOT_PATH="$d/node.snapshot" \
            DIALTONE_LOOKUP__WARM_DIRECTORIES="$1" "$bin" serve \
            --listen "127.0.0.1:$api" --provisioning-listen "127.0.0.1:$(free_port)" \
            --tftp-listen "127.0.0.1:$(free_port)" 2>"$d/serve.log" &
        pid=$!
        for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && ready=1 && break; sleep 0.02; done
        [ -n "$ready" ] || { log "the node never became ready: $(tail -1 "$d/serve.log")"; kill "$pid"; return 1; }
    }
    node false
    version() { curl -s -m 5 "http://127.0.0.1:$api/metrics" | awk '/^dialtone_mirror_version / { print $2 }'; }
    ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
    # Seconds until the probe's lookup names $1, and the node's CPU meanwhile;
    # null, and a failure, if it never does.
    indexed() {
        local s t c seconds=null
        s="$(date +%s.%N)"
        t="$(ticks)"
        for _ in $(seq 1 6000); do
            if [ "$(curl -s -m 5 "http://127.0.0.1:$api/v1/lookup?number=%2B441134960000&key=$key")" = "$1" ]; then
                seconds="$(awk "BEGIN { print $(date +%s.%N) - $s }")"
                break
            fi
            sleep 0.02
        done
        c="$(ticks)"
        echo "{\"step\": \"$2\", \"seconds\": $seconds, \"cpu_s\": $(awk -v hz="$(getconf CLK_TCK)" "BEGIN { print ($c - $t) / hz }")}" >>"$out"
        [ "$seconds" != null ] || { log "$2: the probe's lookup never answered \"$1\""; return 1; }
    }
    local missing=0
    indexed "$(sed -n 2p "$d/probe")" index-first || missing=1
    v0="$(version)"
    ticks0="$(ticks)"
    rm -f "$d/moved"
    # Polled from before the import starts: the node may publish while
    # `timed` still sleeps after it.
    (
        for _ in $(seq 1 6000); do
            v="$(version)"
            if [ -n "$v" ] && [ "$v" != "$v0" ]; then date +%s.%N >"$d/moved"; break; fi
            sleep 0.05
        done
    ) &
    local poller=$!
    timed changed "$d/entries-changed.csv" "$pg"
    wait "$poller" || true
    [ -s "$d/moved" ] && moved="$(cat "$d/moved")"
    ticks1="$(ticks)"
    echo "{\"step\": \"node\", \"end\": $(cat "$d/changed.end"), \"moved\": ${moved:-null}, \"cpu_s\": $(awk -v hz="$(getconf CLK_TCK)" "BEGIN { print ($ticks1 - $ticks0) / hz }")}" >>"$out"
    indexed "$(sed -n 3p "$d/probe")" index-changed || missing=1
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        -d '{"name": "Edited Probe", "numbers": [{"number": "+44 113 496 0000", "kind": "work"}]}' \
        "http://127.0.0.1:$api/v1/tenants/bigco/directory/$(sed -n 1p "$d/probe")" || log "the edit was refused"
    indexed "Edited Probe" index-edit || missing=1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # The warm-up's build time from the node's log; null, and a failure,
    # without the line (a missing line is no 0 s build).
    warmed() { # step
        local warm_ms="" seconds=null
        for _ in $(seq 1 1200); do
            warm_ms="$(grep -o 'built ahead of lookups.*' "$d/serve.log" | grep -oE 'ms=[0-9]+' | head -1 || true)"
            [ -n "$warm_ms" ] && break
            sleep 0.05
        done
        [ -z "$warm_ms" ] || seconds="$(awk "BEGIN { print ${warm_ms#ms=} / 1000 }")"
        echo "{\"step\": \"$1\", \"seconds\": $seconds}" >>"$out"
        [ "$seconds" != null ] || { log "$1: the node never logged its warm-up build"; return 1; }
    }
    log "the node restarted with warm_directories on, no readings kept"
    rm -f "$d"/directory-readings-*.bin
    node true
    warmed warm-up || missing=1
    indexed "Edited Probe" index-warm || missing=1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    log "the node restarted again, its last build's readings kept"
    node true
    indexed "Edited Probe" index-ready-kept || missing=1
    warmed warm-up-kept || missing=1
    kill "$pid"; wait "$pid" 2>/dev/null || true

    log "import into SQLite: first, again, 5% changed"
    local sq="sqlite://$d/directory.db"
    "$bin" --database-url "$sq" migrate >/dev/null
    "$bin" --database-url "$sq" import "$d/tenants.csv" >/dev/null
    timed sqlite-first "$d/entries.csv" "$sq"
    timed sqlite-again "$d/entries.csv" "$sq"
    timed sqlite-changed "$d/entries-changed.csv" "$sq"
    unset DIALTONE_SECRETS__KEY DIALTONE_PROVISIONING__BASE_URL

    python3 - "$out" "$entries" <<'PY'
import json, sys
steps = {}
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    steps[r["step"]] = r
n = int(sys.argv[2])
copy = steps["copy"]["seconds"]
print()
print(f"directory import, {n:,} entries of one tenant (CSV)")
print(f"{'run':<28} {'seconds':>8} {'entries/s':>10} {'vs copy':>8}  rows written (PostgreSQL's counters)  report")
label = "psql \\copy, plain table"
print(f"{label:<28} {copy:>8.2f} {n / copy:>10,.0f} {'':>8}  (baseline)")
for step in ("first", "again", "changed", "sqlite-first", "sqlite-again", "sqlite-changed"):
    r = steps[step]
    rows = f"{r['written']:,}" if not step.startswith("sqlite") else "-"
    print(f"{step:<28} {r['seconds']:>8.2f} {n / r['seconds']:>10,.0f} {r['seconds'] / copy:>7.2f}x  {rows:>34}  {r['report']}")
node = steps["node"]
lag = f"{node['moved'] - node['end']:.2f} s" if node["moved"] else "never (within 300 s of the import starting)"
print(f"node: published the 5% change {lag} after the import process ended, spending {node['cpu_s']:.2f} s of CPU "
      "(no other change lands on a node while it applies one)")
# A step that never happened is null: shown as such, and the bench fails.
never = [step for step, r in steps.items() if "seconds" in r and r["seconds"] is None]
took = lambda r: "never" if r["seconds"] is None else f"{r['seconds']:.2f} s"
def ratio(r, base):
    return "     -" if r["seconds"] is None or not base["seconds"] else f"{r['seconds'] / base['seconds']:>6.3f}"
first = steps["index-first"]
print(f"the node's lookup index of the tenant, until a lookup answers (first: a whole build, the baseline):")
for step, what in (("index-first", "first lookup"), ("index-changed", "after the 5% change was published"),
                   ("index-edit", "after one entry edited (API)"),
                   ("index-warm", "restarted, after its warm-up")):
    r = steps[step]
    print(f"  {what:<36} {took(r):>9} {ratio(r, first)}x  CPU {r['cpu_s']:.2f} s")
print(f"  (the restarted node's warm-up, warm_directories on, built the index {took(steps['warm-up'])} after its start "
      "with no lookup asking; with it off, the first lookup after a start waits for the whole build, however late it comes)")
kept = steps["index-ready-kept"]
print(f"  restarted again, the readings kept: a lookup from /readyz answered after {took(kept)} "
      f"({ratio(kept, first).strip()}x), the warm-up built the index {took(steps['warm-up-kept'])} after its start")
if never:
    sys.exit("bench directory FAILED: never measured: " + ", ".join(never))
PY
    return "$missing"
}
