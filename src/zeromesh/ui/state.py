"""Everything one collection round gathered, and the JSON state the browser polls (pure).

``build_state`` is the whole dashboard's logic: the collector only fetches, the page
only draws. Tests feed it tables of records and samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zeromesh.ui.graph import Graph, build_graph
from zeromesh.ui.metrics import Scrape
from zeromesh.ui.pages import (
    certificate_rows,
    service_rows,
    trace_rows,
    waypoint_rows,
    workload_rows,
)
from zeromesh.ui.policies import (
    InForce,
    authorization_rows,
    in_force,
    mtls_mode,
    peer_authentication_rows,
    pod_key,
    waypoint_policies,
)
from zeromesh.ztunnel.config import Snapshot

# The mesh model's record types the dashboard reads (GET /v1/mesh/{type}).
MESH_TYPES = ("workload", "service", "waypoint", "authorizationpolicies.security.istio.io",
              "peerauthentications.security.istio.io")


@dataclass(frozen=True, slots=True)
class Source:
    """One place the collector asked, and how that went (shown so a gap is explained)."""

    name: str                    # "node1 ztunnel metrics", "waypoint ns/pod stats"...
    url: str
    status: str                  # ok | absent (404, refused: nothing there yet) | error
    detail: str = ""

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Inputs:
    cluster: str
    trust_domain: str
    mesh: Mapping[str, Mapping[str, Any]]            # /v1/mesh/{type} answers, by type
    scrape: Scrape
    gateways: Sequence[Mapping[str, Any]] = ()       # Gateway API Gateways (waypoints' status)
    proxies: Sequence[Mapping[str, Any]] = ()        # /v1/proxies
    dumps: Sequence[Mapping[str, Any]] = ()          # /config_dump answers, each with its "holder"
    traces: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)  # "ns/pod" -> traces
    sources: Sequence[Source] = ()


def snapshot_of(inputs: Inputs) -> Snapshot:
    """The same snapshot a ztunnel builds from the same records."""
    return Snapshot.from_state(inputs.mesh, "dashboard", inputs.trust_domain)


def build_state(inputs: Inputs, before: Scrape | None, now: datetime) -> dict[str, Any]:
    """The dashboard's JSON: graph, pages and per-workload details."""
    snap = snapshot_of(inputs)
    workloads = inputs.mesh.get("workload") or {}
    graph = build_graph(workloads.values(), (inputs.mesh.get("service") or {}).values(),
                        inputs.mesh.get("waypoint") or {}, inputs.scrape, before)
    wp_policies = waypoint_policies(snap)
    pods = list(snap.workloads_by_uid.values())
    by_pod = {pod_key(w): in_force(snap, wp_policies, w) for w in pods}
    wl_rows = workload_rows(snap)
    return {
        "cluster": inputs.cluster,
        "generated_at": now.isoformat(timespec="seconds"),
        "sources": [s.to_wire() for s in inputs.sources],
        "graph": graph.to_wire(),
        "workloads": wl_rows,
        "services": service_rows((inputs.mesh.get("service") or {}).values(), workloads),
        "waypoints": waypoint_rows(inputs.gateways, inputs.mesh.get("waypoint") or {}, snap,
                                   inputs.proxies),
        "policies": {"authorization": authorization_rows(snap, by_pod, pods),
                     "peer_authentication": peer_authentication_rows(snap, pods)},
        "certificates": certificate_rows(inputs.dumps, snap, now),
        "traces": trace_rows(inputs.traces),
        "details": details(snap, graph, wl_rows, by_pod),
    }


def details(snap: Snapshot, graph: Graph, rows: Sequence[Mapping[str, Any]],
            by_pod: Mapping[str, Sequence[InForce]]) -> dict[str, dict[str, Any]]:
    """What clicking a workload shows, by graph node id: its pods and identities, the
    policies in force (merged over its pods), mTLS mode, waypoint and connections."""
    out: dict[str, dict[str, Any]] = {}
    modes: dict[str, str] = {pod_key(w): mtls_mode(snap, w) for w in snap.workloads_by_uid.values()}
    for r in rows:
        nid = r["node_id"]
        d = out.setdefault(nid, {"id": nid, "namespace": r["namespace"], "name": r["workload"],
                                 "kind": r["kind"], "pods": [], "identities": [], "waypoints": [],
                                 "policies": [], "mtls_modes": [], "enrolled": False})
        key = f"{r['namespace']}/{r['pod']}"
        d["pods"].append(r["pod"])
        d["enrolled"] = d["enrolled"] or r["enrolled"]
        for k, vs in (("identities", [r["identity"]]), ("waypoints", r["waypoints"]),
                      ("mtls_modes", [modes.get(key, "") if r["enrolled"] else ""])):
            d[k] += [v for v in vs if v and v not in d[k]]
        for e in by_pod.get(key, ()):
            w = e.to_wire()
            if w not in d["policies"]:
                d["policies"].append(w)
    for d in out.values():
        d["outbound"] = [e.id for e in graph.edges if e.source == d["id"] and e.protocol != "endpoint"]
        d["inbound"] = [e.id for e in graph.edges if e.target == d["id"] and e.protocol != "endpoint"]
        d["services"] = [e.source for e in graph.edges if e.target == d["id"] and e.protocol == "endpoint"]
    return out

