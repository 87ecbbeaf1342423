# Render bombs of one tenant against another tenant, sourced by scripts/bench.
#
# Two tenants on SQLite, one release `dialtone serve`: `bomber` (300 Yealink
# phones, a tenant-admin token) and `victim` (300 Yealink phones, 1,000
# directory entries, a lookup token). scripts/lib/bench_bombs.py runs the
# victim's load (cached lookups, TFTP and HTTP provisioning of its phones,
# and misses: phones kept unfetched until then, each fetched once) for 20 s
# idle, then 20 s again while the bomber's 4 threads send templates that
# render for very long or very large (validate, preview, a stored phone
# template fetched over TFTP and HTTP). Reported: the victim's p50/p99 and
# errors in both phases, hits and misses apart, and what each bomb came
# to; target: p99 under bombs within 50 ms of idle, and every bomb rendered
# or refused for its render budget. A missed target is printed, not an
# error; only a failed setup is.

bench_bombs() {
    local d="$SERVICES_DIR/bombs" bin=target/release/dialtone py=scripts/lib/bench_bombs.py
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    export DIALTONE_DATABASE__URL="sqlite://$d/bench.db"
    log "seeding tenants bomber and victim (300 phones each) and victim's 1,000 directory entries"
    python3 "$py" seed --work "$d" --phones "${BOMBS_PHONES:-300}" --entries 1000
    "$bin" import "$d/tenants.csv" "$d/phones.csv" "$d/directory.json" >/dev/null
    local admin key api http tftp pid
    admin="$("$bin" token create --scope tenant-admin --tenant bomber --name bombs 2>/dev/null)"
    key="$("$bin" token create --scope lookup --tenant victim --name bombs 2>/dev/null)"
    api="127.0.0.1:$(free_port)"; http="127.0.0.1:$(free_port)"; tftp="127.0.0.1:$(free_port)"
    "$bin" serve --listen "$api" --provisioning-listen "$http" --tftp-listen "$tftp" 2>"$d/serve.log" &
    pid=$!
    local ready="" i
    for i in $(seq 1 100); do curl -sf "http://$api/readyz" >/dev/null 2>&1 && ready=1 && break; sleep 0.1; done
    local status=0
    if [ -z "$ready" ]; then
        log "dialtone serve never became ready: $(tail -1 "$d/serve.log")"
        status=1
    else
        log "victim's load idle, then under bomber's render bombs (${BOMBS_SECONDS:-20} s each)"
        python3 "$py" run --work "$d" --api "$api" --prov "$http" --tftp "$tftp" \
            --admin-token "$admin" --lookup-key "$key" --seconds "${BOMBS_SECONDS:-20}" \
            | tee -a "$d/results.jsonl" || status=$?
    fi
    # A server busy rendering bombs may not get to its SIGTERM handler soon.
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset DIALTONE_DATABASE__URL
    [ "$status" = 0 ] || { log "bench bombs: setup failed (server log: $d/serve.log)"; return "$status"; }
    python3 "$py" summary "$d/results.jsonl"
}
