"""The values the policy engine is given and the decision it returns (pure).

A :class:`Request` holds what one enforcer saw about one connection or HTTP request;
a :class:`Workload` or a set of :class:`Target` says where it arrived; a
:class:`Decision` says what happened and why, in one sentence that logs, metrics and
``zeromesh x authz check`` all reuse.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY

_SPIFFE = "spiffe://"


class Enforcer(Enum):
    """Who enforces, which decides what a rule may look at.

    The ztunnel sees only the connection; a waypoint parses HTTP (and JWTs that a
    RequestAuthentication validated); on plain TCP a waypoint behaves like Envoy's TCP
    RBAC filter: connection attributes plus the remote address and SNI.
    """

    ZTUNNEL = "ztunnel"
    WAYPOINT = "waypoint"
    WAYPOINT_TCP = "waypoint-tcp"

    @property
    def title(self) -> str:
        """How notes and reasons name the enforcer."""
        match self:
            case Enforcer.ZTUNNEL:
                return "the ztunnel"
            case Enforcer.WAYPOINT:
                return "a waypoint"
            case Enforcer.WAYPOINT_TCP:
                return "a waypoint on TCP traffic"


class Action(Enum):
    """AuthorizationPolicy ``spec.action``; absent means ALLOW."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


_PARSED: dict[str, IPAddress] = {}


def _ip(value: object) -> IPAddress:
    if isinstance(value, str):
        # Proxies build a Request per connection or HTTP request from the same few peer
        # addresses: parse each string once (bounded, so a scan of addresses cannot grow it).
        got = _PARSED.get(value)
        if got is None:
            got = _ip(ipaddress.ip_address(value))
            if len(_PARSED) >= 4096:
                _PARSED.clear()
            _PARSED[value] = got
        return got
    addr = value if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address) \
        else ipaddress.ip_address(str(value))
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; policies write them as IPv4.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class Request:
    """What the enforcer saw. Build it once per connection (or HTTP request) and reuse it.

    ``source_principal`` is the authenticated peer identity without ``spiffe://``
    (``cluster.local/ns/ns1/sa/sleep``), or None for plaintext; the namespace and
    service account that policies match are derived from it. HTTP fields are None
    when unknown; ``headers`` keys are lower-case; ``claims`` is the validated JWT
    payload; ``remote_ip`` is the original client address (X-Forwarded-For / PROXY)
    and defaults to ``source_ip`` as Envoy's does. Addresses may also be given as
    strings; IPv4-mapped IPv6 addresses (dual-stack sockets) are stored as IPv4.
    """

    source_principal: str | None
    source_ip: IPAddress
    destination_ip: IPAddress
    destination_port: int
    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: Mapping[str, str] = field(default_factory=_empty)
    request_principal: str | None = None
    claims: Mapping[str, Any] = field(default_factory=_empty)
    remote_ip: IPAddress | None = None
    sni: str | None = None
    source_namespace: str | None = field(init=False, default=None)
    source_service_account: str | None = field(init=False, default=None)
    """``namespace/name`` of the peer's service account: the form ``serviceAccounts`` takes."""

    def __post_init__(self) -> None:
        setter = object.__setattr__
        for name in ("source_ip", "destination_ip"):
            value = getattr(self, name)
            if not isinstance(value, ipaddress.IPv4Address):
                setter(self, name, _ip(value))
        setter(self, "remote_ip", self.source_ip if self.remote_ip is None else _ip(self.remote_ip))
        principal = self.source_principal
        if principal is None:
            return
        if principal.startswith(_SPIFFE):
            principal = principal[len(_SPIFFE):]
            setter(self, "source_principal", principal)
        parts = principal.split("/")
        if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" and parts[2] and parts[4]:
            setter(self, "source_namespace", parts[2])
            setter(self, "source_service_account", f"{parts[2]}/{parts[4]}")

    @property
    def is_http(self) -> bool:
        """Whether HTTP was parsed (a method is always present then)."""
        return self.method is not None


@dataclass(frozen=True, slots=True)
class Workload:
    """The destination workload a ztunnel protects (or the waypoint pod, old style)."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=_empty)
    service_account: str = "default"


@dataclass(frozen=True, slots=True)
class Target:
    """A ``targetRefs`` entry, or what a waypoint serves for this request.

    ``group`` is ``""`` for core kinds (Service). A GatewayClass is cluster-scoped:
    its ``namespace`` is ``""``.
    """

    group: str
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, the policy and rule that decided it, and a sentence saying why.

    ``policy`` is ``namespace/name`` and ``rule`` the index in its ``spec.rules``; both
    are None when no single rule decided (nothing applies, or no ALLOW rule matched).
    ``audited`` lists the AUDIT policies whose rules matched; ``dry_run`` the
    ``istio.io/dry-run`` policies whose rules matched (neither changes the outcome).
    """

    allowed: bool
    policy: str | None
    rule: int | None
    action: Action | None
    reason: str
    audited: tuple[str, ...] = ()
    dry_run: tuple[str, ...] = ()
