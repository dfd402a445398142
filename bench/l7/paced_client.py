"""Open-loop (rate-paced) HTTP/1.1 keep-alive client for the L7 benchmark (stdlib only).

    paced_client.py --host 127.0.0.1 --port P --path /bench/ok --rate 4000 --seconds 5
                    [--warmup 1] [--connections 32] [--timeout 60]

Requests are due at a fixed schedule, ``t0 + i / rate`` (as wrk2 does), whatever the server
does; a due request goes out on the first idle keep-alive connection, or waits in a queue while
all connections are busy. A request's latency is measured **from the time it was due** to the
last byte of its response, so a server that stalls is charged for the requests that could not
be sent meanwhile (no coordinated omission). Service time (from the actual send) and the
client's dispatch lag (actual send minus due time) are reported too, with the number of requests
that found every connection busy: the lag of the others is the client's own lateness.

One thread, non-blocking sockets, ``select`` with microsecond timeouts and a 1 ns timer slack
(epoll's millisecond timeouts would batch requests); with ``--spin S`` it polls instead of
sleeping when the next request is due within S seconds, yielding the CPU between polls (waking
from an idle CPU takes tens of microseconds to milliseconds in a VM). Requests of the first
``--warmup`` seconds are not recorded. Bounded: at most ``rate * (warmup + seconds)`` requests
and ``--timeout`` seconds. Prints one JSON object; any non-200 response or broken connection is an error.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import math
import os
import selectors
import socket
import sys
import time

PR_SET_TIMERSLACK = 29


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_us": pct(values, 50), "p90_us": pct(values, 90), "p99_us": pct(values, 99),
            "p999_us": pct(values, 99.9), "max_us": max(values) if values else math.nan,
            "mean_us": sum(values) / len(values) if values else math.nan}


class Conn:
    __slots__ = ("buf", "due", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.due = 0.0
        self.sent = 0.0


def response_end(buf: bytes) -> tuple[int, int] | None:
    """(status, length of the whole response) once ``buf`` holds a complete one."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    status = int(head[9:12])
    at = head.find(b"\ncontent-length:")
    if at < 0:
        raise ValueError(f"response without content-length: {buf[:200]!r}")
    stop = head.find(b"\r", at + 16)
    length = int(head[at + 16:stop if stop > 0 else len(head)])
    total = end + 4 + length
    return (status, total) if len(buf) >= total else None


def run(a: argparse.Namespace) -> dict[str, object]:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    request = f"GET {a.path} HTTP/1.1\r\nhost: {a.host}:{a.port}\r\nuser-agent: l7-paced\r\n\r\n".encode()
    sel = selectors.SelectSelector()
    conns = []
    for _ in range(a.connections):
        s = socket.create_connection((a.host, a.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        c = Conn(s)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    idle = collections.deque(conns)
    backlog: collections.deque[float] = collections.deque()
    interval = 1.0 / a.rate
    total = int(a.rate * (a.warmup + a.seconds))
    clock = time.perf_counter
    t0 = clock() + 0.02
    record_from = t0 + a.warmup
    deadline = time.monotonic() + a.timeout
    latency: list[float] = []
    service: list[float] = []
    lag: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    i = completed = max_queue = waited = 0
    error = ""
    try:
        while completed < total:
            now = clock()
            while i < total and t0 + i * interval <= now:
                due = t0 + i * interval
                if len(backlog) >= len(idle) and due >= record_from:
                    waited += 1            # every connection busy: it waits for the server
                backlog.append(due)
                i += 1
            max_queue = max(max_queue, len(backlog))
            while backlog and idle:
                c = idle.popleft()
                c.due = backlog.popleft()
                c.sock.send(request)          # a few dozen bytes into an empty socket buffer
                c.sent = clock()
            if (completed & 255) == 0 and time.monotonic() > deadline:
                error = f"timeout: {completed} of {total} responses in {a.timeout}s"
                break
            wait = t0 + i * interval - clock() if i < total else 0.05
            if wait < a.spin:
                wait = 0.0                 # poll: the next one is due soon
            events = sel.select(max(0.0, wait))
            if not events and wait == 0.0:
                os.sched_yield()           # a server sharing this CPU runs at once
            for key, _ in events:
                c = key.data
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed a keep-alive connection")
                c.buf += data
                done = response_end(c.buf)
                if done is None:
                    continue
                end = clock()
                status, size = done
                c.buf = c.buf[size:]
                statuses[status] += 1
                completed += 1
                if c.due >= record_from:
                    latency.append((end - c.due) * 1e6)
                    service.append((end - c.sent) * 1e6)
                    lag.append((c.sent - c.due) * 1e6)
                idle.append(c)
    except (OSError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        for c in conns:
            c.sock.close()
    bad = sum(n for s, n in statuses.items() if s != 200)
    measured = len(latency)
    return {"rate": a.rate, "connections": a.connections, "seconds": a.seconds, "requests": total,
            "completed": completed, "recorded": measured,
            "achieved_rate": measured / a.seconds if a.seconds else None,
            "statuses": {str(k): v for k, v in statuses.items()}, "non_200": bad,
            "max_queue": max_queue, "waited_for_connection": waited,
            "latency": summary(latency), "service": summary(service),
            "dispatch_lag": summary(lag), **({"error": error} if error else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/bench/ok")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--spin", type=float, default=0.0,
                    help="poll without sleeping when the next request is due within this many seconds")
    a = ap.parse_args(argv)
    if not a.host.startswith("127."):
        print(json.dumps({"error": "loopback (127.0.0.0/8) targets only"}))
        return 2
    print(json.dumps(run(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
