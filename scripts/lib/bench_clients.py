"""Small load-test clients for the benchmarks, standard library only: an
RFC 1350 TFTP reader, HTTP requests with a total deadline, and latency
statistics. Independent of phlem, so a figure never depends on our own
client alone."""

import http.client
import math
import socket
import struct
import json
import time


def tftp_get(host, port, name, timeout=2.0, retries=1, source=None, deadline=None):
    """RFC 1350 read, octet mode, no options (512-byte blocks). Each wait
    for the server is `timeout`; after `retries` silent waits in a row the
    transfer fails. Returns (True, body) or (False, reason)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if source:
            sock.bind((source, 0))
        last, dest = b"\0\1" + name.encode() + b"\0octet\0", (host, port)
        sock.sendto(last, dest)
        peer, body, expected, silent = None, bytearray(), 1, 0
        while True:
            wait = timeout
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False, "timeout"
            sock.settimeout(wait)
            try:
                data, src = sock.recvfrom(2048)
            except socket.timeout:
                if deadline is not None and time.monotonic() >= deadline:
                    return False, "timeout"
                silent += 1
                if silent > retries:
                    return False, "timeout"
                sock.sendto(last, dest)
                continue
            if peer is None:
                if src[0] != host:
                    continue
                peer = src
            elif src != peer:
                continue
            if len(data) < 4:
                return False, "short packet"
            opcode, block = struct.unpack("!HH", data[:4])
            if opcode == 5:
                return False, "error %d: %s" % (block, data[4:].rstrip(b"\0").decode(errors="replace"))
            if opcode != 3:
                return False, "opcode %d" % opcode
            if block == expected:
                silent = 0
                body += data[4:]
                last, dest = struct.pack("!HH", 4, block), peer
                sock.sendto(last, dest)
                if len(data) < 516:
                    return True, bytes(body)
                expected = (expected + 1) & 0xFFFF
            elif block == (expected - 1) & 0xFFFF:
                sock.sendto(last, dest)  # our ACK was lost: send it again
    except OSError as e:
        return False, type(e).__name__
    finally:
        sock.close()


class KeepAlive:
    """One keep-alive HTTP connection; a reused connection the server has
    closed is reopened once for the same request (what any client does)."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def get(self, path, headers=None):
        for _ in range(2):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if fresh:
                    return None, type(e).__name__
            except (OSError, http.client.HTTPException) as e:
                self.close()
                return None, "timeout" if isinstance(e, socket.timeout) else type(e).__name__
        return None, "disconnected"

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def bomb_http(host, port, method, path, timeout, body=None, headers=None, source=None):
    """One request on a new connection, everything (connect, headers, the
    whole body) within `timeout`. Returns (status key, seconds, first bytes)."""
    started = time.monotonic()
    deadline = started + timeout
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    head = b""
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        response = conn.getresponse()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", time.monotonic() - started, head
            conn.sock.settimeout(left)
            chunk = response.read(1 << 20)
            if not chunk:
                break
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
        return str(response.status), time.monotonic() - started, head
    except socket.timeout:
        return "timeout", time.monotonic() - started, head
    except (OSError, http.client.HTTPException) as e:
        return "error:" + type(e).__name__, time.monotonic() - started, head
    finally:
        conn.close()


def error_message(head):
    try:
        e = json.loads(head)["error"]
        return (e.get("code", "") + ": " + e.get("message", ""))[:300]
    except (ValueError, KeyError, TypeError, AttributeError):
        return head[:200].decode(errors="replace").strip()


# ---------------------------------------------------------------- stats


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def stats(samples):
    """samples: [(seconds, ok)]. Failed requests count at the time they
    took (a timeout at its timeout), so that failures show in the tail."""
    times = sorted(s for s, _ in samples)
    ms = lambda v: None if v is None else round(1e3 * v, 3)
    return {
        "count": len(samples),
        "errors": sum(1 for _, ok in samples if not ok),
        "p50_ms": ms(percentile(times, 0.50)),
        "p99_ms": ms(percentile(times, 0.99)),
        "max_ms": ms(times[-1] if times else None),
    }


# ---------------------------------------------------------------- victim load
