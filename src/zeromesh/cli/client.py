"""Synchronous client of the control plane's unix-socket API (stdlib only: the CLI must start fast)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlencode

from zeromesh.errors import ClusterError, ZeromeshError
from zeromesh.local.state import Paths


class ApiError(ZeromeshError):
    def __init__(self, status: int, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Client:
    def __init__(self, cluster: str, timeout: float = 60.0) -> None:
        self.cluster = cluster
        self.paths = Paths(cluster)
        self.timeout = timeout

    def not_running(self) -> ClusterError:
        return ClusterError(f"cluster {self.cluster!r} is not running; start it with "
                            f"`zeromesh up --cluster {self.cluster}`")

    def alive(self) -> bool:
        try:
            self.call("GET", "/v1/info", timeout=2)
            return True
        except (ClusterError, ApiError):
            return False

    def call(self, method: str, path: str, body: Any = None,
             params: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        if not self.paths.socket.exists():
            raise self.not_running()
        conn = _UnixConnection(str(self.paths.socket), timeout or self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"{}")
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise self.not_running() from e
        except (OSError, http.client.HTTPException) as e:
            raise ClusterError(f"control plane of cluster {self.cluster!r} did not answer: {e}") from e
        finally:
            conn.close()
        if resp.status >= 400:
            raise ApiError(resp.status, payload.get("error", f"HTTP {resp.status}"),
                           payload.get("errors") or [payload.get("error", "")])
        return payload

    def get(self, resource: str, namespace: str | None = None, name: str | None = None) -> Any:
        params: dict[str, str] = {}
        if namespace is not None:
            params["namespace"] = namespace
        if name:
            params["name"] = name
        return self.call("GET", f"/v1/objects/{quote(resource)}", params=params)
