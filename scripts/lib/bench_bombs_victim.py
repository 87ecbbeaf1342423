"""Tenant B's (`victim`'s) load for scripts/bench bombs: caller-name
lookups served from the cache and its phones' files over TFTP and HTTP,
each kind from threads pacing their requests; and, given phones never
fetched yet, misses: each of those phones fetched once, a render each.
Only the standard library and bench_clients.py."""

import threading
import time
import urllib.parse

from bench_clients import KeepAlive, stats, tftp_get


def yealink_agent(model, mac):
    """The User-Agent a Yealink sends: its model and its MAC."""
    return "Yealink SIP-%s 66.86.0.15 %s" % (model, ":".join(mac[k:k + 2] for k in range(0, 12, 2)))


class Victim:
    def __init__(self, args, model, macs, numbers, cold=None):
        self.args, self.model, self.macs, self.numbers = args, model, macs, numbers
        # Phones never fetched yet, by protocol: each is fetched once.
        self.cold = cold or {}
        self.api_host, self.api_port = args.api_host, args.api_port
        self.prov_host, self.prov_port = args.prov_host, args.prov_port
        self.tftp_host, self.tftp_port = args.tftp_host, args.tftp_port

    def lookup_worker(self, client, i):
        digits, name = self.numbers[i % len(self.numbers)]
        status, body = client.get("/v1/lookup?number=%s&key=%s" % (digits, urllib.parse.quote(self.args.lookup_key)))
        return status == 200 and body == name.encode()

    def fetch_http(self, client, mac):
        status, body = client.get("/%s.cfg" % mac, {"User-Agent": yealink_agent(self.model, mac)})
        return status == 200 and len(body) > 0

    def fetch_tftp(self, mac):
        ok, body = tftp_get(self.tftp_host, self.tftp_port, mac + ".cfg", timeout=2.0, retries=1,
                            deadline=time.monotonic() + 10)
        return ok and len(body) > 0

    def http_worker(self, client, i):
        return self.fetch_http(client, self.macs[i % len(self.macs)])

    def tftp_worker(self, _client, i):
        return self.fetch_tftp(self.macs[i % len(self.macs)])

    # A miss worker's `i` counts its fetches (one thread each): past the
    # last cold phone it stops (None), rather than fetch a cached file.
    def miss_http_worker(self, client, i):
        cold = self.cold["http"]
        return None if i >= len(cold) else self.fetch_http(client, cold[i])

    def miss_tftp_worker(self, _client, i):
        cold = self.cold["tftp"]
        return None if i >= len(cold) else self.fetch_tftp(cold[i])

    def kinds(self):
        a = self.args
        kinds = {
            "lookup": (self.lookup_worker, a.lookup_threads, a.lookup_rate, (self.api_host, self.api_port)),
            "tftp": (self.tftp_worker, a.tftp_threads, a.tftp_rate, None),
            "http": (self.http_worker, a.http_threads, a.http_rate, (self.prov_host, self.prov_port)),
        }
        if self.cold:
            kinds["miss-tftp"] = (self.miss_tftp_worker, 1, a.miss_rate, None)
            kinds["miss-http"] = (self.miss_http_worker, 1, a.miss_rate, (self.prov_host, self.prov_port))
        return kinds

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
                if ok is None:
                    break
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
