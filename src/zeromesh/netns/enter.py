"""Open sockets inside another network namespace from a worker thread.

Python 3.11 has no `os.setns`; libc's works through ctypes. Only the worker
thread switches namespace, so the rest of the process is never affected, and
a socket keeps the namespace it was created in after the thread switches back.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from zeromesh.errors import NetnsError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def call_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has joined namespace `name`."""
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        except OSError as e:
            box["error"] = e
            return
        try:
            target = os.open(netns_path(name), os.O_RDONLY)
        except OSError as e:
            os.close(own)
            box["error"] = NetnsError(f"network namespace {name!r} not found: {e}")
            return
        try:
            _setns(target)
            try:
                box["value"] = fn()
            except BaseException as e:
                box["error"] = e
            finally:
                _setns(own)
        except OSError as e:
            box["error"] = NetnsError(f"setns into {name!r} failed: {e}")
        finally:
            os.close(target)
            os.close(own)

    t = threading.Thread(target=worker, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def socket_in_netns(name: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace `name`, usable from any thread."""
    return call_in_netns(name, lambda: socket.socket(family, type))


class NetnsWorker:
    """One long-lived thread that joined a namespace, for making sockets there quickly.

    `call_in_netns` starts a thread per call; on a proxy's hot path (a socket per
    connection) that costs more than the connection itself. This thread joins the
    namespace once and then serves calls from an executor queue.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        if not os.path.exists(netns_path(name)):
            raise NetnsError(f"network namespace {name!r} not found")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=self._join)
        self._executor.submit(lambda: None).result()    # surface a missing namespace now

    def _join(self) -> None:
        fd = os.open(netns_path(self.name), os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
