# Bulk import (issue 20), sourced by scripts/bench: part of `data`, or alone
# as `scripts/bench import [PHONES]`.
#
# PHONES phones with one line each, as one CSV, through the release binary:
#   - into an empty PostgreSQL database (baseline: psql \copy of the same
#     rows into a plain table, in the same run), with peak RSS;
#   - the same file again: rows written counted from pg_stat_user_tables
#     and the change log, not from our own report;
#   - 10,000 phones changed (their line's display name): the import's time,
#     and when a second node (`dialtone serve` on the same database) serves
#     the last changed phone's new file, counted from the import process's
#     end (only that phone is polled during the import, so the poller does
#     not slow it), then a sweep checks every changed phone;
#   - `dialtone export` to JSON and to CSV, each file imported again (no
#     row may be written);
#   - into SQLite, then the same file again (0 rows).
# For the baseline and the first import it also prints the CPU time the
# whole machine was busy: over the core count, the least time the step
# could take.
# IMPORT_ORDER=shuffled writes the file in random order and changes phones'
# own rows too; IMPORT_ROWS=varied writes heavier rows of every family
# (see below). The files come from scripts/lib/bench_import_rows.py.
# IMPORT_ROUNDS (3) repeats the baseline and the first import in pairs, each
# first import into a new database, and the same file again and 10,000
# changed as often (a change, then back: both write 10,000 lines); the
# report gives every round and the median, the ratio being the median of
# each pair's own. One pair on a shared 2-core machine moved by more than
# the targets' margins (3.3-6.1 s for the same first import within minutes).

bench_import() {
    # BENCH_BIN: a binary already built (then nothing is built).
    local phones="${1:-1000000}" d="$SERVICES_DIR/import" bin="${BENCH_BIN:-target/release/dialtone}"
    mkdir -p "$d"
    chmod 755 "$d"
    if [ -z "${BENCH_BIN:-}" ]; then
        log "building (release)"
        cargo build --release -q --bin dialtone -p dialtone
    fi
    local pg="${DIALTONE_TEST_PG_URL%/postgres}/import_bench" out="$d/results.jsonl"
    local rounds="${IMPORT_ROUNDS:-3}"
    case "$rounds" in [1-9] | [1-9][0-9]) ;; *) log "IMPORT_ROUNDS is a number from 1 to 99, not $rounds"; return 2 ;; esac
    : >"$out"
    DIALTONE_SECRETS__KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    export DIALTONE_SECRETS__KEY DIALTONE_PROVISIONING__BASE_URL="http://prov.example.net"
    # IMPORT_ORDER=shuffled: the same phones in a seeded random order, with
    # a `variables` column, and half of the 10,000 changes made to the
    # phone's own row (its NTP server, which its file shows) instead of its
    # line: a file not sorted by MAC, and stored phones that move, which
    # the default file (in MAC order, only lines changed) never has.
    # IMPORT_ROWS=varied: heavier rows nearer a real fleet's, in random
    # order (scripts/lib/bench_import_rows.py says what they hold).
    local order="${IMPORT_ORDER:-mac}" rows="${IMPORT_ROWS:-plain}"
    case "$order" in mac|shuffled) ;; *) log "IMPORT_ORDER is mac or shuffled, not $order"; return 2 ;; esac
    case "$rows" in plain) ;; varied) order=shuffled ;; *) log "IMPORT_ROWS is plain or varied, not $rows"; return 2 ;; esac
    log "writing $phones phones (one line each, $rows rows) as CSV, in $order order"
    python3 scripts/lib/bench_import_rows.py "$d" "$phones" "$order" "$rows"
    local size
    size="$(stat -c %s "$d/phones.csv")"
    # A new database with its schema and tenants, before each first import.
    fresh_database() {
        psql "$DIALTONE_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS import_bench" -c "CREATE DATABASE import_bench" >/dev/null
        "$bin" --database-url "$pg" migrate >/dev/null
        "$bin" --database-url "$pg" import "$d/tenants.csv" >/dev/null
    }

    # CPU-seconds the whole machine spent busy (every process: the client,
    # PostgreSQL's backend, its parallel workers and WAL writer), from
    # /proc/stat: on N cores no step can finish in less than its busy time
    # over N, which is what bounds the first import against its baseline.
    busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat; }

    baseline() { # round
        log "baseline: psql \\copy of the same rows into a plain table (round $1 of $rounds)"
        psql "$pg" -qc "CREATE TABLE copy_baseline ($(cat "$d/columns.sql"))"
        local t0 t1 b0 b1
        sleep 1
        b0="$(busy)"
        t0="$(date +%s.%N)"
        psql "$pg" -qc "\\copy copy_baseline FROM '$d/phones.csv' WITH (FORMAT csv, HEADER true)"
        t1="$(date +%s.%N)"
        b1="$(busy)"
        echo "{\"step\": \"copy\", \"round\": $1, \"seconds\": $(awk "BEGIN { print $t1 - $t0 }"), \"cpu_busy\": $(awk "BEGIN { print $b1 - $b0 }")}" >>"$out"
        psql "$pg" -qc "DROP TABLE copy_baseline"
    }

    # Rows written to the mirrored tables and the change log, from PostgreSQL's own counters.
    written() {
        psql "$pg" -Atc "SELECT pg_stat_force_next_flush()" >/dev/null 2>&1 || true
        psql "$pg" -Atc "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables \
            WHERE relname IN ('tenants', 'phones', 'lines', 'directory_entries', 'directory_sources', 'change_log')"
    }
    timed_import() { # step file database round
        local step="$1" file="$2" before after s b0 b1 f
        sleep 1
        before="$(written)"
        b0="$(busy)"
        s="$( { /usr/bin/time -f '%e %M %U %S' "$bin" --database-url "$3" import "$file" >"$d/$step.out"; } 2>&1 | tail -1)"
        # The commit is the last thing before the process exits.
        date +%s.%N >"$d/$step.end"
        b1="$(busy)"
        sleep 1
        after="$(written)"
        read -r -a f <<<"$s" # seconds, max RSS (KiB), user and system CPU
        echo "{\"step\": \"$step\", \"round\": $4, \"seconds\": ${f[0]}, \"max_rss_kb\": ${f[1]}, \"written\": $((after - before)), \"file_bytes\": $size, \"cpu_busy\": $(awk "BEGIN { print $b1 - $b0 }"), \"cpu_client\": $(awk "BEGIN { print ${f[2]} + ${f[3]} }")}" >>"$out"
    }
    local r
    for r in $(seq 1 "$rounds"); do
        fresh_database
        baseline "$r"
        log "import into PostgreSQL: first (round $r of $rounds)"
        timed_import first "$d/phones.csv" "$pg" "$r"
    done
    # As PostgreSQL's manual advises after a bulk load, and as a database
    # that has been serving a while is: otherwise autovacuum's first pass
    # over the 2,000,000 new rows (and the first reads setting their hint
    # bits) may fall into a later timed step, and the import uses both cores.
    log "VACUUM (ANALYZE) after the bulk load"
    psql "$pg" -qc "VACUUM (ANALYZE) phones, lines"
    for r in $(seq 1 "$rounds"); do
        log "import into PostgreSQL: the same file again (round $r of $rounds)"
        timed_import again "$d/phones.csv" "$pg" "$r"
    done

    log "second node on the same database"
    local api http pid
    api="$(free_port)"; http="$(free_port)"
    DIALTONE_DATABASE__URL="$pg" "$bin" serve --listen "127.0.0.1:$api" --provisioning-listen "127.0.0.1:$http" \
        --tftp-listen "127.0.0.1:$(free_port)" 2>"$d/serve.log" &
    pid=$!
    local ready=""
    for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && ready=1 && break; sleep 0.1; done
    [ -n "$ready" ] || { log "the second node never became ready: $(tail -1 "$d/serve.log")"; kill "$pid"; return 1; }
    log "10,000 phones changed: import, and the second node's files polled until each is new"
    python3 - "$d" "$http" >"$d/poll.json" <<'PY' &
import sys, time, threading, http.client, json
d, port = sys.argv[1], sys.argv[2]
# Per changed phone: the path of its own file, and what that file shows once the change is served.
targets = [l.split(" ", 1) for l in open(f"{d}/changed.txt").read().splitlines()]
seen = {}
# Each thread sweeps its pending phones over one keep-alive connection
# until each shows its new value; a phone's time is when a sweep first saw it.
def poll(chunk):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    pending = [(path, marker.encode()) for path, marker in chunk]
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        left = []
        for path, marker in pending:
            try:
                conn.request("GET", f"/{path}")
                body = conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
                body = b""
            if marker in body:
                seen[path] = time.time()
            else:
                left.append((path, marker))
        pending = left
# While the import runs, only the phone the file changes last is watched
# (a request every 10 ms), so a sweep does not compete with the import for
# the cores; once it shows its new value, every changed phone is checked.
# At 2 ms this loop took ~10% of a core, which the import (on both cores
# since it reads phones and lines at once) paid for: ~0.15 s.
sentinel = None
path, marker = targets[-1]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
deadline = time.time() + 300
while sentinel is None and time.time() < deadline:
    try:
        conn.request("GET", f"/{path}")
        if marker.encode() in conn.getresponse().read():
            sentinel = time.time()
    except (OSError, http.client.HTTPException):
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    time.sleep(0.01)
chunks = [targets[i::8] for i in range(8)]
threads = [threading.Thread(target=poll, args=(c,)) for c in chunks]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"served": len(seen), "targets": len(targets), "sentinel": sentinel,
                  "first": min(seen.values()) if seen else None, "last": max(seen.values()) if seen else None}))
PY
    local poller=$!
    sleep 1
    timed_import changed "$d/phones-changed.csv" "$pg" 1
    wait "$poller" || true
    echo "{\"step\": \"served\", \"commit\": $(cat "$d/changed.end"), \"poll\": $(cat "$d/poll.json")}" >>"$out"
    # More rounds, the node still serving: back to the first file (the
    # same 10,000 lines change again), then to the changed one.
    for r in $(seq 2 "$rounds"); do
        log "10,000 phones changed back, and again (round $r of $rounds)"
        timed_import changed "$d/phones.csv" "$pg" "$r"
        timed_import changed "$d/phones-changed.csv" "$pg" "$r"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true

    # The fleet written back out (`dialtone export`), and each export
    # imported again: other files of the same phones (every column, MACs
    # spelled as dialtone spells them, JSON), which must write no row.
    local fmt e
    for fmt in json csv; do
        log "export to $fmt, then that file imported again"
        e="$( { /usr/bin/time -f '%e %M' "$bin" --database-url "$pg" export "$d/exported.$fmt"; } 2>&1 | tail -1)"
        echo "{\"step\": \"export\", \"format\": \"$fmt\", \"seconds\": ${e% *}, \"max_rss_kb\": ${e#* }, \"file_bytes\": $(stat -c %s "$d/exported.$fmt")}" >>"$out"
        timed_import "reimport-$fmt" "$d/exported.$fmt" "$pg" 1
    done

    log "import into SQLite"
    local sq="sqlite://$d/import.db"
    "$bin" --database-url "$sq" migrate >/dev/null
    "$bin" --database-url "$sq" import "$d/tenants.csv" >/dev/null
    local s
    s="$( { /usr/bin/time -f '%e %M' "$bin" --database-url "$sq" import "$d/phones.csv" >"$d/sqlite.out"; } 2>&1 | tail -1)"
    echo "{\"step\": \"sqlite\", \"seconds\": ${s% *}, \"max_rss_kb\": ${s#* }}" >>"$out"
    # Its comparison reads every stored phone and line (through rusqlite on
    # the import's own connection; through sqlx rows it was 17.9 of 18.8 s).
    log "import into SQLite: the same file again"
    s="$( { /usr/bin/time -f '%e %M' "$bin" --database-url "$sq" import "$d/phones.csv" >"$d/sqlite-again.out"; } 2>&1 | tail -1)"
    local changed
    changed="$(tail -1 "$d/sqlite-again.out" | grep -oE '[+~-][0-9]+' | tr -d '+~-' | paste -sd+ | bc)"
    echo "{\"step\": \"sqlite-again\", \"seconds\": ${s% *}, \"max_rss_kb\": ${s#* }, \"written\": $changed}" >>"$out"

    # The same phones as one JSON document: its phones are packed as they
    # are parsed, and its element positions found in one pass (a JSON
    # import once took three minutes for 40,000 phones, and 7x its file).
    log "the same phones as JSON: first import into PostgreSQL"
    python3 - "$d/phones.csv" "$d/phones.json" <<'PY'
import csv, json, sys
phones = {}
with open(sys.argv[1], newline="") as f:
    for row in csv.DictReader(f):
        phone = phones.setdefault(row["mac"], {k: row[k] for k in ("tenant", "mac", "family", "model", "label", "http_user", "http_password") if row.get(k)})
        if row.get("variables"):
            phone["variables"] = json.loads(row["variables"])
        if row.get("extension"):
            line = {k: row[k] for k in ("extension", "display_name", "auth_user", "password", "registrar", "proxy") if row.get(k)}
            if row.get("line_settings"):
                line["settings"] = json.loads(row["line_settings"])
            phone.setdefault("lines", []).append((int(row.get("line") or 1), line))
with open(sys.argv[2], "w") as out:
    out.write('{"phones": [\n')
    for i, phone in enumerate(phones.values()):
        if "lines" in phone:
            phone["lines"] = [l for _, l in sorted(phone["lines"], key=lambda p: p[0])]
        out.write((",\n" if i else "") + json.dumps(phone))
    out.write("\n]}\n")
PY
    fresh_database
    size="$(stat -c %s "$d/phones.json")"
    timed_import json "$d/phones.json" "$pg" 1
    unset DIALTONE_SECRETS__KEY DIALTONE_PROVISIONING__BASE_URL

    python3 - "$out" "$phones" "$order" "$rows" <<'PY'
import json, os, statistics, sys
steps = {}
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    steps.setdefault(r["step"], []).append(r)
n = int(sys.argv[2])
copies, firsts, agains, changes = (steps[k] for k in ("copy", "first", "again", "changed"))
served, sqlite, from_json = steps["served"][0], steps["sqlite"][0], steps["json"][0]
sqlite_again = steps["sqlite-again"][0]
med = statistics.median
def secs(runs):
    return ", ".join(f"{r['seconds']:.2f}" for r in runs)
ratios = [f["seconds"] / c["seconds"] for c, f in zip(copies, firsts)]
copy, first = med(r["seconds"] for r in copies), med(r["seconds"] for r in firsts)
again, changed = med(r["seconds"] for r in agains), med(r["seconds"] for r in changes)
rounds = len(firsts)
print()
print(f"bulk import, {n:,} phones with one line each ({firsts[0]['file_bytes'] / 1e6:.1f} MB of CSV, {sys.argv[4]} rows, "
      f"{sys.argv[3]} order); {rounds} round(s), medians, each round's seconds after the target")
print(f"{'run':<34} {'seconds':>8} {'phones/s':>10} {'rows written':>13}  target")
copy_label = "psql \\copy into a plain table"
print(f"{copy_label:<34} {copy:>8.2f} {n / copy:>10,.0f} {'':>13}  (baseline) [{secs(copies)}]")
print(f"{'PostgreSQL, first':<34} {first:>8.2f} {n / first:>10,.0f} {max(r['written'] for r in firsts):>13,}  "
      f">= 50,000/s, <= 3x copy: {med(ratios):.2f}x (each round's ratio: {', '.join(f'{x:.2f}' for x in ratios)}) [{secs(firsts)}]")
print(f"{'PostgreSQL, same file again':<34} {again:>8.2f} {n / again:>10,.0f} {max(r['written'] for r in agains):>13,}  "
      f"<= 5 s, 0 rows [{secs(agains)}]")
print(f"{'PostgreSQL, 10,000 changed':<34} {changed:>8.2f} {n / changed:>10,.0f} {max(r['written'] for r in changes):>13,}  "
      f"<= 2 s [{secs(changes)}; over 2 s in {sum(r['seconds'] > 2 for r in changes)} of {len(changes)}]")
print(f"{'SQLite, first':<34} {sqlite['seconds']:>8.2f} {n / sqlite['seconds']:>10,.0f} {'':>13}  >= 20,000/s")
print(f"{'SQLite, same file again':<34} {sqlite_again['seconds']:>8.2f} {n / sqlite_again['seconds']:>10,.0f} "
      f"{sqlite_again['written']:>13,}  0 rows (rows the import reports writing)")
print(f"{'PostgreSQL, first, from JSON':<34} {from_json['seconds']:>8.2f} {n / from_json['seconds']:>10,.0f} "
      f"{from_json['written']:>13,}  >= 50,000/s; peak RSS {from_json['max_rss_kb'] / 1024:.0f} MiB for "
      f"{from_json['file_bytes'] / 2**20:.0f} MiB of JSON ({from_json['max_rss_kb'] * 1024 / from_json['file_bytes']:.2f}x)")
for x in steps["export"]:
    again_x = steps[f"reimport-{x['format']}"][0]
    print(f"{'export, ' + x['format'].upper():<34} {x['seconds']:>8.2f} {n / x['seconds']:>10,.0f} {'':>13}  "
          f"peak RSS {x['max_rss_kb'] / 1024:.0f} MiB, file {x['file_bytes'] / 2**20:.0f} MiB")
    print(f"{'  that file imported again':<34} {again_x['seconds']:>8.2f} {n / again_x['seconds']:>10,.0f} "
          f"{again_x['written']:>13,}  0 rows")
p = served["poll"]
lag = (p["last"] - served["commit"]) * 1000 if p["last"] else float("nan")
sentinel_lag = (p["sentinel"] - served["commit"]) * 1000 if p.get("sentinel") else float("nan")
print(f"second node: the phone the file changes last served its new file {sentinel_lag:.0f} ms after the import "
      f"process ended (target <= 1000 ms); the sweep that followed found {p['served']:,} of {p['targets']:,} changed "
      f"phones new, the last seen {lag:.0f} ms after. A node publishes a committed import in one swap (ARCHITECTURE.md, "
      f"Invariants), so every change is served from the moment the last one is; the sweep's later times are its own pace")
cores = os.cpu_count() or 1
floors = [f["cpu_busy"] / cores / c["seconds"] for c, f in zip(copies, firsts)]
print(f"machine CPU busy (medians): \\copy {med(r['cpu_busy'] for r in copies):.2f} s; first import "
      f"{med(r['cpu_busy'] for r in firsts):.2f} s, of which the import process {med(r['cpu_client'] for r in firsts):.2f} s "
      f"and the rest mostly PostgreSQL's. On {cores} cores no first import can take less than its busy time over {cores}: "
      f"that floor against its round's copy was {', '.join(f'{x:.2f}x' for x in floors)}")
busy_changed = med(r["cpu_busy"] for r in changes)
print(f"10,000 changed: machine CPU busy {busy_changed:.2f} s (median), of which the import process "
      f"{med(r['cpu_client'] for r in changes):.2f} s: on {cores} cores at least {busy_changed / cores:.2f} s")
rss = max(r["max_rss_kb"] for r in firsts)
print(f"peak RSS: first {rss / 1024:.0f} MiB, again {max(r['max_rss_kb'] for r in agains) / 1024:.0f} MiB, "
      f"SQLite {sqlite['max_rss_kb'] / 1024:.0f} MiB; file {firsts[0]['file_bytes'] / 2**20:.0f} MiB "
      f"(target: growth <= 2x the file: {rss * 1024 / firsts[0]['file_bytes']:.2f}x, the largest round)")
PY
}
