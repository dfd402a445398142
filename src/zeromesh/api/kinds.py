"""The registry of every kind zeromesh accepts, and kubectl-style name resolution.

A kind is known by (group, kind); each lists the API versions under which it
really exists upstream, so a manifest with a wrong version gets a precise error
instead of "unknown kind". ``enforced`` separates what the local cluster or the
mesh acts on today from what is validated and stored, to be enforced later.
"""

from __future__ import annotations

from dataclasses import dataclass

CORE = ""
APPS = "apps"
SECURITY_ISTIO = "security.istio.io"
NETWORKING_ISTIO = "networking.istio.io"
TELEMETRY_ISTIO = "telemetry.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"


@dataclass(frozen=True, slots=True)
class KindInfo:
    """One supported kind: what it is called in manifests, in URLs and on the command line."""

    kind: str
    group: str
    versions: tuple[str, ...]
    plural: str
    namespaced: bool
    short_names: tuple[str, ...]
    enforced: bool

    @property
    def resource(self) -> str:
        """The store's name for it: ``deployments.apps``; core kinds: plain ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_versions(self) -> tuple[str, ...]:
        """Accepted ``apiVersion`` values, preferred first: ``("apps/v1",)``."""
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)


def _k(kind: str, group: str, versions: tuple[str, ...], plural: str, *short: str,
       namespaced: bool = True, enforced: bool = False) -> KindInfo:
    return KindInfo(kind, group, versions, plural, namespaced, short, enforced)


_ISTIO_NET = ("v1", "v1beta1", "v1alpha3")
_ISTIO_SEC = ("v1", "v1beta1")
_GW_STD = ("v1", "v1beta1")

ALL_KINDS: tuple[KindInfo, ...] = (
    _k("Namespace", CORE, ("v1",), "namespaces", "ns", namespaced=False, enforced=True),
    _k("ServiceAccount", CORE, ("v1",), "serviceaccounts", "sa", enforced=True),
    _k("Service", CORE, ("v1",), "services", "svc", enforced=True),
    _k("Pod", CORE, ("v1",), "pods", "po", enforced=True),
    _k("Secret", CORE, ("v1",), "secrets", enforced=True),
    _k("ConfigMap", CORE, ("v1",), "configmaps", "cm", enforced=True),
    _k("Node", CORE, ("v1",), "nodes", "no", namespaced=False, enforced=True),
    _k("Endpoints", CORE, ("v1",), "endpoints", "ep", enforced=True),
    _k("Event", CORE, ("v1",), "events", "ev", enforced=True),
    _k("Deployment", APPS, ("v1",), "deployments", "deploy", enforced=True),
    _k("ReplicaSet", APPS, ("v1",), "replicasets", "rs"),
    _k("AuthorizationPolicy", SECURITY_ISTIO, _ISTIO_SEC, "authorizationpolicies", "ap"),
    _k("PeerAuthentication", SECURITY_ISTIO, _ISTIO_SEC, "peerauthentications", "pa"),
    _k("RequestAuthentication", SECURITY_ISTIO, _ISTIO_SEC, "requestauthentications", "ra"),
    _k("VirtualService", NETWORKING_ISTIO, _ISTIO_NET, "virtualservices", "vs"),
    _k("DestinationRule", NETWORKING_ISTIO, _ISTIO_NET, "destinationrules", "dr"),
    _k("Gateway", NETWORKING_ISTIO, _ISTIO_NET, "gateways", "gw"),
    _k("ServiceEntry", NETWORKING_ISTIO, _ISTIO_NET, "serviceentries", "se"),
    _k("Sidecar", NETWORKING_ISTIO, _ISTIO_NET, "sidecars"),
    _k("WorkloadEntry", NETWORKING_ISTIO, _ISTIO_NET, "workloadentries", "we"),
    _k("Telemetry", TELEMETRY_ISTIO, ("v1", "v1alpha1"), "telemetries", "telemetry"),
    _k("Gateway", GATEWAY_API, _GW_STD, "gateways", "gtw"),
    _k("GatewayClass", GATEWAY_API, _GW_STD, "gatewayclasses", "gc", namespaced=False),
    _k("HTTPRoute", GATEWAY_API, _GW_STD, "httproutes"),
    _k("GRPCRoute", GATEWAY_API, ("v1", "v1alpha2"), "grpcroutes"),
    _k("TCPRoute", GATEWAY_API, ("v1alpha2",), "tcproutes"),
    _k("TLSRoute", GATEWAY_API, ("v1alpha2",), "tlsroutes"),
    _k("ReferenceGrant", GATEWAY_API, ("v1beta1", "v1alpha2"), "referencegrants", "refgrant"),
    _k("LocalRateLimit", "zeromesh.io", ("v1alpha1",), "localratelimits", "lrl"),
    _k("TelemetryPolicy", "zeromesh.io", ("v1alpha1",), "telemetrypolicies"),
)

_BY_GROUP_KIND: dict[tuple[str, str], KindInfo] = {(k.group, k.kind): k for k in ALL_KINDS}

# "gw" is Istio's short name, but users who type it usually mean "the gateways";
# listing both matches "gateway"/"gateways", which are ambiguous in kubectl too.
_EXTRA_ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "gw": ((GATEWAY_API, "Gateway"),),
}


def _build_cli_index() -> dict[str, list[KindInfo]]:
    index: dict[str, list[KindInfo]] = {}

    def add(name: str, info: KindInfo) -> None:
        bucket = index.setdefault(name.lower(), [])
        if info not in bucket:
            bucket.append(info)

    for info in ALL_KINDS:
        for base in (info.kind.lower(), info.plural, *info.short_names):
            add(base, info)
            if info.group:
                add(f"{base}.{info.group}", info)
                for v in info.versions:
                    add(f"{base}.{v}.{info.group}", info)
    for alias, targets in _EXTRA_ALIASES.items():
        for key in targets:
            add(alias, _BY_GROUP_KIND[key])
    return index


_CLI_INDEX = _build_cli_index()


def split_api_version(api_version: str) -> tuple[str, str]:
    """``"apps/v1"`` -> ``("apps", "v1")``; ``"v1"`` -> ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def find_kind(group: str, kind: str) -> KindInfo | None:
    """The kind registered under (group, kind), whatever the version; None if unknown."""
    return _BY_GROUP_KIND.get((group, kind))


def kind_for(api_version: str, kind: str) -> KindInfo | None:
    """The kind served as exactly ``apiVersion``/``kind``; None when that pair is unknown."""
    group, version = split_api_version(api_version)
    info = _BY_GROUP_KIND.get((group, kind))
    if info is None or version not in info.versions:
        return None
    return info


def kinds_named(kind: str) -> list[KindInfo]:
    """Every registered kind with this exact name, in any group (for "did you mean")."""
    return [k for k in ALL_KINDS if k.kind == kind]


def resolve_cli_name(name: str) -> list[KindInfo]:
    """kubectl-style resource names: kind, plural or short name, optionally qualified as
    ``name.group`` or ``name.version.group``; case-insensitive. Ambiguous names such as
    ``gateway`` return every match (Istio's first); unknown names return []."""
    return list(_CLI_INDEX.get(name.strip().lower(), ()))
