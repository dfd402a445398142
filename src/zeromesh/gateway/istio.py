"""Istio ``networking.istio.io`` Gateways served by the ingress pod, and the VirtualServices
bound to them (pure).

A Gateway is served when its ``spec.selector`` labels are all on the pod (no selector: every
gateway pod, as istiod does). A server is served when its port is published (80, 443) and
its protocol is HTTP (HTTP2 and GRPC count as HTTP: the engine detects h2c) or HTTPS with
``tls.mode: SIMPLE`` and a ``credentialName`` Secret in the pod's own namespace. Server
hosts are ``host`` or ``namespace/host`` (``./host``: the Gateway's namespace, ``*/host``:
any); a VirtualService binds through ``spec.gateways`` (short names resolve in the
VirtualService's namespace, ``ns/name``, ``mesh`` is the sidecar/waypoint world) and serves
the intersection of its hosts with the hosts of each bound server whose namespace part
admits the VirtualService's namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zeromesh.gateway import hosts
from zeromesh.gateway.attachment import Certificate, age, secret_certificate
from zeromesh.routing import Route, compile_virtual_service
from zeromesh.routing.compile import service_host

ISTIO_GROUP = "networking.istio.io"
ISTIO_GATEWAYS = "gateways.networking.istio.io"
VIRTUAL_SERVICES = "virtualservices.networking.istio.io"
MESH = "mesh"
HTTP_LIKE = ("HTTP", "HTTP2", "GRPC")


@dataclass(frozen=True, slots=True)
class IstioServer:
    namespace: str                # the Gateway's
    gateway: str                  # the Gateway's name
    index: int
    name: str
    port: int
    protocol: str                 # HTTP | HTTPS
    hosts: tuple[tuple[str, str], ...]        # (namespace filter or "*", host pattern)
    certificate: Certificate | None = None
    https_redirect: bool = False

    @property
    def gateway_key(self) -> str:
        return f"{self.namespace}/{self.gateway}"

    def admits(self, vs_namespace: str) -> list[str]:
        """The host patterns a VirtualService of ``vs_namespace`` may bind to."""
        return [h for ns, h in self.hosts if ns in ("*", vs_namespace)]


def selected_gateways(state: Mapping[str, Mapping[str, Any]],
                      pod_labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """Istio Gateways whose selector the pod satisfies, oldest first."""
    out = []
    for gw in (state.get(ISTIO_GATEWAYS) or {}).values():
        if not gw:
            continue
        selector = (gw.get("spec") or {}).get("selector") or {}
        if all(pod_labels.get(k) == v for k, v in selector.items()):
            out.append(gw)
    return sorted(out, key=age)


def servers(state: Mapping[str, Mapping[str, Any]], gw: Mapping[str, Any], *, ports: Iterable[int],
            secret_namespace: str, problems: list[str]) -> list[IstioServer]:
    """The servers of one Gateway that the pod serves; why others are not goes to ``problems``."""
    md = gw.get("metadata") or {}
    ns, name = str(md.get("namespace") or "default"), str(md.get("name") or "")
    published = tuple(ports)
    out = []
    for i, srv in enumerate((gw.get("spec") or {}).get("servers") or ()):
        port = srv.get("port") or {}
        number, proto = int(port.get("number", 0)), str(port.get("protocol", "")).upper()
        where = f"Gateway {ns}/{name} servers[{i}] (port {number})"
        tls = srv.get("tls") or {}
        if number not in published:
            problems.append(f"{where}: not served, the ingress gateway publishes only ports "
                            + " and ".join(map(str, published)))
            continue
        cert: Certificate | None = None
        if proto in HTTP_LIKE:
            proto = "HTTP"
        elif proto == "HTTPS":
            mode = str(tls.get("mode", "PASSTHROUGH")).upper()
            if mode != "SIMPLE":
                problems.append(f"{where}: tls.mode {mode} is not supported (SIMPLE only)")
                continue
            credential = tls.get("credentialName")
            if not credential:
                problems.append(f"{where}: certificate files are not supported; use credentialName")
                continue
            got = secret_certificate(state, secret_namespace, str(credential))
            if isinstance(got, str):
                problems.append(f"{where}: {got}; TLS handshakes for its hosts fail")
            else:
                cert = got
        else:
            problems.append(f"{where}: protocol {proto} is not supported (HTTP and HTTPS only)")
            continue
        out.append(IstioServer(ns, name, i, str(port.get("name") or f"{proto.lower()}-{number}"),
                               number, proto, tuple(_server_host(h, ns) for h in srv.get("hosts") or ()),
                               cert, bool(tls.get("httpsRedirect")) and proto == "HTTP"))
    return out


def _server_host(written: str, gateway_ns: str) -> tuple[str, str]:
    ns, sep, host = str(written).partition("/")
    if not sep:
        return "*", ns.lower()
    return (gateway_ns if ns == "." else ns), host.lower()


def bound_gateways(vs: Mapping[str, Any], refs: Any = None) -> list[str]:
    """``spec.gateways`` (or a match's ``gateways``) as "namespace/name" keys (and ``mesh``)."""
    ns = str((vs.get("metadata") or {}).get("namespace") or "default")
    written = (vs.get("spec") or {}).get("gateways") if refs is None else refs
    out = []
    for ref in written or ():
        ref = str(ref)
        if ref == MESH:
            out.append(MESH)
        elif "/" in ref:
            out.append(ref)
        else:
            out.append(f"{ns}/{ref}")
    return out


def vs_hosts(vs: Mapping[str, Any]) -> list[str]:
    """The VirtualService's hosts, lower-case; a short name means a service of its namespace."""
    ns = str((vs.get("metadata") or {}).get("namespace") or "default")
    out = []
    for h in (vs.get("spec") or {}).get("hosts") or ():
        h = str(h).lower()
        out.append(h if h == hosts.ANY or "." in h else service_host(h, ns))
    return out


def compile_for_gateway(vs: Mapping[str, Any], gateway_key: str) -> list[Route]:
    """The VirtualService's HTTP routes as seen through one Gateway: matches that name other
    ``gateways`` are dropped, and so is a route left with no match (as istiod does)."""
    http = (vs.get("spec") or {}).get("http") or ()
    if not any(m.get("gateways") for r in http for m in r.get("match") or ()):
        return compile_virtual_service(vs)
    kept: list[Mapping[str, Any]] = []
    for i, r in enumerate(http):
        named = {**r, "name": r.get("name") or f"{_vs_key(vs)}/http[{i}]"}   # names stay stable
        matches = r.get("match") or []
        mine = [m for m in matches if not m.get("gateways")
                or gateway_key in bound_gateways(vs, m.get("gateways"))]
        if not matches:
            kept.append(named)
        elif mine:
            kept.append({**named, "match": mine})
    return compile_virtual_service({**vs, "spec": {**(vs.get("spec") or {}), "http": kept}})


def _vs_key(vs: Mapping[str, Any]) -> str:
    md = vs.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name') or ''}"
