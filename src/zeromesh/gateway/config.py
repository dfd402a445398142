"""What the shared ingress gateway knows, built once per pushed config version (pure).

The engine (:mod:`zeromesh.waypoint.engine`) uses a :class:`GatewayConfig` in place of a
``WaypointConfig``: the same methods (``policy_set``, ``authn_set``, ``routes_for``,
``endpoints``, ``traffic_policy``, ``rate_limits``, ``name``, ``namespace``), with a
:class:`ListenerDestination` — one published port and the request's Host — where the waypoint
has a service VIP. The process opens the ports of :meth:`GatewayConfig.ports`, picks a
certificate per SNI with :meth:`GatewayConfig.certificate_for`, and builds the destination of
each request with :meth:`GatewayConfig.listener_destination`.

Routing: one route table per port, keyed by hostname (exact, ``*.suffix`` or ``*``); a Host
picks the most specific entry, as Envoy picks a virtual host, and only that entry's routes
apply (no fall-through to a wider wildcard). An entry gathers the VirtualServices bound to
Istio Gateway servers (written order, oldest VirtualService first) and then the HTTPRoutes
attached to Gateway API listeners (Gateway API precedence across all of them).

Policies: AuthorizationPolicies and RequestAuthentications apply as for a workload in the
pod's namespace (mesh-wide root-namespace ones, ``istio-system``-wide ones, and selectors
matching the pod's labels) plus ``targetRefs`` naming a Gateway API Gateway whose listener or
routes the request came through; all are compiled for an L7 enforcer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.authn import AuthnSet, CompiledRequestAuthn, applicable_authn, compile_request_authns
from zeromesh.gateway import hosts
from zeromesh.gateway.attachment import (
    GATEWAY_GROUP,
    PUBLISHED_PORTS,
    Certificate,
    GatewayApiView,
)
from zeromesh.gateway.forwarded import trusted_hops_from_annotations
from zeromesh.gateway.istio import (
    ISTIO_GROUP,
    VIRTUAL_SERVICES,
    IstioServer,
    bound_gateways,
    compile_for_gateway,
    selected_gateways,
    servers,
    vs_hosts,
)
from zeromesh.policy import CompiledPolicy, Enforcer, PolicySet, Target, applicable, compile_policy
from zeromesh.policy import Workload as PolicyWorkload
from zeromesh.routing import (
    Redirect,
    RequestMatch,
    Route,
    RouteAction,
    StringMatch,
    compile_http_routes,
)
from zeromesh.routing.compile import destination_rule_subsets, service_host
from zeromesh.routing.resilience import RateLimitPolicy, compile_rate_limit
from zeromesh.routing.traffic_policy import (
    DEFAULT_TRAFFIC_POLICY,
    DestinationPolicies,
    TrafficPolicy,
    compile_destination_rules,
    find_policies,
)
from zeromesh.waypoint.config import Upstream
from zeromesh.ztunnel.config import ROOT_NAMESPACE, ServiceInfo, Snapshot, WorkloadInfo

DR = "destinationrules.networking.istio.io"
AUTHZ = "authorizationpolicies.security.istio.io"
AUTHN = "requestauthentications.security.istio.io"
RATE_LIMITS = "localratelimits.zeromesh.io"
DEFAULT_NAME = "istio-ingressgateway"
HTTPS_REDIRECT = "https-redirect"
# Matches nothing: a Host without a route table entry gets the engine's 404 "route not found".
NO_ROUTE = Route("no-route", (RequestMatch(path=StringMatch("regex", "(?!)", pattern=re.compile("(?!)"))),),
                 RouteAction())


@dataclass(frozen=True, slots=True)
class GatewayRef:
    """A Gateway the pod serves: Istio's (group networking.istio.io) or the Gateway API's."""
    group: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Listener:
    """One served Istio server or Gateway API listener on a published port."""
    gateway: GatewayRef
    name: str
    port: int
    protocol: str                              # HTTP | HTTPS
    hostnames: tuple[str, ...]                 # "*" = any host
    certificate: Certificate | None = None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """The routes for one hostname pattern on one port, and the Gateways they came from."""
    port: int
    hostname: str
    routes: tuple[Route, ...]
    gateways: tuple[GatewayRef, ...]


@dataclass(frozen=True, slots=True)
class ListenerDestination:
    """What a request to the gateway is for: a published port and the Host it asked for.

    ``vhost`` is the route table entry the Host selected (None: no route, the engine answers
    404); ``gateways`` are the Gateways it entered through (policy targets, rate limits).
    ``service`` and ``workload`` are always None: the gateway never proxies to "the address
    that was dialled"."""
    ip: str
    port: int
    host: str
    vhost: str | None = None
    gateways: tuple[GatewayRef, ...] = ()
    service: ServiceInfo | None = None
    workload: WorkloadInfo | None = None


@dataclass
class GatewayConfig:
    snapshot: Snapshot
    namespace: str
    name: str
    pod: WorkloadInfo | None
    pod_labels: Mapping[str, str]
    service_account: str
    vhosts: Mapping[int, Mapping[str, VirtualHost]]          # port -> hostname -> table entry
    listener_table: Mapping[int, tuple[Listener, ...]]
    port_protocols: Mapping[int, str]
    services_by_host: Mapping[str, ServiceInfo]
    backend_hosts: frozenset[str]
    subsets: Mapping[tuple[str, str], Mapping[str, str]]
    authz: tuple[CompiledPolicy, ...]
    authz_tcp: tuple[CompiledPolicy, ...]
    authn: tuple[CompiledRequestAuthn, ...] = ()
    traffic: Mapping[str, DestinationPolicies] = field(default_factory=dict)
    rate_limits: tuple[RateLimitPolicy, ...] = ()
    http_routes: frozenset[str] = frozenset()               # "ns/name" of attached HTTPRoutes
    trusted_hops: int = 0
    root_namespace: str = ROOT_NAMESPACE
    problems: tuple[str, ...] = ()
    _sets: dict[tuple[tuple[Target, ...], bool], PolicySet] = field(default_factory=dict, repr=False)
    _authn_sets: dict[tuple[Target, ...], AuthnSet] = field(default_factory=dict, repr=False)
    _certs: dict[int, dict[str, Certificate]] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return self.snapshot.version

    # ---- listeners and TLS ---------------------------------------------------------------
    def ports(self) -> dict[int, str]:
        """Published ports with at least one listener, and their protocol (HTTP or HTTPS)."""
        return dict(self.port_protocols)

    def listeners(self, port: int) -> list[Listener]:
        return list(self.listener_table.get(port, ()))

    def certificates(self, port: int) -> list[tuple[tuple[str, ...], str, str]]:
        """(hostnames, certificate chain PEM, key PEM) of every listener with a certificate."""
        return [(lst.hostnames, lst.certificate.cert_pem, lst.certificate.key_pem)
                for lst in self.listener_table.get(port, ()) if lst.certificate is not None]

    def certificate_for(self, port: int, sni: str | None) -> tuple[str, str] | None:
        """The (chain, key) to present for ``sni``: exact name, then the longest wildcard, then a
        listener for any host; None (fail the handshake) when nothing matches. Without SNI only
        a listener for any host can answer, as in Envoy's filter chain match."""
        table = self._certs.get(port)
        if table is None:
            table = {}
            for lst in self.listener_table.get(port, ()):
                if lst.certificate is not None:
                    for h in lst.hostnames:
                        table.setdefault(h, lst.certificate)
            self._certs[port] = table
        if sni:
            found = hosts.lookup(table, hosts.normalize_host(sni))
            cert = found[1] if found else None
        else:
            cert = table.get(hosts.ANY)
        return (cert.cert_pem, cert.key_pem) if cert is not None else None

    # ---- destinations and routes ----------------------------------------------------------
    def listener_destination(self, port: int, host: str, ip: str | None = None) -> ListenerDestination:
        """The destination of a request on ``port`` with this Host header (``:port`` suffix and
        case ignored). ``ip`` is the address the client connected to (default: the pod's)."""
        name = hosts.normalize_host(host)
        addr = ip or (self.pod.ip if self.pod is not None else "127.0.0.1")
        found = hosts.lookup(self.vhosts.get(port, {}), name)
        gateways: dict[GatewayRef, None] = dict.fromkeys(found[1].gateways) if found else {}
        for lst in self._most_specific_listeners(port, name):
            gateways.setdefault(lst.gateway)
        return ListenerDestination(addr, port, name, found[0] if found else None, tuple(gateways))

    def _most_specific_listeners(self, port: int, name: str) -> list[Listener]:
        best: list[Listener] = []
        best_rank = -1
        order = {p: i for i, p in enumerate(reversed(list(hosts.candidates(name))))}
        for lst in self.listener_table.get(port, ()):
            rank = max((order.get(h, -1) for h in lst.hostnames), default=-1)
            if rank > best_rank:
                best, best_rank = [lst], rank
            elif rank == best_rank and rank >= 0:
                best.append(lst)
        return best if best_rank >= 0 else []

    def serves(self, dest: ListenerDestination) -> bool:
        """Whether some route answers this Host (else the engine answers 404)."""
        return dest.vhost is not None

    def routes_for(self, dest: ListenerDestination) -> tuple[Route, ...]:
        """The routes for the Host's table entry. Never empty: for a Host no entry matches it is
        one route that matches no request, so the engine answers 404 (flag NR) as Envoy does,
        instead of a waypoint's "no routes: forward to the dialled service"."""
        vh = self.vhosts.get(dest.port, {}).get(dest.vhost) if dest.vhost is not None else None
        return vh.routes if vh is not None and vh.routes else (NO_ROUTE,)

    def endpoints(self, host: str, port: int | None, subset: str | None,
                  dest: ListenerDestination) -> list[Upstream] | None:
        """Ready endpoints of a backend service port (and subset); None (the engine answers
        500) for a host no route names or no service has: an unresolved backendRef, a missing
        service, or a Host header naming a service (the gateway is not an open relay)."""
        if host not in self.backend_hosts:
            return None
        svc = self.services_by_host.get(host)
        if svc is None:
            return None
        if port is None:
            if len(svc.ports) != 1:
                return []
            port = next(iter(svc.ports))
        labels = self.subsets.get((host, subset)) if subset else None
        if subset and labels is None:
            return []
        snap = self.snapshot
        out = []
        for ep in svc.endpoints:
            if not ep.ready or port not in ep.ports:
                continue
            wl = snap.workloads_by_uid.get(ep.workload_uid) or snap.workloads_by_ip.get(ep.ip)
            if labels and (wl is None or any(wl.labels.get(k) != v for k, v in labels.items())):
                continue
            out.append(Upstream(ep.ip, ep.ports[port], wl, svc))
        return out

    def traffic_policy(self, host: str, subset: str | None, port: int | None) -> TrafficPolicy:
        """DestinationRule trafficPolicy of one cluster (host, subset, port)."""
        found = find_policies(self.traffic, host)
        return found.get(subset, port) if found is not None else DEFAULT_TRAFFIC_POLICY

    # ---- policies -------------------------------------------------------------------------
    def _targets(self, dest: ListenerDestination) -> tuple[Target, ...]:
        return tuple(sorted({Target(GATEWAY_GROUP, "Gateway", g.name, g.namespace)
                             for g in getattr(dest, "gateways", ()) if g.group == GATEWAY_GROUP},
                            key=lambda t: (t.namespace, t.name)))

    def _workload(self) -> PolicyWorkload:
        return PolicyWorkload(self.namespace, self.pod_labels, self.service_account)

    def policy_set(self, dest: ListenerDestination, tcp: bool = False) -> PolicySet:
        """AuthorizationPolicies for a request (or, ``tcp``, a non-HTTP connection) through
        ``dest``: those selecting the pod and those targeting the Gateways it entered by."""
        targets = self._targets(dest)
        ps = self._sets.get((targets, tcp))
        if ps is None:
            ps = applicable(self.authz_tcp if tcp else self.authz, self._workload(),
                            root_namespace=self.root_namespace, targets=targets)
            self._sets[(targets, tcp)] = ps
        return ps

    def authn_set(self, dest: ListenerDestination) -> AuthnSet:
        """RequestAuthentications in force for ``dest`` (same scoping as the policies)."""
        targets = self._targets(dest)
        got = self._authn_sets.get(targets)
        if got is None:
            got = applicable_authn(self.authn, self._workload(), root_namespace=self.root_namespace,
                                   targets=targets)
            self._authn_sets[targets] = got
        return got

    def rate_limit_targets(self, dest: ListenerDestination, route: str = ""
                           ) -> list[tuple[str, str, str, str]]:
        """(group, kind, name, namespace) a LocalRateLimit may name for this request: the pod's
        own gateway identity (``Gateway istio-ingressgateway`` in its namespace: every request),
        each Gateway the request entered through (Istio Gateways under both groups, since a
        LocalRateLimit may only name group gateway.networking.k8s.io), and the HTTPRoute of the
        matched route."""
        out = [(GATEWAY_GROUP, "Gateway", self.name, self.namespace)]
        for g in dest.gateways:
            out.append((GATEWAY_GROUP, "Gateway", g.name, g.namespace))
            if g.group == ISTIO_GROUP:
                out.append((ISTIO_GROUP, "Gateway", g.name, g.namespace))
        parts = route.split("/")
        if len(parts) >= 3 and f"{parts[0]}/{parts[1]}" in self.http_routes:
            out.append((GATEWAY_GROUP, "HTTPRoute", parts[1], parts[0]))
        return list(dict.fromkeys(out))

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, state: Mapping[str, Mapping[str, Any]], version: str, *, namespace: str,
              pod_name: str, pod_labels: Mapping[str, str], service_account: str,
              trust_domain: str = "cluster.local", root_namespace: str = ROOT_NAMESPACE,
              name: str = DEFAULT_NAME, ports: Iterable[int] = PUBLISHED_PORTS,
              trusted_hops: int | None = None,
              namespaces: Mapping[str, Mapping[str, str]] | None = None) -> GatewayConfig:
        """``state`` is the push state (records plus config resources by plural.group).
        ``name`` is the pod's gateway identity (rate limits naming Gateway ``name`` in
        ``namespace`` cover all its traffic); ``trusted_hops`` overrides the pod annotation
        ``proxy.istio.io/config`` when the workload record carries annotations; ``namespaces``
        (name → labels) supplements pushed Namespace objects for allowedRoutes selectors."""
        published = tuple(ports)
        snap = Snapshot.from_state(state, version, trust_domain)
        by_host = {s.hostname: s for s in snap.services_by_vip.values()}
        pod = next((w for w in snap.workloads_by_uid.values()
                    if w.namespace == namespace and w.name == pod_name), None)
        problems: list[str] = []
        builder = _TableBuilder()

        # Istio Gateways selecting the pod, and the VirtualServices bound to them.
        istio_servers: list[IstioServer] = []
        for gw in selected_gateways(state, pod_labels):
            istio_servers += servers(state, gw, ports=published, secret_namespace=namespace,
                                     problems=problems)
        for srv in istio_servers:
            builder.listener(Listener(GatewayRef(ISTIO_GROUP, srv.namespace, srv.gateway), srv.name,
                                      srv.port, srv.protocol,
                                      tuple(dict.fromkeys(h for _, h in srv.hosts)), srv.certificate),
                             problems)
        by_gateway: dict[str, list[IstioServer]] = {}
        for srv in istio_servers:
            if builder.accepts(srv.port, srv.protocol):
                by_gateway.setdefault(srv.gateway_key, []).append(srv)
                if srv.https_redirect:          # every host of the server, bound or not (istiod)
                    for _, h in srv.hosts:
                        builder.istio(srv, h, "", [])
        vss = sorted((v for v in (state.get(VIRTUAL_SERVICES) or {}).values() if v), key=_age)
        for vs in vss:
            vs_ns = str((vs.get("metadata") or {}).get("namespace") or "default")
            for gkey in dict.fromkeys(bound_gateways(vs)):
                compiled: list[Route] | None = None
                for srv in by_gateway.get(gkey, ()):
                    admitted = srv.admits(vs_ns)
                    for vh in vs_hosts(vs):
                        for h in dict.fromkeys(x for a in admitted if (x := hosts.intersect(a, vh))):
                            if compiled is None:
                                compiled = compile_for_gateway(vs, gkey)
                            builder.istio(srv, h, f"{_key(vs)}@{gkey}", compiled)

        # Gateway API Gateways of class istio and their HTTPRoutes.
        view = GatewayApiView.build(state, namespaces=namespaces, ports=published)
        for api_gw in view.gateways.values():
            for lst in api_gw.listeners:
                if lst.served:
                    ref = GatewayRef(GATEWAY_GROUP, api_gw.namespace, api_gw.name)
                    builder.listener(Listener(ref, lst.name, lst.port, lst.protocol,
                                              (lst.hostname or hosts.ANY,), lst.certificate), problems)
        attached: set[str] = set()
        for route in view.routes:
            for parent in route.parents:
                for att in parent.attachments:
                    lst = att.listener
                    if not lst.served or not builder.accepts(lst.port, lst.protocol):
                        continue
                    attached.add(route.key)
                    for h in att.hostnames:
                        builder.api(GatewayRef(GATEWAY_GROUP, lst.namespace, lst.gateway), lst.port, h,
                                    route.key, route.obj)

        vhosts = builder.finish()
        backend_hosts = frozenset(
            b.host for table in vhosts.values() for vh in table.values() for r in vh.routes
            for b in (*r.action.backends, *(m.backend for m in r.action.mirrors)))
        if trusted_hops is None:
            record = next((w for w in (state.get("workload") or {}).values()
                           if w and w.get("namespace") == namespace and w.get("name") == pod_name), None)
            trusted_hops = trusted_hops_from_annotations((record or {}).get("annotations"))
        authz_objs = [o for o in (state.get(AUTHZ) or {}).values() if o]
        return cls(
            snapshot=snap, namespace=namespace, name=name, pod=pod, pod_labels=dict(pod_labels),
            service_account=service_account, vhosts=vhosts, listener_table=builder.listeners,
            port_protocols=builder.protocols, services_by_host=by_host,
            backend_hosts=backend_hosts,
            subsets=_subsets(state, by_host),
            authz=tuple(compile_policy(o, Enforcer.WAYPOINT, root_namespace=root_namespace)
                        for o in authz_objs),
            authz_tcp=tuple(compile_policy(o, Enforcer.WAYPOINT_TCP, root_namespace=root_namespace)
                            for o in authz_objs),
            authn=compile_request_authns((o for o in (state.get(AUTHN) or {}).values() if o),
                                         root_namespace=root_namespace),
            traffic=compile_destination_rules(d for d in (state.get(DR) or {}).values() if d),
            rate_limits=tuple(compile_rate_limit(o) for o in (state.get(RATE_LIMITS) or {}).values() if o),
            http_routes=frozenset(attached), trusted_hops=trusted_hops, root_namespace=root_namespace,
            problems=tuple(problems))


class _TableBuilder:
    """Gathers listeners and route table entries while the sources are walked."""

    def __init__(self) -> None:
        self.listeners: dict[int, tuple[Listener, ...]] = {}
        self.protocols: dict[int, str] = {}
        self._istio: dict[tuple[int, str], dict[str, tuple[Route, ...]]] = {}
        self._api: dict[tuple[int, str], dict[str, Mapping[str, Any]]] = {}
        self._gateways: dict[tuple[int, str], dict[GatewayRef, None]] = {}
        self._redirect: set[tuple[int, str]] = set()

    def accepts(self, port: int, protocol: str) -> bool:
        return self.protocols.get(port) == protocol

    def listener(self, lst: Listener, problems: list[str]) -> None:
        have = self.protocols.setdefault(lst.port, lst.protocol)
        if have != lst.protocol:
            problems.append(f"{lst.gateway.group} Gateway {lst.gateway.key} {lst.name}: port {lst.port} "
                            f"already serves {have}; {lst.protocol} there is ignored")
            return
        self.listeners[lst.port] = (*self.listeners.get(lst.port, ()), lst)

    def _entry(self, ref: GatewayRef, port: int, host: str) -> tuple[int, str]:
        key = (port, host)
        self._gateways.setdefault(key, {}).setdefault(ref)
        return key

    def istio(self, srv: IstioServer, host: str, source: str, routes: list[Route]) -> None:
        key = self._entry(GatewayRef(ISTIO_GROUP, srv.namespace, srv.gateway), srv.port, host)
        if routes:
            self._istio.setdefault(key, {}).setdefault(source, tuple(routes))
        if srv.https_redirect:
            self._redirect.add(key)

    def api(self, ref: GatewayRef, port: int, host: str, route_key: str, obj: Mapping[str, Any]) -> None:
        key = self._entry(ref, port, host)
        self._api.setdefault(key, {}).setdefault(route_key, obj)

    def finish(self) -> dict[int, dict[str, VirtualHost]]:
        out: dict[int, dict[str, VirtualHost]] = {}
        for key, gateways in self._gateways.items():
            port, host = key
            if key in self._redirect:
                routes: tuple[Route, ...] = (Route(HTTPS_REDIRECT, (), RouteAction(
                    redirect=Redirect(status=301, scheme="https"))),)
            else:
                istio = [r for rs in self._istio.get(key, {}).values() for r in rs]
                routes = _catch_alls_last([*istio, *compile_http_routes(self._api.get(key, {}).values())])
            out.setdefault(port, {})[host] = VirtualHost(port, host, routes, tuple(gateways))
        return out


def _catch_all(m: RequestMatch | None) -> bool:
    """A match on every request: no match, or only a path prefix of "/" (istiod's
    IsCatchAllRoute)."""
    if m is None:
        return True
    path = m.path
    return ((path is None or (path.kind in ("prefix", "path_prefix") and path.value == "/"))
            and m.method is None and m.authority is None and not m.headers
            and not m.without_headers and not m.query_params)


def _catch_alls_last(routes: list[Route]) -> tuple[Route, ...]:
    """One route per match, catch-all ones moved to the end in their order: istiod sorts a
    gateway's virtual host this way, so one VirtualService's catch-all does not hide the
    specific routes another one adds to the same host."""
    split = [one for r in routes
             for one in ([r] if len(r.matches) <= 1 else [Route(r.name, (m,), r.action) for m in r.matches])]
    last = [_catch_all(r.matches[0] if r.matches else None) for r in split]
    return (*(r for r, c in zip(split, last, strict=True) if not c),
            *(r for r, c in zip(split, last, strict=True) if c))


def _age(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    md = obj.get("metadata") or {}
    return (str(md.get("creationTimestamp") or "\uffff"), str(md.get("namespace")), str(md.get("name")))


def _key(obj: Mapping[str, Any]) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name') or ''}"


def _dr_hosts(dr: Mapping[str, Any], by_host: Mapping[str, ServiceInfo]) -> list[str]:
    """Service hostnames a DestinationRule's host names (short names in its namespace,
    wildcards over known services)."""
    ns = str((dr.get("metadata") or {}).get("namespace") or "default")
    written = (dr.get("spec") or {}).get("host")
    if not isinstance(written, str) or not written:
        return []
    if "*" in written:
        return [h for h in by_host if hosts.matches(written, h)]
    full = service_host(written, ns)
    return [full] if full in by_host else []


def _subsets(state: Mapping[str, Mapping[str, Any]],
             by_host: Mapping[str, ServiceInfo]) -> dict[tuple[str, str], Mapping[str, str]]:
    out: dict[tuple[str, str], Mapping[str, str]] = {}
    for dr in sorted((d for d in (state.get(DR) or {}).values() if d), key=_age):
        for host in _dr_hosts(dr, by_host):
            for subset, labels in destination_rule_subsets(dr).items():
                out.setdefault((host, subset), labels)
    return out
