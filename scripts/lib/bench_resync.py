#!/usr/bin/env python3
"""Resync of the phones a template edit affects, for scripts/bench resync.

phlem's phones are booted and registered with Kamailio (started by
bench_resync.sh). Here: a tenant-scope Yealink template is created through
the API, and once it is served, `POST /v1/tenants/{slug}/resync` asks the
tenant's Yealink phones to check their configuration. Reported:

- time from the API call to the last affected phone's fetch of the new
  bytes (phlem's re-fetch, its file's SHA-256 equal to `dialtone render`'s),
  and to the last answer and last `refetched_at` dialtone itself saw;
- NOTIFYs per second achieved against the configured per-tenant and
  overall rates: dialtone's buckets hold one second's worth, so a burst of
  `rate` goes out at once and then `rate` a second; the limit is respected
  when no stretch of `sent_at`s holds more than that allows;
- failures: phones the API skipped, or an answer that did not ask exactly
  the tenant's Yealink phones (from the phlem file, not from the answer
  itself), resyncs failed, phones that never fetched the new bytes,
  NOTIFYs phlem got for phones that were not affected.
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request


def api(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


def wait_for(what, timeout, check, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(every)
    sys.exit(f"bench resync: {what} did not happen within {timeout} s")


def yealink_macs(phones_csv):
    """The tenant's Yealink phones in the file phlem emulates (mac, family,
    model, address of record): every one a family resync must ask."""
    with open(phones_csv) as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    return {row[0].lower() for row in rows if len(row) > 1 and row[1] == "yealink"}


def queued_problems(queued, expected):
    """What is wrong with the 202 answer to a resync of `expected`'s family:
    phones it skipped, or a set of phones other than `expected`. The
    server's own list is no measure of which phones should have been asked."""
    problems = []
    if queued.get("skipped", 0) != 0:
        first = (queued.get("skipped_reasons") or [{}])[0]
        problems.append("%d phones skipped (first: %s %s)" % (queued["skipped"], first.get("mac"), first.get("reason")))
    asked = {r["mac"].lower() for r in queued.get("resyncs", [])}
    if asked != expected:
        problems.append("asked %d phones, not the tenant's %d Yealinks (%d of them missing, %d others)"
                        % (len(asked), len(expected), len(expected - asked), len(asked - expected)))
    return problems


def settled(r):
    return r["state"] == "failed" or (r["state"] == "answered" and r.get("refetched_at"))


def main():
    p = argparse.ArgumentParser()
    for name in ("api", "token", "tenant", "phlem-log", "phlem-json", "bin", "work"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--phlem-pid", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--tenant-rate", type=float, required=True)
    a = p.parse_args()
    prov = os.environ["DIALTONE_PROVISIONING__BASE_URL"]

    wait_for("phlem's registrations", 120,
             lambda: "phones registered" in open(a.phlem_log).read(), every=0.2)
    registered = next(l for l in open(a.phlem_log) if "phones registered" in l).strip()

    marker = f"# bench resync {int(time.time())}"
    body = "#!version:1.0.0.1\n" + marker + "\naccount.1.user_name = {{ lines[0].extension }}\n"
    status, _ = api(a.api, a.token, "POST", "/v1/templates",
                    {"scope": "tenant", "tenant": a.tenant, "family": "yealink",
                     "file_pattern": "{mac}.cfg", "body": body})
    assert status == 201, status

    phones_csv = os.path.join(a.work, "phlem.csv")
    first_yealink = next(l.split(",")[0] for l in open(phones_csv) if ",yealink," in l)
    affected = yealink_macs(phones_csv)

    def live():
        with urllib.request.urlopen(f"{prov}/{first_yealink}.cfg", timeout=5) as r:
            return marker in r.read().decode()
    wait_for("the edit going live", 30, live)

    t0 = time.time() * 1000
    status, queued = api(a.api, a.token, "POST", f"/v1/tenants/{a.tenant}/resync", {"family": "yealink"})
    api_ms = time.time() * 1000 - t0
    assert status == 202, (status, queued)
    ids = {r["id"] for r in queued["resyncs"]}
    problems = queued_problems(queued, affected)

    final = {}

    def all_settled():
        _, listed = api(a.api, a.token, "GET", f"/v1/resyncs?tenant={a.tenant}&limit=1000")
        final.clear()
        final.update({r["id"]: r for r in listed["resyncs"] if r["id"] in ids})
        return len(final) == len(ids) and all(settled(r) for r in final.values())
    wait_for("every resync settling", 300, all_settled, every=0.2)

    os.kill(a.phlem_pid, signal.SIGTERM)
    wait_for("phlem's report", 60, lambda: os.path.exists(a.phlem_json), every=0.2)
    time.sleep(0.5)
    report = json.load(open(a.phlem_json))

    rendered = os.path.join(a.work, "rendered")
    subprocess.run([a.bin, "render", "--all", "--out", rendered], check=True, stdout=subprocess.DEVNULL)
    want = {mac: hashlib.sha256(open(os.path.join(rendered, f"{mac}.cfg"), "rb").read()).hexdigest()
            for mac in affected}
    new_bytes = {}
    for r in report["sip"]["refetches"]:
        mac = r["mac"]
        if mac in want and r["files"].get(f"{mac}.cfg") == want[mac] and r["done_at_ms"] >= t0:
            new_bytes[mac] = min(new_bytes.get(mac, float("inf")), r["done_at_ms"])
    strays = sorted({r["mac"] for r in report["sip"]["refetches"]} - affected)

    sent = sorted(r["sent_at"] for r in final.values() if r.get("sent_at"))
    span_s = (sent[-1] - sent[0]) / 1000 if len(sent) > 1 else 0
    achieved = (len(sent) - 1) / span_s if span_s > 0 else float("nan")
    window = max((sum(1 for t in sent if s <= t < s + 1000) for s in sent), default=0)
    limit = min(a.rate, a.tenant_rate)
    burst = int(limit)
    sustained = ((len(sent) - 1 - burst) / ((sent[-1] - sent[burst]) / 1000)
                 if len(sent) > burst + 1 and sent[-1] > sent[burst] else float("nan"))
    # One token of slack for the bucket's rounding.
    respected = all(j - i + 1 <= limit * (1 + (sent[j] - sent[i]) / 1000) + 1
                    for i in range(len(sent)) for j in range(i, len(sent)))
    answered = [r for r in final.values() if r["state"] == "answered"]
    result = {
        "bench": "resync",
        "phones": report["phones"],
        "registered": report["sip"]["registered"],
        "affected": len(affected),
        "skipped": queued.get("skipped", 0),
        "queued_problems": problems,
        "api_ms": api_ms,
        "last_new_bytes_ms": max(new_bytes.values()) - t0 if new_bytes else None,
        "last_answer_ms": max((r["answered_at"] for r in answered), default=t0) - t0,
        "last_refetched_at_ms": max((r["refetched_at"] for r in answered), default=t0) - t0,
        "rate_per_s": a.rate,
        "tenant_rate_per_s": a.tenant_rate,
        "achieved_per_s": achieved,
        "sustained_per_s": sustained,
        "max_in_1s": window,
        "rate_respected": respected,
        "failed": sum(1 for r in final.values() if r["state"] == "failed"),
        "without_new_bytes": len(affected) - len(new_bytes),
        "stray_notifies": len(strays),
        "phlem_notifies": report["sip"]["notifies"],
    }
    with open(os.path.join(a.work, "results.jsonl"), "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"resync: {registered}")
    print(f"  {len(ids)} resyncs of the tenant's {result['affected']} Yealink phones (of {result['phones']}) asked in one API call ({api_ms:.1f} ms)")
    print(f"  {'measure':<52} {'ms':>9}")
    print(f"  {'API call -> last affected phone fetched the new bytes':<52} {result['last_new_bytes_ms'] or float('nan'):>9.0f}")
    print(f"  {'API call -> last NOTIFY answered':<52} {result['last_answer_ms']:>9.0f}")
    print(f"  {'API call -> last refetched_at seen by dialtone':<52} {result['last_refetched_at_ms']:>9.0f}")
    shape = (f"all {len(sent)} within the first bucketful" if len(sent) <= burst else
             f"achieved {achieved:.1f}/s first to last, {sustained:.1f}/s after the first {burst}")
    print(f"  NOTIFY rate: configured {a.tenant_rate:.0f}/s per tenant, {a.rate:.0f}/s overall (buckets of one second);"
          f" {shape}, at most {window} in one second: {'respected' if respected else 'EXCEEDED'}")
    print(f"  failures: {result['failed']} resyncs failed, {result['without_new_bytes']} phones without the new bytes, "
          f"{len(strays)} NOTIFYs to unaffected phones, {result['skipped']} skipped (targets 0)")
    for problem in problems:
        print(f"  the API's answer: {problem}")
    bad = result["failed"] or result["without_new_bytes"] or strays or not respected or problems
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
