"""The ztunnel runtime in the node agent: one in-pod proxy per enrolled local workload.

Enrollment (a pod of this node becomes HBONE in the pushed config) installs the
capture rules in the pod's namespace and opens 15001/15006/15008 there; leaving
the mesh closes them and removes the rules. Applications are never restarted:
only new connections are captured. Every decision is a pure function of the
current Snapshot (`zeromesh.ztunnel.plan`); this module only does the IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
from collections.abc import Callable
from typing import Any

from zeromesh.errors import NetnsError
from zeromesh.hbone import HboneError, TunnelRequested
from zeromesh.identity.spiffe import SpiffeId
from zeromesh.netns import podredirect
from zeromesh.netns.enter import NetnsWorker
from zeromesh.nodeagent.certs import CertManager
from zeromesh.policy import Decision, Request, evaluate
from zeromesh.ztunnel import plan as P
from zeromesh.ztunnel.config import Snapshot, WorkloadInfo
from zeromesh.ztunnel.hbone_io import (
    HboneLink,
    IdentityMismatch,
    LinkPool,
    TunnelStream,
    connect_link,
    relay_tunnel,
)
from zeromesh.ztunnel.relay import relay
from zeromesh.ztunnel.sockets import listen_in_netns, new_connect_socket, original_dst
from zeromesh.ztunnel.telemetry import Connection, Telemetry

log = logging.getLogger("zeromesh.ztunnel")

OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT = 15001, 15006, 15008
CONNECT_TIMEOUT = 10.0
PASSED_BY_WAYPOINT = Decision(True, None, None, None,
                              "from the workload's waypoint (istio.io/for-service-account), which "
                              "enforces its policies")


class PodProxy:
    """The listeners of one enrolled pod, all living in the pod's network namespace."""

    def __init__(self, zt: Ztunnel, wl: WorkloadInfo, netns: str) -> None:
        self.zt = zt
        self.wl = wl
        self.netns = netns
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[asyncio.Task[Any]] = set()
        self.worker: NetnsWorker | None = None     # makes this pod's sockets without a thread each
        # Open inbound connections and how to end them, re-decided when policies change.
        self.inbound: dict[int, tuple[Request, Connection, Callable[[], None]]] = {}

    async def start(self) -> None:
        self.worker = await asyncio.to_thread(NetnsWorker, self.netns)
        await asyncio.to_thread(podredirect.install, self.netns, self.wl.ip)
        try:
            for port, handler, transparent in (
                    (OUTBOUND_PORT, self._outbound, True),
                    (INBOUND_PLAINTEXT_PORT, self._inbound_plaintext, True)):
                sock = await asyncio.to_thread(listen_in_netns, self.netns, port,
                                               transparent=transparent)
                self.servers.append(await asyncio.start_server(handler, sock=sock))
            self.servers.extend(await self.zt.hbone_servers(self))
        except BaseException:
            await self.stop()
            raise
        log.info("enrolled %s/%s (%s) in the mesh", self.wl.namespace, self.wl.name, self.wl.ip)

    async def stop(self, remove_rules: bool = True) -> None:
        """Leaving the mesh removes the capture; a node agent shutting down keeps it, so the
        pod's traffic fails closed (refused) until the agent is back, never in plaintext."""
        for s in self.servers:
            s.close()
        self.servers.clear()
        if remove_rules:
            with contextlib.suppress(NetnsError, OSError):
                await asyncio.to_thread(podredirect.remove, self.netns)
            log.info("removed %s/%s from the mesh", self.wl.namespace, self.wl.name)
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    async def new_socket(self, source: tuple[str, int] | None = None) -> socket.socket:
        """A marked socket inside this pod's namespace, from its long-lived worker thread."""
        if self.worker is None:
            raise OSError(f"pod {self.wl.namespace}/{self.wl.name} is no longer enrolled")
        return await asyncio.wrap_future(
            self.worker.submit(lambda: new_connect_socket(transparent_source=source)))

    def spawn(self, coro: Any) -> None:
        """Run a connection handler, keeping a reference until it is done; a bug in it is
        logged and costs that connection only."""
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("connection handler of %s/%s failed", self.wl.namespace, self.wl.name)
        task = asyncio.get_running_loop().create_task(guarded())
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def connect_in_pod(self, ip: str, port: int,
                              source: tuple[str, int] | None = None
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await self.new_socket(source)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)),
                                   CONNECT_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    # ---- outbound: the pod's own connections, captured on 15001 ---------------------------
    async def _outbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        try:
            await self._outbound_guarded(reader, writer)
        except Exception:          # a bug must cost one connection, never the listener
            log.exception("outbound connection of %s/%s failed", self.wl.namespace, self.wl.name)
            writer.transport.abort()

    async def _outbound_guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")
        try:
            dst_ip, dst_port = original_dst(sock)
        except OSError as e:
            log.warning("outbound connection without original destination: %s", e)
            writer.close()
            return
        snap = self.zt.snapshot
        decision = P.plan_outbound(snap, dst_ip, dst_port, random.choice, source=self.wl)
        conn = Connection("outbound", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}", self.wl,
                          getattr(decision, "destination", None), getattr(decision, "service", None),
                          src_identity=self.wl.identity.uri)
        match decision:
            case P.Refuse(reason):
                conn.error = reason
                self.zt.telemetry.failed(conn)
                writer.transport.abort()
            case P.Passthrough(ip, port, _, _):
                conn.dst_addr = f"{ip}:{port}"
                await self._passthrough(reader, writer, conn, ip, port)
            case P.Tunnel():
                await self.zt.tunnel_outbound(self, reader, writer, conn, decision)

    async def _passthrough(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           conn: Connection, ip: str, port: int) -> None:
        try:
            upstream = await self.connect_in_pod(ip, port)
        except (OSError, TimeoutError) as e:
            conn.error = f"connect {ip}:{port}: {e}"
            self.zt.telemetry.failed(conn)
            writer.transport.abort()
            return
        self.zt.telemetry.opened(conn)
        conn.error = await relay((reader, writer), upstream, conn_sent(conn), conn_recv(conn))
        self.zt.telemetry.closed(conn)

    # ---- inbound plaintext: clients outside the mesh, captured on 15006 ---------------------
    async def _inbound_plaintext(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        self._track()
        sock: socket.socket = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")
        snap = self.zt.snapshot
        try:
            dst_ip, dst_port = original_dst(sock)
        except OSError:
            writer.close()
            return
        conn = Connection("inbound", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}",
                          snap.workloads_by_ip.get(peer[0]), self.wl)
        if not P.accepts_plaintext(snap, self.wl, dst_port):
            conn.error = "plaintext refused: PeerAuthentication STRICT"
            conn.flags = "DENY"
            self.zt.telemetry.failed(conn)
            writer.transport.abort()
            return
        request = Request(None, peer[0], self.wl.ip, dst_port)
        decision = evaluate(snap.policy_set(self.wl), request)
        if not decision.allowed:
            conn.error = f"RBAC: {decision.reason}"
            conn.flags = "DENY"
            self.zt.telemetry.failed(conn)
            writer.transport.abort()
            return
        try:
            upstream = await self.connect_in_pod(self.wl.ip, dst_port, source=(peer[0], 0))
        except (OSError, TimeoutError) as e:
            conn.error = f"connect to the application: {e}"
            self.zt.telemetry.failed(conn)
            writer.transport.abort()
            return
        self.zt.telemetry.opened(conn)
        key = id(conn)
        self.inbound[key] = (request, conn, lambda: (writer.transport.abort(), upstream[1].transport.abort()))
        try:
            conn.error = await relay((reader, writer), upstream, conn_sent(conn), conn_recv(conn))
        finally:
            self.inbound.pop(key, None)
        self.zt.telemetry.closed(conn)


def conn_sent(c: Connection) -> Callable[[int], None]:
    def add(n: int) -> None:
        c.bytes_sent += n
    return add


def conn_recv(c: Connection) -> Callable[[int], None]:
    def add(n: int) -> None:
        c.bytes_recv += n
    return add


class Ztunnel:
    """Reconciles enrolled pods with the pushed configuration; holds what all pod proxies share:
    the snapshot, workload certificates, the HBONE connection pool and telemetry."""

    def __init__(self, node: str, netns_of: Callable[[str, str], str], trust_domain: str,
                 certs: CertManager, roots: Callable[[], str]) -> None:
        self.node = node
        self.netns_of = netns_of
        self.trust_domain = trust_domain
        self.certs = certs
        self.roots = roots
        self.snapshot = Snapshot(version="", trust_domain=trust_domain)
        self.pods: dict[str, PodProxy] = {}
        self.telemetry = Telemetry()
        self.pool = Pool(self)
        self._lock = asyncio.Lock()

    def local_enrolled(self, snap: Snapshot) -> dict[str, WorkloadInfo]:
        return {uid: w for uid, w in snap.workloads_by_uid.items() if w.node == self.node and w.meshed}

    def recheck(self, snap: Snapshot) -> None:
        """Policies changed: close open connections the new policies deny (as Istio's ztunnel)."""
        for pod in self.pods.values():
            wl = snap.workloads_by_uid.get(pod.wl.uid)
            if wl is None:
                continue
            ps = snap.policy_set(wl)
            for key, (request, conn, close) in list(pod.inbound.items()):
                if P.waypoint_passes(snap, wl, f"spiffe://{request.source_principal}"):
                    continue
                decision = evaluate(ps, request)
                if not decision.allowed:
                    conn.error = f"connection closed due to policy change: {decision.reason}"
                    conn.flags = "DENY"
                    self.telemetry.closed_by_policy(conn)
                    pod.inbound.pop(key, None)
                    close()

    async def update(self, snap: Snapshot) -> None:
        """Swap the snapshot in, re-decide open connections, enroll and release pods to match it."""
        old = self.snapshot
        self.snapshot = snap
        if old.policies != snap.policies:
            self.recheck(snap)
        async with self._lock:
            want = self.local_enrolled(snap)
            for uid in [u for u in self.pods if u not in want or want[u].ip != self.pods[u].wl.ip]:
                await self.pods.pop(uid).stop()
            for uid, wl in want.items():
                if uid in self.pods:
                    self.pods[uid].wl = wl
                    continue
                proxy = PodProxy(self, wl, self.netns_of(wl.namespace, wl.name))
                try:
                    await proxy.start()
                except Exception as e:   # one pod failing to enroll must not stop the others
                    log.error("could not enroll %s/%s: %s", wl.namespace, wl.name, e)
                    continue
                self.pods[uid] = proxy

    async def close(self) -> None:
        async with self._lock:
            for proxy in self.pods.values():
                await proxy.stop(remove_rules=False)
            self.pods.clear()
        self.pool.close()

    # ---- inbound HBONE: 15008 in the pod, presenting the pod's own certificate ---------------
    async def hbone_servers(self, pod: PodProxy) -> list[asyncio.AbstractServer]:
        cert = await self.certs.get(pod.wl.namespace, pod.wl.service_account)
        ctx = self.certs.server_context(cert, self.roots())
        sock = await asyncio.to_thread(listen_in_netns, pod.netns, HBONE_PORT)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HboneLink(client=False, on_request=lambda link, req, stream:
                              pod.spawn(self._inbound_tunnel(pod, link, req, stream)),
                              on_handshake_failure=lambda exc, peer: self._tls_refused(pod, exc, peer)),
            sock=sock, ssl=ctx, ssl_handshake_timeout=10)
        return [server]

    def _tls_refused(self, pod: PodProxy, exc: BaseException, peer: tuple[str, int] | None) -> None:
        """A client failed mutual TLS on 15008 (no certificate, another CA, expired…)."""
        ip, port = peer or ("", 0)
        conn = Connection("inbound", f"{ip}:{port}", f"{pod.wl.ip}:{HBONE_PORT}",
                          self.snapshot.workloads_by_ip.get(ip), pod.wl,
                          dst_identity=pod.wl.identity.uri, flags="TLS_FAILURE",
                          error=f"TLS handshake refused: {getattr(exc, 'reason', None) or exc}")
        self.telemetry.failed(conn)

    def _peer_identity(self, link: HboneLink) -> str:
        """The caller's SPIFFE ID: the chain was verified against our roots; the trust domain
        must be ours. Which identities may call is AuthorizationPolicy's business."""
        for uri in link.peer_identities:
            try:
                sid = SpiffeId.parse(uri)
            except ValueError:
                continue
            if sid.trust_domain == self.trust_domain:
                return sid.uri
        return ""

    async def _inbound_tunnel(self, pod: PodProxy, link: HboneLink, req: TunnelRequested,
                              stream: TunnelStream) -> None:
        snap = self.snapshot
        peer_ip, peer_port = link.peer or ("", 0)
        identity = self._peer_identity(link)
        conn = Connection("inbound", f"{peer_ip}:{peer_port}", req.authority,
                          snap.workloads_by_ip.get(peer_ip), pod.wl, hbone_addr=req.authority,
                          src_identity=identity, dst_identity=pod.wl.identity.uri, mtls=True)

        def answer(status: int, reason: str = "") -> None:
            with contextlib.suppress(Exception):
                link.conn.respond(req.stream_id, status)
                link.flush()
            if reason:
                conn.error = reason
                conn.flags = "DENY" if status == 401 else "CONNECT"
                self.telemetry.failed(conn)
            if status != 200:
                stream.done()

        if not identity:
            answer(401, f"no SPIFFE identity of trust domain {self.trust_domain} in the client "
                        "certificate")
            return
        local = snap.workloads_by_uid.get(pod.wl.uid)
        decision = P.admit_inbound(local, req.authority)
        if isinstance(decision, P.Reject):
            answer(decision.status, decision.reason)
            return
        assert local is not None
        request = Request(identity.removeprefix("spiffe://"), peer_ip, decision.ip, decision.port)
        verdict = (PASSED_BY_WAYPOINT if P.waypoint_passes(snap, local, identity)
                   else evaluate(snap.policy_set(local), request))
        if not verdict.allowed:
            answer(401, f"RBAC: {verdict.reason}")
            return
        try:
            app = await pod.connect_in_pod(decision.ip, decision.port, source=(peer_ip, 0))
        except (OSError, TimeoutError) as e:
            answer(503, f"connection to the application failed: {e}")
            return
        answer(200)
        self.telemetry.opened(conn)
        key = id(conn)

        def close() -> None:
            stream.abort()
            app[1].transport.abort()
        pod.inbound[key] = (request, conn, close)
        try:
            conn.error = await relay_tunnel(app, stream, conn_recv(conn), conn_sent(conn))
        finally:
            pod.inbound.pop(key, None)
        self.telemetry.closed(conn)

    # ---- outbound HBONE -----------------------------------------------------------------------
    async def tunnel_outbound(self, pod: PodProxy, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, conn: Connection, decision: P.Tunnel) -> None:
        conn.hbone_addr = decision.authority
        conn.dst_addr = f"{decision.ip}:{decision.port}"
        conn.dst_identity = (decision.identities[0].uri if decision.waypoint is not None
                             else decision.destination.identity.uri)
        try:
            link = await self.pool.get(pod, decision)
            stream = await link.open(decision.authority, request_headers(pod.wl, conn, decision))
            status, _ = await asyncio.wait_for(stream.opened, CONNECT_TIMEOUT)
        except (OSError, TimeoutError, HboneError, IdentityMismatch, RuntimeError) as e:
            conn.error = f"{type(e).__name__}: {e}"
            conn.flags = "IDENTITY_ERROR" if isinstance(e, IdentityMismatch) else "CONNECT"
            self.telemetry.failed(conn)
            writer.transport.abort()
            return
        if status != 200:
            conn.error = f"HBONE CONNECT answered {status}"
            conn.flags = "DENY" if status == 401 else "CONNECT"
            self.telemetry.failed(conn)
            stream.done()
            writer.transport.abort()
            return
        conn.mtls = True
        self.telemetry.opened(conn)
        conn.error = await relay_tunnel((reader, writer), stream, conn_sent(conn), conn_recv(conn))
        self.telemetry.closed(conn)


def request_headers(src: WorkloadInfo, conn: Connection, decision: P.Tunnel) -> list[tuple[str, str]]:
    """baggage (who the source is), forwarded (the client address), traceparent (a fresh id)."""
    baggage = (f"k8s.cluster.name=Kubernetes,k8s.namespace.name={src.namespace},"
               f"k8s.deployment.name={src.workload_name},service.name={src.canonical_name},"
               f"service.version={src.canonical_revision}")
    fwd = f'for="{conn.src_addr}"'
    if decision.service is not None:
        fwd += f";host={decision.service.hostname}"
    trace = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    return [("baggage", baggage), ("forwarded", fwd), ("traceparent", trace)]


class Pool:
    """HBONE connections shared by tunnels with the same source identity, destination
    identities and destination address (the sharing rule of Istio's ztunnel)."""

    def __init__(self, zt: Ztunnel) -> None:
        self.zt = zt
        self.links = LinkPool()

    async def get(self, pod: PodProxy, decision: P.Tunnel) -> HboneLink:
        expected = tuple(sorted(i.uri for i in decision.identities))
        key = (pod.wl.identity.uri, expected, decision.ip, decision.port)
        return await self.links.get(key, lambda: self._connect(pod, decision, set(expected)))

    async def _connect(self, pod: PodProxy, decision: P.Tunnel, expected: set[str]) -> HboneLink:
        cert = await self.zt.certs.get(pod.wl.namespace, pod.wl.service_account)
        ctx = self.zt.certs.client_context(cert, self.zt.roots())
        return await connect_link(await pod.new_socket(), decision.ip, decision.port, ctx, expected,
                                  CONNECT_TIMEOUT)

    def close(self) -> None:
        self.links.close()
