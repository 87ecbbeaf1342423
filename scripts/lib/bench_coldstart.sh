# Cold start of `dialtone serve` (issue 20), sourced by scripts/bench: part
# of `data`, or alone as `scripts/bench coldstart [PHONES]`.
#
# PHONES phones with one line each (sync_bench seed), then the release
# binary started ROUNDS times (COLDSTART_ROUNDS, default 5) from process
# start to the first 200 on /readyz:
#   - from PostgreSQL, with no snapshot on disk;
#   - from the snapshot the previous run wrote at shutdown (which still asks
#     PostgreSQL for its meta row and the changes since the snapshot);
#   - from SQLite, with no snapshot on disk: the same rows, copied from
#     PostgreSQL by `dialtone export - | dialtone import -` (no target in
#     issue 20; SQLite is the embedded default);
#   - on an empty database, for the process's own resident memory.
# Bytes per phone = (RSS at ready - RSS at ready on the empty database) /
# phones. Baseline: sync_bench raw-scan, reading the same rows on one
# connection and building nothing, in the same rounds. COLDSTART_BIN runs
# another build of dialtone instead (to compare with an older one).
# COLDSTART_ROWS=varied seeds rows nearer a real fleet's (250 tenants, six
# vendors, labels, provisioning credentials, proxies; `sync_bench seed`).

bench_coldstart() {
    local phones="${1:-1000000}" d="$SERVICES_DIR/coldstart" bin="${COLDSTART_BIN:-target/release/dialtone}"
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    [ -n "${COLDSTART_BIN:-}" ] || cargo build --release -q --bin dialtone -p dialtone
    cargo build --release -q -p dialtone-sync --example sync_bench
    [ -n "${DIALTONE_TEST_PG_URL:-}" ] || start_postgres
    psql "$DIALTONE_TEST_PG_URL" -q -c "DROP DATABASE IF EXISTS coldstart" -c "CREATE DATABASE coldstart" \
        -c "DROP DATABASE IF EXISTS coldstart_empty" -c "CREATE DATABASE coldstart_empty" >/dev/null
    local base="${DIALTONE_TEST_PG_URL%/postgres}"
    local rows="${COLDSTART_ROWS:-plain}"
    log "seeding $phones phones (one line each, $rows rows) into PostgreSQL"
    target/release/examples/sync_bench seed "$base/coldstart" "$phones" "$rows" >/dev/null
    target/release/examples/sync_bench seed "$base/coldstart_empty" 0 "$rows" >/dev/null
    log "copying them into SQLite (export - | import -)"
    rm -f "$d/coldstart.db" "$d/coldstart.db-wal" "$d/coldstart.db-shm"
    DIALTONE_SECRETS__KEY="$(printf '5a%.0s' $(seq 32))" "$bin" --database-url "sqlite://$d/coldstart.db" migrate >/dev/null
    DIALTONE_SECRETS__KEY="$(printf '5a%.0s' $(seq 32))" "$bin" --database-url "$base/coldstart" export - |
        DIALTONE_SECRETS__KEY="$(printf '5a%.0s' $(seq 32))" "$bin" --database-url "sqlite://$d/coldstart.db" import - >/dev/null
    # Let PostgreSQL finish writing the bulk load out before timing reads.
    psql "$base/coldstart" -qc "CHECKPOINT" >/dev/null
    sleep 2
    log "cold starts of dialtone serve (${COLDSTART_ROUNDS:-5} rounds)"
    python3 - "$bin" target/release/examples/sync_bench "$d" "$base" "$phones" "${COLDSTART_ROUNDS:-5}" "$rows" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, time

binary, sync_bench, d, base, phones, rounds, rows = sys.argv[1:8]
phones, rounds = int(phones), int(rounds)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0

def readyz(port):
    """The status of GET /readyz, or None while nothing listens yet. The
    listeners are bound before the mirror loads, so a connection made early
    waits in the backlog and is answered the moment serving starts."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    try:
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        head = s.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/") else None
    except (ConnectionResetError, socket.timeout, OSError):
        return None
    finally:
        s.close()

def serve(url, snapshot, name):
    """Starts `dialtone serve`; returns seconds from before exec to the
    first 200 on /readyz, and the RSS then."""
    api, prov = free_port(), free_port()
    env = dict(os.environ,
               DIALTONE_DATABASE__URL=url,
               DIALTONE_SECRETS__KEY="5a" * 32,
               DIALTONE_MIRROR__SNAPSHOT_PATH=snapshot,
               DIALTONE_HTTP__LISTEN=f"127.0.0.1:{api}",
               DIALTONE_PROVISIONING__HTTP_LISTEN=f"127.0.0.1:{prov}",
               DIALTONE_PROVISIONING__BASE_URL="http://prov.example.net",
               DIALTONE_LOG__FILTER="info")
    log = open(f"{d}/{name}.log", "ab")
    started = time.perf_counter()
    p = subprocess.Popen([binary, "serve", "--tftp-listen", f"127.0.0.1:{free_port()}"], env=env, stdout=log, stderr=log)
    deadline = started + 120
    while True:
        status = readyz(api)
        if status == 200:
            seconds = time.perf_counter() - started
            break
        if p.poll() is not None or time.perf_counter() > deadline:
            sys.exit(f"dialtone serve ({name}) never became ready; see {d}/{name}.log")
        time.sleep(0.005)
    at_ready = rss(p.pid)
    p.send_signal(signal.SIGTERM)
    # The drain writes the snapshot the next snapshot start reads.
    if p.wait(timeout=120) != 0:
        sys.exit(f"dialtone serve ({name}) exited with {p.returncode}; see {d}/{name}.log")
    return seconds, at_ready

snap = f"{d}/coldstart.snapshot"
runs = {"postgres": [], "snapshot": [], "sqlite": [], "empty": [], "raw-scan": []}
for r in range(rounds):
    out = subprocess.run([sync_bench, "raw-scan", f"{base}/coldstart"], capture_output=True, check=True, text=True)
    runs["raw-scan"].append((json.loads(out.stdout)["seconds"], 0))
    for leftover in (snap, snap + ".empty", snap + ".sqlite"):
        if os.path.exists(leftover):
            os.remove(leftover)
    runs["postgres"].append(serve(f"{base}/coldstart", snap, "postgres"))
    runs["snapshot"].append(serve(f"{base}/coldstart", snap, "snapshot"))
    runs["sqlite"].append(serve(f"sqlite://{d}/coldstart.db", snap + ".sqlite", "sqlite"))
    runs["empty"].append(serve(f"{base}/coldstart_empty", snap + ".empty", "empty"))
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.3f} s" for k, v in runs.items()), file=sys.stderr)

size = os.path.getsize(snap)
empty_rss = statistics.median(m for _, m in runs["empty"])
scan = min(s for s, _ in runs["raw-scan"])
print()
print(f"cold start of dialtone serve to the first 200 on /readyz, {phones:,} phones with one line each ({rows} rows), {rounds} rounds")
print(f"{'source':<10} {'best s':>7} {'median s':>9} {'baseline s':>11} {'ratio':>6} {'bytes/phone':>12}  target")
for source, target in (("postgres", "<= 1.5 s"), ("snapshot", "<= 0.5 s"), ("sqlite", "no time target")):
    times = sorted(s for s, _ in runs[source])
    per_phone = (statistics.median(m for _, m in runs[source]) - empty_rss) / max(phones, 1)
    print(f"{source:<10} {times[0]:>7.2f} {statistics.median(times):>9.2f} {scan:>11.2f} {times[0] / scan:>6.2f}"
          f" {per_phone:>12.0f}  {target}, <= 800 B/phone")
empty = sorted(s for s, _ in runs["empty"])
print(f"empty database: best {empty[0]:.3f} s, RSS at ready {empty_rss / 2**20:.1f} MiB; snapshot file {size / 2**20:.1f} MiB")
print("(baseline: sync_bench raw-scan, the best read of the same phone and line rows on one connection, building nothing;")
print(" ratio = best start / baseline; bytes/phone = (median RSS at ready - median RSS at ready on an empty database) / phones)")
PY
}
