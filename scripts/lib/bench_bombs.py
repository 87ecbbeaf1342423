#!/usr/bin/env python3
"""Render bombs of one tenant against another tenant's service, for
scripts/bench bombs.

Tenant A (`bomber`) sends templates that take very long to render or render
huge output; tenant B (`victim`) does what a tenant normally does: caller-
name lookups served from the cache and its phones fetching their files over
TFTP and HTTP. B's load runs twice in the same run, the same way each time:
once with nothing else running (idle) and once while A's bombs run. Reported
per kind of B's request: count, errors, p50 and p99 in each phase, and how
much the p99 grew. Target: under bombs each p99 within 50 ms of idle, and
no more failed requests than idle.

A's bombs, from 4 client threads looping for the whole bomb phase (10 s
client timeout each): `POST /v1/templates/validate` and `POST /v1/preview`
with bomb bodies, and a stored phone-scope template that bombs for one of
A's phones, fetched over TFTP and HTTP (from 127.0.0.2, so that a ban of the
bombing source never touches B's phones on 127.0.0.1).

Subcommands: `seed` writes the import files, `run` measures against a
running `dialtone serve` and prints one JSON line, `summary` prints that
line for people. Only the standard library: the TFTP client here is a
minimal RFC 1350 one, independent of phlem's.
"""

import argparse
import csv
import json
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter

sys.path.insert(0, __import__("os").path.dirname(__file__))
from bench_clients import KeepAlive, bomb_http, error_message, percentile, stats, tftp_get  # noqa: E402

BOMBER, VICTIM = "bomber", "victim"
FAMILY, MODEL = "yealink", "T46S"
FILE_PATTERN = "{mac}.cfg"
BOMB_SOURCE = "127.0.0.2"
TARGET_MS = 50.0

# Jinja/Tera syntax that both engines parse.
BOMBS = {
    "nested-loops": "{% for i in range(end=10000) %}{% for j in range(end=10000) %}{{ i }}{% endfor %}{% endfor %}",
    "nested-loops-silent": (
        "{% for i in range(end=10000) %}{% for j in range(end=10000) %}"
        "{% if i == j and i == 10001 %}x{% endif %}{% endfor %}{% endfor %}"
    ),
    "output-growth": (
        "{% for i in range(end=10000) %}{% for j in range(end=100) %}"
        "{{ phone.mac }}{{ phone.mac }}{{ phone.mac }}{% endfor %}{% endfor %}"
    ),
}
# The stored bomb: pure CPU, small output.
STORED_BOMB = "nested-loops-silent"
BOMB_KINDS = ("validate", "preview", "stored-tftp", "stored-http")


# ---------------------------------------------------------------- seed


def a_mac(n):
    return "001565%06x" % (0x100000 + n)


def b_mac(n):
    return "001565%06x" % (0x300000 + n)


def seed(args):
    with open(f"{args.work}/tenants.csv", "w") as t:
        t.write("slug,name,default_region\n")
        t.write(f"{BOMBER},Bomber Inc,US\n{VICTIM},Victim Inc,US\n")
    with open(f"{args.work}/phones.csv", "w") as p:
        p.write("tenant,mac,family,model,line,extension,display_name,password,registrar\n")
        for tenant, mac_of in ((BOMBER, a_mac), (VICTIM, b_mac)):
            for n in range(1, args.phones + 1):
                p.write(f"{tenant},{mac_of(n)},{FAMILY},{MODEL},1,{1000 + n},User {n},pw-{n}-Qx7,sip.example.net\n")
    entries = [
        {"tenant": VICTIM, "external_id": f"e{i}", "name": f"Contact {i}",
         "numbers": [{"number": f"+1 (555) 010-{1000 + i}"}]}
        for i in range(args.entries)
    ]
    with open(f"{args.work}/directory.json", "w") as f:
        json.dump({"directory": entries}, f)
    return 0


# ---------------------------------------------------------------- clients


class Victim:
    def __init__(self, args, macs, numbers):
        self.args, self.macs, self.numbers = args, macs, numbers
        self.api_host, self.api_port = args.api_host, args.api_port
        self.prov_host, self.prov_port = args.prov_host, args.prov_port
        self.tftp_host, self.tftp_port = args.tftp_host, args.tftp_port

    def lookup_worker(self, client, i):
        digits, name = self.numbers[i % len(self.numbers)]
        status, body = client.get("/v1/lookup?number=%s&key=%s" % (digits, urllib.parse.quote(self.args.lookup_key)))
        return status == 200 and body == name.encode()

    def http_worker(self, client, i):
        mac = self.macs[i % len(self.macs)]
        ua = "Yealink SIP-%s 66.86.0.15 %s" % (MODEL, ":".join(mac[k:k + 2] for k in range(0, 12, 2)))
        status, body = client.get("/%s.cfg" % mac, {"User-Agent": ua})
        return status == 200 and len(body) > 0

    def tftp_worker(self, _client, i):
        mac = self.macs[i % len(self.macs)]
        ok, body = tftp_get(self.tftp_host, self.tftp_port, mac + ".cfg", timeout=2.0, retries=1,
                            deadline=time.monotonic() + 10)
        return ok and len(body) > 0

    def kinds(self):
        a = self.args
        return {
            "lookup": (self.lookup_worker, a.lookup_threads, a.lookup_rate, (self.api_host, self.api_port)),
            "tftp": (self.tftp_worker, a.tftp_threads, a.tftp_rate, None),
            "http": (self.http_worker, a.http_threads, a.http_rate, (self.prov_host, self.prov_port)),
        }

    def run(self, seconds):
        """Each thread paces its requests at its rate (no catch-up bursts
        after a slow one), so B offers the same load in both phases as long
        as a request takes less than its thread's interval (40 ms for a
        lookup, 100 ms for a fetch); beyond that the count drops."""
        stop_at = time.monotonic() + seconds
        results = {kind: [] for kind in self.kinds()}
        lock = threading.Lock()

        def loop(kind, fn, rate, endpoint, t, n):
            client = KeepAlive(endpoint[0], endpoint[1], 2.0) if endpoint else None
            interval, i, mine = 1.0 / rate, t * 7919, []
            next_at = time.monotonic() + interval * t / n  # the threads of a kind interleave
            while True:
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                if time.monotonic() >= stop_at:
                    break
                started = time.monotonic()
                ok = fn(client, i)
                mine.append((time.monotonic() - started, ok))
                i += 1
                next_at = max(next_at + interval, time.monotonic())
            if client:
                client.close()
            with lock:
                results[kind].extend(mine)

        threads = [
            threading.Thread(target=loop, args=(kind, fn, rate, endpoint, t, n), daemon=True)
            for kind, (fn, n, rate, endpoint) in self.kinds().items()
            for t in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        return {kind: stats(samples) for kind, samples in results.items()}


# ---------------------------------------------------------------- bombs


class Bombs:
    def __init__(self, args, a_macs):
        self.args = args
        self.token = args.admin_token
        self.bomb_phone = a_macs[0]      # the stored bomb is this phone's
        self.sample_phone = a_macs[1]    # validation of the guarded one renders this one
        self.preview_phone = a_macs[2]
        self.lock = threading.Lock()
        self.samples = {k: [] for k in ("store",) + BOMB_KINDS}
        self.statuses = {k: Counter() for k in self.samples}
        self.messages = {k: {} for k in self.samples}
        self.stored = {"phone": self.bomb_phone, "bomb": STORED_BOMB, "attempts": [], "stored": False}
        self.stored_ready = threading.Event()

    def record(self, kind, status, seconds, message):
        with self.lock:
            self.samples[kind].append(seconds)
            self.statuses[kind][status] += 1
            if message and status not in self.messages[kind]:
                self.messages[kind][status] = message

    def api(self, method, path, body):
        return bomb_http(self.args.api_host, self.args.api_port, method, path, self.args.bomb_timeout,
                         body=body, headers={"Authorization": "Bearer " + self.token}, source=BOMB_SOURCE)

    def store(self):
        """Tries to save the stored bomb: as is, then (if refused) guarded so
        that it bombs only for its phone while validation renders another."""
        mac = self.bomb_phone
        bomb = BOMBS[STORED_BOMB]
        tries = [
            ("unguarded", {"scope": "phone", "mac": mac, "family": FAMILY, "file_pattern": FILE_PATTERN,
                           "body": bomb}),
            ("guarded, validated on %s" % self.sample_phone,
             {"scope": "phone", "mac": mac, "family": FAMILY, "file_pattern": FILE_PATTERN,
              "sample_mac": self.sample_phone,
              "body": '{%% if phone.mac == "%s" %%}%s{%% endif %%}#!version:1.0.0.1\n' % (mac, bomb)}),
        ]
        reasons = []
        for what, body in tries:
            status, seconds, head = self.api("POST", "/v1/templates", body)
            message = "no answer within %g s" % self.args.bomb_timeout if status == "timeout" else error_message(head)
            self.record("store", status, seconds, None if status == "201" else message)
            self.stored["attempts"].append({"what": what, "status": status, "ms": round(1e3 * seconds, 1),
                                            "answer": message if status != "201" else "stored"})
            if status == "201":
                self.stored.update(stored=True, how=what)
                break
            if status == "409":
                # Only an earlier attempt that timed out on our side can have saved it.
                self.stored.update(stored=True, how="an earlier attempt, saved after the client gave up")
                break
            reasons.append("%s: %s" % (what, message if status == "timeout" else "%s %s" % (status, message)))
        if not self.stored["stored"]:
            refused = any(a["status"].startswith("4") for a in self.stored["attempts"])
            self.stored["note"] = ("stored bomb refused at save: " if refused else
                                   "stored bomb not saved: ") + "; ".join(reasons)
        self.stored_ready.set()

    def one(self, kind, name):
        a, mac = self.args, self.bomb_phone
        if kind == "validate":
            status, seconds, head = self.api("POST", "/v1/templates/validate", {
                "scope": "tenant", "tenant": BOMBER, "family": FAMILY, "file_pattern": FILE_PATTERN,
                "body": BOMBS[name]})
        elif kind == "preview":
            p = self.preview_phone
            status, seconds, head = self.api("POST", "/v1/preview", {
                "mac": p, "file": p + ".cfg", "body": BOMBS[name], "scope": "tenant", "tenant": BOMBER,
                "family": FAMILY, "file_pattern": FILE_PATTERN})
        elif kind == "stored-http":
            ua = "Yealink SIP-%s 66.86.0.15 %s" % (MODEL, ":".join(mac[k:k + 2] for k in range(0, 12, 2)))
            status, seconds, head = bomb_http(a.prov_host, a.prov_port, "GET", "/%s.cfg" % mac, a.bomb_timeout,
                                              headers={"User-Agent": ua}, source=BOMB_SOURCE)
        else:
            started = time.monotonic()
            # Retransmits the request every 2 s like a phone, until the client timeout.
            ok, got = tftp_get(a.tftp_host, a.tftp_port, mac + ".cfg", timeout=2.0, retries=1000,
                               source=BOMB_SOURCE, deadline=started + a.bomb_timeout)
            seconds = time.monotonic() - started
            status = "ok" if ok else ("timeout" if got == "timeout" else "tftp " + got)
            head = b""
        message = error_message(head) if head and not status.startswith("2") else None
        self.record(kind, status, seconds, message)

    def run(self, stop):
        def loop(i):
            if i == 0:
                self.store()
            n = 0
            while not stop.is_set():
                kind = BOMB_KINDS[(i + n) % len(BOMB_KINDS)]
                name = list(BOMBS)[(i + n // len(BOMB_KINDS)) % len(BOMBS)]
                n += 1
                if kind.startswith("stored") and not self.stored_ready.is_set():
                    continue
                self.one(kind, name)

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(self.args.bomb_threads)]
        for t in threads:
            t.start()
        return threads

    def report(self):
        out = {}
        for kind, samples in self.samples.items():
            times = sorted(samples)
            out[kind] = {
                "count": len(times),
                "statuses": dict(self.statuses[kind]),
                "p50_ms": None if not times else round(1e3 * percentile(times, 0.5), 1),
                "p99_ms": None if not times else round(1e3 * percentile(times, 0.99), 1),
                "max_ms": None if not times else round(1e3 * times[-1], 1),
                "answers": self.messages[kind],
            }
        return out


# ---------------------------------------------------------------- run


def host_port(text):
    text = text.split("://", 1)[-1].rstrip("/")
    host, port = text.rsplit(":", 1)
    return host, int(port)


def loadavg():
    """The 1-minute load: this machine is shared, and other work shows here."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def fail(message):
    print("bench bombs: setup failed: " + message, file=sys.stderr)
    return 1


def run(args):
    args.api_host, args.api_port = host_port(args.api)
    args.prov_host, args.prov_port = host_port(args.prov)
    args.tftp_host, args.tftp_port = host_port(args.tftp)

    macs = {BOMBER: [], VICTIM: []}
    with open(f"{args.work}/phones.csv") as f:
        for row in csv.DictReader(f):
            macs[row["tenant"]].append(row["mac"])
    with open(f"{args.work}/directory.json") as f:
        directory = json.load(f)["directory"]
    numbers = ["".join(c for c in e["numbers"][0]["number"] if c.isdigit()) for e in directory]
    numbers = [(n, e["name"]) for n, e in zip(numbers, directory)]
    if len(macs[BOMBER]) < 3 or not macs[VICTIM] or not numbers:
        return fail("not enough phones or directory entries in %s" % args.work)

    # A's token works (and sees its phones).
    status, _, head = bomb_http(args.api_host, args.api_port, "GET", "/v1/phones?tenant=%s&limit=1" % BOMBER, 10,
                                headers={"Authorization": "Bearer " + args.admin_token})
    if status != "200":
        return fail("tenant-admin token of %s: GET /v1/phones answered %s %s" % (BOMBER, status, error_message(head)))
    # The bomb source address must be usable (127.0.0.0/8 is all loopback on Linux).
    try:
        socket.create_connection((args.prov_host, args.prov_port), timeout=2, source_address=(BOMB_SOURCE, 0)).close()
    except OSError as e:
        return fail("cannot connect from %s: %s" % (BOMB_SOURCE, e))

    # Warm: every number once (then B's lookups are cache hits), every phone's
    # file once over each protocol (then render-cache hits).
    print("warming: %d lookups, %d phones over HTTP and TFTP" % (len(numbers), len(macs[VICTIM])), file=sys.stderr)
    victim = Victim(args, macs[VICTIM], numbers)
    client = KeepAlive(args.api_host, args.api_port, 5.0)
    bad = [n for i, (n, _) in enumerate(numbers) if not victim.lookup_worker(client, i)]
    client.close()
    if bad:
        return fail("%d of %d warm-up lookups did not answer the directory name (first: %s)" % (len(bad), len(numbers), bad[0]))
    client = KeepAlive(args.prov_host, args.prov_port, 5.0)
    bad = [m for i, m in enumerate(macs[VICTIM]) if not victim.http_worker(client, i)]
    client.close()
    if bad:
        return fail("%d warm-up HTTP fetches failed (first: %s.cfg)" % (len(bad), bad[0]))
    bad = [m for i, m in enumerate(macs[VICTIM]) if not victim.tftp_worker(None, i)]
    if bad:
        return fail("%d warm-up TFTP fetches failed (first: %s.cfg)" % (len(bad), bad[0]))

    print("idle: %s's load for %g s" % (VICTIM, args.seconds), file=sys.stderr)
    load = {"idle_start": loadavg()}
    idle = victim.run(args.seconds)
    load["idle_end"] = loadavg()

    print("bombs: %d threads of %s's bombs, %s's load for %g s" % (args.bomb_threads, BOMBER, VICTIM, args.seconds),
          file=sys.stderr)
    bombs = Bombs(args, macs[BOMBER])
    stop = threading.Event()
    started = time.monotonic()
    threads = bombs.run(stop)
    time.sleep(0.5)
    load["bombs_start"] = loadavg()
    under = victim.run(args.seconds)
    load["bombs_end"] = loadavg()
    stop.set()
    # A bomb started just before the end still gets its full client timeout.
    for t in threads:
        t.join(max(0.1, started + 0.5 + args.seconds + args.bomb_timeout + 5 - time.monotonic()))
    still = sum(t.is_alive() for t in threads)

    victims, met = {}, True
    for kind in idle:
        i, u = idle[kind], under[kind]
        delta = None if i["p99_ms"] is None or u["p99_ms"] is None else round(u["p99_ms"] - i["p99_ms"], 3)
        ok = delta is not None and delta <= TARGET_MS and u["errors"] <= i["errors"] and u["count"] > 0
        met = met and ok
        victims[kind] = {"idle": i, "bombs": u, "p99_delta_ms": delta, "met": ok}
    result = {
        "case": "bombs",
        "seconds_per_phase": args.seconds,
        "victim_phones": len(macs[VICTIM]),
        "victim_numbers": len(numbers),
        "rates_per_s": {"lookup": args.lookup_threads * args.lookup_rate,
                        "tftp": args.tftp_threads * args.tftp_rate,
                        "http": args.http_threads * args.http_rate},
        "target_p99_delta_ms": TARGET_MS,
        "victim": victims,
        "target_met": met,
        "loadavg_1m": load,
        "bomb_threads": args.bomb_threads,
        "bomb_timeout_s": args.bomb_timeout,
        "bomb_threads_still_running": still,
        "bombs": bombs.report(),
        "stored_bomb": bombs.stored,
    }
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- summary


def summary(args):
    with open(args.results) as f:
        r = [json.loads(line) for line in f if line.strip()][-1]
    fmt = lambda v: "-" if v is None else "%.1f" % v
    print()
    print("render bombs of tenant %s vs tenant %s's service (%g s a phase; %s's requests paced: %s)" % (
        BOMBER, VICTIM, r["seconds_per_phase"], VICTIM,
        ", ".join("%s %d/s" % kv for kv in r["rates_per_s"].items())))
    print("%-8s   %s   %s  %8s" % ("victim", "---------- idle ----------", "------- under bombs -------", "p99 diff"))
    print("%-8s %6s %4s %7s %7s %6s %4s %7s %7s %9s  %s" % (
        "", "n", "err", "p50", "p99", "n", "err", "p50", "p99", "", "target: p99 diff <= %g, no new errors" % r["target_p99_delta_ms"]))
    for kind, v in r["victim"].items():
        i, u = v["idle"], v["bombs"]
        print("%-8s %6d %4d %7s %7s %6d %4d %7s %7s %9s  %s" % (
            kind, i["count"], i["errors"], fmt(i["p50_ms"]), fmt(i["p99_ms"]),
            u["count"], u["errors"], fmt(u["p50_ms"]), fmt(u["p99_ms"]), fmt(v["p99_delta_ms"]),
            "met" if v["met"] else "TARGET MISSED"))
    print("(ms; failed requests count at the time they took: 2 s client timeout for HTTP, 2 s + one retry for TFTP)")
    load = r.get("loadavg_1m") or {}
    print("machine load (1 min) at start/end: idle %s/%s, bombs %s/%s (shared machine: other work skews both phases)" % tuple(
        fmt(load.get(k)) for k in ("idle_start", "idle_end", "bombs_start", "bombs_end")))
    print()
    print("bombs: %d threads, %g s client timeout%s" % (
        r["bomb_threads"], r["bomb_timeout_s"],
        "" if not r["bomb_threads_still_running"] else
        ", %d threads still waiting at the end" % r["bomb_threads_still_running"]))
    for kind, b in r["bombs"].items():
        statuses = ", ".join("%s x%d" % kv for kv in sorted(b["statuses"].items()))
        print("  %-12s %4d requests  p50 %8s ms  p99 %8s ms  [%s]" % (kind, b["count"], fmt(b["p50_ms"]), fmt(b["p99_ms"]), statuses))
        for status, message in b["answers"].items():
            print("  %-12s   %s: %s" % ("", status, message[:160]))
    s = r["stored_bomb"]
    if s["stored"]:
        print("  stored bomb (%s) on phone %s: saved (%s)" % (s["bomb"], s["phone"], s["how"]))
    else:
        print("  %s; its phone %s fetched anyway" % (s.get("note", "stored bomb not saved"), s["phone"]))
    print()
    if r["target_met"]:
        print("target met: every p99 of %s within %g ms of idle, no new errors" % (VICTIM, r["target_p99_delta_ms"]))
    else:
        missed = [k for k, v in r["victim"].items() if not v["met"]]
        print("target missed: %s (p99 more than %g ms over idle, or new errors)" % (", ".join(missed), r["target_p99_delta_ms"]))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--work", required=True)
    s.add_argument("--phones", type=int, default=300, help="per tenant")
    s.add_argument("--entries", type=int, default=1000, help="victim's directory entries")
    r = sub.add_parser("run")
    r.add_argument("--work", required=True)
    r.add_argument("--api", required=True, help="HOST:PORT of the API listener")
    r.add_argument("--prov", required=True, help="HOST:PORT of HTTP provisioning")
    r.add_argument("--tftp", required=True, help="HOST:PORT of TFTP")
    r.add_argument("--admin-token", required=True, help="tenant-admin token of the bomber")
    r.add_argument("--lookup-key", required=True, help="lookup token of the victim")
    r.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    r.add_argument("--bomb-threads", type=int, default=4)
    r.add_argument("--bomb-timeout", type=float, default=10.0)
    r.add_argument("--lookup-threads", type=int, default=6)
    r.add_argument("--lookup-rate", type=float, default=25.0, help="per thread, per second")
    r.add_argument("--tftp-threads", type=int, default=4)
    r.add_argument("--tftp-rate", type=float, default=10.0)
    r.add_argument("--http-threads", type=int, default=4)
    r.add_argument("--http-rate", type=float, default=10.0)
    m = sub.add_parser("summary")
    m.add_argument("results")
    args = p.parse_args()
    return {"seed": seed, "run": run, "summary": summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
