"""Echo server for the L4 benchmark: every byte received on a connection is sent back.

Stdlib only: it runs as ``/usr/bin/python3`` inside a pod's network namespace
(``ip netns exec zm.<cluster>.<ns>.<pod> ...``), started and stopped (by PID)
by ``bench/l4_bench.py``.

One thread, ``epoll``, non-blocking sockets, ``TCP_NODELAY``; a connection is
closed when the peer half-closes. It serves the three small-message tests of
the benchmark: 1 KB request/response, 1-byte connect/echo/close, and idle
connections held open (the open-files limit is raised for those).

    python3 echo_server.py --port 9100 [--lifetime 3600]

Prints ``ready <port>`` on stdout once listening. Exits on SIGTERM/SIGINT or
after ``--lifetime`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import resource
import select
import signal
import socket
import sys
import time

READ = 64 * 1024


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)        # raising the hard limit needs CAP_SYS_RESOURCE
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(port: int, lifetime: float) -> None:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}        # unsent echo, when the peer does not read
    print(f"ready {port}", flush=True)
    deadline = time.monotonic() + lifetime

    def close(fd: int) -> None:
        s = conns.pop(fd, None)
        pending.pop(fd, None)
        if s is not None:
            with contextlib.suppress(OSError):
                ep.unregister(fd)
            s.close()

    while not stop and time.monotonic() < deadline:
        try:
            events = ep.poll(1.0)
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == lsock.fileno():
                for _ in range(256):           # bounded accept burst
                    try:
                        c, _addr = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            print(f"accept: {e}", file=sys.stderr, flush=True)
                            break
                        raise
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            s = conns.get(fd)
            if s is None:
                continue
            if ev & select.EPOLLOUT and fd in pending:
                try:
                    n = s.send(pending[fd])
                except BlockingIOError:
                    continue
                except OSError:
                    close(fd)
                    continue
                rest = pending[fd][n:]
                if rest:
                    pending[fd] = rest
                else:
                    del pending[fd]
                    ep.modify(fd, select.EPOLLIN)
                continue
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    data = s.recv(READ)
                except BlockingIOError:
                    continue
                except OSError:
                    close(fd)
                    continue
                if not data:
                    close(fd)
                    continue
                try:
                    n = s.send(data)
                except BlockingIOError:
                    n = 0
                except OSError:
                    close(fd)
                    continue
                if n < len(data):
                    pending[fd] = data[n:]
                    ep.modify(fd, select.EPOLLOUT)
    for fd in list(conns):
        close(fd)
    lsock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    ap.add_argument("--nofile", type=int, default=16384, help="RLIMIT_NOFILE to set")
    args = ap.parse_args()
    raise_nofile(args.nofile)
    serve(args.port, args.lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
