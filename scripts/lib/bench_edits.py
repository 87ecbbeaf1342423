#!/usr/bin/env python3
"""Edit storm during a boot storm, for scripts/bench edits.

Two dialtone nodes share one PostgreSQL. A tenant-scope Yealink template is
edited through node A's API (PUT with If-Match) while phlem boot-storms both
nodes over TFTP. Reported:

- how long until the last edit was served by every one of the tenant's
  Yealink phones on both nodes, over HTTP and TFTP, against the same figure
  for single edits with no storm, measured first in the same run;
- stale files once the storm stops and the nodes catch up: every phone's
  files on both nodes, over TFTP and HTTP, checked by `phlem run --verify`
  against `dialtone render --all` from the database (must be 0; so must
  every other failed fetch, and each target must check every phone's
  files), and the nodes' own self-check counter
  (dialtone_render_cache_stale_total).

Only the standard library: the TFTP client here is a minimal RFC 1350 one,
independent of phlem's.
"""

import argparse
import collections
import csv
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def tftp_get(host, port, name, timeout=1.0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        last = b"\0\1" + name.encode() + b"\0octet\0"
        peer = (host, port)
        sock.sendto(last, peer)
        body, expected, silent = b"", 1, 0
        for _ in range(1000):
            try:
                data, source = sock.recvfrom(600)
            except socket.timeout:
                silent += 1
                if silent > 3:
                    return None
                sock.sendto(last, peer)
                continue
            opcode, block = struct.unpack("!HH", data[:4])
            if opcode != 3:
                return None
            if block == expected:
                body += data[4:]
                peer = source
                expected = (expected + 1) & 0xFFFF
            last = struct.pack("!HH", 4, block)
            sock.sendto(last, peer)
            if block == (expected - 1) & 0xFFFF and len(data) < 516:
                return body
        return None
    finally:
        sock.close()


def http_get(base, path, timeout=2.0):
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError):
        return None


class Api:
    def __init__(self, base, token):
        self.base, self.token = base, token

    def send(self, method, path, body=None, if_match=None):
        request = urllib.request.Request(self.base + path, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if if_match:
            request.add_header("If-Match", if_match)
        try:
            with urllib.request.urlopen(request, data=data, timeout=10) as response:
                return response.status, response.headers.get("ETag"), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None, json.loads(e.read() or b"null")


def body_of(n):
    return (
        "#!version:1.0.0.1\n# edit %d\n"
        "{%% for line in lines %%}account.{{ line.position }}.enable = 1\n"
        "account.{{ line.position }}.label = {{ line.display_name }}\n"
        "account.{{ line.position }}.user_name = {{ line.auth_user }}\n"
        "account.{{ line.position }}.password = {{ line.password }}\n"
        "account.{{ line.position }}.sip_server.1.address = {{ line.registrar }}\n{%% endfor %%}" % n
    )


def converged(nodes, targets, marker, deadline):
    """Seconds from now until the last (MAC, node index, protocol) first
    served `marker`, each polled by a thread of its own so that one slow
    fetch does not delay the others; None past `deadline`."""
    start = time.monotonic()
    seen = {}

    def poll(target):
        mac, i, protocol = target
        node, name = nodes[i], mac + ".cfg"
        while time.monotonic() < deadline:
            if protocol == "tftp":
                got = tftp_get(node["tftp_host"], node["tftp_port"], name)
            else:
                got = http_get(node["http"], "/" + name)
            if got is not None and marker in got:
                seen[target] = time.monotonic() - start
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=poll, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(seen.values()) if len(seen) == len(targets) else None


def metric(node, name):
    text = http_get(node["api"], "/metrics")
    total = 0.0
    for line in (text or b"").decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# What phlem fetches to boot one phone of each family the bench seeds: a
# Yealink's boot file, model file and MAC file; a Poly's master file and
# the two it lists; a Cisco MPP's model file and MAC file.
FILES_PER_BOOT = {"yealink": 3, "poly": 3, "cisco-mpp": 2}


def expected_files(phones_csv):
    """Phones in the seeded file, and the files one boot of each fetches."""
    with open(phones_csv) as f:
        families = [row["family"] for row in csv.DictReader(f)]
    return len(families), sum(FILES_PER_BOOT[family] for family in families)


def verify(bin, work, targets, rendered, phones, files):
    """`phlem run --verify` of every phone against `rendered` on each target.
    Returns files checked, failures by reason and what else went wrong: a
    phlem that failed or wrote no report, a target that checked fewer
    phones or files than the database holds."""
    checked, failures, problems = 0, collections.Counter(), []
    report = os.path.join(work, "verify.json")
    for target in targets:
        # Else a phlem that dies before writing reads as the last target's.
        if os.path.exists(report):
            os.remove(report)
        done = subprocess.run(
            [bin, "phlem", "run", "--quiet", "--phones", "database", "--concurrency", "100",
             "--verify", rendered, "--json", report, "--target", target],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if not os.path.exists(report):
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            problems.append("%s: phlem exited %d without a report %s" % (target, done.returncode, tail))
            continue
        with open(report) as f:
            r = json.load(f)
        here = sum(s["transfers"] for s in r["steps"].values())
        checked += here
        failures.update(r["failures"])
        if done.returncode != 0 and not r["failures"]:
            problems.append("%s: phlem exited %d" % (target, done.returncode))
        if r["phones"] != phones or here < files:
            problems.append("%s: checked %d phones and %d files, expected %d and %d"
                            % (target, r["phones"], here, phones, files))
    return checked, failures, problems


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--node", action="append", required=True, help="API,HTTP,TFTP-HOST:PORT")
    p.add_argument("--edits", type=int, default=150)
    p.add_argument("--idle-edits", type=int, default=5)
    p.add_argument("--work", required=True)
    args = p.parse_args()

    nodes = []
    for spec in args.node:
        api, http, tftp = spec.split(",")
        host, port = tftp.rsplit(":", 1)
        nodes.append({"api": api, "http": http, "tftp_host": host, "tftp_port": int(port)})
    api = Api(nodes[0]["api"], args.token)

    status, _, page = api.send("GET", "/v1/phones?tenant=%s&limit=500" % args.tenant)
    assert status == 200, page
    macs = [p["mac"] for p in page["items"] if p["family"] == "yealink"]
    targets = [(mac, i, proto) for mac in macs for i in range(len(nodes)) for proto in ("http", "tftp")]

    status, etag, created = api.send(
        "POST", "/v1/templates",
        {"scope": "tenant", "tenant": args.tenant, "family": "yealink", "file_pattern": "{mac}.cfg", "body": body_of(0)},
    )
    assert status == 201, created
    template = created["id"]

    def edit(n):
        nonlocal etag
        started = time.monotonic()
        status, new_etag, answer = api.send("PUT", "/v1/templates/%d" % template, {"body": body_of(n)}, etag)
        assert status == 200, answer
        etag = new_etag
        return started, time.monotonic() - started

    # Baseline: single edits, nothing else running.
    n = 0
    idle = []
    for _ in range(args.idle_edits):
        n += 1
        started, answered = edit(n)
        took = converged(nodes, targets, b"# edit %d\n" % n, started + 30)
        assert took is not None, "an idle edit never converged"
        idle.append(answered + took)

    before = sum(metric(node, "dialtone_provision_requests_total") for node in nodes)
    storms = [
        subprocess.Popen(
            [args.bin, "phlem", "run", "--quiet", "--phones", "database", "--repeat", "20",
             "--concurrency", "100", "--target", "tftp://%s:%d" % (node["tftp_host"], node["tftp_port"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for node in nodes
    ]
    time.sleep(1.0)
    api_latency = []
    storm_started = time.monotonic()
    for _ in range(args.edits):
        n += 1
        started, took = edit(n)
        api_latency.append(took)
    edits_s = time.monotonic() - storm_started
    converge = converged(nodes, targets, b"# edit %d\n" % n, started + 60)
    last_edit = None if converge is None else took + converge
    time.sleep(1.0)
    for storm in storms:
        storm.kill()
        storm.wait()
    served = sum(metric(node, "dialtone_provision_requests_total") for node in nodes) - before

    # Settled: both nodes at the same cursor, then every file checked.
    for _ in range(300):
        cursors = {json.loads(http_get(node["api"], "/readyz"))["cursor"] for node in nodes}
        if len(cursors) == 1:
            break
        time.sleep(0.05)
    out = args.work + "/render"
    subprocess.run([args.bin, "render", "--all", "--out", out], check=True, stdout=subprocess.DEVNULL)
    phones, files = expected_files(os.path.join(args.work, "phones.csv"))
    verify_targets = [t for node in nodes for t in ("tftp://%s:%d" % (node["tftp_host"], node["tftp_port"]), node["http"])]
    checked, failures, problems = verify(args.bin, args.work, verify_targets, out, phones, files)
    mismatches = failures.get("mismatch", 0)
    canary = sum(metric(node, "dialtone_render_cache_stale_total") for node in nodes)

    api_latency.sort()
    result = {
        "case": "edits-during-storm",
        "phones_edited": len(macs),
        "nodes": len(nodes),
        "edits": args.edits,
        "edits_per_s": args.edits / edits_s,
        "api_p50_ms": 1e3 * api_latency[len(api_latency) // 2],
        "api_p99_ms": 1e3 * api_latency[int(len(api_latency) * 0.99)],
        "storm_requests": served,
        "idle_converge_ms": 1e3 * statistics.median(idle),
        "storm_last_edit_converge_ms": None if last_edit is None else 1e3 * last_edit,
        "verified_files": checked,
        "expected_files": files * len(verify_targets),
        "stale_files": mismatches,
        # Any reason counts: a fetch that timed out or failed checked nothing.
        "verify_failures": dict(failures),
        "verify_problems": problems,
        "self_check_stale": canary,
    }
    print(json.dumps(result))
    good = not failures and not problems and canary == 0 and last_edit is not None
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
