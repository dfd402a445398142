"""Fetching JWKS for RequestAuthentication's ``jwksUri`` (and OpenID discovery) from inside the
mesh, cached and refreshed as istiod does; a failed fetch keeps the last good keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import aiohttp

from zeromesh.authn import JWKS_REFRESH_SECONDS, JwkSet, JwksFetch, jwks_uri_from_discovery, parse_jwks

log = logging.getLogger("zeromesh.waypoint.jwks")


class JwksFetcher:
    def __init__(self) -> None:
        self.keys: dict[str, tuple[JwkSet, float]] = {}
        self.errors: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    def keys_for(self, url: str) -> JwkSet | None:
        got = self.keys.get(url)
        return got[0] if got is not None else None

    async def ensure(self, fetches: Iterable[JwksFetch]) -> None:
        """Fetch what is missing (waiting for it, bounded by its timeout) and refresh what is
        old in the background."""
        waits = []
        now = time.monotonic()
        for f in fetches:
            have = self.keys.get(f.url)
            if have is None:
                waits.append((self._start(f), f.timeout))
            elif now - have[1] > JWKS_REFRESH_SECONDS:
                self._start(f)
        for task, timeout in waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    def _start(self, f: JwksFetch) -> asyncio.Task[None]:
        task = self._inflight.get(f.url)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(f))
            self._inflight[f.url] = task
            task.add_done_callback(lambda _t, u=f.url: self._inflight.pop(u, None))
        return task

    async def _fetch(self, f: JwksFetch) -> None:
        timeout = aiohttp.ClientTimeout(total=f.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s:
                url = f.url
                if f.discovery:
                    async with s.get(url) as r:
                        r.raise_for_status()
                        found = jwks_uri_from_discovery(await r.json(content_type=None))
                    if not found:
                        raise ValueError(f"{url}: no jwks_uri in the discovery document")
                    url = found
                async with s.get(url) as r:
                    r.raise_for_status()
                    text = await r.text()
            self.keys[f.url] = (parse_jwks(text), time.monotonic())
            self.errors.pop(f.url, None)
            log.info("JWKS from %s: fetched", f.url)
        except Exception as e:      # keep the last good keys; requests needing them get 401
            self.errors[f.url] = str(e)
            log.warning("JWKS from %s could not be fetched: %s", f.url, e)
