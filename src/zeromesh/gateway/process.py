"""The ingress gateway pod's process: the waypoint's L7 engine behind edge listeners.

The runner hands it, besides the bootstrap credential, listening sockets it opened on the
host's loopback (the local cluster's LoadBalancer address) for gateway ports 80 and 443, so
the gateway accepts client connections itself and sees each client's real address. It also
listens inside its pod on 8080/8443 (the Service's targetPorts) for traffic from the cluster.
HTTPS is terminated here with the certificate the Gateway names for the SNI host; traffic
goes into the mesh over HBONE with the gateway's own identity.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from zeromesh.push import protocol as p
from zeromesh.waypoint.config import Destination
from zeromesh.waypoint.duplex import StreamDuplex
from zeromesh.waypoint.engine import Peer
from zeromesh.waypoint.main import ProxyProcess, read_credential_and_drop

log = logging.getLogger("zeromesh.gateway")

POD_PORTS = {80: 8080, 443: 8443}          # gateway port -> the Service's targetPort in the pod
TLS_PORTS = frozenset({443})


class IngressProxy(ProxyProcess):
    kind = p.GATEWAY

    def __init__(self, cred: dict[str, Any], directory: Path, host_fds: dict[int, int]) -> None:
        self.host_fds = host_fds
        self._contexts: dict[str, ssl.SSLContext] = {}
        super().__init__(cred, directory)
        self.engine.route_dest = lambda cfg, dest, host: cfg.listener_destination(dest.port, host)
        self.engine.self_source = self._self_source
        self._me: tuple[Any, Any] | None = None
        self._identity = f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def _self_source(self) -> tuple[Any, str]:
        """Istio's gateways report their requests with themselves as the source workload."""
        cfg = self.config
        if self._me is None or self._me[0] is not cfg:
            me = next((w for w in cfg.snapshot.workloads_by_uid.values()
                       if w.namespace == self.namespace and w.name == self.pod), None)
            self._me = (cfg, me)
        return self._me[1], self._identity

    def build_config(self, state: dict[str, dict[str, Any]], version: str) -> Any:
        from zeromesh.gateway.config import GatewayConfig
        me = next((w for w in (state.get("workload") or {}).values()
                   if w and w.get("namespace") == self.namespace and w.get("name") == self.pod), None)
        labels = dict((me or {}).get("labels") or {})
        return GatewayConfig.build(state, version, namespace=self.namespace, pod_name=self.pod,
                                   pod_labels=labels, service_account=self.service_account,
                                   trust_domain=self.trust_domain,
                                   trusted_hops=int(os.environ.get("TRUSTED_HOPS") or 0),
                                   namespaces={n: dict((rec or {}).get("labels") or {})
                                               for n, rec in (state.get("namespace") or {}).items()})

    # ---- TLS: the certificate the Gateway names for the client's SNI ----------------------------
    def _context_for(self, cert_pem: str, key_pem: str) -> ssl.SSLContext:
        digest = hashlib.sha256((cert_pem + key_pem).encode()).hexdigest()[:24]
        ctx = self._contexts.get(digest)
        if ctx is None:
            tls_dir = self.dir / "tls"
            tls_dir.mkdir(mode=0o700, exist_ok=True)
            cert_file, key_file = tls_dir / f"{digest}.crt", tls_dir / f"{digest}.key"
            for path, text in ((cert_file, cert_pem), (key_file, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            ctx.load_cert_chain(str(cert_file), str(key_file))
            self._contexts[digest] = ctx
        return ctx

    def _server_tls(self, port: int) -> ssl.SSLContext:
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_2
        base.set_alpn_protocols(["h2", "http/1.1"])

        def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
            found = self.config.certificate_for(port, name)
            if found is None:
                log.info("TLS on :%d: no certificate for SNI %r; handshake refused", port, name)
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sslobj.context = self._context_for(*found)
            return None
        base.sni_callback = pick
        return base

    # ---- listeners ---------------------------------------------------------------------------------
    async def serve(self) -> list[asyncio.AbstractServer]:
        servers = []
        for port, fd in sorted(self.host_fds.items()):
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            servers.append(await self._listen(port, sock=sock))
        for port, pod_port in sorted(POD_PORTS.items()):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", pod_port))
            s.listen(1024)
            s.setblocking(False)
            servers.append(await self._listen(port, sock=s))
        log.info("ingress gateway %s/%s serving gateway ports %s (host loopback fds %s)", self.namespace,
                 self.pod, sorted(POD_PORTS), sorted(self.host_fds))
        return servers

    async def _listen(self, port: int, *, sock: socket.socket) -> asyncio.AbstractServer:
        tls = self._server_tls(port) if port in TLS_PORTS else None

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            s = writer.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = writer.get_extra_info("peername") or ("", 0)
            local = writer.get_extra_info("sockname") or ("", 0)
            ip = str(peer[0]).removeprefix("::ffff:")
            cfg = self.config
            dest = Destination(str(local[0]), port, None, None)
            client = Peer(None, ip, int(peer[1]), cfg.snapshot.workloads_by_ip.get(ip), mtls=False)
            try:
                await self.engine.serve(StreamDuplex(reader, writer), dest, client)
            except Exception:
                log.exception("request handling failed on gateway port %d", port)
                writer.transport.abort()
        return await asyncio.start_server(accept, sock=sock, ssl=tls,
                                          ssl_handshake_timeout=10 if tls else None, backlog=1024)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "gateway": f"{self.namespace}/{self.pod}",
                "listeners": sorted(POD_PORTS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zeromesh-gateway")
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--credential-fd", type=int, required=True)
    ap.add_argument("--uid", type=int, required=True)
    ap.add_argument("--listen", action="append", default=[], help="GATEWAY_PORT=FD (host loopback socket)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host_fds = {int(k): int(v) for k, v in (item.split("=", 1) for item in args.listen)}
    cred, directory = read_credential_and_drop(args.credential_fd, args.uid)
    log.info("ingress gateway process for cluster %s running as uid %d", args.cluster, os.getuid())
    proxy = IngressProxy(cred, directory, host_fds)
    try:
        asyncio.run(proxy.run())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
