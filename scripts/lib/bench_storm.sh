# Boot-storm and HTTP provisioning bench, sourced by scripts/bench.
#
# 2,000 phones of three families, round robin: Yealink T46S with 2 lines and
# 40 BLF keys (a ~3.9 KB config), Poly VVX450 and Cisco MPP CP-8841-3PCC.
# TFTP (issue 19): an independent client (tftp/examples/tftp_load.rs, no
# code shared with the server or phlem) fetches the `dialtone render --all`
# output from dialtone with a port per transfer, from dialtone in
# single-port mode, and from dnsmasq serving the same files, in two cases:
# 100 at once with 512-byte blocks, and 1,000 at once with blksize 1428 and
# tsize; then system calls per transfer (strace -c) of each server. Each
# concurrent client sends from an address of its own (127.0.3.1 up;
# STORM_SOURCES sets how many), and loopback's exemption from the
# per-source limits is off, so requests pass admission as phones' do. The
# first pass after each dialtone starts, every file once at c=100, is the
# cold round (empty render cache), reported apart; the rounds after it are
# warm. Retransmits are counted on both sides: the client's, and DATA
# blocks it received twice (the server's). HTTP:
# wrk fetches the MAC files from dialtone and from nginx (one worker)
# serving the same bytes, with keep-alive and without, over HTTP_ROUNDS
# rounds (default 3) that rotate which server goes first; the summary
# gives each round and the medians (STORM_BASELINE_BIN adds another
# dialtone build to every round). Besides throughput, each server's CPU
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
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_install_no_start nginx-light
    local phones="${STORM_PHONES:-2000}" d="$SERVICES_DIR/storm" bin=target/release/dialtone
    mkdir -p "$d"
    chmod 755 "$d"
    log "building (release)"
    cargo build --release -q --bin dialtone -p dialtone
    export DIALTONE_DATABASE__URL="sqlite://$d/storm.db"
    # Loopback is exempt from the per-source limits by default; here its
    # addresses stand for phones.
    export DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT='[]' DIALTONE_PROVISIONING__HTTP_PER_SOURCE_EXEMPT='[]'
    local prov_port tftp_port api_port
    prov_port="$(free_port)"; tftp_port="$(free_port)"; api_port="$(free_port)"
    export DIALTONE_PROVISIONING__HTTP_LISTEN="127.0.0.1:$prov_port"
    log "seeding $phones phones (Yealink with 40 BLF keys, Poly, Cisco MPP)"
    python3 - "$d" "$phones" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
keys = [{"type": 16, "value": str(200 + k), "label": f"D{200 + k}"} for k in range(40)]
families = [("001565", "yealink", "T46S", {"line_keys": keys}),
            ("0004f2", "poly", "VVX450", {}),
            ("0062ec", "cisco-mpp", "CP-8841-3PCC", {})]
phones, macs = [], []
for i in range(n):
    prefix, family, model, variables = families[i % 3]
    mac = f"{prefix}{i:06x}"
    macs.append(f"{mac},{family},{model}")
    phones.append({"tenant": "storm", "mac": mac, "family": family, "model": model,
                   "variables": variables,
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

    # The same dialtone data in single-port mode (issue 19), on ports of its own.
    local sp_api sp_tftp sp_prov
    sp_api="$(free_port)"; sp_tftp="$(free_port)"; sp_prov="$(free_port)"
    # Its files name the first node's HTTP address, like the rendered ones.
    DIALTONE_PROVISIONING__HTTP_LISTEN="127.0.0.1:$sp_prov" DIALTONE_PROVISIONING__BASE_URL="http://127.0.0.1:$prov_port" \
        DIALTONE_PROVISIONING__TFTP_SINGLE_PORT=true \
        "$bin" serve --listen "127.0.0.1:$sp_api" --tftp-listen "127.0.0.1:$sp_tftp" 2>"$d/serve-single.log" &
    local ds=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$sp_api/readyz" >/dev/null && break; sleep 0.1; done
    local nfiles
    nfiles="$(find "$d/static" -maxdepth 1 -type f | wc -l)"

    load() { # load NAME TARGET PID CONCURRENCY [client options]: one run of the independent client
        local name="$1" target="$2" pid="$3" conc="$4"
        shift 4
        local before after
        before="$(cpu_ticks "$pid")"
        target/release/examples/tftp_load --target "$target" --dir "$d/static" --concurrency "$conc" \
            --sources "${STORM_SOURCES:-$conc}" --source-base 127.0.3.1 \
            --transfers "${STORM_TRANSFERS:-20000}" "$@" >"$d/$name.json" 2>"$d/$name.err"
        after="$(cpu_ticks "$pid")"
        echo "{\"case\": \"$name\", \"cpu_ticks\": $((after - before))}" >>"$d/cpu.jsonl"
    }
    syscalls() { # syscalls NAME TARGET PID: system calls per transfer, c=100, blksize 512
        local name="$1" target="$2" pid="$3"
        # Started directly (not through a shell function), so $! is strace.
        strace -c -f -p "$pid" -o "$d/$name.strace" 2>/dev/null &
        local st=$!
        sleep 1
        target/release/examples/tftp_load --target "$target" --dir "$d/static" --concurrency 100 \
            --sources "${STORM_SOURCES:-100}" --source-base 127.0.3.1 \
            --transfers 4000 --timeout-ms 3000 >"$d/$name.json" 2>"$d/$name.err"
        kill -INT "$st"; wait "$st" 2>/dev/null || true
    }
    local cases=",${STORM_CASES:-tftp,http},"
    if [[ $cases == *,tftp,* ]]; then
        log "TFTP storms with an independent client (the cold round, every file once, fills dialtone's caches first)"
        cargo build --release -q -p dialtone-tftp --example tftp_load
        command -v strace >/dev/null 2>&1 || apt_install strace
        STORM_TRANSFERS="$nfiles" load cold "127.0.0.1:$tftp_port" "$dt" 100
        STORM_TRANSFERS="$nfiles" load cold-single "127.0.0.1:$sp_tftp" "$ds" 100
        for round in 1 2; do
            load "dialtone-c100-r$round" "127.0.0.1:$tftp_port" "$dt" 100
            load "single-c100-r$round" "127.0.0.1:$sp_tftp" "$ds" 100
            load "dnsmasq-c100-r$round" "127.0.0.69:69" "$dm" 100
            load "dialtone-c1000-r$round" "127.0.0.1:$tftp_port" "$dt" 1000 --blksize 1428 --tsize
            load "single-c1000-r$round" "127.0.0.1:$sp_tftp" "$ds" 1000 --blksize 1428 --tsize
            load "dnsmasq-c1000-r$round" "127.0.0.69:69" "$dm" 1000 --blksize 1428 --tsize
        done
        log "system calls per transfer (strace -c, 4,000 transfers each)"
        syscalls dialtone-syscalls "127.0.0.1:$tftp_port" "$dt"
        syscalls single-syscalls "127.0.0.1:$sp_tftp" "$ds"
        syscalls dnsmasq-syscalls "127.0.0.69:69" "$dm"
    fi
    kill "$ds"; wait "$ds" 2>/dev/null || true
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
        # Deferred accept, like dialtone's listeners: the same kernel help for both.
        listen 127.0.0.1:$ngport deferred;
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
        # wrk's own user + system seconds: the client must not be what bounds the figure.
        local TIMEFORMAT='%U %S' client perf=
        # STORM_PERF=NAME: a call-graph profile of that case's server, kept
        # in target/bench-storm/NAME.perf (its CPU figure then includes perf's cost).
        if [ "${STORM_PERF:-}" = "$name" ]; then
            perf record -q -g -o "$d/$name.perf" -p "$(echo $pids | tr ' ' ',')" >/dev/null 2>&1 &
            perf=$!
            sleep 0.5
        fi
        client="$( { time wrk -t2 -c64 -d"${HTTP_SECONDS:-10}s" --latency -s "$d/paths.lua" "$@" "$url" >"$d/$name.txt"; } 2>&1 | tail -1)"
        after="$(cpu_ticks $pids)"
        if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" 2>/dev/null || true; fi
        echo "{\"case\": \"$name\", \"cpu_ticks\": $((after - before)), \"client_s\": $(echo "$client" | awk '{print $1 + $2}')}" >>"$d/cpu.jsonl"
    }
    if [[ $cases == *,http,* ]]; then
        log "HTTP: wrk against dialtone and nginx, keep-alive and not"
        if [[ $cases != *,tftp,* ]]; then
            # Without the TFTP half nothing has filled the render cache: a
            # short pass does, and is reported as the cold start it is.
            HTTP_SECONDS=2 http dialtone-cold "http://127.0.0.1:$prov_port" "$dt"
        fi
        # STORM_BASELINE_BIN=PATH: another dialtone build (say, the commit
        # before) serves the same data on ports of its own and takes its
        # turn in every round, for a before/after in the same run.
        local servers="dialtone nginx" bl_api bl_prov bl=
        if [ -n "${STORM_BASELINE_BIN:-}" ]; then
            bl_api="$(free_port)"; bl_prov="$(free_port)"
            DIALTONE_PROVISIONING__HTTP_LISTEN="127.0.0.1:$bl_prov" \
                "$STORM_BASELINE_BIN" serve --listen "127.0.0.1:$bl_api" --tftp-listen "127.0.0.1:$(free_port)" \
                2>"$d/serve-baseline.log" &
            bl=$!
            for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$bl_api/readyz" >/dev/null && break; sleep 0.1; done
            HTTP_SECONDS=2 http baseline-cold "http://127.0.0.1:$bl_prov" "$bl"
            servers="dialtone nginx baseline"
        fi
        # Rounds rotate which server goes first, and the summary takes
        # medians: on shared cores one run of one server swung +-10%.
        local round order
        for round in $(seq 1 "${HTTP_ROUNDS:-3}"); do
            # shellcheck disable=SC2086
            order="$(printf '%s\n' $servers | awk -v r="$round" '{a[NR]=$0} END {for (i = 0; i < NR; i++) print a[(i + r - 1) % NR + 1]}')"
            for mode in keepalive close; do
                local opts=()
                [ "$mode" = close ] && opts=(-H "Connection: close")
                for server in $order; do
                    case "$server" in
                        dialtone) http "dialtone-$mode-r$round" "http://127.0.0.1:$prov_port" "$dt" "${opts[@]}" ;;
                        nginx) http "nginx-$mode-r$round" "http://127.0.0.1:$ngport" "$ngpids" "${opts[@]}" ;;
                        baseline) http "baseline-$mode-r$round" "http://127.0.0.1:$bl_prov" "$bl" "${opts[@]}" ;;
                    esac
                done
            done
        done
        if [ -n "$bl" ]; then kill "$bl"; wait "$bl" 2>/dev/null || true; fi
    fi
    kill "$(cat "$ng/nginx.pid")"
    kill "$dt"; wait "$dt" 2>/dev/null || true
    unset DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT DIALTONE_PROVISIONING__HTTP_PER_SOURCE_EXEMPT
    # Keep the raw results (the services dir is removed on exit).
    rm -rf target/bench-storm && mkdir -p target/bench-storm
    cp "$d"/*.json "$d"/*.txt "$d"/*.perf "$d"/cpu.jsonl target/bench-storm/ 2>/dev/null || true

    python3 - "$d" "$(getconf CLK_TCK)" "$cases" "${HTTP_ROUNDS:-3}" "${STORM_BASELINE_BIN:-}" <<'PY'
import json, re, statistics, sys
d, hz, cases, rounds, baseline = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
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
def load(name):
    r = json.load(open(f"{d}/{name}.json"))
    ok = max(r["transfers"], 1)
    # Retransmits both ways: the client's / DATA blocks it got twice (the server's).
    retrans = f"{r['retransmits']}/{r.get('server_retransmits', '?')}"
    return r["per_s"], r["p99_ms"], r["failed"], retrans, cpu[name] / ok * 1e6, r["client_cpu_s"] / ok * 1e6
def syscalls(name):
    calls = 0
    for line in open(f"{d}/{name}.strace"):
        f = line.split()
        if f and f[-1] == "total":
            calls = int(f[3])
    return calls / max(json.load(open(f"{d}/{name}.json"))["transfers"], 1)
if ",tftp," in cases:
    print()
    print("TFTP boot storm, render --all of 2,000 phones (Yealink 40 BLF keys, Poly, Cisco MPP); independent client; best of 2 rounds by throughput")
    print("each concurrent client from an address of its own, loopback not exempt from the per-source limits; cold: the first pass after the start")
    print(f"{'case':<50} {'transfers/s':>11} {'p99 ms':>8} {'failed':>7} {'retrans c/s':>12} {'CPU us/transfer':>16} {'client us/transfer':>19}")
    rows = {}
    servers = (("dialtone", "dialtone, a port per transfer"), ("single", "dialtone, single port"), ("dnsmasq", "dnsmasq"))
    # The first fetch of each file after the start: renders, not cache hits.
    for name, title in (("cold", servers[0][1]), ("cold-single", servers[1][1])):
        x = load(name)
        label = f"{title}, cold, c=100, 512"
        print(f"{label:<50} {x[0]:>11.0f} {x[1]:>8.1f} {x[2]:>7} {x[3]:>12} {x[4]:>16.1f} {x[5]:>19.1f}")
    for case in ("c100", "c1000"):
        for server, title in servers:
            runs = [load(f"{server}-{case}-r{r}") for r in (1, 2)]
            best = max(runs, key=lambda x: x[0])
            rows[(server, case)] = best
            label = f"{title}, " + ("c=100, 512" if case == "c100" else "c=1000, 1428+tsize")
            print(f"{label:<50} {best[0]:>11.0f} {best[1]:>8.1f} {best[2]:>7} {best[3]:>12} {best[4]:>16.1f} {best[5]:>19.1f}")
    for case in ("c100", "c1000"):
        b = rows[("dnsmasq", case)]
        for server, title in servers[:2]:
            a = rows[(server, case)]
            print(f"{case} {title}: throughput / dnsmasq {a[0] / b[0]:.2f}x; CPU per transfer / dnsmasq {a[4] / b[4]:.2f}")
    print("system calls per transfer (c=100, blksize 512, strace -c -f): " + ", ".join(
        f"{title} {syscalls(server + '-syscalls'):.1f}" for server, title in servers))
def wrk(name):
    text = open(f"{d}/{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", text, re.M)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return (rps, p99, int(errors.group(1)) if errors else 0, cpu[name] / max(total, 1) * 1e6,
            client[name] / max(total, 1) * 1e6)
if ",http," in cases:
    print()
    print("HTTP provisioning, MAC files of 2,000 phones, wrk -t2 -c64 (on the same 2 cores)")
    print(f"{'case':<24} {'req/s':>9} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11} {'wrk us/req':>11}")
    if ",tftp," not in cases:
        r = wrk("dialtone-cold")
        print(f"{'dialtone, cold cache, 2 s':<24} {r[0]:>9.0f} {r[1]:>8.2f} {r[2]:>8} {r[3]:>11.1f} {r[4]:>11.1f}")
    med = statistics.median
    for mode in ("keepalive", "close"):
        servers = ("dialtone", "nginx", "baseline") if baseline else ("dialtone", "nginx")
        runs = {s: [wrk(f"{s}-{mode}-r{r}") for r in range(1, rounds + 1)] for s in servers}
        for server, rs in runs.items():
            for r, x in enumerate(rs, 1):
                label = f"{server}, {mode}, r{r}"
                print(f"{label:<24} {x[0]:>9.0f} {x[1]:>8.2f} {x[2]:>8} {x[3]:>11.1f} {x[4]:>11.1f}")
        # Each round's two servers ran back to back: ratios are paired by round.
        cpu_ratios = [a[3] / b[3] for a, b in zip(runs["dialtone"], runs["nginx"])]
        rps_ratios = [a[0] / b[0] for a, b in zip(runs["dialtone"], runs["nginx"])]
        print(f"{mode}, median of {rounds} rounds: CPU us/req dialtone {med(x[3] for x in runs['dialtone']):.1f}, "
              f"nginx {med(x[3] for x in runs['nginx']):.1f}; CPU per request dialtone/nginx {med(cpu_ratios):.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in cpu_ratios)}; target <= 1.0); "
              f"req/s dialtone/nginx {med(rps_ratios):.2f}x (target >= 1.0)")
        if baseline:
            before = [a[3] / b[3] for a, b in zip(runs["dialtone"], runs["baseline"])]
            print(f"{mode}: CPU per request dialtone/baseline ({baseline}) {med(before):.2f} "
                  f"(rounds {', '.join(f'{x:.2f}' for x in before)}); baseline/nginx "
                  f"{med(a[3] / b[3] for a, b in zip(runs['baseline'], runs['nginx'])):.2f}")
PY
}
