# TFTP flood bench, sourced by scripts/bench.
#
# One release `dialtone serve` on SQLite with 1,000 Yealink phones.
# scripts/lib/bench_flood.py boots every phone (boot file, model file, MAC
# file) from office addresses 127.0.2.x, once quiet and once while 20,000
# RRQs asking `timeout 255` arrive from 200 other sources (127.0.1.x) and
# are never acknowledged; at that pace the flood goes on until the last
# phone has booted. Reported: the phones' failures and p99 in both phases,
# the RRQs sent (and how many after the last phone finished), sends that
# failed, what the flood got back, the peak of active transfers, how long
# forged transfers held slots after the flood, and the server's memory.
# Target: every phone boots under the flood (0 failures).
# FLOOD_SOURCES (default 200) spreads the flood over that many addresses:
# past a few hundred, forged sources of a transfer or a few each pass every
# per-source limit and fill the transfer cap itself (4,096), where the
# server evicts the oldest unacknowledged transfer for each new request.

bench_flood() {
    local d="$SERVICES_DIR/flood" bin="${FLOOD_BIN:-target/release/dialtone}" py=scripts/lib/bench_flood.py
    mkdir -p "$d"
    chmod 755 "$d"
    # FLOOD_BIN: another build to compare (for example the commit before).
    if [ -z "${FLOOD_BIN:-}" ]; then
        log "building (release)"
        cargo build --release -q --bin dialtone -p dialtone
    fi
    export DIALTONE_DATABASE__URL="sqlite://$d/bench.db"
    # Loopback is exempt from the per-source limits by default; here its
    # addresses stand for sources on the internet.
    export DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT='[]'
    log "seeding ${FLOOD_PHONES:-1000} phones"
    python3 "$py" seed --work "$d" --phones "${FLOOD_PHONES:-1000}"
    "$bin" import "$d/tenants.csv" "$d/phones.csv" >/dev/null
    local api tftp pid
    api="127.0.0.1:$(free_port)"; tftp="127.0.0.1:$(free_port)"
    "$bin" serve --listen "$api" --tftp-listen "$tftp" 2>"$d/serve.log" &
    pid=$!
    local ready="" i status=0
    for i in $(seq 1 100); do curl -sf "http://$api/readyz" >/dev/null 2>&1 && ready=1 && break; sleep 0.1; done
    if [ -z "$ready" ]; then
        log "dialtone serve never became ready: $(tail -1 "$d/serve.log")"
        status=1
    else
        log "phones boot quiet, then under a flood of ${FLOOD_RRQS:-20000} RRQs"
        python3 "$py" run --tftp "$tftp" --api "$api" --pid "$pid" --phones "${FLOOD_PHONES:-1000}" \
            --flood "${FLOOD_RRQS:-20000}" --sources "${FLOOD_SOURCES:-200}" | tee "$d/results.jsonl" || status=$?
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset DIALTONE_DATABASE__URL DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT
    [ -s "$d/results.jsonl" ] || { log "bench flood: no result (server log: $d/serve.log)"; return 1; }
    mkdir -p target/bench-flood && cp "$d/results.jsonl" "$d/serve.log" target/bench-flood/
    python3 "$py" summary "$d/results.jsonl"
    return "$status"
}
