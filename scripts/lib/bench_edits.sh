# Edit storm during a boot storm, sourced by scripts/bench.
#
# 50 tenants and 2,000 phones (Yealink, Poly, Cisco MPP) on PostgreSQL, two
# nodes. scripts/lib/bench_edits.py edits one tenant's Yealink template 150
# times through node A's API while phlem boot-storms both nodes, and reports
# the time until the last edit was served everywhere (against single edits
# with no storm, in the same run) and the stale files left once everything
# settled, which must be 0.

bench_edits() {
    local d="$SERVICES_DIR/edits" bin=target/release/dialtone
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    [ -n "${DIALTONE_TEST_PG_URL:-}" ] || start_postgres
    psql "$DIALTONE_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS edits" -c "CREATE DATABASE edits" >/dev/null
    export DIALTONE_DATABASE__URL="${DIALTONE_TEST_PG_URL%/postgres}/edits"
    export DIALTONE_PROVISIONING__BASE_URL="http://prov.example.net"
    DIALTONE_SECRETS__KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    export DIALTONE_SECRETS__KEY
    log "seeding 50 tenants and 2,000 phones"
    python3 - "$d" <<'PY'
import sys
d = sys.argv[1]
families = [("yealink", "001565", "T46S")] * 28 + [("poly", "0004f2", "VVX450")] * 6 + [("cisco-mpp", "0062ec", "CP-8851-3PCC")] * 6
with open(f"{d}/tenants.csv", "w") as t, open(f"{d}/phones.csv", "w") as p:
    t.write("slug,name,default_region\n")
    p.write("tenant,mac,family,model,line,extension,display_name,password,registrar\n")
    n = 0
    for i in range(50):
        t.write(f"t{i:02d},Tenant {i},US\n")
        for family, oui, model in families:
            n += 1
            p.write(f"t{i:02d},{oui}{0x200000 + n:06x},{family},{model},1,{2000 + n},User {n},pw-{n}-Qx7,sip{i % 5}.example.net\n")
PY
    "$bin" import "$d/tenants.csv" "$d/phones.csv" >/dev/null
    local token node_args=() pids=()
    token="$("$bin" token create --scope global-admin --name bench)"
    for node in a b; do
        local api http tftp
        api="$(free_port)"; http="$(free_port)"; tftp="$(free_port)"
        "$bin" serve --listen "127.0.0.1:$api" --provisioning-listen "127.0.0.1:$http" \
            --tftp-listen "127.0.0.1:$tftp" 2>"$d/serve-$node.log" &
        pids+=($!)
        local ready=""
        for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && ready=1 && break; sleep 0.1; done
        [ -n "$ready" ] || { log "node $node never became ready: $(tail -1 "$d/serve-$node.log")"; kill "${pids[@]}"; return 1; }
        node_args+=(--node "http://127.0.0.1:$api,http://127.0.0.1:$http,127.0.0.1:$tftp")
    done
    log "150 edits of one tenant's template through node A during a boot storm of both nodes"
    local status=0
    python3 scripts/lib/bench_edits.py --bin "$bin" --token "$token" --tenant t07 \
        --work "$d" "${node_args[@]}" | tee -a "$d/results.jsonl" || status=$?
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    unset DIALTONE_DATABASE__URL DIALTONE_PROVISIONING__BASE_URL DIALTONE_SECRETS__KEY
    python3 - "$d/results.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
ratio = r["storm_last_edit_converge_ms"] / r["idle_converge_ms"] if r["storm_last_edit_converge_ms"] else float("nan")
print(f"edits during a boot storm: {r['edits']} edits ({r['edits_per_s']:.0f}/s, API p50 {r['api_p50_ms']:.1f} ms, p99 {r['api_p99_ms']:.1f} ms) "
      f"while the nodes served {r['storm_requests']:.0f} provisioning requests")
print(f"  last edit served by all {r['phones_edited']} phones on {r['nodes']} nodes over HTTP and TFTP after "
      f"{r['storm_last_edit_converge_ms']:.1f} ms; idle baseline {r['idle_converge_ms']:.1f} ms; ratio {ratio:.2f}x")
print(f"  stale files after settling: {r['stale_files']} of {r['verified_files']} checked "
      f"(expected {r.get('expected_files', '?')}; target 0); self-check stale: {r['self_check_stale']:.0f} (target 0)")
if r.get("verify_failures"):
    print(f"  failed checks by reason (target none): {r['verify_failures']}")
for problem in r.get("verify_problems", []):
    print(f"  check incomplete: {problem}")
PY
    return "$status"
}
