"""`zeromesh dashboard`: the web UI on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from typing import Any

from zeromesh.errors import ZeromeshError


def add_parser(sub: Any, xsub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    """Register `dashboard`."""
    s = sub.add_parser("dashboard", parents=[common],
                       help="a live web UI of the mesh on 127.0.0.1 (graph, workloads, policies...)")
    s.add_argument("--port", type=int, default=0, help="loopback port (default 0: a free one)")
    s.add_argument("--no-browser", action="store_true", help="only print the URL")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (default 2)")
    s.set_defaults(func=cmd_dashboard)


def open_browser(url: str) -> bool:
    """Open a graphical browser in the background, if there is a display. Without one
    Python's webbrowser falls back to console browsers that would take over this terminal."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False

    def go() -> None:
        import webbrowser
        with contextlib.suppress(Exception):      # no browser is fine: the URL was printed
            webbrowser.open(url)
    threading.Thread(target=go, daemon=True).start()
    return True


def cmd_dashboard(args: argparse.Namespace) -> int:
    from zeromesh.cli.main import _client, _cluster
    if not 0 <= args.port <= 65535:
        raise ZeromeshError(f"--port {args.port}: expected 0-65535")
    if args.interval < 0.5:
        raise ZeromeshError(f"--interval {args.interval}: at least 0.5 seconds")
    client = _client(args)
    if not client.alive():
        raise client.not_running()
    return asyncio.run(_serve(_cluster(args), args.port, args.interval, not args.no_browser))


async def _serve(cluster: str, port: int, interval: float, browser: bool) -> int:
    from zeromesh.ui.server import Dashboard
    dash = Dashboard(cluster, interval)
    try:
        runner = await dash.start(port)
    except OSError as e:
        raise ZeromeshError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from e
    print(f"dashboard of cluster {cluster!r}: {dash.url()}", flush=True)
    if browser and not open_browser(dash.url()):
        print("  (no display: open the URL in a browser)", flush=True)
    print("  Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await dash.stop(runner)
    print("dashboard stopped", file=sys.stderr)
    return 0
