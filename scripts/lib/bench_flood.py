"""TFTP flood bench (scripts/bench flood): forged-looking RRQs from many
sources, each asking `timeout 255` and never acknowledging, while real
phones boot from other addresses. Phones use the standard-library client in
bench_clients.py (not phlem); each phone has an address of its own within
an office of ten (127.0.2.x), the flood comes from 127.0.1.1-200."""

import argparse
import errno
import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from bench_clients import percentile, tftp_get  # noqa: E402

TENANT, FAMILY, MODEL, MODEL_FILE = "flood", "yealink", "T46S", "y000000000066.cfg"


def mac_of(n):
    return "0015657%05x" % n


def seed(args):
    with open(f"{args.work}/tenants.csv", "w") as t:
        t.write("slug,name,default_region\n")
        t.write(f"{TENANT},Flood Test,US\n")
    with open(f"{args.work}/phones.csv", "w") as p:
        p.write("tenant,mac,family,model,line,extension,display_name,password,registrar\n")
        for n in range(args.phones):
            p.write(f"{TENANT},{mac_of(n)},{FAMILY},{MODEL},1,{2000 + n},User {n},pw-{n}-Fl9,sip.example.net\n")
    return 0


def phone_source(n):
    # Ten phones behind each office address, as behind a NAT.
    return "127.0.2.%d" % (1 + n // 10 % 250)


def boot(args, n):
    """One phone's boot: its boot file, the model file, its MAC file."""
    times, source = [], phone_source(n)
    for name in (f"{mac_of(n)}.boot", MODEL_FILE, f"{mac_of(n)}.cfg"):
        start = time.monotonic()
        ok, why = tftp_get(args.host, args.port, name, timeout=args.timeout, retries=args.retries, source=source)
        if not ok:
            return times, f"{name}: {why}"
        times.append(time.monotonic() - start)
    return times, None


def boot_all(args):
    start = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(lambda n: boot(args, n), range(args.phones)))
    elapsed = time.monotonic() - start
    samples = sorted(t for times, _ in results for t in times)
    failures = [why for _, why in results if why]
    return {
        "phones": args.phones,
        "failed": len(failures),
        "failures": failures[:5],
        "transfers": len(samples),
        "elapsed_s": round(elapsed, 2),
        "p50_ms": round(percentile(samples, 0.50) * 1e3, 2) if samples else None,
        "p99_ms": round(percentile(samples, 0.99) * 1e3, 2) if samples else None,
        "max_ms": round(samples[-1] * 1e3, 2) if samples else None,
    }


def rrq(name):
    return b"\0\1" + name.encode() + b"\0octet\0timeout\0" + b"255\0" + b"blksize\0" + b"1428\0"


class Flood:
    """Sends `count` RRQs over `seconds` from `args.sources` sources, and at
    the same pace after that until `booted` is set (the last phone has
    finished: a flood that ended first would leave the slowest phones a
    quiet server), and never answers; counts what comes back, the RRQs
    sent after the last phone finished, and the sends that failed (by
    errno: a full socket buffer is RRQs the server never saw). Up to 200
    sources are 127.0.<subnet>.x; more (forged sources spread over many
    addresses, a transfer or a few each) are 127.<10 + subnet>.x.y."""

    def __init__(self, args, count, seconds, subnet, real_share):
        self.args, self.count, self.seconds = args, count, seconds
        self.real_share = real_share
        self.sockets = []
        for i in range(args.sources):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if args.sources <= 200:
                s.bind(("127.0.%d.%d" % (subnet, 1 + i), 0))
            else:
                s.bind(("127.%d.%d.%d" % (10 + subnet, i // 250, 1 + i % 250), 0))
            s.setblocking(False)
            self.sockets.append(s)
        self.replies, self.sent, self.done = {}, 0, threading.Event()
        self.booted, self.sent_after_boot, self.send_errors = threading.Event(), 0, {}

    def names(self, rng):
        # Random names are misses (and get their sources banned); a real
        # common file is answered with an OACK and holds a slot while the
        # server waits for an ACK that never comes.
        if rng.random() < self.real_share:
            return rng.choice(("y000000000000.boot", MODEL_FILE))
        return "%012x.cfg" % rng.getrandbits(48) if rng.random() < 0.5 else "x%08x.bin" % rng.getrandbits(32)

    def send(self):
        rng = random.Random(7)
        start = time.monotonic()
        i = 0
        while i < self.count or not self.booted.is_set():
            due = start + self.seconds * i / self.count
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            after_boot = self.booted.is_set()
            try:
                self.sockets[i % len(self.sockets)].sendto(rrq(self.names(rng)), (self.args.host, self.args.port))
                self.sent += 1
                self.sent_after_boot += after_boot
            except OSError as e:
                reason = errno.errorcode.get(e.errno, str(e.errno))
                self.send_errors[reason] = self.send_errors.get(reason, 0) + 1
            i += 1
        self.done.set()

    def receive(self, stop):
        sel = selectors.DefaultSelector()
        for s in self.sockets:
            sel.register(s, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                try:
                    while True:
                        data, _ = key.fileobj.recvfrom(2048)
                        op = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
                        if op == 5:
                            label = "error: " + data[4:].rstrip(b"\0").decode(errors="replace")
                        else:
                            label = {3: "data", 6: "oack"}.get(op, "opcode %d" % op)
                        self.replies[label] = self.replies.get(label, 0) + 1
                except (BlockingIOError, OSError):
                    pass


def metric(api, name):
    text = urllib.request.urlopen(f"http://{api}/metrics", timeout=2).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def refused(api):
    """dialtone_tftp_refused_total by reason (0 for a server without it)."""
    text = urllib.request.urlopen(f"http://{api}/metrics", timeout=2).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("dialtone_tftp_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def memory(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def flooded_boot(args, subnet, real_share, seconds):
    """Boots every phone while a flood runs; returns the phase's figures."""
    flood = Flood(args, args.flood, seconds, subnet, real_share)
    stop, peak = threading.Event(), [0.0]

    def watch():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], metric(args.api, "dialtone_tftp_active_transfers"))
            except OSError:
                pass
            time.sleep(0.2)

    threads = [threading.Thread(target=flood.receive, args=(stop,)), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    sender = threading.Thread(target=flood.send)
    sender.start()
    time.sleep(0.3)  # the flood is under way before the phones start
    try:
        booted = boot_all(args)
    finally:
        flood.booted.set()
    sender.join()
    # How long forged transfers keep their slots after the flood stops.
    drained, ended = None, time.monotonic()
    for _ in range(1200):
        if metric(args.api, "dialtone_tftp_active_transfers") == 0:
            drained = round(time.monotonic() - ended, 2)
            break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    return {
        "boot": booted,
        "rrqs_sent": flood.sent,
        "rrqs_after_last_phone": flood.sent_after_boot,
        "send_errors": flood.send_errors,
        "real_share": real_share,
        "replies": dict(sorted(flood.replies.items(), key=lambda kv: -kv[1])[:8]),
        "peak_active_transfers": peak[0],
        "slots_free_after_s": drained,
        "bans_total": metric(args.api, "dialtone_provisioning_bans_total"),
        "refused": refused(args.api),
        "memory_mb": memory(args.pid),
    }


def run(args):
    host, port = args.tftp.rsplit(":", 1)
    args.host, args.port = host, int(port)
    # Warm the render cache as a restart's first boots would, untimed.
    boot_all(args)
    quiet = boot_all(args)
    quiet["refused"] = refused(args.api)
    mem_quiet = memory(args.pid)
    seconds = max(quiet["elapsed_s"] * 2, 3.0)
    result = {
        "case": "flood",
        "quiet": quiet,
        "flood_sources": args.sources,
        "flood_rrqs": args.flood,
        "flood_seconds": round(seconds, 2),
        # The case: random names, so most are misses.
        "random": flooded_boot(args, 1, 0.25, seconds),
        # The harder one: only files that exist, so nothing is a miss and
        # no source is banned; only the transfer limits stand in the way.
        "existing": flooded_boot(args, 3, 1.0, seconds),
        "memory_mb": {"quiet": mem_quiet, "end": memory(args.pid)},
    }
    print(json.dumps(result))
    failed = result["random"]["boot"]["failed"] + result["existing"]["boot"]["failed"]
    return 0 if failed == 0 else 1


def summary(args):
    r = json.loads(open(args.results).read().splitlines()[-1])
    q = r["quiet"]
    print()
    sent = ", ".join(f"{k} {r[k]['rrqs_sent']:,}" for k in ("random", "existing"))
    print(f"TFTP flood: RRQs asking timeout 255, never acknowledged, from {r['flood_sources']} sources ({sent} sent)")
    pace = f"{r['flood_rrqs']:,}" if "flood_rrqs" in r else args.rrqs
    print(f"at the pace of {pace} over {r['flood_seconds']} s, kept up until the last of {q['phones']:,} phones booted "
          "(10 per address, 3 files each, standard-library client)")
    print("  random:   random names, one in four an existing common file (most are misses: sources get banned)")
    print("  existing: existing common files only (no misses, no bans: only the transfer limits hold)")
    print(f"{'phase':<9} {'failed':>7} {'transfers':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'boot s':>7} {'p99/quiet':>10}")
    rows = [("quiet", q)] + [(k, r[k]["boot"]) for k in ("random", "existing")]
    for label, x in rows:
        ratio = x["p99_ms"] / q["p99_ms"] if x["p99_ms"] and q["p99_ms"] else float("nan")
        print(f"{label:<9} {x['failed']:>7} {x['transfers']:>10} {x['p50_ms']:>8} {x['p99_ms']:>8} {x['max_ms']:>8} {x['elapsed_s']:>7} {ratio:>9.2f}x")
    print(f"quiet: requests refused, by reason: {q.get('refused')}")
    for k in ("random", "existing"):
        f = r[k]
        print(f"{k}: answers {f['replies']}")
        print(f"  RRQs sent {f['rrqs_sent']:,}, of which after the last phone finished booting {f.get('rrqs_after_last_phone', 0):,};"
              f" sends that failed, by errno: {f.get('send_errors') or 'none'}")
        print(f"  peak active transfers {f['peak_active_transfers']:.0f}; all slots free {f['slots_free_after_s']} s after the flood; bans so far {f['bans_total']:.0f}")
        print(f"  requests refused so far, by reason: {f.get('refused')}")
        if f["boot"]["failures"]:
            print(f"  first failures: {f['boot']['failures']}")
    m = r["memory_mb"]
    print(f"server memory (MB): quiet RSS {m['quiet'].get('VmRSS')}; at the end RSS {m['end'].get('VmRSS')}, peak (VmHWM) {m['end'].get('VmHWM')}")
    failed = r["random"]["boot"]["failed"] + r["existing"]["boot"]["failed"]
    print(f"target (every phone boots under both floods): {'met' if failed == 0 else 'MISSED'}")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--work", required=True)
    s.add_argument("--phones", type=int, default=1000)
    r = sub.add_parser("run")
    r.add_argument("--tftp", required=True)
    r.add_argument("--api", required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--phones", type=int, default=1000)
    r.add_argument("--flood", type=int, default=20000)
    r.add_argument("--sources", type=int, default=200)
    r.add_argument("--threads", type=int, default=32)
    r.add_argument("--timeout", type=float, default=2.0)
    r.add_argument("--retries", type=int, default=2)
    m = sub.add_parser("summary")
    m.add_argument("results")
    m.add_argument("--rrqs", default="20,000", help="the count asked for, for results that do not say it")
    args = p.parse_args()
    return {"seed": seed, "run": run, "summary": summary}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
