"""The ztunnel's view of the mesh: an immutable snapshot built from the push state (pure).

A new snapshot is built when an update is accepted and swapped in whole; the
proxies only ever read one, so a connection never sees half an update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.identity.spiffe import SpiffeId
from zeromesh.policy import CompiledPolicy, Enforcer, PolicySet, applicable, compile_policy
from zeromesh.policy import Workload as PolicyWorkload

HBONE = "HBONE"
ROOT_NAMESPACE = "istio-system"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def _ref(ref: Any) -> str:
    """A pushed WaypointRef ({namespace, name}) as "ns/name"; "" for none."""
    if isinstance(ref, Mapping) and ref.get("name"):
        return f"{ref.get('namespace', '')}/{ref['name']}"
    return ""


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    uid: str
    namespace: str
    name: str
    ip: str
    node: str
    service_account: str
    labels: Mapping[str, str]
    protocol: str
    workload_name: str
    canonical_name: str
    canonical_revision: str
    identity: SpiffeId
    ready: bool = True
    waypoint: str = ""                 # "ns/name" of the waypoint serving it, if any
    waypoint_by_service_account: bool = False   # bound by the older for-service-account annotation

    @property
    def meshed(self) -> bool:
        return self.protocol == HBONE


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    workload_uid: str
    ip: str
    ports: Mapping[int, int]
    ready: bool


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    hostname: str
    vip: str
    ports: Mapping[int, Any]          # service port -> target port (int or name)
    endpoints: tuple[EndpointInfo, ...]
    waypoint: str = ""                 # "ns/name" bound with istio.io/use-waypoint

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class WaypointInfo:
    """A waypoint and its ready pods (found by their gateway-name label), as the ztunnel needs
    it: where to send bound traffic and which identity it must prove."""
    namespace: str
    name: str
    serves: str
    for_service_account: str
    pods: tuple[WorkloadInfo, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def identities(self) -> tuple[SpiffeId, ...]:
        return tuple(sorted({p.identity for p in self.pods}, key=lambda i: i.uri))


@dataclass(frozen=True, slots=True)
class PeerAuth:
    namespace: str
    name: str
    created: str
    selector: Mapping[str, str] | None
    mode: str                          # UNSET | DISABLE | PERMISSIVE | STRICT
    port_modes: Mapping[int, str]


@dataclass(frozen=True)
class Snapshot:
    version: str
    trust_domain: str
    workloads_by_uid: Mapping[str, WorkloadInfo] = field(default_factory=dict)
    workloads_by_ip: Mapping[str, WorkloadInfo] = field(default_factory=dict)
    services_by_vip: Mapping[str, ServiceInfo] = field(default_factory=dict)
    peer_auth: tuple[PeerAuth, ...] = ()
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    authz: tuple[CompiledPolicy, ...] = ()
    root_namespace: str = ROOT_NAMESPACE
    waypoints: Mapping[str, WaypointInfo] = field(default_factory=dict)
    _sets: dict[str, PolicySet] = field(default_factory=dict, compare=False, repr=False)

    def policy_set(self, wl: WorkloadInfo) -> PolicySet:
        """The AuthorizationPolicies in force for one destination, built once per snapshot."""
        ps = self._sets.get(wl.uid)
        if ps is None:
            ps = applicable(self.authz, PolicyWorkload(wl.namespace, wl.labels, wl.service_account),
                            root_namespace=self.root_namespace)
            self._sets[wl.uid] = ps
        return ps

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping[str, Any]], version: str,
                   trust_domain: str = "cluster.local") -> Snapshot:
        workloads: dict[str, WorkloadInfo] = {}
        by_ip: dict[str, WorkloadInfo] = {}
        for uid, w in state.get("workload", {}).items():
            info = WorkloadInfo(
                uid=uid, namespace=w["namespace"], name=w["name"], ip=w["ip"], node=w.get("node", ""),
                service_account=w.get("service_account") or "default", labels=dict(w.get("labels") or {}),
                protocol=w["protocol"], workload_name=w.get("workload_name") or w["name"],
                canonical_name=w.get("canonical_name") or w["name"],
                canonical_revision=w.get("canonical_revision") or "latest",
                identity=SpiffeId(trust_domain, w["namespace"], w.get("service_account") or "default"),
                ready=bool(w.get("ready", True)), waypoint=_ref(w.get("waypoint")),
                waypoint_by_service_account=bool(w.get("waypoint_by_service_account")))
            workloads[uid] = info
            by_ip[info.ip] = info
        services: dict[str, ServiceInfo] = {}
        for s in state.get("service", {}).values():
            if not s.get("vip"):
                continue
            eps = tuple(EndpointInfo(e["workload_uid"], e["ip"],
                                     {int(k): int(v) for k, v in (e.get("ports") or {}).items()},
                                     bool(e.get("ready")))
                        for e in s.get("endpoints") or [])
            services[s["vip"]] = ServiceInfo(s["namespace"], s["name"], s["hostname"], s["vip"],
                                             {int(p["port"]): p["target_port"] for p in s["ports"]}, eps,
                                             waypoint=_ref(s.get("waypoint")))
        waypoints: dict[str, WaypointInfo] = {}
        for key, wp in state.get("waypoint", {}).items():
            if wp is None or wp.get("problems"):
                continue
            pods = tuple(sorted((w for w in workloads.values()
                                 if w.namespace == wp["namespace"] and w.ready
                                 and w.labels.get(GATEWAY_NAME_LABEL) == wp["name"]),
                                key=lambda w: w.ip))
            waypoints[key] = WaypointInfo(wp["namespace"], wp["name"], wp.get("serves", "service"),
                                          wp.get("for_service_account", ""), pods)
        pas = []
        for obj in state.get("peerauthentications.security.istio.io", {}).values():
            md, spec = obj["metadata"], obj.get("spec") or {}
            sel = (spec.get("selector") or {}).get("matchLabels")
            port_modes = {int(p): str((m or {}).get("mode", "UNSET")).upper()
                          for p, m in (spec.get("portLevelMtls") or {}).items()}
            pas.append(PeerAuth(md["namespace"], md["name"], md.get("creationTimestamp", ""),
                                dict(sel) if sel is not None else None,
                                str((spec.get("mtls") or {}).get("mode", "UNSET")).upper(), port_modes))
        policies = state.get("authorizationpolicies.security.istio.io", {})
        authz = tuple(compile_policy(obj, Enforcer.ZTUNNEL, root_namespace=ROOT_NAMESPACE)
                      for obj in policies.values())
        return cls(version=version, trust_domain=trust_domain, workloads_by_uid=workloads,
                   workloads_by_ip=by_ip, services_by_vip=services, peer_auth=tuple(pas),
                   policies=policies, authz=authz, waypoints=waypoints)
