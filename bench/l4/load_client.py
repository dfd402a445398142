"""Load client for the L4 benchmark (stdlib only; runs as ``/usr/bin/python3`` in a pod netns).

Talks to ``echo_server.py`` (directly, through the mesh's capture, or through a
local stunnel) and prints one JSON object on stdout. Every loop is bounded by a
count and by ``--timeout`` seconds of wall time.

    rr    --host H --port P [--size 1024] [--count 5000] [--warmup 200]
          one connection, COUNT request/response exchanges of SIZE bytes; per-exchange
          times (perf_counter_ns) -> p50/p90/p99/mean/min/max in microseconds.
    cps   --host H --port P [--count 2000] [--concurrency 1]
          COUNT short connections, at most CONCURRENCY at a time, each:
          connect, send 1 byte, receive 1 byte, close -> connections per second and
          per-connection time percentiles.
    hold  --host H --port P [--count 1000]
          open COUNT connections, check each with a 1-byte echo (so every one is
          established end to end), print ``{"ready": ...}``, then hold them until a
          line arrives on stdin (or --timeout), close them all and print a summary.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import resource
import select
import socket
import sys
import time


class Timeout(RuntimeError):
    pass


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)        # raising the hard limit needs CAP_SYS_RESOURCE
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def recv_exact(s: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        chunk = s.recv(n - got)
        if not chunk:
            raise ConnectionError(f"peer closed after {got} of {n} bytes")
        got += len(chunk)


def cmd_rr(a: argparse.Namespace) -> dict[str, object]:
    deadline = time.monotonic() + a.timeout
    payload = b"r" * a.size
    s = socket.create_connection((a.host, a.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples: list[float] = []
    clock = time.perf_counter_ns
    try:
        for i in range(a.warmup + a.count):
            t0 = clock()
            s.sendall(payload)
            recv_exact(s, a.size)
            dt = clock() - t0
            if i >= a.warmup:
                samples.append(dt / 1000.0)
            if (i & 63) == 0 and time.monotonic() > deadline:
                raise Timeout(f"rr: {i} exchanges in {a.timeout}s")
    finally:
        s.close()
    return {"test": "rr", "size": a.size, "count": len(samples), "warmup": a.warmup,
            "p50_us": pct(samples, 50), "p90_us": pct(samples, 90), "p99_us": pct(samples, 99),
            "mean_us": sum(samples) / len(samples), "min_us": min(samples), "max_us": max(samples)}


def cmd_cps(a: argparse.Namespace) -> dict[str, object]:
    """A small event loop: CONCURRENCY slots, each runs connect→send→recv→close in turn."""
    deadline = time.monotonic() + a.timeout
    ep = select.epoll()
    started = done = failed = 0
    state: dict[int, tuple[socket.socket, int, float]] = {}   # fd -> (sock, phase, t0)
    times: list[float] = []
    errors: dict[str, int] = {}
    clock = time.perf_counter

    def start_one() -> None:
        nonlocal started
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = clock()
        rc = s.connect_ex((a.host, a.port))
        started += 1
        if rc not in (0, errno.EINPROGRESS):
            finish(s, ok=False, why=errno.errorcode.get(rc, str(rc)))
            return
        state[s.fileno()] = (s, 0, t0)
        ep.register(s.fileno(), select.EPOLLOUT)

    def finish(s: socket.socket, ok: bool, why: str = "", t0: float = 0.0) -> None:
        nonlocal done, failed
        fd = s.fileno()
        if fd in state:
            del state[fd]
            ep.unregister(fd)
        s.close()
        if ok:
            done += 1
            times.append((clock() - t0) * 1e6)
        else:
            failed += 1
            errors[why] = errors.get(why, 0) + 1

    t_start = clock()
    for _ in range(min(a.concurrency, a.count)):
        start_one()
    while state:
        if time.monotonic() > deadline:
            raise Timeout(f"cps: {done} done, {failed} failed in {a.timeout}s")
        for fd, ev in ep.poll(1.0):
            s, phase, t0 = state[fd]
            if ev & (select.EPOLLERR | select.EPOLLHUP) and phase == 0:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                finish(s, ok=False, why=errno.errorcode.get(err, str(err)))
            elif phase == 0:                     # connected: send one byte
                try:
                    s.send(b"x")
                except OSError as e:
                    finish(s, ok=False, why=type(e).__name__)
                else:
                    state[fd] = (s, 1, t0)
                    ep.modify(fd, select.EPOLLIN)
            else:                                # the echo (or EOF/reset)
                try:
                    data = s.recv(16)
                except BlockingIOError:
                    continue
                except OSError as e:
                    finish(s, ok=False, why=type(e).__name__)
                else:
                    finish(s, ok=bool(data), why="eof before echo", t0=t0)
            if started < a.count and len(state) < a.concurrency:
                start_one()
        while started < a.count and len(state) < a.concurrency:
            start_one()
    elapsed = clock() - t_start
    ep.close()
    return {"test": "cps", "count": a.count, "concurrency": a.concurrency, "ok": done, "failed": failed,
            "errors": errors, "seconds": elapsed, "conn_per_s": done / elapsed if elapsed else 0.0,
            "p50_us": pct(times, 50), "p99_us": pct(times, 99)}


def cmd_hold(a: argparse.Namespace) -> dict[str, object]:
    raise_nofile(a.count * 2 + 256)
    deadline = time.monotonic() + a.timeout
    socks: list[socket.socket] = []
    t0 = time.perf_counter()
    try:
        for i in range(a.count):
            if time.monotonic() > deadline:
                raise Timeout(f"hold: {i} connections opened in {a.timeout}s")
            s = socket.create_connection((a.host, a.port), timeout=10)
            socks.append(s)
            s.sendall(b"h")
            recv_exact(s, 1)
        opened = time.perf_counter() - t0
        print(json.dumps({"ready": len(socks), "open_seconds": opened}), flush=True)
        r, _, _ = select.select([sys.stdin], [], [], max(1.0, deadline - time.monotonic()))
        if r:
            sys.stdin.readline()
        # still alive? one more echo on a sample of them
        alive = 0
        for s in socks[:: max(1, len(socks) // 20)]:
            try:
                s.sendall(b"h")
                recv_exact(s, 1)
                alive += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    return {"test": "hold", "count": len(socks), "open_seconds": opened, "sample_alive": alive}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, count in (("rr", 5000), ("cps", 2000), ("hold", 1000)):
        p = sub.add_parser(name)
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--count", type=int, default=count)
        p.add_argument("--timeout", type=float, default=120.0)
        if name == "rr":
            p.add_argument("--size", type=int, default=1024)
            p.add_argument("--warmup", type=int, default=200)
        if name == "cps":
            p.add_argument("--concurrency", type=int, default=1)
    a = ap.parse_args()
    try:
        out = {"rr": cmd_rr, "cps": cmd_cps, "hold": cmd_hold}[a.cmd](a)
    except (Timeout, OSError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
