"""Async client of the control plane's unix-socket API, for the runners (and later the node agent)."""

from __future__ import annotations

from typing import Any

import aiohttp

from zeromesh.errors import ClusterError, NotFound


class ControlPlaneClient:
    def __init__(self, socket_path: str) -> None:
        self._path = socket_path
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self._path),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, *, json: Any = None,
                   params: dict[str, str] | None = None, timeout: float = 30) -> Any:
        try:
            async with self._s().request(method, "http://cp" + path, json=json, params=params,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                body = await r.json(content_type=None)
                if r.status == 404:
                    raise NotFound(body.get("error", "not found"))
                if r.status >= 400:
                    raise ClusterError(f"{method} {path}: {r.status} {body.get('error')}")
                return body
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ClusterError(f"control plane unreachable at {self._path}: {e}") from e
