"""The service graph from the mesh's own metrics and the mesh model (pure).

Nodes are workloads as Istio's metrics name them (``source_workload`` /
``destination_workload``: the Deployment's name, else the pod's), services, waypoints,
the ingress gateway, and ``unknown`` for peers outside the mesh. Traffic edges come from
the ztunnels' ``istio_tcp_*`` counters and the waypoints' and gateway's
``istio_requests_total``; ``endpoint`` edges join a service to the workloads behind it.

One connection or request is reported by each proxy it passes (the source ztunnel, the
destination ztunnel, a waypoint): summing reporters would count it twice, so an edge
takes one reporter's view, as Kiali does: the destination's if it reported, else the
waypoint's, else the source's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zeromesh.ui.metrics import (
    HTTP_REQUESTS,
    TCP_FAILED,
    TCP_OPENED,
    TCP_RECEIVED,
    TCP_SENT,
    Sample,
    Scrape,
    SeriesKey,
    deltas,
)

UNKNOWN = "unknown"
UNKNOWN_ID = "unknown"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
REPORTER_PREFERENCE = ("destination", "waypoint", "source")
MTLS = "mutual_tls"


def workload_id(namespace: str, name: str) -> str:
    return f"wl:{namespace}/{name}"


def service_id(namespace: str, name: str) -> str:
    return f"svc:{namespace}/{name}"


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    kind: str                    # workload | waypoint | gateway | service | unknown
    namespace: str
    name: str
    enrolled: bool | None = None  # HBONE (ambient); None for services and unknown peers
    pods: int = 0
    column: int = 0
    row: int = 0


@dataclass(frozen=True, slots=True)
class Edge:
    """One arrow. Totals count since the proxies started; rates (per second) and the error
    rate cover the last interval between two scrapes, None before there were two."""

    id: str
    source: str
    target: str
    protocol: str                 # tcp | http | endpoint
    reporter: str = ""
    security: str = ""            # mutual_tls | partial | none | unknown ("" for endpoint edges)
    services: tuple[str, ...] = ()  # destination services ("ns/name") the traffic was addressed to
    connections: float = 0.0
    failed: float = 0.0
    bytes: float = 0.0
    connection_rate: float | None = None
    byte_rate: float | None = None
    requests: float = 0.0
    errors: float = 0.0           # 5xx, or no response
    client_errors: float = 0.0    # 4xx
    request_rate: float | None = None
    error_rate: float | None = None
    client_error_rate: float | None = None

    @property
    def mtls(self) -> bool:
        return self.security == MTLS


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    window: float | None = None   # seconds between the two scrapes the rates come from

    def to_wire(self) -> dict[str, Any]:
        edges = []
        for e in self.edges:
            d = {k: getattr(e, k) for k in Edge.__slots__}
            d["mtls"] = e.mtls
            edges.append(d)
        return {"nodes": [{k: getattr(n, k) for k in Node.__slots__} for n in self.nodes],
                "edges": edges, "window": self.window}


@dataclass
class _Acc:
    """One edge as one reporter saw it."""

    count: float = 0.0            # connections opened | requests
    secure: float = 0.0           # of which mutual TLS
    unknown: float = 0.0          # of which of unknown security (a source-reporting gateway)
    errors: float = 0.0           # failed connections | 5xx (and 0: no response)
    client_errors: float = 0.0    # 4xx: refused by policy, not found...
    bytes: float = 0.0
    d_count: float = 0.0
    d_errors: float = 0.0
    d_client_errors: float = 0.0
    d_bytes: float = 0.0
    has_delta: bool = False
    services: set[str] = field(default_factory=set)


def _kind(namespace: str, labels: Mapping[str, str], waypoints: Mapping[str, Any]) -> str:
    if f"{namespace}/{labels.get(GATEWAY_NAME_LABEL, '')}" in waypoints:
        return "waypoint"
    if labels.get("istio") == "ingressgateway":
        return "gateway"
    return "workload"


def workload_nodes(workloads: Iterable[Mapping[str, Any]], waypoints: Mapping[str, Any]) -> dict[str, Node]:
    """One node per workload (pods grouped by Istio's workload name)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for w in workloads:
        name = w.get("workload_name") or w["name"]
        groups.setdefault(workload_id(w["namespace"], name), []).append(w)
    out = {}
    for nid, pods in groups.items():
        first = pods[0]
        name = first.get("workload_name") or first["name"]
        out[nid] = Node(nid, _kind(first["namespace"], first.get("labels") or {}, waypoints),
                        first["namespace"], name,
                        enrolled=any(p.get("protocol") == "HBONE" for p in pods), pods=len(pods))
    return out


def _peer(s: Sample, side: str) -> str:
    """A sample's source or destination node. A request that never reached a workload (denied
    by a waypoint, no healthy endpoint) is drawn to the service it was addressed to."""
    name = s.label(f"{side}_workload", UNKNOWN)
    ns = s.label(f"{side}_workload_namespace", UNKNOWN)
    if UNKNOWN not in (name, ns) and name:
        return workload_id(ns, name)
    svc, svc_ns = s.label("destination_service_name", UNKNOWN), s.label("destination_service_namespace")
    if side == "destination" and svc != UNKNOWN and svc_ns and svc_ns != UNKNOWN:
        return service_id(svc_ns, svc)
    return UNKNOWN_ID


def _is_error(code: str) -> bool:
    """Istio's dashboards count a request as failed on 5xx (0: no response at all)."""
    return code == "0" or code.startswith("5")


def traffic_edges(now: Scrape, before: Scrape | None) -> tuple[list[Edge], float | None]:
    """TCP and HTTP edges from the counters of one scrape (rates against the one before)."""
    delta: Mapping[SeriesKey, float] | None = deltas(now, before)
    window = now.at - before.at if before is not None and now.at > before.at else None
    accs: dict[tuple[str, str, str], dict[str, _Acc]] = {}
    for s in now.samples:
        if s.name == HTTP_REQUESTS:
            proto = "http"
        elif s.name in (TCP_OPENED, TCP_FAILED, TCP_SENT, TCP_RECEIVED):
            proto = "tcp"
        else:
            continue
        acc = accs.setdefault((_peer(s, "source"), _peer(s, "destination"), proto), {}).setdefault(
            s.label("reporter", UNKNOWN), _Acc())
        d = delta.get(s.key) if delta is not None else None
        if d is not None:
            acc.has_delta = True
        d = d or 0.0
        svc_ns, svc = s.label("destination_service_namespace"), s.label("destination_service_name")
        if svc and svc != UNKNOWN:
            acc.services.add(f"{svc_ns}/{svc}")
        security = s.label("connection_security_policy", UNKNOWN)
        if s.name in (TCP_OPENED, HTTP_REQUESTS):
            acc.count += s.value
            acc.d_count += d
            acc.secure += s.value if security == MTLS else 0.0
            acc.unknown += s.value if security == UNKNOWN else 0.0
        code = s.label("response_code")
        if s.name == TCP_FAILED or (s.name == HTTP_REQUESTS and _is_error(code)):
            acc.errors += s.value
            acc.d_errors += d
        elif s.name == HTTP_REQUESTS and code.startswith("4"):
            acc.client_errors += s.value
            acc.d_client_errors += d
        if s.name in (TCP_SENT, TCP_RECEIVED):
            acc.bytes += s.value
            acc.d_bytes += d
    edges = []
    for (src, dst, proto), by_reporter in sorted(accs.items()):
        reporter = next((r for r in REPORTER_PREFERENCE if r in by_reporter), min(by_reporter))
        a = by_reporter[reporter]
        if a.count <= 0 and a.bytes <= 0 and a.errors <= 0:
            continue
        per_s = window if window and a.has_delta else None
        # the service a connection was addressed to is known where it was dialled (the source)
        services = tuple(sorted(set().union(*(r.services for r in by_reporter.values()))))
        edge = Edge(f"{proto}:{src}>{dst}", src, dst, proto, reporter, _security(a), services)
        if proto == "tcp":
            edge = replace(edge, connections=a.count, failed=a.errors, bytes=a.bytes,
                           connection_rate=_rate(a.d_count, per_s), byte_rate=_rate(a.d_bytes, per_s))
        else:
            total = a.d_count if per_s else 0.0
            edge = replace(edge, requests=a.count, errors=a.errors, client_errors=a.client_errors,
                           request_rate=_rate(a.d_count, per_s), error_rate=_share(a.d_errors, total),
                           client_error_rate=_share(a.d_client_errors, total))
        edges.append(edge)
    return edges, window


def _rate(delta: float, window: float | None) -> float | None:
    return delta / window if window else None


def _share(part: float, total: float) -> float | None:
    """A fraction of the interval's requests; None when there were none to judge."""
    return part / total if total else None


def _security(a: _Acc) -> str:
    if a.count <= 0:
        return UNKNOWN
    if a.secure >= a.count:
        return MTLS
    if a.unknown >= a.count:
        return UNKNOWN
    return "partial" if a.secure > 0 else "none"


def build_graph(workloads: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                waypoints: Mapping[str, Any], now: Scrape, before: Scrape | None) -> Graph:
    """Every workload and service, the traffic between them, laid out left to right."""
    workloads = list(workloads)
    nodes: dict[str, Node] = workload_nodes(workloads, waypoints)
    by_uid = {w["uid"]: w for w in workloads if w.get("uid")}
    edges: list[Edge] = []
    for s in sorted(services, key=lambda s: (s["namespace"], s["name"])):
        sid = service_id(s["namespace"], s["name"])
        behind = set()
        for ep in s.get("endpoints") or []:
            w = by_uid.get(ep.get("workload_uid", ""))
            if w is not None:
                behind.add(workload_id(w["namespace"], w.get("workload_name") or w["name"]))
        if behind and all(nodes[w].kind in ("waypoint", "gateway") for w in behind if w in nodes):
            continue          # a waypoint's or the gateway's own Service: its node stands for it
        nodes[sid] = Node(sid, "service", s["namespace"], s["name"])
        edges += [Edge(f"endpoint:{sid}>{wid}", sid, wid, "endpoint") for wid in sorted(behind)]
    traffic, window = traffic_edges(now, before)
    for e in traffic:
        for end in (e.source, e.target):
            if end not in nodes:
                ns, _, name = end.partition(":")[2].partition("/")
                kind = UNKNOWN if end == UNKNOWN_ID else "service" if end.startswith("svc:") else "workload"
                nodes[end] = Node(end, kind, ns, name)
    edges += traffic
    places = layout(list(nodes), [(e.source, e.target) for e in edges])
    placed = tuple(Node(n.id, n.kind, n.namespace, n.name, n.enrolled, n.pods, *places[n.id])
                   for n in sorted(nodes.values(), key=lambda n: n.id))
    return Graph(placed, tuple(edges), window)


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Columns by longest path from the callers (cycles broken where a depth-first walk meets
    them), rows ordered by where a node's callers sit; nodes without edges go below."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a != b and a in succ and b in succ and b not in succ[a]:
            succ[a].append(b)
    for targets in succ.values():
        targets.sort()
    # Break cycles: drop edges that close one during a depth-first walk in id order.
    state: dict[str, int] = {}
    dag: dict[str, list[str]] = {n: [] for n in nodes}
    for root in sorted(nodes):
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) != 1:
                dag[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, targets in dag.items():
        for b in targets:
            preds[b].append(a)
    column: dict[str, int] = {}

    def col(n: str) -> int:
        # iterative longest path (the DAG can be deep enough to trouble recursion)
        todo = [n]
        while todo:
            cur = todo[-1]
            missing = [p for p in preds[cur] if p not in column]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            column[cur] = max((column[p] + 1 for p in preds[cur]), default=0)
        return column[n]

    linked = {n for n in nodes if dag[n] or preds[n]}
    for n in sorted(linked):
        col(n)
    # Callers nobody calls sit just before their nearest callee (a service beside its pods).
    for n in sorted(linked):
        if not preds[n] and dag[n]:
            column[n] = max(0, min(column[m] for m in dag[n]) - 1)
    by_col: dict[int, list[str]] = {}
    for n in sorted(linked):
        by_col.setdefault(column[n], []).append(n)
    order = _order_rows(by_col, dag, preds)
    places = {n: (c, i) for c, col_nodes in order.items() for i, n in enumerate(col_nodes)}
    top = max((r for _, r in places.values()), default=-1) + 1
    width = max(len(order), 1)
    for i, n in enumerate(sorted(n for n in nodes if n not in linked)):
        places[n] = (i % width, top + i // width)
    return places


def _order_rows(by_col: Mapping[int, list[str]], succ: Mapping[str, list[str]],
                preds: Mapping[str, list[str]], sweeps: int = 4) -> dict[int, list[str]]:
    """Rows within each column by the barycentre heuristic: sweeps right (by callers) and
    left (by callees) pull connected nodes level, which keeps edges short and uncrossed."""
    order = {c: list(nodes) for c, nodes in sorted(by_col.items())}
    row = {n: i for nodes in order.values() for i, n in enumerate(nodes)}

    def sweep(columns: list[int], neighbours: Mapping[str, list[str]]) -> None:
        for c in columns:
            def centre(n: str) -> tuple[float, int]:
                ns = [row[m] for m in neighbours[n] if m in row]
                return (sum(ns) / len(ns) if ns else row[n], row[n])
            order[c].sort(key=centre)
            row.update({n: i for i, n in enumerate(order[c])})

    cols = sorted(order)
    for _ in range(sweeps):
        sweep(cols[1:], preds)
        sweep(cols[-2::-1], succ)
    return order
