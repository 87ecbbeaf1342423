# Boot-storm and HTTP provisioning bench, sourced by scripts/bench.
#
# 2,000 Yealink phones with 2 lines and 60 line keys each (a ~4.8 KB config).
# TFTP: phlem boots every phone (boot file, model file, MAC file) against
# dialtone rendering from its mirror, then against dnsmasq serving the
# `dialtone render --all` output, in two cases: 100 at once with 512-byte
# blocks, and 1,000 at once with blksize 1428 and tsize. HTTP: wrk fetches
# the MAC files from dialtone and from nginx (one worker) serving the same
# bytes, with keep-alive and without. Besides throughput, each server's CPU
# time (user + system, from /proc/PID/stat) per transfer.

cpu_ticks() { # total user+system ticks of PIDs
    local t=0 p
    for p in "$@"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

bench_storm() {
    command -v wrk >/dev/null 2>&1 || apt_install wrk
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        apt_install nginx-light
        as_root rm -f /usr/sbin/policy-rc.d
    }
    local phones="${STORM_PHONES:-2000}" d="$SERVICES_DIR/storm" bin=target/release/dialtone
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    export DIALTONE_DATABASE__URL="sqlite://$d/storm.db"
    local prov_port tftp_port api_port
    prov_port="$(free_port)"; tftp_port="$(free_port)"; api_port="$(free_port)"
    export DIALTONE_PROVISIONING__HTTP_LISTEN="127.0.0.1:$prov_port"
    log "seeding $phones phones (2 lines, 60 line keys each)"
    python3 - "$d" "$phones" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
keys = [{"type": 16, "value": str(200 + k), "label": f"D{200 + k}"} for k in range(60)]
phones, macs = [], []
for i in range(n):
    mac = f"001565{i:06x}"
    macs.append(f"{mac},yealink,T46S")
    phones.append({"tenant": "storm", "mac": mac, "family": "yealink", "model": "T46S",
                   "variables": {"line_keys": keys},
                   "lines": [{"extension": str(1000 + 4 * i + l), "display_name": f"User {i} line {l + 1}",
                              "password": f"pw-{i}-{l}-x8Jk2", "registrar": "sip.example.net"} for l in range(2)]})
json.dump({"tenants": [{"slug": "storm", "name": "Storm Test", "default_region": "US"}], "phones": phones},
          open(f"{d}/phones.json", "w"))
open(f"{d}/phones.csv", "w").write("\n".join(macs) + "\n")
open(f"{d}/paths.lua", "w").write(
    "local macs = {" + ",".join(f'"{m.split(",")[0]}"' for m in macs) + "}\n"
    "local i = 0\nrequest = function()\n  i = i + 1\n"
    "  return wrk.format(\"GET\", \"/\" .. macs[(i % #macs) + 1] .. \".cfg\")\nend\n")
PY
    "$bin" import "$d/phones.json" >/dev/null 2>&1
    "$bin" render --all --out "$d/static" >"$d/render.txt"
    chmod -R a+rX "$d/static"
    log "$(cat "$d/render.txt"); MAC file $(stat -c %s "$d/static/001565000000.cfg") bytes"

    "$bin" serve --listen "127.0.0.1:$api_port" --tftp-listen "127.0.0.1:$tftp_port" 2>"$d/serve.log" &
    local dt=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.1; done
    # dnsmasq's TFTP port is always 69: on an address of its own.
    /usr/sbin/dnsmasq --keep-in-foreground --port=0 --enable-tftp --bind-interfaces --user=root \
        --listen-address=127.0.0.69 --tftp-root="$d/static" --tftp-max=1024 --conf-file=/dev/null \
        --pid-file --log-facility=/dev/null &
    local dm=$!
    sleep 0.5

    storm() { # storm NAME TARGET PID CONCURRENCY [phlem options]
        local name="$1" target="$2" pid="$3" conc="$4"
        shift 4
        local before after
        before="$(cpu_ticks "$pid")"
        # phlem's own user + system seconds: the client must cost less than the server.
        local TIMEFORMAT='%U %S' client
        client="$( { time "$bin" phlem run --quiet --target "$target" --phones "$d/phones.csv" --concurrency "$conc" \
            --timeout-ms 1000 --retries 5 --json "$d/$name.json" "$@" >"$d/$name.txt" 2>&1; } 2>&1 | tail -1)"
        after="$(cpu_ticks "$pid")"
        echo "{\"case\": \"$name\", \"cpu_ticks\": $((after - before)), \"client_s\": $(echo "$client" | awk '{print $1 + $2}')}" >>"$d/cpu.jsonl"
    }
    local cases=",${STORM_CASES:-tftp,http},"
    if [[ $cases == *,tftp,* ]]; then
        log "TFTP storms (a warm-up pass renders dialtone's cache first)"
        storm warmup "tftp://127.0.0.1:$tftp_port" "$dt" 100
        for round in 1 2; do
            storm "dialtone-c100-r$round" "tftp://127.0.0.1:$tftp_port" "$dt" 100
            storm "dnsmasq-c100-r$round" "tftp://127.0.0.69:69" "$dm" 100
            storm "dialtone-c1000-r$round" "tftp://127.0.0.1:$tftp_port" "$dt" 1000 --blksize 1428 --tsize
            storm "dnsmasq-c1000-r$round" "tftp://127.0.0.69:69" "$dm" 1000 --blksize 1428 --tsize
        done
        # Phones that keep one source port for all their files (many do).
        storm "dialtone-sameport-r1" "tftp://127.0.0.1:$tftp_port" "$dt" 100 --same-port
        storm "dnsmasq-sameport-r1" "tftp://127.0.0.69:69" "$dm" 100 --same-port
    fi
    kill "$dm"

    local ng="$d/nginx" ngport
    ngport="$(free_port)"
    mkdir -p "$ng/logs"
    cat >"$ng/nginx.conf" <<CONF
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$ngport;
        root $d/static;
    }
}
CONF
    /usr/sbin/nginx -c "$ng/nginx.conf" -p "$ng"
    sleep 0.5
    local ngpids master
    master="$(cat "$ng/nginx.pid")"
    ngpids="$master $(pgrep -P "$master" | tr '\n' ' ')"
    http() { # http NAME URL PIDS [wrk options]
        local name="$1" url="$2" pids="$3"
        shift 3
        local before after
        before="$(cpu_ticks $pids)"
        wrk -t2 -c64 -d"${HTTP_SECONDS:-10}s" --latency -s "$d/paths.lua" "$@" "$url" >"$d/$name.txt"
        after="$(cpu_ticks $pids)"
        echo "{\"case\": \"$name\", \"cpu_ticks\": $((after - before))}" >>"$d/cpu.jsonl"
    }
    if [[ $cases == *,http,* ]]; then
        log "HTTP: wrk against dialtone and nginx, keep-alive and not"
        if [[ $cases != *,tftp,* ]]; then
            # Without the TFTP half nothing has filled the render cache: a
            # short pass does, and is reported as the cold start it is.
            HTTP_SECONDS=2 http dialtone-cold "http://127.0.0.1:$prov_port" "$dt"
        fi
        http dialtone-keepalive "http://127.0.0.1:$prov_port" "$dt"
        http nginx-keepalive "http://127.0.0.1:$ngport" "$ngpids"
        http dialtone-close "http://127.0.0.1:$prov_port" "$dt" -H "Connection: close"
        http nginx-close "http://127.0.0.1:$ngport" "$ngpids" -H "Connection: close"
    fi
    kill "$(cat "$ng/nginx.pid")"
    kill "$dt"; wait "$dt" 2>/dev/null || true
    # Keep the raw results (the services dir is removed on exit).
    rm -rf target/bench-storm && mkdir -p target/bench-storm
    cp "$d"/*.json "$d"/*.txt "$d"/cpu.jsonl target/bench-storm/ 2>/dev/null || true

    python3 - "$d" "$(getconf CLK_TCK)" "$cases" <<'PY'
import json, re, sys
d, hz, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cpu, client = {}, {}
for l in open(f"{d}/cpu.jsonl"):
    r = json.loads(l)
    cpu[r["case"]] = r["cpu_ticks"] / hz
    client[r["case"]] = r.get("client_s")
def storm(name):
    r = json.load(open(f"{d}/{name}.json"))
    samples = sorted(s for st in r["steps"].values() for s in st["samples_us"])
    ok = len(samples)
    p99 = samples[int((ok - 1) * 0.99)] / 1e3 if ok else float("nan")
    retrans = sum(st["retransmits"] for st in r["steps"].values())
    failed = sum(r["failures"].values())
    return ok / r["elapsed_s"], p99, failed, retrans, cpu[name] / max(ok, 1) * 1e6, client[name] / max(ok, 1) * 1e6
if ",tftp," in cases:
    print()
    print("TFTP boot storm, 2,000 phones x 3 files (boot, model, MAC file of ~4.8 KB); best of 2 rounds by throughput")
    print(f"{'case':<34} {'transfers/s':>11} {'p99 ms':>8} {'failed':>7} {'retrans':>8} {'CPU us/transfer':>16} {'phlem us/transfer':>18}")
    rows = {}
    for case in ("c100", "c1000"):
        for server in ("dialtone", "dnsmasq"):
            runs = [storm(f"{server}-{case}-r{r}") for r in (1, 2)]
            best = max(runs, key=lambda x: x[0])
            rows[(server, case)] = best
            label = f"{server}, " + ("100 at once, blksize 512" if case == "c100" else "1,000 at once, blksize 1428")
            print(f"{label:<34} {best[0]:>11.0f} {best[1]:>8.1f} {best[2]:>7} {best[3]:>8} {best[4]:>16.0f} {best[5]:>18.0f}")
            reasons = json.load(open(f"{d}/{server}-{case}-r1.json"))["failures"]
            if reasons:
                print(f"    round 1 failures: {reasons}")
    for server in ("dialtone", "dnsmasq"):
        r = storm(f"{server}-sameport-r1")
        label = f"{server}, 100 at once, same port"
        print(f"{label:<34} {r[0]:>11.0f} {r[1]:>8.1f} {r[2]:>7} {r[3]:>8} {r[4]:>16.0f} {r[5]:>18.0f}")
    for case in ("c100", "c1000"):
        a, b = rows[("dialtone", case)], rows[("dnsmasq", case)]
        print(f"{case}: throughput dialtone/dnsmasq {a[0] / b[0]:.2f}x (target >= 1.0); CPU per transfer dialtone/dnsmasq {a[4] / b[4]:.2f} (target <= 1.0)")
def wrk(name):
    text = open(f"{d}/{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", text, re.M)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, p99, int(errors.group(1)) if errors else 0, cpu[name] / max(total, 1) * 1e6
if ",http," in cases:
    print()
    print("HTTP provisioning, MAC files of 2,000 phones, wrk -t2 -c64 (on the same 2 cores)")
    print(f"{'case':<24} {'req/s':>9} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}")
    if ",tftp," not in cases:
        r = wrk("dialtone-cold")
        print(f"{'dialtone, cold cache, 2 s':<24} {r[0]:>9.0f} {r[1]:>8.2f} {r[2]:>8} {r[3]:>11.1f}")
    for mode in ("keepalive", "close"):
        for server in ("dialtone", "nginx"):
            r = wrk(f"{server}-{mode}")
            print(f"{server + ', ' + mode:<24} {r[0]:>9.0f} {r[1]:>8.2f} {r[2]:>8} {r[3]:>11.1f}")
        a, b = wrk(f"dialtone-{mode}"), wrk(f"nginx-{mode}")
        print(f"{mode}: req/s dialtone/nginx {a[0] / b[0]:.2f}x (target >= 1.0); CPU per request dialtone/nginx {a[3] / b[3]:.2f} (target <= 1.0)")
PY
}
