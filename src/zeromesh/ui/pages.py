"""The rows of the dashboard's pages: workloads, services, waypoints, certificates, traces (pure).

Inputs are what the control plane and the proxies answered, as JSON; outputs are
JSON-ready dicts the browser renders as they are (it computes nothing but text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from zeromesh.ui.graph import service_id, workload_id
from zeromesh.ztunnel.config import ServiceInfo, Snapshot, WorkloadInfo

WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
TRACES_SHOWN = 50


def _ref(ref: Any) -> str:
    if isinstance(ref, Mapping) and ref.get("name"):
        return f"{ref.get('namespace', '')}/{ref['name']}"
    return ""


def workload_kind(wl: WorkloadInfo, snap: Snapshot) -> str:
    if f"{wl.namespace}/{wl.labels.get(GATEWAY_NAME_LABEL, '')}" in snap.waypoints:
        return "waypoint"
    return "gateway" if wl.labels.get("istio") == "ingressgateway" else "workload"


def has_identity(wl: WorkloadInfo, snap: Snapshot) -> bool:
    """Enrolled pods get their certificate from the ztunnel; waypoints and the gateway have
    their own (by CSR); other pods have no mesh identity."""
    return wl.meshed or workload_kind(wl, snap) != "workload"


def workload_rows(snap: Snapshot) -> list[dict[str, Any]]:
    """One row per pod, as `zeromesh ztunnel-config workloads` with what the mesh makes of it."""
    rows = []
    services: dict[str, list[ServiceInfo]] = {}
    for s in sorted(snap.services_by_vip.values(), key=lambda s: s.key):
        for ep in s.endpoints:
            services.setdefault(ep.workload_uid, []).append(s)
    for w in sorted(snap.workloads_by_uid.values(), key=lambda w: (w.namespace, w.name)):
        # the waypoints in front of it: its own, and its services' (for traffic to them)
        waypoints = [f"{w.waypoint} (service account)" if w.waypoint_by_service_account else w.waypoint]
        waypoints += [f"{s.waypoint} (service {s.key})" for s in services.get(w.uid, []) if s.waypoint]
        rows.append({
            "namespace": w.namespace, "pod": w.name, "workload": w.workload_name,
            "node_id": workload_id(w.namespace, w.workload_name), "kind": workload_kind(w, snap),
            "node": w.node, "ip": w.ip, "service_account": w.service_account,
            "identity": w.identity.uri if has_identity(w, snap) else "",
            "enrolled": w.meshed, "protocol": w.protocol, "ready": w.ready,
            "waypoints": [x for x in waypoints if x], "services": [s.key for s in services.get(w.uid, [])],
            "app": w.canonical_name, "version": w.canonical_revision})
    return rows


def service_rows(services: Iterable[Mapping[str, Any]], workloads: Mapping[str, Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Services of the mesh model with their ports, endpoints (by pod) and waypoint."""
    rows = []
    for s in sorted(services, key=lambda s: (s["namespace"], s["name"])):
        ports = [f"{p['port']}/{p.get('protocol') or 'TCP'}→{p['target_port']}"
                 + (f" ({p['name']})" if p.get("name") else "") for p in s.get("ports") or []]
        eps = []
        for ep in s.get("endpoints") or []:
            w = workloads.get(ep.get("workload_uid", ""))
            eps.append({"pod": f"{w['namespace']}/{w['name']}" if w else "", "ip": ep.get("ip", ""),
                        "ready": bool(ep.get("ready"))})
        rows.append({"namespace": s["namespace"], "name": s["name"],
                     "node_id": service_id(s["namespace"], s["name"]), "hostname": s.get("hostname", ""),
                     "vip": s.get("vip", ""), "ports": ports, "endpoints": eps,
                     "waypoint": _ref(s.get("waypoint"))})
    return rows


def _condition(obj: Mapping[str, Any], type_: str) -> dict[str, str]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return {"status": str(c.get("status", "")), "reason": str(c.get("reason", "")),
                    "message": str(c.get("message", ""))}
    return {"status": "Unknown", "reason": "", "message": "no status yet"}


def waypoint_rows(gateways: Iterable[Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]],
                  snap: Snapshot, proxies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Gateways of class istio-waypoint: what each serves, whether it is Programmed, its pods."""
    rows = []
    for gw in sorted(gateways, key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"])):
        if (gw.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS:
            continue
        ns, name = gw["metadata"].get("namespace", ""), gw["metadata"]["name"]
        key = f"{ns}/{name}"
        rec = records.get(key) or {}
        pods = sorted((w for w in snap.workloads_by_uid.values()
                       if w.namespace == ns and w.labels.get(GATEWAY_NAME_LABEL) == name),
                      key=lambda w: w.name)
        pod_names = {w.name for w in pods}
        rows.append({
            "namespace": ns, "name": name, "key": key, "for": rec.get("serves", ""),
            "for_service_account": rec.get("for_service_account", ""),
            "problems": list(rec.get("problems") or []),
            "programmed": _condition(gw, "Programmed"),
            "addresses": [a.get("value", "") for a in (gw.get("status") or {}).get("addresses") or []],
            "services": sorted(s.key for s in snap.services_by_vip.values() if s.waypoint == key),
            "workloads": sorted(f"{w.namespace}/{w.name}" for w in snap.workloads_by_uid.values()
                                if w.waypoint == key),
            "pods": [{"pod": w.name, "node": w.node, "ip": w.ip, "ready": w.ready,
                      "node_id": workload_id(w.namespace, w.workload_name)} for w in pods],
            "proxies": [{"name": p.get("name", ""), "in_sync": bool(p.get("in_sync")),
                         "acked_version": p.get("acked_version", ""), "nacks": p.get("nacks", 0)}
                        for p in proxies if any(_is_proxy_of(p, ns, pod) for pod in pod_names)]})
    return rows


def _is_proxy_of(p: Mapping[str, Any], namespace: str, pod: str) -> bool:
    """A push connection is a pod's when its bootstrap identity names that pod."""
    return p.get("name") == pod and f"/pod/{namespace}/{pod}/" in str(p.get("identity", ""))


def certificate_rows(dumps: Iterable[Mapping[str, Any]], snap: Snapshot, now: datetime
                     ) -> list[dict[str, Any]]:
    """Workload certificates each holder has (a node's ztunnel for its pods, a waypoint or the
    gateway for itself), with the pods using each identity."""
    users: dict[str, list[str]] = {}
    for w in snap.workloads_by_uid.values():
        users.setdefault(w.identity.uri, []).append(f"{w.namespace}/{w.name}")
    rows = []
    for d in dumps:
        for c in d.get("certificates") or []:
            ident = c.get("identity", "")
            row: dict[str, Any] = {"holder": d.get("holder") or d.get("node", ""), "identity": ident,
                                   "pods": sorted(users.get(ident, []))}
            if "error" in c:
                row.update(state="failing", error=c.get("error", ""), failures=c.get("failures", 0))
            else:
                not_after, refresh = _time(c.get("not_after")), _time(c.get("refresh_at"))
                left = (not_after - now).total_seconds() if not_after else None
                state = ("expired" if left is not None and left <= 0
                         else "renewing" if refresh and now >= refresh else "valid")
                row.update(state=state, serial=c.get("serial", ""), not_before=c.get("not_before", ""),
                           not_after=c.get("not_after", ""), refresh_at=c.get("refresh_at", ""),
                           expires_in=left, chain=list(c.get("chain") or []))
            rows.append(row)
    return sorted(rows, key=lambda r: (r["identity"], r["holder"]))


def _time(value: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return t if t.tzinfo else None


def _is_error(status: Any) -> bool:
    if isinstance(status, Mapping):
        status = status.get("code", status.get("status_code", ""))
    return str(status).upper() in ("ERROR", "2", "STATUS_CODE_ERROR")


def _depth(span: Mapping[str, Any], by_id: Mapping[str, Mapping[str, Any]]) -> int:
    """How many known ancestors a span has (bounded: a bad parent chain must not loop)."""
    depth, parent = 0, span.get("parent_span_id")
    while parent and parent in by_id and depth < 32:
        depth, parent = depth + 1, by_id[parent].get("parent_span_id")
    return depth


def trace_rows(by_proxy: Mapping[str, Sequence[Mapping[str, Any]]], limit: int = TRACES_SHOWN
               ) -> list[dict[str, Any]]:
    """Recent traces of every proxy, spans of one trace joined across proxies, newest first."""
    spans: dict[str, dict[str, dict[str, Any]]] = {}
    seen_at: dict[str, set[str]] = {}
    for proxy, traces in by_proxy.items():
        for t in traces:
            tid = str(t.get("trace_id", ""))
            if not tid:
                continue
            seen_at.setdefault(tid, set()).add(proxy)
            for s in t.get("spans") or []:
                spans.setdefault(tid, {})[str(s.get("span_id", ""))] = dict(s)
    rows = []
    for tid, by_id in spans.items():
        ordered = sorted(by_id.values(), key=lambda s: (int(s.get("start_unix_nano") or 0),
                                                         str(s.get("span_id", ""))))
        if not ordered:
            continue
        start = int(ordered[0].get("start_unix_nano") or 0)
        end = max(int(s.get("start_unix_nano") or 0) + float(s.get("duration_ms") or 0) * 1e6
                  for s in ordered)
        roots = [s for s in ordered if not s.get("parent_span_id") or s["parent_span_id"] not in by_id]
        root = roots[0] if roots else ordered[0]
        services = list(dict.fromkeys(str(s.get("service", "")) for s in ordered if s.get("service")))
        attrs = root.get("attributes") or {}
        rows.append({
            "trace_id": tid, "name": root.get("name", ""), "root_service": root.get("service", ""),
            "method": str(attrs.get("http.method", "")),
            "status_code": str(attrs.get("http.status_code", "")),
            "start_unix_nano": start, "duration_ms": round((end - start) / 1e6, 3),
            "services": services, "error": any(_is_error(s.get("status")) for s in ordered),
            "proxies": sorted(seen_at.get(tid, ())),
            "spans": [{"span_id": s.get("span_id", ""), "parent_span_id": s.get("parent_span_id") or "",
                       "name": s.get("name", ""), "service": s.get("service", ""),
                       "kind": s.get("kind", ""), "depth": _depth(s, by_id),
                       "offset_ms": round((int(s.get("start_unix_nano") or 0) - start) / 1e6, 3),
                       "duration_ms": float(s.get("duration_ms") or 0),
                       "error": _is_error(s.get("status")), "attributes": s.get("attributes") or {}}
                      for s in ordered]})
    rows.sort(key=lambda r: (-r["start_unix_nano"], r["trace_id"]))
    return rows[:limit]
