"""What one waypoint knows, built once per pushed config version (pure).

The waypoint sees the same workloads, services and waypoints as the ztunnel (a
:class:`~zeromesh.ztunnel.config.Snapshot`) plus the L7 configuration: routes per
service (HTTPRoute with a Service parent, else VirtualService for the mesh),
DestinationRule subsets, and the AuthorizationPolicies it enforces. Which of those
policies apply depends on how the waypoint is bound (Istio's two generations):

* current (``istio.io/use-waypoint``): only ``targetRefs`` policies — the waypoint's
  Gateway, the Service being called, or GatewayClass ``istio-waypoint`` from the root
  namespace;
* older (Gateway annotated ``istio.io/for-service-account``): additionally the
  policies that select the waypoint's own pod, namespace-wide ones included,
  evaluated with the original client's identity.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.authn import AuthnSet, CompiledRequestAuthn, applicable_authn, compile_request_authns
from zeromesh.policy import CompiledPolicy, Enforcer, PolicySet, Target, applicable, compile_policy
from zeromesh.policy import Workload as PolicyWorkload
from zeromesh.routing import Route, compile_http_routes, compile_virtual_service
from zeromesh.routing.compile import destination_rule_subsets, service_host
from zeromesh.routing.resilience import RateLimitPolicy, compile_rate_limit
from zeromesh.routing.traffic_policy import (
    DEFAULT_TRAFFIC_POLICY,
    DestinationPolicies,
    TrafficPolicy,
    compile_destination_rules,
    find_policies,
)
from zeromesh.ztunnel.config import ROOT_NAMESPACE, ServiceInfo, Snapshot, WaypointInfo, WorkloadInfo

GATEWAY_GROUP = "gateway.networking.k8s.io"
WAYPOINT_CLASS = "istio-waypoint"
VS = "virtualservices.networking.istio.io"
DR = "destinationrules.networking.istio.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
AUTHZ = "authorizationpolicies.security.istio.io"
AUTHN = "requestauthentications.security.istio.io"
RATE_LIMITS = "localratelimits.zeromesh.io"
MESH_GATEWAY = "mesh"


@dataclass(frozen=True, slots=True)
class Destination:
    """What a CONNECT authority names: a service port (VIP) or one pod's port."""
    ip: str
    port: int
    service: ServiceInfo | None
    workload: WorkloadInfo | None

    @property
    def host(self) -> str:
        return self.service.hostname if self.service is not None else self.ip


@dataclass(frozen=True, slots=True)
class Upstream:
    """One endpoint chosen for a request: where to connect and who must answer."""
    ip: str
    port: int
    workload: WorkloadInfo | None
    service: ServiceInfo | None

    @property
    def meshed(self) -> bool:
        return self.workload is not None and self.workload.meshed

    @property
    def key(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class WaypointConfig:
    snapshot: Snapshot
    namespace: str
    name: str
    pod: WorkloadInfo | None
    info: WaypointInfo | None
    routes: Mapping[str, tuple[Route, ...]]                 # service hostname -> routes
    subsets: Mapping[tuple[str, str], Mapping[str, str]]     # (hostname, subset) -> labels
    destination_rules: Mapping[str, Mapping[str, Any]]       # hostname -> DestinationRule object
    authz: tuple[CompiledPolicy, ...]
    authz_tcp: tuple[CompiledPolicy, ...]
    services_by_host: Mapping[str, ServiceInfo]
    authn: tuple[CompiledRequestAuthn, ...] = ()
    traffic: Mapping[str, DestinationPolicies] = field(default_factory=dict)
    rate_limits: tuple[RateLimitPolicy, ...] = ()
    root_namespace: str = ROOT_NAMESPACE
    _sets: dict[tuple[str, bool], PolicySet] = field(default_factory=dict, repr=False)
    _authn_sets: dict[str, AuthnSet] = field(default_factory=dict, repr=False)
    _endpoint_cache: dict[tuple[str, int, str | None], list[Upstream]] = field(default_factory=dict,
                                                                               repr=False)

    @property
    def version(self) -> str:
        return self.snapshot.version

    @property
    def legacy(self) -> bool:
        """Bound by the older ``istio.io/for-service-account`` annotation."""
        return bool(self.info is not None and self.info.for_service_account)

    def resolve(self, authority: str) -> Destination | None:
        host, _, port = authority.rpartition(":")
        if not port.isdigit():
            return None
        host = host.strip("[]")
        svc = self.snapshot.services_by_vip.get(host)
        if svc is not None:
            return Destination(host, int(port), svc, None) if int(port) in svc.ports else None
        wl = self.snapshot.workloads_by_ip.get(host)
        if wl is not None:
            return Destination(host, int(port), None, wl)
        return None

    def serves(self, dest: Destination) -> bool:
        """Only traffic bound to this waypoint is proxied (a waypoint is not an open relay)."""
        me = f"{self.namespace}/{self.name}"
        if dest.service is not None:
            if dest.service.waypoint == me:
                return True
            return any((wl := self._endpoint_workload(ep.workload_uid, ep.ip)) is not None
                       and wl.waypoint == me for ep in dest.service.endpoints)
        return dest.workload is not None and dest.workload.waypoint == me

    def _endpoint_workload(self, uid: str, ip: str) -> WorkloadInfo | None:
        snap = self.snapshot
        return snap.workloads_by_uid.get(uid) or snap.workloads_by_ip.get(ip)

    def policy_set(self, dest: Destination, tcp: bool = False) -> PolicySet:
        """The policies in force for a request (or, ``tcp``, a non-HTTP connection) to ``dest``."""
        key = (dest.service.key if dest.service is not None else "", tcp)
        ps = self._sets.get(key)
        if ps is None:
            targets, workload = self._scope(dest)
            ps = applicable(self.authz_tcp if tcp else self.authz, workload,
                            root_namespace=self.root_namespace, targets=targets)
            self._sets[key] = ps
        return ps

    def _scope(self, dest: Destination) -> tuple[list[Target], PolicyWorkload | None]:
        targets = [Target(GATEWAY_GROUP, "Gateway", self.name, self.namespace),
                   Target(GATEWAY_GROUP, "GatewayClass", WAYPOINT_CLASS, "")]
        if dest.service is not None:
            targets.append(Target("", "Service", dest.service.name, dest.service.namespace))
        workload = None
        if self.legacy and self.pod is not None:
            workload = PolicyWorkload(self.pod.namespace, self.pod.labels, self.pod.service_account)
        return targets, workload

    def authn_set(self, dest: Destination) -> AuthnSet:
        """The RequestAuthentications in force for ``dest`` (same scoping as the policies)."""
        key = dest.service.key if dest.service is not None else ""
        got = self._authn_sets.get(key)
        if got is None:
            targets, workload = self._scope(dest)
            got = applicable_authn(self.authn, workload, root_namespace=self.root_namespace,
                                   targets=targets)
            self._authn_sets[key] = got
        return got

    def traffic_policy(self, host: str, subset: str | None, port: int | None) -> TrafficPolicy:
        """DestinationRule trafficPolicy of one cluster (host, subset, port)."""
        found = find_policies(self.traffic, host)
        return found.get(subset, port) if found is not None else DEFAULT_TRAFFIC_POLICY

    def routes_for(self, dest: Destination) -> tuple[Route, ...]:
        return self.routes.get(dest.host, ())

    def endpoints(self, host: str, port: int | None, subset: str | None,
                  dest: Destination) -> list[Upstream] | None:
        """Ready endpoints of a backend service port (and subset); None if the host is unknown.

        A backend without a port uses the port the client called when it is the same service,
        else the service's only port."""
        if dest.service is None and host == dest.host:
            wl = dest.workload
            return [Upstream(dest.ip, dest.port, wl, None)] if wl is not None and wl.ready else []
        svc = self.services_by_host.get(host)
        if svc is None:
            return None
        if port is None:
            if dest.service is not None and svc.key == dest.service.key:
                port = dest.port
            elif len(svc.ports) == 1:
                port = next(iter(svc.ports))
            else:
                return []
        key = (host, port, subset)
        cached = self._endpoint_cache.get(key)
        if cached is not None:
            return cached
        labels = self.subsets.get((host, subset)) if subset else None
        if subset and labels is None:
            return []
        out = []
        for ep in svc.endpoints:
            if not ep.ready or port not in ep.ports:
                continue
            wl = self._endpoint_workload(ep.workload_uid, ep.ip)
            if labels and (wl is None or any(wl.labels.get(k) != v for k, v in labels.items())):
                continue
            out.append(Upstream(ep.ip, ep.ports[port], wl, svc))
        self._endpoint_cache[key] = out      # the config is immutable: once per version
        return out

    @classmethod
    def build(cls, state: Mapping[str, Mapping[str, Any]], version: str, *, namespace: str, name: str,
              pod_name: str = "", trust_domain: str = "cluster.local",
              root_namespace: str = ROOT_NAMESPACE) -> WaypointConfig:
        snap = Snapshot.from_state(state, version, trust_domain)
        by_host = {s.hostname: s for s in snap.services_by_vip.values()}
        pod = next((w for w in snap.workloads_by_uid.values()
                    if w.namespace == namespace and w.name == pod_name), None)
        return cls(
            snapshot=snap, namespace=namespace, name=name, pod=pod,
            info=snap.waypoints.get(f"{namespace}/{name}"),
            routes=_routes(state, by_host),
            subsets=_subsets(state, by_host),
            destination_rules=_destination_rules(state, by_host),
            authz=tuple(compile_policy(obj, Enforcer.WAYPOINT, root_namespace=root_namespace)
                        for obj in (state.get(AUTHZ) or {}).values() if obj),
            authz_tcp=tuple(compile_policy(obj, Enforcer.WAYPOINT_TCP, root_namespace=root_namespace)
                            for obj in (state.get(AUTHZ) or {}).values() if obj),
            services_by_host=by_host, root_namespace=root_namespace,
            authn=compile_request_authns((o for o in (state.get(AUTHN) or {}).values() if o),
                                         root_namespace=root_namespace),
            traffic=compile_destination_rules(d for d in (state.get(DR) or {}).values() if d),
            rate_limits=tuple(compile_rate_limit(o) for o in (state.get(RATE_LIMITS) or {}).values() if o))


def _hosts(obj: Mapping[str, Any], written: Any, by_host: Mapping[str, ServiceInfo]) -> list[str]:
    """Service hostnames named by a VirtualService/DestinationRule host (short names resolve in
    the resource's own namespace; wildcards match known services)."""
    ns = str((obj.get("metadata") or {}).get("namespace") or "default")
    out = []
    for h in written if isinstance(written, list) else [written]:
        if not isinstance(h, str) or not h:
            continue
        if "*" in h:
            out.extend(host for host in by_host if fnmatch.fnmatchcase(host, h))
            continue
        full = service_host(h, ns)
        if full in by_host:
            out.append(full)
        elif h.count(".") == 1 and f"{h}.svc.cluster.local" in by_host:      # "svc.ns"
            out.append(f"{h}.svc.cluster.local")
    return out


def _age(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    md = obj.get("metadata") or {}
    return (str(md.get("creationTimestamp") or "\uffff"), str(md.get("namespace")), str(md.get("name")))


def _routes(state: Mapping[str, Mapping[str, Any]],
            by_host: Mapping[str, ServiceInfo]) -> dict[str, tuple[Route, ...]]:
    out: dict[str, tuple[Route, ...]] = {}
    # HTTPRoutes whose parent is a Service (Gateway API for the mesh, GAMMA).
    attached: dict[str, list[Mapping[str, Any]]] = {}
    for hr in (state.get(HTTPROUTES) or {}).values():
        if not hr:
            continue
        ns = str(hr["metadata"].get("namespace") or "default")
        for ref in (hr.get("spec") or {}).get("parentRefs") or ():
            if ref.get("kind") == "Service" and ref.get("group", "") in ("", "core"):
                host = service_host(str(ref.get("name", "")), str(ref.get("namespace") or ns))
                if host in by_host:
                    attached.setdefault(host, []).append(hr)
    for host, routes in attached.items():
        out[host] = tuple(compile_http_routes(routes))
    # VirtualServices for the mesh (no `gateways`, or one naming "mesh"); the oldest wins a host.
    for vs in sorted((v for v in (state.get(VS) or {}).values() if v), key=_age):
        spec = vs.get("spec") or {}
        gateways = spec.get("gateways")
        if gateways and MESH_GATEWAY not in gateways:
            continue
        compiled: tuple[Route, ...] | None = None
        for host in _hosts(vs, spec.get("hosts") or [], by_host):
            if host in out:
                continue
            if compiled is None:
                compiled = tuple(compile_virtual_service(vs))
            out[host] = compiled
    return out


def _subsets(state: Mapping[str, Mapping[str, Any]],
             by_host: Mapping[str, ServiceInfo]) -> dict[tuple[str, str], Mapping[str, str]]:
    out: dict[tuple[str, str], Mapping[str, str]] = {}
    for dr in sorted((d for d in (state.get(DR) or {}).values() if d), key=_age):
        for host in _hosts(dr, (dr.get("spec") or {}).get("host"), by_host):
            for subset, labels in destination_rule_subsets(dr).items():
                out.setdefault((host, subset), labels)
    return out


def _destination_rules(state: Mapping[str, Mapping[str, Any]],
                       by_host: Mapping[str, ServiceInfo]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for dr in sorted((d for d in (state.get(DR) or {}).values() if d), key=_age):
        for host in _hosts(dr, (dr.get("spec") or {}).get("host"), by_host):
            out.setdefault(host, dr)
    return out
