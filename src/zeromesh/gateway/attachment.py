"""Gateway API ``Gateway`` (class ``istio``) and ``HTTPRoute`` attachment, decided once (pure).

The data plane (:mod:`zeromesh.gateway.config`) and the status writer
(:mod:`zeromesh.gateway.status`) both read this view, so a route that the status calls
Accepted is the route the gateway serves, and a backend called unresolved is the one that
answers 500.

Attachment follows the Gateway API: a parentRef selects the Gateway's listeners (all of them,
or by ``sectionName`` and/or ``port``); a listener takes the route if its protocol carries
HTTPRoutes, its ``allowedRoutes.kinds`` include HTTPRoute and ``allowedRoutes.namespaces``
(Same, All, or a Selector on the route's namespace labels) admit the route's namespace; the
route then serves the intersection of the listener's hostname and its own hostnames.
Cross-namespace backendRefs and certificateRefs need a ``ReferenceGrant`` in the target's
namespace.

Simplification: Istio deploys one proxy per Gateway API Gateway; zeromesh serves every Gateway
of class ``istio`` from the one shared ingress gateway pod, on the ports that pod publishes
(80 and 443). Listeners on other ports are not programmed (status says so).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from zeromesh.api.selectors import match_label_selector
from zeromesh.gateway import hosts

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_CLASS = "istio"
CONTROLLER_NAME = "istio.io/gateway-controller"
PUBLISHED_PORTS = (80, 443)

GATEWAYS = "gateways.gateway.networking.k8s.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
REFERENCE_GRANTS = "referencegrants.gateway.networking.k8s.io"
SECRETS = "secrets"
NAMESPACES = "namespaces"
NAME_LABEL = "kubernetes.io/metadata.name"

HTTP_PROTOCOLS = ("HTTP", "HTTPS")
HTTP_ROUTE_KIND = (GATEWAY_GROUP, "HTTPRoute")
UNRESOLVED_GROUP = "zeromesh.io"       # backendRefs replaced so that their share answers 500


@dataclass(frozen=True, slots=True)
class Condition:
    """One status condition; ``to_dict`` leaves ``lastTransitionTime`` to the writer (it
    alone knows whether the condition changed)."""
    type: str
    status: bool
    reason: str
    message: str

    def to_dict(self, generation: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "status": "True" if self.status else "False",
                               "reason": self.reason, "message": self.message}
        if generation is not None:
            out["observedGeneration"] = generation
        return out


@dataclass(frozen=True, slots=True)
class Certificate:
    """A serving certificate chain and key (PEM text) from a Secret."""
    cert_pem: str
    key_pem: str
    secret: str                   # "namespace/name"


@dataclass(frozen=True, slots=True)
class ApiListener:
    namespace: str                # the Gateway's
    gateway: str                  # the Gateway's name
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed_routes: Mapping[str, Any]
    certificate: Certificate | None
    supported_kinds: tuple[tuple[str, str], ...]
    accepted: Condition
    resolved: Condition

    @property
    def gateway_key(self) -> str:
        return f"{self.namespace}/{self.gateway}"

    @property
    def programmed(self) -> Condition:
        for c in (self.accepted, self.resolved):
            if not c.status:
                return Condition("Programmed", False, "Invalid", c.message)
        return Condition("Programmed", True, "Programmed", "served by the shared ingress gateway")

    @property
    def served(self) -> bool:
        """Whether the data plane carries it (a missing certificate only fails TLS handshakes
        for its hostnames)."""
        return self.accepted.status


@dataclass(frozen=True, slots=True)
class ApiGateway:
    namespace: str
    name: str
    generation: int | None
    created: str
    listeners: tuple[ApiListener, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A route on one listener, with the hostnames it serves there."""
    listener: ApiListener
    hostnames: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParentOutcome:
    ref: Mapping[str, Any]
    gateway: str                  # "namespace/name"
    generation: int | None
    accepted: Condition
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteView:
    namespace: str
    name: str
    created: str
    generation: int | None
    obj: Mapping[str, Any]        # the route with unresolvable backendRefs replaced
    resolved: Condition
    parents: tuple[ParentOutcome, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class GatewayApiView:
    gateways: Mapping[str, ApiGateway]
    routes: tuple[RouteView, ...]
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def build(cls, state: Mapping[str, Mapping[str, Any]], *,
              namespaces: Mapping[str, Mapping[str, str]] | None = None,
              ports: Iterable[int] = PUBLISHED_PORTS) -> GatewayApiView:
        ctx = _Context(state, namespace_labels(state, namespaces), tuple(ports))
        gws: dict[str, ApiGateway] = {}
        for obj in sorted((g for g in (state.get(GATEWAYS) or {}).values() if g), key=age):
            if (obj.get("spec") or {}).get("gatewayClassName") != GATEWAY_CLASS:
                continue
            gw = ctx.gateway(obj)
            gws[gw.key] = gw
        ctx.resolve_port_conflicts(gws)
        all_gateways = {f"{_ns(o)}/{_name(o)}" for o in (state.get(GATEWAYS) or {}).values() if o}
        routes = []
        for obj in sorted((r for r in (state.get(HTTPROUTES) or {}).values() if r), key=age):
            view = ctx.route(obj, gws, all_gateways)
            if view is not None:
                routes.append(view)
        return cls(gws, tuple(routes))

    def attached(self, listener: ApiListener) -> int:
        """How many Accepted routes attach to ``listener`` (its ``attachedRoutes``)."""
        return sum(1 for r in self.routes for p in r.parents for a in p.attachments
                   if a.listener is listener)


# ---- helpers shared with the Istio side ------------------------------------------------------


def _ns(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def age(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """Oldest first, then namespace/name: the Gateway API's (and Istio's) tie-break."""
    md = obj.get("metadata") or {}
    return (str(md.get("creationTimestamp") or "\uffff"), str(md.get("namespace")), str(md.get("name")))


def _generation(obj: Mapping[str, Any]) -> int | None:
    g = (obj.get("metadata") or {}).get("generation")
    return int(g) if isinstance(g, int) else None


def namespace_labels(state: Mapping[str, Mapping[str, Any]],
                     given: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    """Namespace name → labels, from pushed ``namespaces`` objects and/or a given mapping; every
    namespace carries ``kubernetes.io/metadata.name`` as the API server sets it."""
    out: dict[str, dict[str, str]] = {}
    for obj in (state.get(NAMESPACES) or {}).values():
        if obj:
            md = obj.get("metadata") or {}
            out[str(md.get("name"))] = dict(md.get("labels") or {})
    for name, labels in (given or {}).items():
        out[name] = dict(labels)
    for name, labels in out.items():
        labels.setdefault(NAME_LABEL, name)
    return out


def reference_granted(state: Mapping[str, Mapping[str, Any]], *, from_kind: str, from_ns: str,
                      to_kind: str, to_ns: str, to_name: str, from_group: str = GATEWAY_GROUP,
                      to_group: str = "") -> bool:
    """Whether a ReferenceGrant in ``to_ns`` lets ``from_kind`` objects of ``from_ns`` refer to
    ``to_kind`` ``to_name`` (a grant without ``to.name`` covers every object of the kind)."""
    if from_ns == to_ns:
        return True
    for grant in (state.get(REFERENCE_GRANTS) or {}).values():
        if not grant or _ns(grant) != to_ns:
            continue
        spec = grant.get("spec") or {}
        if not any(f.get("group", "") == from_group and f.get("kind") == from_kind
                   and f.get("namespace") == from_ns for f in spec.get("from") or ()):
            continue
        if any(_core(str(t.get("group", ""))) == _core(to_group) and t.get("kind") == to_kind
               and (t.get("name") or to_name) == to_name
               for t in spec.get("to") or ()):
            return True
    return False


def _core(group: str) -> str:
    return "" if group == "core" else group


def secret_certificate(state: Mapping[str, Mapping[str, Any]], namespace: str,
                       name: str) -> Certificate | str:
    """The serving certificate in Secret ``namespace/name``, or why there is none.

    Keys ``tls.crt``/``tls.key`` (type kubernetes.io/tls) or Istio's generic ``cert``/``key``;
    the chain and key must parse and belong together, so a bad Secret fails here (status) and
    not at the first handshake."""
    obj = (state.get(SECRETS) or {}).get(f"{namespace}/{name}")
    if not obj:
        return f"Secret {namespace}/{name} does not exist"
    data = obj.get("data") or {}
    pair = next(((c, k) for c, k in (("tls.crt", "tls.key"), ("cert", "key"))
                 if c in data and k in data), None)
    if pair is None:
        return f"Secret {namespace}/{name} has no tls.crt and tls.key"
    try:
        cert_pem = base64.b64decode(data[pair[0]], validate=True)
        key_pem = base64.b64decode(data[pair[1]], validate=True)
    except (binascii.Error, ValueError, TypeError):
        return f"Secret {namespace}/{name}: {pair[0]}/{pair[1]} are not valid base64"
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        return f"Secret {namespace}/{name}: not a PEM certificate and private key ({e})"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        return f"Secret {namespace}/{name}: the private key does not match the certificate"
    return Certificate(cert_pem.decode("ascii", "replace"), key_pem.decode("ascii", "replace"),
                       f"{namespace}/{name}")


def _ports_text(ports: tuple[int, ...]) -> str:
    return " and ".join(str(p) for p in ports)


class _Context:
    def __init__(self, state: Mapping[str, Mapping[str, Any]], ns_labels: Mapping[str, Mapping[str, str]],
                 ports: tuple[int, ...]) -> None:
        self.state = state
        self.ns_labels = ns_labels
        self.ports = ports
        self.services = {_record_key(s) for s in (state.get("service") or {}).values() if s}

    # ---- Gateways and listeners --------------------------------------------------------
    def gateway(self, obj: Mapping[str, Any]) -> ApiGateway:
        ns, name = _ns(obj), _name(obj)
        listeners = tuple(self.listener(ns, name, lst)
                          for lst in (obj.get("spec") or {}).get("listeners") or ())
        return ApiGateway(ns, name, _generation(obj), age(obj)[0], listeners)

    def listener(self, ns: str, gw: str, spec: Mapping[str, Any]) -> ApiListener:
        name, port = str(spec.get("name", "")), int(spec.get("port", 0))
        protocol = str(spec.get("protocol", ""))
        allowed = spec.get("allowedRoutes") or {"namespaces": {"from": "Same"}}
        hostname = str(spec["hostname"]).lower() if spec.get("hostname") else None
        kinds, bad_kinds = self._kinds(protocol, allowed)
        accepted = Condition("Accepted", True, "Accepted", "listener accepted")
        tls = spec.get("tls") or {}
        if protocol not in HTTP_PROTOCOLS:
            accepted = Condition("Accepted", False, "UnsupportedProtocol",
                                 f"protocol {protocol} is not supported by the zeromesh ingress "
                                 "gateway (HTTP and HTTPS only)")
        elif protocol == "HTTPS" and tls.get("mode", "Terminate") != "Terminate":
            accepted = Condition("Accepted", False, "UnsupportedValue",
                                 f"tls.mode {tls.get('mode')} is not supported for HTTPS; "
                                 "only Terminate")
        elif port not in self.ports:
            accepted = Condition("Accepted", False, "PortUnavailable",
                                 f"port {port} is not published: the local cluster's ingress gateway "
                                 f"publishes only ports {_ports_text(self.ports)} on the host")
        resolved = Condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved")
        certificate: Certificate | None = None
        if bad_kinds:
            resolved = Condition("ResolvedRefs", False, "InvalidRouteKinds",
                                 f"route kinds {', '.join(bad_kinds)} are not supported on a "
                                 f"{protocol} listener")
        elif protocol == "HTTPS":
            got = self._certificate(ns, tls.get("certificateRefs") or ())
            if isinstance(got, Condition):
                resolved = got
            else:
                certificate = got
        return ApiListener(ns, gw, name, port, protocol, hostname, allowed, certificate, kinds,
                           accepted, resolved)

    def _kinds(self, protocol: str, allowed: Mapping[str, Any]
               ) -> tuple[tuple[tuple[str, str], ...], list[str]]:
        supported = (HTTP_ROUTE_KIND,) if protocol in HTTP_PROTOCOLS else ()
        wanted = allowed.get("kinds")
        if not wanted:
            return supported, []
        good: list[tuple[str, str]] = []
        bad: list[tuple[str, str]] = []
        for k in wanted:
            gk = (str(k.get("group", GATEWAY_GROUP)), str(k.get("kind")))
            (good if gk in supported else bad).append(gk)
        return tuple(good), [f"{g}/{k}" for g, k in bad]

    def _certificate(self, ns: str, refs: Iterable[Mapping[str, Any]]) -> Certificate | Condition:
        first: Certificate | None = None
        for ref in refs:
            kind, group = ref.get("kind", "Secret"), ref.get("group", "")
            name, ref_ns = str(ref.get("name")), str(ref.get("namespace") or ns)
            if kind != "Secret" or group not in ("", "core"):
                return Condition("ResolvedRefs", False, "InvalidCertificateRef",
                                 f"certificateRef {group or 'core'}/{kind} {name}: only Secrets are "
                                 "supported")
            if not reference_granted(self.state, from_kind="Gateway", from_ns=ns, to_kind="Secret",
                                     to_ns=ref_ns, to_name=name):
                return Condition("ResolvedRefs", False, "RefNotPermitted",
                                 f"certificateRef Secret {ref_ns}/{name} is in another namespace and no "
                                 f"ReferenceGrant in {ref_ns} allows Gateways from {ns} to use it")
            got = secret_certificate(self.state, ref_ns, name)
            if isinstance(got, str):
                return Condition("ResolvedRefs", False, "InvalidCertificateRef", got)
            first = first or got
        if first is None:
            return Condition("ResolvedRefs", False, "InvalidCertificateRef",
                             "an HTTPS listener needs tls.certificateRefs")
        return first

    def resolve_port_conflicts(self, gws: dict[str, ApiGateway]) -> None:
        """One protocol per port (the oldest listener's): later listeners that disagree are
        not accepted, as one TCP port cannot be both plain HTTP and TLS."""
        proto: dict[int, tuple[str, str]] = {}
        for key, gw in list(gws.items()):
            changed = False
            out = []
            for lst in gw.listeners:
                if lst.accepted.status:
                    have = proto.setdefault(lst.port, (lst.protocol, f"{gw.key} listener {lst.name}"))
                    if have[0] != lst.protocol:
                        lst = _replace_accepted(lst, Condition(
                            "Accepted", False, "ProtocolConflict",
                            f"port {lst.port} already serves {have[0]} ({have[1]})"))
                        changed = True
                out.append(lst)
            if changed:
                gws[key] = ApiGateway(gw.namespace, gw.name, gw.generation, gw.created, tuple(out))

    # ---- HTTPRoutes ----------------------------------------------------------------------
    def route(self, obj: Mapping[str, Any], gws: Mapping[str, ApiGateway],
              all_gateways: set[str]) -> RouteView | None:
        ns, name = _ns(obj), _name(obj)
        spec = obj.get("spec") or {}
        parents = []
        for ref in spec.get("parentRefs") or ():
            if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or ref.get("kind", "Gateway") != "Gateway":
                continue                      # a Service parent: the mesh's (GAMMA), not ours
            gkey = f"{ref.get('namespace') or ns}/{ref.get('name')}"
            gw = gws.get(gkey)
            if gw is None:
                if gkey in all_gateways:
                    continue                  # another class (a waypoint): not ours
                parents.append(ParentOutcome(ref, gkey, _generation(obj), Condition(
                    "Accepted", False, "NoMatchingParent", f"Gateway {gkey} does not exist")))
                continue
            parents.append(self._parent(ref, gw, ns, spec, _generation(obj)))
        if not parents:
            return None
        resolved, fixed = self._backends(obj, ns)
        return RouteView(ns, name, age(obj)[0], _generation(obj), fixed, resolved, tuple(parents))

    def _parent(self, ref: Mapping[str, Any], gw: ApiGateway, route_ns: str, spec: Mapping[str, Any],
                generation: int | None) -> ParentOutcome:
        section, port = ref.get("sectionName"), ref.get("port")
        relevant = [lst for lst in gw.listeners
                    if (section is None or lst.name == section) and (port is None or lst.port == port)]
        if not relevant:
            what = " and ".join(x for x in (f"named {section!r}" if section is not None else "",
                                            f"on port {port}" if port is not None else "") if x)
            return ParentOutcome(ref, gw.key, generation, Condition(
                "Accepted", False, "NoMatchingParent", f"Gateway {gw.key} has no listener {what}"))
        allowed, refusals = [], []
        for lst in relevant:
            why = self._refusal(lst, route_ns)
            if why:
                refusals.append(f"listener {lst.name}: {why}")
            else:
                allowed.append(lst)
        if not allowed:
            return ParentOutcome(ref, gw.key, generation, Condition(
                "Accepted", False, "NotAllowedByListeners", "; ".join(refusals)))
        route_hosts = [str(h).lower() for h in spec.get("hostnames") or ()]
        attachments = []
        for lst in allowed:
            got = _intersections(lst.hostname, route_hosts)
            if got:
                attachments.append(Attachment(lst, got))
        if not attachments:
            listed = ", ".join(f"{lst.name} ({lst.hostname or '*'})" for lst in allowed)
            return ParentOutcome(ref, gw.key, generation, Condition(
                "Accepted", False, "NoMatchingListenerHostname",
                f"route hostnames {', '.join(route_hosts)} match no hostname of listeners {listed}"))
        names = ", ".join(a.listener.name for a in attachments)
        return ParentOutcome(ref, gw.key, generation, Condition(
            "Accepted", True, "Accepted", f"attached to listeners {names} of Gateway {gw.key}"),
            tuple(attachments))

    def _refusal(self, lst: ApiListener, route_ns: str) -> str:
        if HTTP_ROUTE_KIND not in lst.supported_kinds:
            if lst.protocol not in HTTP_PROTOCOLS:
                return f"protocol {lst.protocol} does not carry HTTPRoutes"
            return "allowedRoutes.kinds does not include HTTPRoute"
        namespaces = lst.allowed_routes.get("namespaces") or {"from": "Same"}
        match namespaces.get("from", "Same"):
            case "All":
                return ""
            case "Same":
                return ("" if route_ns == lst.namespace else
                        f"allows routes only from its own namespace {lst.namespace} "
                        f"(allowedRoutes.namespaces.from: Same), not from {route_ns}")
            case "Selector":
                labels = self.ns_labels.get(route_ns, {NAME_LABEL: route_ns})
                if match_label_selector(namespaces.get("selector") or {}, labels):
                    return ""
                return f"namespace {route_ns} does not match allowedRoutes.namespaces.selector"
            case other:
                return f"allowedRoutes.namespaces.from {other} is not supported"

    def _backends(self, obj: Mapping[str, Any], ns: str) -> tuple[Condition, Mapping[str, Any]]:
        """ResolvedRefs for every backendRef (mirrors included) and the route with each
        unresolvable ref replaced by a placeholder that no service answers: its weight's share
        of requests gets 500, as the Gateway API prescribes."""
        problems: list[tuple[str, str]] = []
        spec = dict(obj.get("spec") or {})
        rules = []
        for i, rule in enumerate(spec.get("rules") or ()):
            rule = dict(rule)
            refs = []
            for j, ref in enumerate(rule.get("backendRefs") or ()):
                refs.append(self._backend(ref, ns, f"rules[{i}].backendRefs[{j}]", problems))
            if "backendRefs" in rule:
                rule["backendRefs"] = refs
            filters = []
            for k, f in enumerate(rule.get("filters") or ()):
                if f.get("type") == "RequestMirror" and (f.get("requestMirror") or {}).get("backendRef"):
                    rm = dict(f["requestMirror"])
                    rm["backendRef"] = self._backend(rm["backendRef"], ns,
                                                     f"rules[{i}].filters[{k}].requestMirror", problems)
                    f = {**f, "requestMirror": rm}
                filters.append(f)
            if "filters" in rule:
                rule["filters"] = filters
            rules.append(rule)
        spec["rules"] = rules
        fixed = {**obj, "spec": spec}
        if not problems:
            return Condition("ResolvedRefs", True, "ResolvedRefs", "all backendRefs resolved"), fixed
        return Condition("ResolvedRefs", False, problems[0][0], "; ".join(m for _, m in problems)), fixed

    def _backend(self, ref: Mapping[str, Any], ns: str, where: str,
                 problems: list[tuple[str, str]]) -> Mapping[str, Any]:
        group, kind = str(ref.get("group", "")), str(ref.get("kind", "Service"))
        name, ref_ns = str(ref.get("name")), str(ref.get("namespace") or ns)
        reason = ""
        if kind != "Service" or group not in ("", "core"):
            reason = "InvalidKind"
            problems.append((reason, f"{where}: kind {group or 'core'}/{kind} is not supported "
                                     "(only Service)"))
        elif not reference_granted(self.state, from_kind="HTTPRoute", from_ns=ns, to_kind="Service",
                                   to_ns=ref_ns, to_name=name):
            reason = "RefNotPermitted"
            problems.append((reason, f"{where}: Service {ref_ns}/{name} is in another namespace and no "
                                     f"ReferenceGrant in {ref_ns} allows HTTPRoutes from {ns} to use it"))
        elif f"{ref_ns}/{name}" not in self.services:
            reason = "BackendNotFound"
            problems.append((reason, f"{where}: Service {ref_ns}/{name} does not exist"))
        if not reason:
            return ref
        placeholder = {"group": UNRESOLVED_GROUP, "kind": "Unresolved",
                       "name": f"{reason}:{kind}/{ref_ns}/{name}", "weight": ref.get("weight", 1)}
        if ref.get("port"):
            placeholder["port"] = ref["port"]
        return placeholder


def _record_key(rec: Any) -> str:
    """"namespace/name" of a service record: a pushed dict, or the control plane's model record."""
    if isinstance(rec, Mapping):
        return f"{rec.get('namespace')}/{rec.get('name')}"
    return f"{getattr(rec, 'namespace', '')}/{getattr(rec, 'name', '')}"


def _replace_accepted(lst: ApiListener, accepted: Condition) -> ApiListener:
    return ApiListener(lst.namespace, lst.gateway, lst.name, lst.port, lst.protocol, lst.hostname,
                       lst.allowed_routes, lst.certificate, lst.supported_kinds, accepted, lst.resolved)


def _intersections(listener_host: str | None, route_hosts: list[str]) -> tuple[str, ...]:
    """The hostnames a route serves on a listener (Gateway API hostname intersection): route
    hostnames that do not intersect the listener's are ignored; none on either side means
    the other side's, or any host."""
    if not route_hosts:
        return (listener_host or hosts.ANY,)
    if listener_host is None:
        return tuple(dict.fromkeys(route_hosts))
    got = (hosts.intersect(listener_host, h) for h in route_hosts)
    return tuple(dict.fromkeys(h for h in got if h is not None))
