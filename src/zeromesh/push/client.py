"""The proxies' side of the push stream, shared by the node agent and the waypoint.

It keeps the last configuration it accepted. A new update is applied to a copy,
checked by the proxy's own validator (given the candidate state and the records
the update changed, so checks can stay proportional to the change), and only
then swapped in and ACKed; a
rejected update is NACKed and the old configuration stays. When the control
plane is away the proxy keeps serving what it has and reconnects with back-off;
the first update after a reconnect is a full state.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from zeromesh.errors import ZeromeshError
from zeromesh.push import protocol as p

log = logging.getLogger("zeromesh.push.client")

State = dict[str, dict[str, Any]]


class ConfigRejected(ZeromeshError):
    """Raised by a proxy's validator: the update is NACKed with this message."""


def client_tls(cert_file: str, key_file: str, root_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class PushClient:
    def __init__(self, url: str | Callable[[], str], tls: Callable[[], ssl.SSLContext], hello: p.Hello,
                 validate: Callable[[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]],
                                    None] | None = None,
                 on_state: Callable[[State, str], Awaitable[None] | None] | None = None) -> None:
        self._url = url
        self.tls = tls
        self.hello = hello
        self.validate = validate
        self.on_state = on_state
        self.state: State = {}
        self.version = ""
        self.connected = False
        self.updates = 0
        self.rejected = 0
        self.synced = asyncio.Event()

    @property
    def url(self) -> str:
        """Looked up again at every (re)connection: the control plane may have moved."""
        return self._url() if callable(self._url) else self._url

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._session()
                delay = 0.1
            except (aiohttp.ClientError, OSError, TimeoutError, p.ProtocolError, ssl.SSLError) as e:
                log.warning("push stream to %s: %s; retrying in %.1fs (serving version %s)",
                            self.url, e, delay, self.version or "none")
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                self.url, ssl=self.tls(), heartbeat=20, max_msg_size=256 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            await ws.send_str(p.encode(self.hello))
            self.connected = True
            log.info("push stream to %s established", self.url)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                upd = p.decode(msg.data)
                if not isinstance(upd, p.Update):
                    raise p.ProtocolError(f"expected an update, got {type(upd).__name__}")
                await ws.send_str(p.encode(await self._consider(upd)))

    async def _consider(self, upd: p.Update) -> p.Ack | p.Nack:
        candidate = p.apply_update(self.state, upd)
        try:
            if self.validate is not None:
                self.validate(candidate, upd.resources)
        except ConfigRejected as e:
            self.rejected += 1
            log.warning("rejected config version %s: %s (keeping %s)", upd.version, e,
                        self.version or "none")
            return p.Nack(upd.nonce, upd.version, str(e))
        self.state = candidate
        self.version = upd.version
        self.updates += 1
        if self.on_state is not None:
            res = self.on_state(candidate, upd.version)
            if asyncio.iscoroutine(res):
                await res
        self.synced.set()
        return p.Ack(upd.nonce, upd.version)
