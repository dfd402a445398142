"""The dashboard's web server on 127.0.0.1: static page, JSON API, a collection loop.

One loop collects every ``interval`` seconds whatever the number of open pages, so rates
always cover one interval and a forgotten tab costs the cluster nothing extra; requests
only read the last state.

API (JSON, header ``X-Zeromesh-Token`` = the token printed with the URL):
``GET /api/state`` everything; ``GET /api/{section}`` one of its keys (``graph``,
``workloads``, ``services``, ``waypoints``, ``policies``, ``certificates``, ``traces``,
``details``, ``sources``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from zeromesh.ui.access import TOKEN_HEADER, decide
from zeromesh.ui.collect import Collector
from zeromesh.ui.metrics import Scrape
from zeromesh.ui.state import build_state

log = logging.getLogger("zeromesh.ui")

STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
SECTIONS = ("graph", "workloads", "services", "waypoints", "policies", "certificates", "traces",
            "details", "sources")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                      "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}


def _static(name: str) -> bytes:
    return resources.files("zeromesh.ui").joinpath("static", name).read_bytes()


class Dashboard:
    def __init__(self, cluster: str, interval: float = 2.0, token: str | None = None) -> None:
        self.cluster = cluster
        self.interval = interval
        self.token = token or secrets.token_urlsafe(18)
        self.port = 0
        self.state: dict[str, Any] | None = None
        self.error = ""
        self._ready = asyncio.Event()
        self._last: Scrape | None = None

    async def refresh(self, collector: Collector) -> None:
        inputs = await collector.collect()
        self.state = build_state(inputs, self._last, datetime.now(UTC))
        self.state["interval"] = self.interval
        self._last = inputs.scrape
        self.error = ""
        self._ready.set()

    async def run_collector(self) -> None:
        async with Collector(self.cluster) as collector:
            while True:
                try:
                    await self.refresh(collector)
                except Exception as e:            # keep serving the last state; say why it is old
                    log.exception("collection failed")
                    self.error = f"collection failed: {e}"
                await asyncio.sleep(self.interval)

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        refused = decide(request.path, request.host, request.headers.get(TOKEN_HEADER), self.port,
                         self.token)
        if refused:
            resp: web.StreamResponse = web.json_response(
                {"error": "wrong host" if refused == 421 else "missing or wrong token"}, status=refused)
        else:
            resp = await handler(request)
        resp.headers.update(HEADERS)
        return resp

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.add_routes([web.get("/", self.index), web.get("/static/{name}", self.static),
                        web.get("/api/state", self.api_state), web.get("/api/{section}", self.api_section)])
        return app

    async def index(self, _: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=STATIC[name], charset="utf-8")

    async def _state(self) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)
        state = dict(self.state or {"cluster": self.cluster})
        state["error"] = self.error if self.state else (self.error or "no data collected yet")
        return state

    async def api_state(self, _: web.Request) -> web.Response:
        return web.json_response(await self._state(), headers={"Cache-Control": "no-store"})

    async def api_section(self, request: web.Request) -> web.Response:
        section = request.match_info["section"]
        if section not in SECTIONS:
            raise web.HTTPNotFound()
        state = await self._state()
        return web.json_response({section: state.get(section), "error": state["error"]},
                                 headers={"Cache-Control": "no-store"})

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    async def start(self, port: int) -> web.AppRunner:
        """Listen on 127.0.0.1:port (0: a free port) and start collecting."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # not a second listener
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._task = asyncio.create_task(self.run_collector())
        return runner

    async def stop(self, runner: web.AppRunner) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await runner.cleanup()
