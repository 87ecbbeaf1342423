# Resync through the SIP proxy, sourced by scripts/bench.
#
# One tenant of 200 phones (Yealink, Poly, Snom) on SQLite, one release
# dialtone with [resync] pointed at Kamailio, and phlem emulating every
# phone, registered with Kamailio and answering NOTIFYs by fetching again.
# scripts/lib/bench_resync.py edits the tenant's Yealink template, asks the
# API to resync the affected phones, and reports the time from that call to
# the last affected phone's fetch of the new bytes, the NOTIFY rate
# achieved against the configured limit, and failures.

bench_resync() {
    local d="$SERVICES_DIR/resync" bin=target/release/dialtone
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    [ -n "${KAMAILIO_PID:-}" ] || start_kamailio
    local rate="${RESYNC_RATE:-100}" tenant_rate="${RESYNC_TENANT_RATE:-40}"
    local api http domain=bench.example.net
    api="$(free_port)"
    http="$(free_port)"
    export DIALTONE_DATABASE__URL="sqlite://$d/bench.db"
    export DIALTONE_PROVISIONING__BASE_URL="http://127.0.0.1:$http"
    DIALTONE_SECRETS__KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    export DIALTONE_SECRETS__KEY
    log "seeding one tenant of 200 phones (120 Yealink, 40 Poly, 40 Snom)"
    python3 - "$d" "$domain" <<'PY'
import sys
d, domain = sys.argv[1], sys.argv[2]
families = [("yealink", "001565", "T46S")] * 120 + [("poly", "0004f2", "VVX 450")] * 40 + [("snom", "000413", "D785")] * 40
with open(f"{d}/tenants.csv", "w") as t, open(f"{d}/phones.csv", "w") as p, open(f"{d}/phlem.csv", "w") as e:
    t.write("slug,name,default_region\nbench,Bench,US\n")
    p.write("tenant,mac,family,model,line,extension,display_name,password,registrar\n")
    for n, (family, oui, model) in enumerate(families):
        mac, ext = f"{oui}{0x300000 + n:06x}", 3000 + n
        p.write(f"bench,{mac},{family},{model},1,{ext},User {n},pw-{n}-Qx7,{domain}\n")
        e.write(f"{mac},{family},{model},{ext}@{domain}\n")
PY
    "$bin" import "$d/tenants.csv" "$d/phones.csv" >/dev/null
    local token
    token="$("$bin" token create --scope global-admin --name bench)"
    DIALTONE_RESYNC__PROXY="$DIALTONE_TEST_SIP_PROXY" DIALTONE_RESYNC__LISTEN=127.0.0.1:0 \
        DIALTONE_RESYNC__RATE_PER_S="$rate" DIALTONE_RESYNC__TENANT_RATE_PER_S="$tenant_rate" \
        "$bin" serve --listen "127.0.0.1:$api" --provisioning-listen "127.0.0.1:$http" \
        --tftp-listen "127.0.0.1:$(free_port)" 2>"$d/serve.log" &
    local serve=$!
    local ready=""
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && ready=1 && break; sleep 0.1; done
    [ -n "$ready" ] || { log "dialtone never became ready: $(tail -1 "$d/serve.log")"; kill "$serve"; return 1; }
    log "phlem: 200 phones boot over HTTP and register with Kamailio"
    "$bin" phlem run --target "http://127.0.0.1:$http" --phones "$d/phlem.csv" --quiet \
        --sip-proxy "$DIALTONE_TEST_SIP_PROXY" --hold 600 --reboot-delay-ms 0 \
        --json "$d/phlem.json" >"$d/phlem.out" 2>"$d/phlem.log" &
    local phlem=$!
    local status=0
    python3 scripts/lib/bench_resync.py --api "http://127.0.0.1:$api" --token "$token" \
        --tenant bench --phlem-pid "$phlem" --phlem-log "$d/phlem.log" --phlem-json "$d/phlem.json" \
        --bin "$bin" --work "$d" --rate "$rate" --tenant-rate "$tenant_rate" || status=$?
    kill "$phlem" "$serve" 2>/dev/null || true
    wait "$phlem" "$serve" 2>/dev/null || true
    unset DIALTONE_DATABASE__URL DIALTONE_PROVISIONING__BASE_URL DIALTONE_SECRETS__KEY
    return "$status"
}
