"""Builders for the dashboard's unit tests: mesh records as the control plane serves them
(GET /v1/mesh/{type}), samples as the proxies expose them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zeromesh.ui.metrics import Sample, Scrape

TD = "cluster.local"
Obj = dict[str, Any]


def workload(ns: str, pod: str, *, sa: str = "default", labels: dict[str, str] | None = None,
             node: str = "node1", enrolled: bool = True, workload_name: str | None = None,
             ip: str = "", waypoint: str = "", by_sa: bool = False, uid: str | None = None) -> dict[str, Any]:
    wp_ns, _, wp_name = waypoint.partition("/")
    return {"uid": uid or f"uid-{ns}-{pod}", "namespace": ns, "name": pod, "ip": ip or f"10.244.1.{len(pod)}",
            "node": node, "service_account": sa, "labels": labels or {},
            "protocol": "HBONE" if enrolled else "TCP", "workload_name": workload_name or pod,
            "canonical_name": (labels or {}).get("app", workload_name or pod), "canonical_revision": "latest",
            "services": [], "ready": True,
            "waypoint": {"namespace": wp_ns, "name": wp_name} if waypoint else None,
            "waypoint_by_service_account": by_sa}


def service(ns: str, name: str, vip: str, endpoints: list[dict[str, Any]], *, port: int = 80,
            target: int = 8080, waypoint: str = "") -> dict[str, Any]:
    wp_ns, _, wp_name = waypoint.partition("/")
    return {"namespace": ns, "name": name, "hostname": f"{name}.{ns}.svc.cluster.local", "vip": vip,
            "ports": [{"port": port, "target_port": target, "name": "http", "protocol": "TCP",
                       "app_protocol": ""}],
            "endpoints": [{"workload_uid": w["uid"], "ip": w["ip"], "ports": {str(port): target},
                           "ready": True} for w in endpoints],
            "labels": {}, "waypoint": {"namespace": wp_ns, "name": wp_name} if waypoint else None}


def waypoint(ns: str, name: str, serves: str = "service", for_sa: str = "") -> dict[str, Any]:
    return {"namespace": ns, "name": name, "serves": serves, "for_service_account": for_sa, "problems": []}


def authz(ns: str, name: str, *, action: str = "ALLOW", selector: dict[str, str] | None = None,
          target_refs: list[dict[str, str]] | None = None, rules: list[dict[str, Any]] | None = None,
          created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action, "rules": rules if rules is not None else [{}]}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if target_refs is not None:
        spec["targetRefs"] = target_refs
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"namespace": ns, "name": name, "creationTimestamp": created}, "spec": spec}


def peer_auth(ns: str, name: str, mode: str, selector: dict[str, str] | None = None,
              ports: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec}


def mesh(workloads: Sequence[Obj], services: Sequence[Obj] = (), waypoints: Sequence[Obj] = (),
         policies: Sequence[Obj] = (), peer_auths: Sequence[Obj] = ()) -> dict[str, dict[str, Any]]:
    def key(o: Obj) -> str:
        return f"{o['metadata']['namespace']}/{o['metadata']['name']}"
    return {"workload": {w["uid"]: w for w in workloads},
            "service": {f"{s['namespace']}/{s['name']}": s for s in services},
            "waypoint": {f"{w['namespace']}/{w['name']}": w for w in waypoints},
            "authorizationpolicies.security.istio.io": {key(p): p for p in policies},
            "peerauthentications.security.istio.io": {key(p): p for p in peer_auths}}


def peer_labels(side: str, ns: str, name: str) -> dict[str, str]:
    return {f"{side}_workload": name, f"{side}_workload_namespace": ns,
            f"{side}_principal": f"spiffe://{TD}/ns/{ns}/sa/{name}" if name != "unknown" else "unknown"}


def sample(name: str, value: float, *, target: str = "node1/ztunnel", src: tuple[str, str] = ("a", "client"),
           dst: tuple[str, str] = ("a", "echo"), reporter: str = "source", security: str = "mutual_tls",
           service: tuple[str, str] = ("a", "echo"), **extra: str) -> Sample:
    labels = {**peer_labels("source", *src), **peer_labels("destination", *dst), "reporter": reporter,
              "connection_security_policy": security, "destination_service_namespace": service[0],
              "destination_service_name": service[1], **extra}
    return Sample(target, name, tuple(sorted(labels.items())), float(value))


def scrape(samples: list[Sample], at: float = 100.0, targets: set[str] | None = None) -> Scrape:
    answered = targets if targets is not None else {s.target for s in samples}
    return Scrape(tuple(samples), frozenset(answered), at)
