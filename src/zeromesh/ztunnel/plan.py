"""Decide, then do IO: what the ztunnel does with an outbound connection, an inbound tunnel
request, or a plaintext inbound connection (pure functions over a Snapshot)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zeromesh.identity.spiffe import SpiffeId
from zeromesh.ztunnel.config import (
    EndpointInfo,
    PeerAuth,
    ServiceInfo,
    Snapshot,
    WaypointInfo,
    WorkloadInfo,
)

HBONE_PORT = 15008
T = TypeVar("T")
Pick = Callable[[Sequence[T]], T]


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Plain TCP: the destination is not in the mesh."""
    ip: str
    port: int
    service: ServiceInfo | None = None
    destination: WorkloadInfo | None = None


@dataclass(frozen=True, slots=True)
class Tunnel:
    """HBONE to `ip:15008`, CONNECT `authority`, the server must prove one of `identities`."""
    ip: str
    port: int
    authority: str
    identities: tuple[SpiffeId, ...]
    destination: WorkloadInfo
    service: ServiceInfo | None = None
    waypoint: WaypointInfo | None = None   # set when the tunnel goes to a waypoint, not the pod


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str


Outbound = Passthrough | Tunnel | Refuse


def plan_outbound(snap: Snapshot, dst_ip: str, dst_port: int, pick: Pick[EndpointInfo],
                  source: WorkloadInfo | None = None) -> Outbound:
    """Service VIPs are load-balanced here (the capture happens before the node's DNAT).

    Bound destinations go to their waypoint over HBONE with ``:authority`` = the address the
    client dialled (Istio's ztunnel): a service's own waypoint for its VIP; a workload's
    waypoint when the pod address was dialled; and, for a waypoint bound by the older
    ``istio.io/for-service-account`` annotation, also when the VIP picked one of its workloads
    (that generation's waypoints served a service account's workloads however reached).
    """
    svc = snap.services_by_vip.get(dst_ip)
    if svc is not None:
        if dst_port not in svc.ports:
            return Refuse(f"service {svc.namespace}/{svc.name} has no port {dst_port}")
        if svc.waypoint:
            return _to_waypoint(snap, svc.waypoint, dst_ip, dst_port, source, svc, None)
        candidates = [e for e in svc.endpoints if e.ready and dst_port in e.ports]
        if not candidates:
            return Refuse(f"no healthy endpoint for {svc.hostname}:{dst_port}")
        ep = pick(candidates)
        target = ep.ports[dst_port]
        wl = snap.workloads_by_uid.get(ep.workload_uid) or snap.workloads_by_ip.get(ep.ip)
        if wl is not None and wl.meshed:
            if wl.waypoint and wl.waypoint_by_service_account:
                return _to_waypoint(snap, wl.waypoint, dst_ip, dst_port, source, svc, wl)
            return Tunnel(wl.ip, HBONE_PORT, f"{wl.ip}:{target}", (wl.identity,), wl, svc)
        return Passthrough(ep.ip, target, svc, wl)
    wl = snap.workloads_by_ip.get(dst_ip)
    if wl is not None and wl.meshed:
        if wl.waypoint:
            return _to_waypoint(snap, wl.waypoint, dst_ip, dst_port, source, None, wl)
        return Tunnel(wl.ip, HBONE_PORT, f"{dst_ip}:{dst_port}", (wl.identity,), wl)
    return Passthrough(dst_ip, dst_port, None, wl)


def _to_waypoint(snap: Snapshot, key: str, dst_ip: str, dst_port: int, source: WorkloadInfo | None,
                 svc: ServiceInfo | None, wl: WorkloadInfo | None) -> Outbound:
    wp = snap.waypoints.get(key)
    if wp is None:
        return Refuse(f"waypoint {key} is not known or not valid")
    if source is not None and source in wp.pods:
        # The waypoint itself (never captured here, but be safe): go straight on.
        if wl is not None:
            return Tunnel(wl.ip, HBONE_PORT, f"{dst_ip}:{dst_port}", (wl.identity,), wl, svc)
        return Refuse("a waypoint's own traffic to a service is load-balanced by the waypoint")
    if not wp.pods:
        return Refuse(f"waypoint {key} has no ready pod")
    pod = wp.pods[hash((dst_ip, dst_port, source.ip if source else "")) % len(wp.pods)]
    return Tunnel(pod.ip, HBONE_PORT, f"{dst_ip}:{dst_port}", wp.identities, wl or pod, svc, wp)


def waypoint_passes(snap: Snapshot, local: WorkloadInfo, identity: str) -> bool:
    """The older generation: traffic arriving from the workload's annotation-bound waypoint is
    let through here, the waypoint having enforced the policies with the client's identity."""
    if not (local.waypoint and local.waypoint_by_service_account):
        return False
    wp = snap.waypoints.get(local.waypoint)
    return wp is not None and any(i.uri == identity for i in wp.identities)


@dataclass(frozen=True, slots=True)
class Admit:
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Reject:
    status: int          # the HTTP status of the CONNECT answer
    reason: str


def parse_authority(authority: str) -> tuple[str, int] | None:
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    p = int(port)
    return (host, p) if 0 < p < 65536 else None


def admit_inbound(local: WorkloadInfo | None, authority: str) -> Admit | Reject:
    """A CONNECT on this pod's 15008: it must name this pod's own address (the IP-mismatch rule)."""
    target = parse_authority(authority)
    if target is None:
        return Reject(400, f"bad authority {authority!r}: expected ip:port")
    if local is None:
        return Reject(503, "no such local workload")
    if target[0] != local.ip:
        return Reject(400, f"authority {authority} is not this workload ({local.ip})")
    if target[1] == HBONE_PORT:
        return Reject(400, "refusing to tunnel to the HBONE port itself")
    return Admit(*target)


def _resolve(mode: str, parent: str) -> str:
    return parent if mode == "UNSET" else mode


def peer_auth_mode(snap: Snapshot, wl: WorkloadInfo, port: int) -> str:
    """PeerAuthentication as Istio layers it: mesh (root namespace) < namespace < workload, with
    port-level overrides on workload policies; UNSET inherits; the oldest policy wins a tie."""
    def oldest(cands: list[PeerAuth]) -> PeerAuth | None:
        return min(cands, key=lambda p: (p.created, p.name)) if cands else None
    mesh = oldest([p for p in snap.peer_auth if p.namespace == snap.root_namespace and p.selector is None])
    ns = oldest([p for p in snap.peer_auth if p.namespace == wl.namespace and p.selector is None
                 and wl.namespace != snap.root_namespace])
    wlp = oldest([p for p in snap.peer_auth if p.namespace == wl.namespace and p.selector is not None
                  and all(wl.labels.get(k) == v for k, v in p.selector.items())])
    mode = "PERMISSIVE"
    for pol in (mesh, ns, wlp):
        if pol is not None:
            mode = _resolve(pol.mode, mode)
    if wlp is not None and port in wlp.port_modes:
        mode = _resolve(wlp.port_modes[port], mode)
    return mode


def accepts_plaintext(snap: Snapshot, wl: WorkloadInfo, port: int) -> bool:
    """STRICT refuses clients outside the mesh; PERMISSIVE and DISABLE accept them."""
    return peer_auth_mode(snap, wl, port) != "STRICT"
