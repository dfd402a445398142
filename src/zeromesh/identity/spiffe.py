"""SPIFFE identities: the names certificates carry and policies match (pure).

A workload identity is ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``,
exactly Istio's form, so AuthorizationPolicy principals (the same string without
``spiffe://``) keep their meaning. zeromesh adds two *bootstrap* identities for its
own agents (``…/zeromesh/node/<node>`` and ``…/zeromesh/pod/<ns>/<pod>/sa/<sa>``);
they authenticate to the control plane and are never accepted as workload identities,
which is why :meth:`SpiffeId.parse` rejects them and :func:`parse_any` tells them apart.

Parsing is strict on purpose: a lenient parser would let ``ns/a/sa/b/extra`` or an
upper-case trust domain alias a real identity in a policy match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
MAX_URI_LENGTH = 2048  # SPIFFE spec: URIs longer than 2048 bytes are not SPIFFE ids

# SPIFFE spec 2.1: lower-case letters, digits, dots, dashes, underscores.
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?")
# Kubernetes namespaces are DNS-1123 labels.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Service accounts, pods and nodes are DNS-1123 subdomains.
_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")

_WORKLOAD_FORM = "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
_NODE_FORM = "spiffe://<trust-domain>/zeromesh/node/<node>"
_POD_FORM = "spiffe://<trust-domain>/zeromesh/pod/<namespace>/<pod>/sa/<service-account>"


def _check(kind: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not value:
        raise ValueError(f"{kind} is empty")
    if not pattern.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not valid ({rule})")


def check_trust_domain(td: str) -> None:
    """Raise ValueError unless ``td`` is a valid SPIFFE trust domain name."""
    _check("trust domain", td, _TRUST_DOMAIN,
           "lower-case letters, digits, '.', '-', '_', starting and ending with a letter or digit")


def _check_namespace(ns: str) -> None:
    _check("namespace", ns, _LABEL, "a DNS-1123 label: lower-case letters, digits and '-', at most 63")


def _check_name(kind: str, name: str) -> None:
    _check(kind, name, _SUBDOMAIN,
           "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253")


def _split(uri: str) -> tuple[str, list[str]]:
    """Split ``spiffe://td/a/b`` into ``("td", ["a", "b"])`` after the checks common to all forms."""
    if not isinstance(uri, str):
        raise ValueError(f"SPIFFE id must be a string, got {type(uri).__name__}")
    if len(uri.encode()) > MAX_URI_LENGTH:
        raise ValueError(f"SPIFFE id is longer than {MAX_URI_LENGTH} bytes")
    if not uri.startswith(SCHEME):
        raise ValueError(f"{uri!r} is not a SPIFFE id: it must start with {SCHEME!r}")
    rest = uri[len(SCHEME):]
    for ch, what in (("?", "a query"), ("#", "a fragment"), ("%", "percent-encoding"),
                     ("@", "user info"), (":", "a port")):
        if ch in rest:
            raise ValueError(f"{uri!r} is not a SPIFFE id: it must not contain {what} ({ch!r})")
    td, slash, path = rest.partition("/")
    check_trust_domain(td)
    if not slash or not path:
        raise ValueError(f"{uri!r} has no path; expected {_WORKLOAD_FORM}")
    return td, path.split("/")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity: one per (trust domain, namespace, service account)."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        _check_namespace(self.namespace)
        _check_name("service account", self.service_account)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.principal}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy uses: ``td/ns/NS/sa/SA`` (no scheme)."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse a workload SPIFFE id; ValueError says what is wrong (bootstrap ids included)."""
        td, parts = _split(uri)
        if parts[0] == "zeromesh":
            raise ValueError(f"{uri!r} is a zeromesh bootstrap identity, not a workload identity "
                             f"({_WORKLOAD_FORM})")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"{uri!r} is not a workload SPIFFE id: expected {_WORKLOAD_FORM}")
        return cls(td, parts[1], parts[3])

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class NodeId:
    """A node agent's bootstrap identity; talks to the control plane, never to workloads."""

    trust_domain: str
    node: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        _check_name("node", self.node)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/zeromesh/node/{self.node}"

    @classmethod
    def parse(cls, uri: str) -> NodeId:
        td, parts = _split(uri)
        if len(parts) != 3 or parts[:2] != ["zeromesh", "node"]:
            raise ValueError(f"{uri!r} is not a node identity: expected {_NODE_FORM}")
        return cls(td, parts[2])

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class PodId:
    """A pod's bootstrap identity (e.g. a waypoint proxy before it holds a workload cert)."""

    trust_domain: str
    namespace: str
    pod: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        _check_namespace(self.namespace)
        _check_name("pod", self.pod)
        _check_name("service account", self.service_account)

    @property
    def uri(self) -> str:
        return (f"{SCHEME}{self.trust_domain}/zeromesh/pod/{self.namespace}/{self.pod}"
                f"/sa/{self.service_account}")

    @classmethod
    def parse(cls, uri: str) -> PodId:
        td, parts = _split(uri)
        if len(parts) != 6 or parts[:2] != ["zeromesh", "pod"] or parts[4] != "sa":
            raise ValueError(f"{uri!r} is not a pod identity: expected {_POD_FORM}")
        return cls(td, parts[2], parts[3], parts[5])

    def __str__(self) -> str:
        return self.uri


def parse_any(uri: str) -> SpiffeId | NodeId | PodId:
    """Parse any identity zeromesh issues, so callers can match on its kind."""
    _, parts = _split(uri)
    if parts[:2] == ["zeromesh", "node"]:
        return NodeId.parse(uri)
    if parts[:2] == ["zeromesh", "pod"]:
        return PodId.parse(uri)
    return SpiffeId.parse(uri)
