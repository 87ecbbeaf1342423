#!/usr/bin/env python3
"""Render bombs of one tenant against another tenant's service, for
scripts/bench bombs.

Tenant A (`bomber`) sends templates that take very long to render or render
huge output; tenant B (`victim`) does what a tenant normally does: caller-
name lookups served from the cache and its phones fetching their files over
TFTP and HTTP. B's load runs twice in the same run, the same way each time:
once with nothing else running (idle) and once while A's bombs run. Reported
per kind of B's request: count, errors, p50 and p99 in each phase, and how
much the p99 grew. Most of B's phones are fetched once before the phases,
so their fetches are render-cache hits; the rest are kept for misses: in
each phase, phones fetched for the first time (one fetch each, over TFTP
or HTTP), reported as kinds of their own (`miss-tftp`, `miss-http`).
Target: under bombs each p99, misses' too, within 50 ms of idle, no more
failed requests than idle, and the bombs must have done their work: every
`validate` and `preview` answered with a render (200) or the budget's 422,
and the stored bomb either refused at save for its budget or, saved, its
fetches failing and its phone's provisioning history naming the budget
over TFTP and over HTTP.

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
import math
import socket
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, __import__("os").path.dirname(__file__))
from bench_bombs_verdict import bomb_outcome, bomb_problems  # noqa: E402
from bench_bombs_victim import Victim, yealink_agent  # noqa: E402
from bench_clients import KeepAlive, bomb_http, error_message, percentile, tftp_get  # noqa: E402

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
# Misses a second per protocol, in each phase: each one a phone kept cold.
MISS_RATE = 2.0


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
        self.outcomes = {k: Counter() for k in self.samples}
        self.messages = {k: {} for k in self.samples}
        self.stored = {"phone": self.bomb_phone, "bomb": STORED_BOMB, "attempts": [], "stored": False}
        self.stored_ready = threading.Event()

    def record(self, kind, status, seconds, message, outcome=None):
        with self.lock:
            self.samples[kind].append(seconds)
            self.statuses[kind][status] += 1
            if outcome:
                self.outcomes[kind][outcome] += 1
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
                                            "answer": message if status != "201" else "stored",
                                            "budget": status == "422" and b"budget" in head})
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
            status, seconds, head = bomb_http(a.prov_host, a.prov_port, "GET", "/%s.cfg" % mac, a.bomb_timeout,
                                              headers={"User-Agent": yealink_agent(MODEL, mac)}, source=BOMB_SOURCE)
        else:
            started = time.monotonic()
            # Retransmits the request every 2 s like a phone, until the client timeout.
            ok, got = tftp_get(a.tftp_host, a.tftp_port, mac + ".cfg", timeout=2.0, retries=1000,
                               source=BOMB_SOURCE, deadline=started + a.bomb_timeout)
            seconds = time.monotonic() - started
            status = "ok" if ok else ("timeout" if got == "timeout" else "tftp " + got)
            head = b""
        message = error_message(head) if head and not status.startswith("2") else None
        self.record(kind, status, seconds, message, bomb_outcome(kind, status, head))

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
                "outcomes": dict(self.outcomes[kind]),
            }
        return out

    def budget_in_history(self, wait):
        """Protocol -> whether the stored bomb's phone has a fetch in its
        provisioning history that failed for the render budget (history
        is written in batches: polled for up to `wait` seconds)."""
        a, found = self.args, {}
        client = KeepAlive(a.api_host, a.api_port, 10.0)
        deadline = time.monotonic() + wait
        while True:
            status, body = client.get("/v1/phones/%s/history?limit=500" % self.bomb_phone,
                                      {"Authorization": "Bearer " + self.token})
            if status == 200:
                for boot in json.loads(body):
                    if "budget" in (boot.get("outcome") or ""):
                        found[boot.get("protocol")] = True
            if (found.get("tftp") and found.get("http")) or time.monotonic() >= deadline:
                client.close()
                return found
            time.sleep(0.5)


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

    # Phones kept cold for the misses: per phase and protocol, as many as
    # the miss worker can fetch in a phase.
    per = math.ceil(args.miss_rate * args.seconds) + 1
    if len(macs[VICTIM]) < 4 * per + 10:
        return fail("%d phones of %s: %d are kept cold for misses at %g/s over %g s, and at least 10 warm"
                    % (len(macs[VICTIM]), VICTIM, 4 * per, args.miss_rate, args.seconds))
    warm, cold = macs[VICTIM][:-4 * per], macs[VICTIM][-4 * per:]
    cold_idle = {"tftp": cold[:per], "http": cold[per:2 * per]}
    cold_bombs = {"tftp": cold[2 * per:3 * per], "http": cold[3 * per:]}

    # Warm: every number once (then B's lookups are cache hits), every warm
    # phone's file once over each protocol (then render-cache hits).
    print("warming: %d lookups, %d phones over HTTP and TFTP (%d kept cold for misses)"
          % (len(numbers), len(warm), len(cold)), file=sys.stderr)
    victim = Victim(args, MODEL, warm, numbers)
    client = KeepAlive(args.api_host, args.api_port, 5.0)
    bad = [n for i, (n, _) in enumerate(numbers) if not victim.lookup_worker(client, i)]
    client.close()
    if bad:
        return fail("%d of %d warm-up lookups did not answer the directory name (first: %s)" % (len(bad), len(numbers), bad[0]))
    client = KeepAlive(args.prov_host, args.prov_port, 5.0)
    bad = [m for i, m in enumerate(warm) if not victim.http_worker(client, i)]
    client.close()
    if bad:
        return fail("%d warm-up HTTP fetches failed (first: %s.cfg)" % (len(bad), bad[0]))
    bad = [m for i, m in enumerate(warm) if not victim.tftp_worker(None, i)]
    if bad:
        return fail("%d warm-up TFTP fetches failed (first: %s.cfg)" % (len(bad), bad[0]))

    print("idle: %s's load for %g s" % (VICTIM, args.seconds), file=sys.stderr)
    load = {"idle_start": loadavg()}
    idle = Victim(args, MODEL, warm, numbers, cold_idle).run(args.seconds)
    load["idle_end"] = loadavg()

    print("bombs: %d threads of %s's bombs, %s's load for %g s" % (args.bomb_threads, BOMBER, VICTIM, args.seconds),
          file=sys.stderr)
    bombs = Bombs(args, macs[BOMBER])
    stop = threading.Event()
    started = time.monotonic()
    threads = bombs.run(stop)
    time.sleep(0.5)
    load["bombs_start"] = loadavg()
    under = Victim(args, MODEL, warm, numbers, cold_bombs).run(args.seconds)
    load["bombs_end"] = loadavg()
    stop.set()
    # A bomb started just before the end still gets its full client timeout.
    for t in threads:
        t.join(max(0.1, started + 0.5 + args.seconds + args.bomb_timeout + 5 - time.monotonic()))
    still = sum(t.is_alive() for t in threads)
    report = bombs.report()
    history = bombs.budget_in_history(10) if bombs.stored["stored"] else {}
    bomb_failures = bomb_problems(report, bombs.stored, history)

    victims, met = {}, not bomb_failures
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
        "victim_cold_phones": len(cold),
        "victim_numbers": len(numbers),
        "rates_per_s": {"lookup": args.lookup_threads * args.lookup_rate,
                        "tftp": args.tftp_threads * args.tftp_rate,
                        "http": args.http_threads * args.http_rate,
                        "miss-tftp": args.miss_rate, "miss-http": args.miss_rate},
        "target_p99_delta_ms": TARGET_MS,
        "victim": victims,
        "target_met": met,
        "loadavg_1m": load,
        "bomb_threads": args.bomb_threads,
        "bomb_timeout_s": args.bomb_timeout,
        "bomb_threads_still_running": still,
        "bombs": report,
        "stored_bomb": bombs.stored,
        "stored_bomb_budget_in_history": history,
        # The bombs' own verdict: rendered, or refused for their budget.
        "bomb_problems": bomb_failures,
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
    print("%-9s   %s   %s  %8s" % ("victim", "---------- idle ----------", "------- under bombs -------", "p99 diff"))
    print("%-9s %6s %4s %7s %7s %6s %4s %7s %7s %9s  %s" % (
        "", "n", "err", "p50", "p99", "n", "err", "p50", "p99", "", "target: p99 diff <= %g, no new errors" % r["target_p99_delta_ms"]))
    for kind, v in r["victim"].items():
        i, u = v["idle"], v["bombs"]
        print("%-9s %6d %4d %7s %7s %6d %4d %7s %7s %9s  %s" % (
            kind, i["count"], i["errors"], fmt(i["p50_ms"]), fmt(i["p99_ms"]),
            u["count"], u["errors"], fmt(u["p50_ms"]), fmt(u["p99_ms"]), fmt(v["p99_delta_ms"]),
            "met" if v["met"] else "TARGET MISSED"))
    print("(ms; failed requests count at the time they took: 2 s client timeout for HTTP, 2 s + one retry for TFTP;")
    print(" tftp, http: phones fetched before the phases, render-cache hits; miss-tftp, miss-http: %d other phones,"
          " each fetched once, for the first time)" % r.get("victim_cold_phones", 0))
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
        if b.get("outcomes"):
            print("  %-12s   came to: %s" % ("", ", ".join("%s x%d" % kv for kv in sorted(b["outcomes"].items()))))
        for status, message in b["answers"].items():
            print("  %-12s   %s: %s" % ("", status, message[:160]))
    s = r["stored_bomb"]
    if s["stored"]:
        print("  stored bomb (%s) on phone %s: saved (%s)" % (s["bomb"], s["phone"], s["how"]))
    else:
        print("  %s; its phone %s fetched anyway" % (s.get("note", "stored bomb not saved"), s["phone"]))
    if s["stored"]:
        found = r.get("stored_bomb_budget_in_history") or {}
        print("  its phone's history names the render budget over: %s" % (", ".join(sorted(found)) or "nothing"))
    problems = r.get("bomb_problems", [])
    for problem in problems:
        print("  bombs did not do their work: %s" % problem)
    print()
    if r["target_met"]:
        print("target met: every p99 of %s within %g ms of idle, no new errors; every bomb rendered or was refused "
              "for its budget" % (VICTIM, r["target_p99_delta_ms"]))
    else:
        missed = [k for k, v in r["victim"].items() if not v["met"]] + (["the bombs' own work"] if problems else [])
        print("target missed: %s (p99 more than %g ms over idle, new errors, or bombs that neither rendered nor "
              "were refused for their budget)" % (", ".join(missed), r["target_p99_delta_ms"]))
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
    r.add_argument("--miss-rate", type=float, default=MISS_RATE,
                   help="per second and protocol: fetches of phones not fetched before")
    m = sub.add_parser("summary")
    m.add_argument("results")
    args = p.parse_args()
    return {"seed": seed, "run": run, "summary": summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
