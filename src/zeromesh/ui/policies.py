"""Which AuthorizationPolicies and PeerAuthentications are in force for each workload (pure).

The answer comes from the engines that enforce them, not from a second reading of the
YAML: the ztunnel's part is the ztunnel's own :class:`~zeromesh.ztunnel.config.Snapshot`
(``policy_set``), the waypoints' part is :func:`zeromesh.policy.applicable` with the
targets a waypoint passes for a request (its Gateway, the ``istio-waypoint`` class, the
Service addressed; its own pod for the older for-service-account binding).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zeromesh.policy import CompiledPolicy, Enforcer, Target, applicable, compile_policy
from zeromesh.policy import Workload as PolicyWorkload
from zeromesh.ztunnel.config import ServiceInfo, Snapshot, WaypointInfo, WorkloadInfo
from zeromesh.ztunnel.plan import peer_auth_mode

GATEWAY_GROUP = "gateway.networking.k8s.io"
WAYPOINT_CLASS = "istio-waypoint"
AUTHZ = "authorizationpolicies.security.istio.io"


@dataclass(frozen=True, slots=True)
class InForce:
    """One policy in force for one workload, and who enforces it."""

    policy: str                  # "ns/name"
    action: str
    enforced_by: str             # "ztunnel" | "waypoint ns/name"
    via: str = ""                # "service ns/name" when a waypoint applies it to that service only
    rules: int = 0
    dry_run: bool = False
    notes: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in InForce.__slots__}


def pod_key(wl: WorkloadInfo) -> str:
    return f"{wl.namespace}/{wl.name}"


def _entry(p: CompiledPolicy, enforced_by: str, via: str = "") -> InForce:
    return InForce(p.key, p.action.value, enforced_by, via, len(p.rules), p.dry_run, p.notes)


def _serving(snap: Snapshot, wl: WorkloadInfo) -> list[tuple[WaypointInfo, ServiceInfo | None]]:
    """The waypoints traffic to ``wl`` may pass, each with the service it was addressed to."""
    services = sorted((s for s in snap.services_by_vip.values()
                       if any(ep.workload_uid == wl.uid for ep in s.endpoints)), key=lambda s: s.key)
    out: list[tuple[WaypointInfo, ServiceInfo | None]] = []
    own = snap.waypoints.get(wl.waypoint) if wl.waypoint else None
    if own is not None:
        out.append((own, None))
        out += [(own, s) for s in services]
    for s in services:
        wp = snap.waypoints.get(s.waypoint) if s.waypoint else None
        if wp is not None and (wp, s) not in out:
            out.append((wp, s))
    return out


def in_force(snap: Snapshot, waypoint_policies: Sequence[CompiledPolicy], wl: WorkloadInfo) -> list[InForce]:
    """The policies deciding traffic to ``wl``: its ztunnel's (enrolled workloads only: nothing
    else intercepts the others) and each waypoint's in front of it."""
    out: list[InForce] = []
    if wl.meshed:
        out += [_entry(p, "ztunnel") for p in snap.policy_set(wl).policies]
    seen = {(e.policy, e.enforced_by) for e in out}
    for wp, svc in _serving(snap, wl):
        targets = [Target(GATEWAY_GROUP, "Gateway", wp.name, wp.namespace),
                   Target(GATEWAY_GROUP, "GatewayClass", WAYPOINT_CLASS, "")]
        if svc is not None:
            targets.append(Target("", "Service", svc.name, svc.namespace))
        legacy = None
        if wp.for_service_account and wp.pods:
            pod = wp.pods[0]
            legacy = PolicyWorkload(pod.namespace, pod.labels, pod.service_account)
        who = f"waypoint {wp.key}"
        for p in applicable(waypoint_policies, legacy, root_namespace=snap.root_namespace,
                            targets=targets).policies:
            if (p.key, who) in seen:
                continue
            # A Service-targeted policy decides only traffic addressed to that service.
            service_only = svc is not None and any(t.kind == "Service" for t in p.scope.targets)
            out.append(_entry(p, who, f"service {svc.key}" if svc is not None and service_only else ""))
            seen.add((p.key, who))
    return out


def waypoint_policies(snap: Snapshot) -> tuple[CompiledPolicy, ...]:
    return tuple(compile_policy(obj, Enforcer.WAYPOINT, root_namespace=snap.root_namespace)
                 for obj in snap.policies.values())


def _scope_text(spec: Mapping[str, Any], namespace: str, root: str) -> str:
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    if refs:
        return "targetRefs " + ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs)
    labels = (spec.get("selector") or {}).get("matchLabels")
    if labels:
        return "selector " + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return "mesh-wide" if namespace == root else f"namespace {namespace}"


def authorization_rows(snap: Snapshot, by_workload: Mapping[str, Sequence[InForce]],
                       workloads: Iterable[WorkloadInfo]) -> list[dict[str, Any]]:
    """Every AuthorizationPolicy with the workloads it decides for, and who enforces it there."""
    pods = {pod_key(w): w for w in workloads}
    applies: dict[str, list[dict[str, str]]] = {}
    for key, entries in sorted(by_workload.items()):
        for e in entries:
            wl = pods.get(key)
            applies.setdefault(e.policy, []).append(
                {"pod": key, "workload": wl.workload_name if wl else "", "enforced_by": e.enforced_by,
                 "via": e.via})
    rows = []
    for key, obj in sorted(snap.policies.items()):
        md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ns = md.get("namespace", "")
        zt = compile_policy(obj, Enforcer.ZTUNNEL, root_namespace=snap.root_namespace)
        wp = compile_policy(obj, Enforcer.WAYPOINT, root_namespace=snap.root_namespace)
        notes = [*zt.notes, *(n for n in wp.notes if n not in zt.notes)]
        rows.append({"namespace": ns, "name": md.get("name", ""), "key": key,
                     "action": zt.action.value, "scope": _scope_text(spec, ns, snap.root_namespace),
                     "rules": len(spec.get("rules") or []), "dry_run": zt.dry_run,
                     "status": zt.status, "notes": notes, "applies_to": applies.get(key, [])})
    return rows


def peer_authentication_rows(snap: Snapshot, workloads: Iterable[WorkloadInfo]) -> list[dict[str, Any]]:
    """Every PeerAuthentication with the workloads in its scope."""
    wls = sorted(workloads, key=pod_key)
    rows = []
    for pa in sorted(snap.peer_auth, key=lambda p: (p.namespace, p.name)):
        if pa.selector is not None:
            scope = "selector " + ",".join(f"{k}={v}" for k, v in sorted(pa.selector.items()))
            chosen = [w for w in wls if w.namespace == pa.namespace
                      and all(w.labels.get(k) == v for k, v in pa.selector.items())]
        elif pa.namespace == snap.root_namespace:
            scope, chosen = "mesh-wide", list(wls)
        else:
            scope, chosen = f"namespace {pa.namespace}", [w for w in wls if w.namespace == pa.namespace]
        rows.append({"namespace": pa.namespace, "name": pa.name, "mode": pa.mode, "scope": scope,
                     "port_modes": {str(k): v for k, v in sorted(pa.port_modes.items())},
                     "applies_to": [pod_key(w) for w in chosen if w.meshed]})
    return rows


def mtls_mode(snap: Snapshot, wl: WorkloadInfo) -> str:
    """The workload-wide PeerAuthentication mode (port overrides are on the policy's row)."""
    return peer_auth_mode(snap, wl, 0)

