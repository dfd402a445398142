"""`zeromesh x describe pod|service` and `zeromesh proxy-config|pc`.

`describe` answers "how does the mesh treat this workload?" the way `istioctl x describe`
does, computed from the same pure cores the proxies run (the mesh model, the ztunnel's
snapshot and plan, the waypoint's config and the policy engine) over the objects the control
plane holds, so it cannot disagree with what the proxies were sent. `proxy-config` shows what
one proxy holds: a waypoint's or the gateway's config dump (through its node agent's relay),
or, for an application pod, what its node's ztunnel knows about it.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from zeromesh.controlplane.model import INPUT_RESOURCES, MeshModel, to_wire
from zeromesh.errors import ZeromeshError
from zeromesh.policy import CompiledPolicy
from zeromesh.waypoint.config import WaypointConfig
from zeromesh.ztunnel.config import Snapshot, WorkloadInfo
from zeromesh.ztunnel.plan import peer_auth_mode

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


# ---- pure: the view ---------------------------------------------------------------------------
def build_view(objects: Mapping[str, list[dict[str, Any]]], trust_domain: str = "cluster.local"
               ) -> tuple[MeshModel, dict[str, dict[str, Any]]]:
    """The mesh model over stored objects, and its state as the proxies receive it."""
    model = MeshModel(trust_domain)
    model.load((r, obj) for r in INPUT_RESOURCES for obj in objects.get(r, []))
    state = {t: {k: to_wire(v) for k, v in recs.items()} for t, recs in model.snapshot().items()}
    return model, state


def _policy_line(p: CompiledPolicy) -> str:
    note = f" — {'; '.join(p.notes)}" if p.notes else ""
    return f"{p.key} ({p.action.value}){note}"


def _waypoint_config(state: Mapping[str, Mapping[str, Any]], key: str, trust_domain: str
                     ) -> WaypointConfig | None:
    ns, _, name = key.partition("/")
    pods = [w for w in (state.get("workload") or {}).values()
            if w and w["namespace"] == ns and (w.get("labels") or {}).get(GATEWAY_NAME_LABEL) == name]
    if not pods:
        return WaypointConfig.build(state, "describe", namespace=ns, name=name, trust_domain=trust_domain)
    return WaypointConfig.build(state, "describe", namespace=ns, name=name, pod_name=pods[0]["name"],
                                trust_domain=trust_domain)


def describe_pod(state: Mapping[str, Mapping[str, Any]], namespace: str, name: str, *,
                 trust_domain: str = "cluster.local") -> list[str]:
    snap = Snapshot.from_state(state, "describe", trust_domain)
    wl = next((w for w in snap.workloads_by_uid.values() if w.namespace == namespace and w.name == name),
              None)
    if wl is None:
        raise ZeromeshError(f"pod {namespace}/{name} not found (or not scheduled yet)")
    out = [f"Pod: {name}", f"   Namespace: {namespace}, node {wl.node}, IP {wl.ip}",
           f"   Workload: {wl.workload_name} (app {wl.canonical_name}, version {wl.canonical_revision})"]
    if wl.labels.get(GATEWAY_NAME_LABEL):
        out.append(f"   Role: waypoint {namespace}/{wl.labels[GATEWAY_NAME_LABEL]} "
                   "(not captured by the ztunnel)")
    if not wl.meshed:
        out.append("   Mesh: not enrolled (no istio.io/dataplane-mode=ambient on the pod or its namespace, "
                   "or opted out): plain TCP, no identity in use, no L4 policy")
        return out
    out.append("   Mesh: enrolled (ambient): traffic captured by its node's ztunnel, HBONE mTLS")
    out.append(f"   Identity: {wl.identity.uri}")
    services = [s for s in snap.services_by_vip.values()
                if any(e.workload_uid == wl.uid for e in s.endpoints)]
    for s in services:
        ports = ", ".join(f"{p}->{t}" for p, t in s.ports.items())
        wp = f", waypoint {s.waypoint}" if s.waypoint else ""
        out.append(f"   Service: {s.hostname} ({s.vip}: {ports}{wp})")
    if wl.waypoint:
        how = ("istio.io/for-service-account on the waypoint Gateway (older generation)"
               if wl.waypoint_by_service_account else "istio.io/use-waypoint")
        out.append(f"   Waypoint: {wl.waypoint} (bound by {how})")
    elif not any(s.waypoint for s in services):
        out.append("   Waypoint: none (L4 only: no L7 policy, routing or HTTP metrics)")
    port = next((int(t) for s in services for t in s.ports.values() if isinstance(t, int)), 0)
    out.append(f"   PeerAuthentication: {peer_auth_mode(snap, wl, port)}"
               + (f" (port {port})" if port else ""))
    out.extend(_ztunnel_policies(snap, wl))
    if wl.waypoint and wl.waypoint_by_service_account:
        out.append("      (traffic arriving from its waypoint passes; the waypoint enforces its policies)")
    for key in sorted({wl.waypoint, *(s.waypoint for s in services)} - {""}):
        out.extend(_waypoint_policies(state, key, services, trust_domain))
    return out


def _ztunnel_policies(snap: Snapshot, wl: WorkloadInfo) -> list[str]:
    ps = snap.policy_set(wl)
    if not ps.policies:
        return ["   AuthorizationPolicies at its ztunnel: none (everything is allowed at L4)"]
    return ["   AuthorizationPolicies at its ztunnel:"] + [f"      {_policy_line(p)}" for p in ps.policies]


def _waypoint_policies(state: Mapping[str, Mapping[str, Any]], key: str, services: list[Any],
                       trust_domain: str) -> list[str]:
    cfg = _waypoint_config(state, key, trust_domain)
    if cfg is None or cfg.info is None:
        return [f"   Waypoint {key}: not deployed or not valid"]
    lines = [f"   At waypoint {key} ({'older' if cfg.legacy else 'current'} generation):"]
    seen: set[str] = set()
    for s in services or [None]:
        dest = cfg.resolve(f"{s.vip}:{next(iter(s.ports))}") if s is not None else None
        if dest is None:
            continue
        for p in cfg.policy_set(dest).policies:
            if p.key not in seen:
                seen.add(p.key)
                lines.append(f"      policy {_policy_line(p)}")
        for r in cfg.routes_for(dest):
            lines.append(f"      route {r.name} -> "
                         + ", ".join(f"{b.host}{'/' + b.subset if b.subset else ''} ({b.weight})"
                                     for b in r.action.backends))
    if len(lines) == 1:
        lines.append("      no L7 policy or route: requests are forwarded as called")
    return lines


def describe_service(state: Mapping[str, Mapping[str, Any]], namespace: str, name: str, *,
                     trust_domain: str = "cluster.local") -> list[str]:
    snap = Snapshot.from_state(state, "describe", trust_domain)
    svc = next((s for s in snap.services_by_vip.values() if s.namespace == namespace and s.name == name),
               None)
    if svc is None:
        raise ZeromeshError(f"service {namespace}/{name} not found (or it has no ClusterIP)")
    out = [f"Service: {name}", f"   Namespace: {namespace}, VIP {svc.vip}, host {svc.hostname}",
           "   Ports: " + ", ".join(f"{p}->{t}" for p, t in svc.ports.items())]
    for e in svc.endpoints:
        wl = snap.workloads_by_uid.get(e.workload_uid)
        mode = ("HBONE" if wl.meshed else "TCP") if wl is not None else "?"
        out.append(f"   Endpoint: {e.ip} ({wl.name if wl else '?'}, {mode}, "
                   f"{'ready' if e.ready else 'not ready'})")
    if not svc.endpoints:
        out.append("   Endpoints: none (connections to the VIP are refused)")
    legacy = sorted({w.waypoint for e in svc.endpoints
                     if (w := snap.workloads_by_uid.get(e.workload_uid)) is not None
                     and w.waypoint and w.waypoint_by_service_account})
    if svc.waypoint:
        out.append(f"   Waypoint: {svc.waypoint} (istio.io/use-waypoint)")
    elif legacy:
        out.append(f"   Waypoint: {', '.join(legacy)} (serves its endpoints' service account: "
                   "istio.io/for-service-account)")
    else:
        out.append("   Waypoint: none")
    for key in sorted({svc.waypoint, *legacy} - {""}):
        out.extend(_waypoint_policies(state, key, [svc], trust_domain))
    return out


# ---- IO: the commands -------------------------------------------------------------------------
def _objects(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {r: client.call("GET", f"/v1/objects/{r}").get("items") or [] for r in INPUT_RESOURCES}


def cmd_describe(args: argparse.Namespace) -> int:
    from zeromesh.cli.main import _client, _cluster
    from zeromesh.local.state import Paths, load_config
    cfg = load_config(Paths(_cluster(args)))
    td = cfg.trust_domain if cfg is not None else "cluster.local"
    _, state = build_view(_objects(_client(args)), td)
    ns = args.namespace or "default"
    name = args.name.split("/", 1)[-1]
    lines = (describe_pod(state, ns, name, trust_domain=td) if args.kind in ("pod", "pods", "po")
             else describe_service(state, ns, name, trust_domain=td))
    print("\n".join(lines))
    return 0


def cmd_proxy_config(args: argparse.Namespace) -> int:
    from zeromesh.cli.main import _client, _cluster
    from zeromesh.local.state import Paths, load_config
    cfg = load_config(Paths(_cluster(args)))
    if cfg is None:
        raise ZeromeshError(_client(args).not_running().args[0])
    ns = args.namespace or "default"
    name = args.pod.split("/", 1)[-1]
    pod = _client(args).call("GET", "/v1/objects/pods", params={"namespace": ns, "name": name})["items"][0]
    node = pod.get("spec", {}).get("nodeName", "")
    ports = cfg.node_ports.get(node, {})
    labels = pod["metadata"].get("labels") or {}
    if labels.get(GATEWAY_NAME_LABEL) or labels.get("istio") == "ingressgateway":
        url = f"http://127.0.0.1:{ports.get('metrics')}/proxy/{ns}/{name}/config_dump"
    else:
        url = f"http://127.0.0.1:{ports.get('admin')}/config_dump"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            dump = json.loads(r.read())
    except OSError as e:
        raise ZeromeshError(f"could not read the proxy config of {ns}/{name} from {url}: {e}") from e
    if "workloads" in dump:       # the node's ztunnel: only what concerns this pod
        dump = {"node": dump.get("node"), "version": dump.get("version"),
                "workload": [w for w in dump["workloads"] if w["namespace"] == ns and w["name"] == name],
                "certificates": dump.get("certificates", [])}
    section = {"all": None, "routes": "routes", "policies": "policies", "certificates": "certificates",
               "secret": "certificates", "subsets": "subsets"}[args.what]
    print(json.dumps(dump if section is None else dump.get(section), indent=2))
    return 0


def add_parser(sub: Any, xsub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    """`x describe pod|service NAME` and `proxy-config|pc WHAT POD`."""
    s = xsub.add_parser("describe", parents=[common, nsopt],
                        help="how the mesh treats a pod or service (enrolled, identity, waypoint, policies)")
    s.add_argument("kind", choices=["pod", "pods", "po", "service", "services", "svc"])
    s.add_argument("name")
    s.set_defaults(func=cmd_describe)
    for alias in ("proxy-config", "pc"):
        s = sub.add_parser(alias, parents=[common, nsopt],
                           help="what one proxy holds (a waypoint/gateway pod, or an app pod's ztunnel view)")
        s.add_argument("what", choices=["all", "routes", "policies", "certificates", "secret", "subsets"])
        s.add_argument("pod")
        s.set_defaults(func=cmd_proxy_config)
