"""The mesh model: who is enrolled, what each workload and service is, which waypoint serves whom (pure).

It is fed store objects one change at a time and answers with the derived
records that changed, so one pod changing recomputes that pod's workload and
nothing else. Records are plain frozen values; the push layer serialises them.

Binding rules (Istio ambient): a Gateway of class `istio-waypoint` is a
waypoint, serving what its `istio.io/waypoint-for` label says (service by
default). The older `istio.io/for-service-account` annotation binds that
account's workloads in the Gateway's namespace by itself. Otherwise
`istio.io/use-waypoint` on a pod or service (else its namespace) names the
waypoint, `istio.io/use-waypoint-namespace` its namespace, and `none` opts
out; a pod may only bind a waypoint for workload|all, a service one for
service|all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

Obj = dict[str, Any]

DATAPLANE_MODE = "istio.io/dataplane-mode"
USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NS = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"
FOR_SERVICE_ACCOUNT = "istio.io/for-service-account"
WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"
HBONE_PORT = 15008

GATEWAYS = "gateways.gateway.networking.k8s.io"
SECRETS = "secrets"
TLS_SECRET = "kubernetes.io/tls"
# Configuration kinds passed to proxies as they are (keyed "namespace/name").
CONFIG_RESOURCES = (
    "authorizationpolicies.security.istio.io",
    "peerauthentications.security.istio.io",
    "requestauthentications.security.istio.io",
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "gateways.networking.istio.io",
    "serviceentries.networking.istio.io",
    "telemetries.telemetry.istio.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "tcproutes.gateway.networking.k8s.io",
    "tlsroutes.gateway.networking.k8s.io",
    GATEWAYS,
    "localratelimits.zeromesh.io",
    "telemetrypolicies.zeromesh.io",
    "referencegrants.gateway.networking.k8s.io",
    SECRETS,
)
INPUT_RESOURCES = ("namespaces", "pods", "services", "endpoints", *CONFIG_RESOURCES)


@dataclass(frozen=True, slots=True)
class WaypointRef:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Workload:
    uid: str
    namespace: str
    name: str
    ip: str
    node: str
    service_account: str
    labels: Mapping[str, str]
    protocol: str                      # "HBONE" when enrolled in the mesh, else "TCP"
    workload_name: str                 # the Deployment's name (Istio's workload label), else the pod's
    canonical_name: str                # app.kubernetes.io/name | app | workload_name
    canonical_revision: str            # app.kubernetes.io/version | version | "latest"
    services: tuple[str, ...]          # "ns/name" of services selecting it
    ready: bool
    waypoint: WaypointRef | None = None
    waypoint_by_service_account: bool = False   # bound by the older annotation


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target_port: int | str
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    workload_uid: str
    ip: str
    ports: Mapping[int, int]           # service port -> target port on this pod
    ready: bool


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    hostname: str
    vip: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[Endpoint, ...]
    labels: Mapping[str, str]
    waypoint: WaypointRef | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Waypoint:
    namespace: str
    name: str
    serves: str                         # service | workload | all | none
    for_service_account: str = ""
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def accepts(self, what: str) -> bool:
        return self.serves in (what, "all")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a resource cannot be used as written; becomes a status condition or log line."""
    resource: str
    namespace: str
    name: str
    reason: str
    message: str


@dataclass
class Changes:
    """Derived records that changed: type -> key -> record (None = removed)."""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, type_: str, key: str, value: Any) -> None:
        self.records.setdefault(type_, {})[key] = value

    def merge(self, other: Changes) -> None:
        for t, recs in other.records.items():
            self.records.setdefault(t, {}).update(recs)

    def __bool__(self) -> bool:
        return any(self.records.values())


def to_wire(record: Any) -> Any:
    """Records as JSON-ready dicts (Mappings become plain dicts, int keys strings)."""
    if record is None:
        return None
    if isinstance(record, dict):
        return record
    d = asdict(record)
    if isinstance(record, Service):
        for ep in d["endpoints"]:
            ep["ports"] = {str(k): v for k, v in ep["ports"].items()}
    return d


def _labels(obj: Obj) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _ann(obj: Obj) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


class MeshModel:
    """Raw inputs by key, derived records by key, and the indexes that keep updates local."""

    def __init__(self, trust_domain: str = "cluster.local", zone: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self.zone = zone
        self.namespaces: dict[str, Obj] = {}
        self.namespace_labels: dict[str, dict[str, Any]] = {}   # pushed to the gateway (allowedRoutes)
        self.pods: dict[tuple[str, str], Obj] = {}
        self.services_raw: dict[tuple[str, str], Obj] = {}
        self.endpoints_raw: dict[tuple[str, str], Obj] = {}
        self.gateways: dict[tuple[str, str], Obj] = {}
        self.config: dict[str, dict[str, Obj]] = {r: {} for r in CONFIG_RESOURCES}
        self.workloads: dict[str, Workload] = {}          # by uid
        self.pod_uid: dict[tuple[str, str], str] = {}
        self.services: dict[str, Service] = {}             # by "ns/name"
        self.waypoints: dict[str, Waypoint] = {}           # by "ns/name"
        self.problems: dict[tuple[str, str, str], Problem] = {}

    # ---- feeding -------------------------------------------------------------
    def load(self, objects: Iterable[tuple[str, Obj]]) -> Changes:
        """Initial fill; the same path as later updates, so it cannot disagree with them."""
        out = Changes()
        for resource, obj in objects:
            out.merge(self.update(resource, obj))
        return out

    def update(self, resource: str, obj: Obj, deleted: bool = False) -> Changes:
        md = obj.get("metadata", {})
        key = (md.get("namespace", ""), md.get("name", ""))
        out = Changes()
        if resource == "namespaces":
            before = _labels(self.namespaces.get(md["name"], {}))
            if deleted:
                self.namespaces.pop(md["name"], None)
            else:
                self.namespaces[md["name"]] = obj
            if deleted or _labels(obj) != before or md["name"] not in self.namespace_labels:
                labels = None if deleted else {"labels": _labels(obj)}
                if labels is None:
                    self.namespace_labels.pop(md["name"], None)
                else:
                    self.namespace_labels[md["name"]] = labels
                out.put("namespace", md["name"], labels)
            self._recompute_namespace(md["name"], out)
        elif resource == "pods":
            old = self.pods.pop(key, None)
            if not deleted:
                self.pods[key] = obj
            self._recompute_pod(key, out)
            del old   # endpoints follow through the Endpoints object
        elif resource == "services":
            old = self.services_raw.pop(key, None)
            if not deleted:
                self.services_raw[key] = obj
            self._recompute_service(key, out)
            # Membership of workloads in this service may have changed.
            selectors = [s for s in (old, None if deleted else obj) if s is not None]
            for pkey, pod in self.pods.items():
                if pkey[0] == key[0] and any(
                        _selects(s.get("spec", {}).get("selector"), _labels(pod)) for s in selectors):
                    self._recompute_pod(pkey, out)
        elif resource == "endpoints":
            if deleted:
                self.endpoints_raw.pop(key, None)
            else:
                self.endpoints_raw[key] = obj
            self._recompute_service(key, out)
        elif resource in CONFIG_RESOURCES:
            ckey = f"{key[0]}/{key[1]}"
            if resource == SECRETS and obj.get("type") != TLS_SECRET:
                deleted = True          # only TLS certificates ever reach a proxy (the gateway)
                if ckey not in self.config[resource]:
                    return out
            if deleted:
                self.config[resource].pop(ckey, None)
            else:
                self.config[resource][ckey] = obj
            out.put(resource, ckey, None if deleted else obj)
            if resource == GATEWAYS:
                old_gw = self.gateways.pop(key, None)
                if not deleted:
                    self.gateways[key] = obj
                if (old_gw is not None and _is_waypoint(old_gw)) or \
                        (not deleted and _is_waypoint(obj)):
                    self._recompute_waypoint(key, out)
        return out

    # ---- derivations -----------------------------------------------------------
    def _recompute_namespace(self, ns: str, out: Changes) -> None:
        for pkey in [k for k in self.pods if k[0] == ns]:
            self._recompute_pod(pkey, out)
        for skey in [k for k in self.services_raw if k[0] == ns]:
            self._recompute_service(skey, out)
        # Services and pods elsewhere may point at a waypoint in this namespace.
        self._recompute_cross_namespace(ns, out)

    def _recompute_cross_namespace(self, ns: str, out: Changes) -> None:
        for pkey, pod in self.pods.items():
            if pkey[0] != ns and _labels(pod).get(USE_WAYPOINT_NS) == ns:
                self._recompute_pod(pkey, out)
        for skey, svc in self.services_raw.items():
            if skey[0] != ns and _labels(svc).get(USE_WAYPOINT_NS) == ns:
                self._recompute_service(skey, out)
        for nsname, nsobj in self.namespaces.items():
            if nsname != ns and _labels(nsobj).get(USE_WAYPOINT_NS) == ns:
                for pkey in [k for k in self.pods if k[0] == nsname]:
                    self._recompute_pod(pkey, out)
                for skey in [k for k in self.services_raw if k[0] == nsname]:
                    self._recompute_service(skey, out)

    def _recompute_waypoint(self, key: tuple[str, str], out: Changes) -> None:
        ns, name = key
        wkey = f"{ns}/{name}"
        gw = self.gateways.get(key)
        if gw is None or not _is_waypoint(gw):
            if self.waypoints.pop(wkey, None) is not None:
                out.put("waypoint", wkey, None)
            self._set_problem(GATEWAYS, ns, name, None, out)
        else:
            wp = waypoint_of(gw)
            if self.waypoints.get(wkey) != wp:
                self.waypoints[wkey] = wp
                out.put("waypoint", wkey, wp)
            self._set_problem(GATEWAYS, ns, name,
                              ("InvalidListeners", "; ".join(wp.problems)) if wp.problems else None,
                              out)
        for pkey in [k for k in self.pods if k[0] == ns]:
            self._recompute_pod(pkey, out)
        for skey in [k for k in self.services_raw if k[0] == ns]:
            self._recompute_service(skey, out)
        self._recompute_cross_namespace(ns, out)

    def _set_problem(self, resource: str, ns: str, name: str,
                     problem: tuple[str, str] | None, out: Changes) -> None:
        k = (resource, ns, name)
        if problem is None:
            if self.problems.pop(k, None) is not None:
                out.put("problem", "/".join(k), None)
            return
        p = Problem(resource, ns, name, *problem)
        if self.problems.get(k) != p:
            self.problems[k] = p
            out.put("problem", "/".join(k), p)

    def _recompute_pod(self, key: tuple[str, str], out: Changes) -> None:
        pod = self.pods.get(key)
        old_uid = self.pod_uid.get(key)
        wl, problem = self._workload_of(pod) if pod is not None else (None, None)
        self._set_problem("pods", key[0], key[1], problem, out)
        if wl is None:
            if old_uid is not None:
                self.pod_uid.pop(key, None)
                if self.workloads.pop(old_uid, None) is not None:
                    out.put("workload", old_uid, None)
            return
        if old_uid is not None and old_uid != wl.uid and self.workloads.pop(old_uid, None):
            out.put("workload", old_uid, None)
        self.pod_uid[key] = wl.uid
        if self.workloads.get(wl.uid) != wl:
            self.workloads[wl.uid] = wl
            out.put("workload", wl.uid, wl)

    def enrolled(self, pod: Obj) -> bool:
        """Pod label wins (`none` opts out); else the namespace's label."""
        mode = _labels(pod).get(DATAPLANE_MODE)
        if mode is not None:
            return mode == "ambient"
        nsobj = self.namespaces.get(pod["metadata"].get("namespace", ""), {})
        return _labels(nsobj).get(DATAPLANE_MODE) == "ambient"

    def _workload_of(self, pod: Obj) -> tuple[Workload | None, tuple[str, str] | None]:
        md, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        ip = status.get("podIP")
        if not ip or md.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            return None, None
        ns, name = md["namespace"], md["name"]
        labels = _labels(pod)
        sa = spec.get("serviceAccountName") or "default"
        owner = next((r["name"] for r in md.get("ownerReferences") or []
                      if r.get("kind") == "Deployment"), "")
        workload_name = owner or name
        enrolled = self.enrolled(pod) and not spec.get("hostNetwork")
        services = tuple(sorted(f"{sns}/{sname}" for (sns, sname), svc in self.services_raw.items()
                                if sns == ns and _selects(svc.get("spec", {}).get("selector"), labels)))
        if GATEWAY_NAME_LABEL in labels:      # a waypoint's own pod is never sent to a waypoint
            waypoint, by_sa, problem = None, False, None
        else:
            waypoint, by_sa, problem = self._pod_waypoint(pod, sa)
        return Workload(
            uid=md.get("uid") or f"{ns}/{name}", namespace=ns, name=name, ip=ip,
            node=spec.get("nodeName", ""), service_account=sa, labels=labels,
            protocol="HBONE" if enrolled else "TCP", workload_name=workload_name,
            canonical_name=labels.get("service.istio.io/canonical-name")
            or labels.get("app.kubernetes.io/name") or labels.get("app") or workload_name,
            canonical_revision=labels.get("service.istio.io/canonical-revision")
            or labels.get("app.kubernetes.io/version") or labels.get("version") or "latest",
            services=services, ready=_ready(pod),
            waypoint=waypoint if enrolled else None,
            waypoint_by_service_account=by_sa and enrolled), problem

    def _pod_waypoint(self, pod: Obj, sa: str
                      ) -> tuple[WaypointRef | None, bool, tuple[str, str] | None]:
        ns = pod["metadata"]["namespace"]
        # The older generation: the Gateway names the service account it serves.
        for (gns, gname), gw in sorted(self.gateways.items()):
            if gns == ns and _is_waypoint(gw) and _ann(gw).get(FOR_SERVICE_ACCOUNT) == sa:
                return WaypointRef(gns, gname), True, None
        ref, problem = self._binding(pod, "workload")
        return ref, False, problem

    def _binding(self, obj: Obj, what: str) -> tuple[WaypointRef | None, tuple[str, str] | None]:
        """The object's own label wins over its namespace's; `none` opts out."""
        ns = obj["metadata"].get("namespace", "")
        own = _labels(obj)
        nsobj = self.namespaces.get(ns, {})
        source = own if USE_WAYPOINT in own else _labels(nsobj)
        from_namespace = USE_WAYPOINT not in own
        name = source.get(USE_WAYPOINT)
        if not name or name == "none":
            return None, None
        wns = source.get(USE_WAYPOINT_NS) or ns
        wp = self.waypoints.get(f"{wns}/{name}")
        where = f"namespace {ns}" if from_namespace else f"{what} {ns}/{obj['metadata']['name']}"
        if wp is None:
            return None, ("WaypointNotFound",
                          f"{USE_WAYPOINT}={name} on {where}: no waypoint Gateway {wns}/{name} "
                          f"(gatewayClassName {WAYPOINT_CLASS})")
        if not wp.accepts(what):
            if from_namespace:
                return None, None        # a namespace label binds what the waypoint serves, silently
            return None, ("WaypointIncompatible",
                          f"waypoint {wns}/{name} serves {wp.serves!r} traffic "
                          f"({WAYPOINT_FOR}); a {what} needs one for {what} or all")
        if not wp.ok:
            return None, ("WaypointInvalid", f"waypoint {wns}/{name}: {'; '.join(wp.problems)}")
        return WaypointRef(wns, name), None

    def _recompute_service(self, key: tuple[str, str], out: Changes) -> None:
        skey = f"{key[0]}/{key[1]}"
        raw = self.services_raw.get(key)
        if raw is None:
            if self.services.pop(skey, None) is not None:
                out.put("service", skey, None)
            self._set_problem("services", key[0], key[1], None, out)
            return
        spec = raw.get("spec", {})
        vip = spec.get("clusterIP") or ""
        ports = tuple(ServicePort(int(p["port"]), p.get("targetPort", p["port"]), p.get("name", ""),
                                  p.get("protocol", "TCP"), p.get("appProtocol", ""))
                      for p in spec.get("ports") or [])
        endpoints = self._endpoints(key, ports)
        if _labels(raw).get(MANAGED_LABEL) == MESH_CONTROLLER:
            waypoint, problem = None, None     # a waypoint's own Service is never sent to a waypoint
        else:
            waypoint, problem = self._binding(raw, "service")
        self._set_problem("services", key[0], key[1], problem, out)
        svc = Service(namespace=key[0], name=key[1],
                      hostname=f"{key[1]}.{key[0]}.svc.{self.zone}",
                      vip="" if vip == "None" else vip, ports=ports, endpoints=endpoints,
                      labels=_labels(raw), waypoint=waypoint)
        if self.services.get(skey) != svc:
            self.services[skey] = svc
            out.put("service", skey, svc)

    def _endpoints(self, key: tuple[str, str], ports: tuple[ServicePort, ...]) -> tuple[Endpoint, ...]:
        ep = self.endpoints_raw.get(key)
        if ep is None:
            return ()
        found: dict[str, Endpoint] = {}
        for subset in ep.get("subsets") or []:
            by_name = {p.get("name", ""): int(p["port"]) for p in subset.get("ports") or []}
            mapping = {sp.port: by_name[sp.name] for sp in ports if sp.name in by_name}
            for ready, addrs in ((True, subset.get("addresses") or []),
                                 (False, subset.get("notReadyAddresses") or [])):
                for a in addrs:
                    ref = a.get("targetRef") or {}
                    pod_key = (ref.get("namespace", key[0]), ref.get("name", ""))
                    uid = self.pod_uid.get(pod_key) or ref.get("uid") or a["ip"]
                    found[a["ip"]] = Endpoint(uid, a["ip"], mapping, ready)
        return tuple(found[ip] for ip in sorted(found))

    # ---- queries ----------------------------------------------------------------
    def workload_by_ip(self, ip: str) -> Workload | None:
        for wl in self.workloads.values():
            if wl.ip == ip:
                return wl
        return None

    def waypoint_for_address(self, ip: str) -> WaypointRef | None:
        """Traffic to a service VIP uses the service's waypoint; to a pod address, the workload's."""
        for svc in self.services.values():
            if svc.vip == ip:
                return svc.waypoint
        wl = self.workload_by_ip(ip)
        return wl.waypoint if wl is not None else None

    def service_accounts_on_node(self, node: str) -> set[tuple[str, str]]:
        return {(wl.namespace, wl.service_account) for wl in self.workloads.values()
                if wl.node == node}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every derived record, as a full state for a (re)connecting proxy."""
        snap: dict[str, dict[str, Any]] = {
            "workload": dict(self.workloads), "service": dict(self.services),
            "waypoint": dict(self.waypoints), "namespace": dict(self.namespace_labels)}
        for r in CONFIG_RESOURCES:
            snap[r] = dict(self.config[r])
        return snap


def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _is_waypoint(gw: Obj) -> bool:
    return gw.get("spec", {}).get("gatewayClassName") == WAYPOINT_CLASS


def waypoint_of(gw: Obj) -> Waypoint:
    md = gw["metadata"]
    serves = _labels(gw).get(WAYPOINT_FOR, "service")
    problems = []
    if serves not in ("service", "workload", "all", "none"):
        problems.append(f"label {WAYPOINT_FOR}={serves!r}: expected service, workload, all or none")
    listeners = gw.get("spec", {}).get("listeners") or []
    if not any(int(li.get("port", 0)) == HBONE_PORT and str(li.get("protocol", "")).upper() == "HBONE"
               for li in listeners):
        problems.append(f"a waypoint needs a listener on port {HBONE_PORT} with protocol HBONE "
                        "(e.g. {name: mesh, port: 15008, protocol: HBONE})")
    return Waypoint(namespace=md["namespace"], name=md["name"], serves=serves,
                    for_service_account=_ann(gw).get(FOR_SERVICE_ACCOUNT, ""),
                    problems=tuple(problems))
