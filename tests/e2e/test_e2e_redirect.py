"""In-pod redirection on a real local cluster: capture, original destination, transparent connect.

A plain asyncio TCP relay stands in for the ztunnel (no TLS, no HBONE): it
listens on 15001 in the client pod and on 15006 in the server pod, through
`zeromesh.ztunnel.sockets`, while `zeromesh.netns.podredirect` installs the
capture rules. This proves the kernel plumbing the real ztunnel will use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from e2ekit import ROOT, Cluster

from zeromesh.local.plan import ClusterPlan
from zeromesh.netns import cmd, podredirect
from zeromesh.netns.enter import call_in_netns
from zeromesh.ztunnel.sockets import (
    PROXY_MARK,
    connect_socket_in_netns,
    get_mark,
    listen_in_netns,
    original_dst,
)

T = TypeVar("T")
LOCAL_PORT = 18080      # a plain (unmarked) listener in the client pod: self-calls must not be captured
LOCAL_REPLY = b"local-listener\n"


@dataclass(frozen=True)
class Seen:
    """One connection the stand-in proxy accepted."""
    kind: str
    original_dst: tuple[str, int]
    peer: tuple[str, int]
    accepted_mark: int


@dataclass
class Relay:
    """A stand-in ztunnel on its own event loop thread (the test's thread stays free to run curl)."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    seen: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def of(self, kind: str) -> list[Seen]:
        return [s for s in self.seen if s.kind == kind]

    def relay(self, kind: str, listener: socket.socket,
              upstream: Callable[[tuple[str, int]], socket.socket]) -> None:
        """Accept on `listener`, connect to the original destination from `upstream(peer)`, copy bytes."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            peer = writer.get_extra_info("peername")
            up: socket.socket | None = None
            uwriter: asyncio.StreamWriter | None = None
            try:
                dst = original_dst(sock)
                self.seen.append(Seen(kind, dst, (peer[0], peer[1]), get_mark(sock)))
                up = upstream(peer)
                await self.loop.sock_connect(up, dst)
                ureader, uwriter = await asyncio.open_connection(sock=up)
                await asyncio.gather(_pipe(reader, uwriter), _pipe(ureader, writer))
            except Exception as e:
                self.errors.append(f"{kind}: {e!r}")
            finally:
                writer.close()
                # Once a transport owns the socket only the transport may close it: closing the raw
                # socket early frees its fd number while the loop still watches it.
                if uwriter is not None:
                    uwriter.close()
                elif up is not None:
                    up.close()

        async def start() -> None:
            self.servers.append(await asyncio.start_server(handle, sock=listener))
        self.call(start())

    def answer(self, listener: socket.socket) -> None:
        """A tiny HTTP responder that is *not* the proxy (for traffic that must stay uncaptured)."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(LOCAL_REPLY), LOCAL_REPLY))
                await writer.drain()
            writer.close()

        async def start() -> None:
            self.servers.append(await asyncio.start_server(handle, sock=listener))
        self.call(start())

    def stop(self) -> None:
        async def shutdown() -> None:
            for s in self.servers:
                s.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.thread is not None and self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(shutdown(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close so the other side sees the end too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _http_get(sock: socket.socket, addr: tuple[str, int], host: str) -> bytes:
    """One HTTP/1.0 request over an already made (marked) socket; the whole response."""
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, addr)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body


def _body_json(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    netns: str
    pids: tuple[int, ...]


def _pod(cluster: Cluster, namespace: str, app: str) -> Pod:
    pods = [p for p in cluster.pods(namespace) if p["metadata"]["labels"].get("app") == app]
    assert len(pods) == 1, pods
    p = pods[0]
    pids = tuple(int(c["containerID"].removeprefix("process://"))
                 for c in p["status"]["containerStatuses"])
    return Pod(p["metadata"]["name"], namespace, p["status"]["podIP"],
               ClusterPlan(cluster.name, 1).pod_netns(namespace, p["metadata"]["name"]), pids)


def _netns_view(netns: str) -> dict[str, str]:
    """What install/remove may touch in a pod: the ruleset, the rules, table 100."""
    return {
        "ruleset": cmd.run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"]),
        "rules": cmd.run(["ip", "-n", netns, "rule", "show"]),
        "table100": cmd.run(["ip", "-n", netns, "route", "show", "table", "100"], check=False),
    }


def _curl_json(cluster: Cluster, namespace: str, target: str, url: str) -> dict[str, Any]:
    proc = cluster.curl(namespace, target, url)
    assert proc.returncode == 0, f"curl {url}: rc={proc.returncode} {proc.stdout} {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def sample(cluster: Cluster) -> Iterator[Cluster]:
    cluster.apply(ROOT / "examples" / "server.yaml", ROOT / "examples" / "client.yaml")
    cluster.wait_ready("sample-server", 2)
    cluster.wait_ready("sample-client", 1)
    yield cluster


def test_render_is_accepted_by_this_kernels_nft(sample: Cluster) -> None:
    pod = _pod(sample, "sample-client", "curl")
    cmd.run(["ip", "netns", "exec", pod.netns, "nft", "-c", "-f", "-"],
            input=podredirect.render_rules(pod_ip=pod.ip))
    cmd.run(["ip", "netns", "exec", pod.netns, "nft", "-c", "-f", "-"],
            input=podredirect.render_remove())


def test_install_remove_is_idempotent_and_leaves_nothing(sample: Cluster) -> None:
    pod = _pod(sample, "sample-client", "curl")
    before = _netns_view(pod.netns)
    try:
        podredirect.install(pod.netns, pod.ip)
        podredirect.install(pod.netns, pod.ip)
        view = _netns_view(pod.netns)
        assert view["ruleset"].count("redirect to :15001") == 1
        assert view["ruleset"].count(f"table inet {podredirect.TABLE}") == 1
        assert view["rules"].count("fwmark 0x111 lookup 100") == 1
        assert "local default dev lo" in view["table100"]
    finally:
        podredirect.remove(pod.netns)
        podredirect.remove(pod.netns)
    assert _netns_view(pod.netns) == before


def test_redirect_through_a_stand_in_ztunnel(sample: Cluster) -> None:
    client = _pod(sample, "sample-client", "curl")
    server = _pod(sample, "sample-server", "echo")
    vip = sample.get("services", "sample-server", "echo")["spec"]["clusterIP"]
    before = {p.netns: _netns_view(p.netns) for p in (client, server)}

    # Without capture: the baseline the relay must not change.
    direct = _curl_json(sample, "sample-client", "deploy/curl", "http://echo.sample-server")
    assert direct["remote_ip"] == client.ip

    relay = Relay()
    relay.start()
    installed: list[Pod] = []
    listeners: list[socket.socket] = []
    try:
        out_listener = listen_in_netns(client.netns, podredirect.OUTBOUND_PORT)
        listeners.append(out_listener)
        in_listener = listen_in_netns(server.netns, podredirect.INBOUND_PORT, transparent=True)
        listeners.append(in_listener)
        relay.relay("outbound", out_listener,
                    lambda peer: connect_socket_in_netns(client.netns))
        relay.relay("inbound", in_listener,
                    lambda peer: connect_socket_in_netns(server.netns, transparent_source=(peer[0], 0)))
        local_listener = call_in_netns(client.netns, lambda: _plain_listener(LOCAL_PORT))
        listeners.append(local_listener)
        relay.answer(local_listener)

        for pod in (client, server):
            installed.append(pod)
            podredirect.install(pod.netns, pod.ip)

        # 1. Through the service VIP: captured before the node's DNAT, so the VIP is the original dst.
        body = _curl_json(sample, "sample-client", "deploy/curl", "http://echo.sample-server")
        assert relay.errors == []
        assert [s.original_dst for s in relay.of("outbound")] == [(vip, 80)]
        assert [s.original_dst for s in relay.of("inbound")] == [(server.ip, 8080)]
        assert relay.of("inbound")[0].peer[0] == client.ip
        # The app sees the client pod, not the proxy: transparent bind + policy route for replies.
        assert body["remote_ip"] == client.ip
        assert body["pod"] == server.name

        # 2. Straight to the pod IP.
        body = _curl_json(sample, "sample-client", "deploy/curl", f"http://{server.ip}:8080/x")
        assert body["remote_ip"] == client.ip and body["path"] == "/x"
        assert [s.original_dst for s in relay.of("outbound")] == [(vip, 80), (server.ip, 8080)]
        assert [s.original_dst for s in relay.of("inbound")] == [(server.ip, 8080)] * 2
        # Accepted sockets inherit the listener's SO_MARK (so the proxy's replies are never captured).
        assert {s.accepted_mark for s in relay.seen} == {PROXY_MARK}

        # 3. The proxy's own marked sockets are not captured again (no loop): a marked connection
        #    from the client pod reaches the server pod directly, where inbound capture applies once.
        marked = connect_socket_in_netns(client.netns)
        try:
            raw = relay.call(_http_get(marked, (vip, 80), "echo.sample-server"))
        finally:
            marked.close()
        assert _body_json(raw)["remote_ip"] == client.ip
        assert len(relay.of("outbound")) == 2
        assert len(relay.of("inbound")) == 3

        # 4. Loopback and the pod calling itself by its own IP are not captured.
        for url in (f"http://127.0.0.1:{LOCAL_PORT}/", f"http://{client.ip}:{LOCAL_PORT}/"):
            proc = sample.curl("sample-client", "deploy/curl", url)
            assert proc.returncode == 0 and proc.stdout.encode() == LOCAL_REPLY, (url, proc)
        assert len(relay.of("outbound")) == 2 and len(relay.of("inbound")) == 3
        assert relay.errors == []

        # 5. Removal: traffic flows directly again and nothing of ours is left in the pods.
        for pod in (client, server):
            podredirect.remove(pod.netns)
        installed.clear()
        for url in ("http://echo.sample-server", f"http://{server.ip}:8080/"):
            assert _curl_json(sample, "sample-client", "deploy/curl", url)["remote_ip"] == client.ip
        assert len(relay.of("outbound")) == 2 and len(relay.of("inbound")) == 3
        for pod in (client, server):
            view = _netns_view(pod.netns)
            assert view == before[pod.netns]
            assert podredirect.TABLE not in view["ruleset"] and "0x111" not in view["rules"]
            assert view["table100"].strip() == ""
    finally:
        for pod in installed:
            with contextlib.suppress(Exception):
                podredirect.remove(pod.netns)
        relay.stop()
        for s in listeners:
            s.close()

    # The applications were never restarted: same processes, still alive.
    for pod, app in ((client, "curl"), (server, "echo")):
        assert _pod(sample, pod.namespace, app).pids == pod.pids
        for pid in pod.pids:
            os.kill(pid, 0)


def _plain_listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    s.setblocking(False)
    return s
