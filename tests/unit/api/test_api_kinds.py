"""The kind registry: versions, scope, enforcement, and kubectl-style name resolution."""

from __future__ import annotations

import pytest

from zeromesh.api import ALL_KINDS, find_kind, kind_for, resolve_cli_name, split_api_version

GW = "gateway.networking.k8s.io"
NET = "networking.istio.io"
SEC = "security.istio.io"

EXPECTED = {
    # (group, kind): (versions, plural, namespaced, enforced)
    ("", "Namespace"): (("v1",), "namespaces", False, True),
    ("", "ServiceAccount"): (("v1",), "serviceaccounts", True, True),
    ("", "Service"): (("v1",), "services", True, True),
    ("", "Pod"): (("v1",), "pods", True, True),
    ("", "Secret"): (("v1",), "secrets", True, True),
    ("", "ConfigMap"): (("v1",), "configmaps", True, True),
    ("", "Node"): (("v1",), "nodes", False, True),
    ("", "Endpoints"): (("v1",), "endpoints", True, True),
    ("", "Event"): (("v1",), "events", True, True),
    ("apps", "Deployment"): (("v1",), "deployments", True, True),
    ("apps", "ReplicaSet"): (("v1",), "replicasets", True, False),
    (SEC, "AuthorizationPolicy"): (("v1", "v1beta1"), "authorizationpolicies", True, False),
    (SEC, "PeerAuthentication"): (("v1", "v1beta1"), "peerauthentications", True, False),
    (SEC, "RequestAuthentication"): (("v1", "v1beta1"), "requestauthentications", True, False),
    (NET, "VirtualService"): (("v1", "v1beta1", "v1alpha3"), "virtualservices", True, False),
    (NET, "DestinationRule"): (("v1", "v1beta1", "v1alpha3"), "destinationrules", True, False),
    (NET, "Gateway"): (("v1", "v1beta1", "v1alpha3"), "gateways", True, False),
    (NET, "ServiceEntry"): (("v1", "v1beta1", "v1alpha3"), "serviceentries", True, False),
    (NET, "Sidecar"): (("v1", "v1beta1", "v1alpha3"), "sidecars", True, False),
    (NET, "WorkloadEntry"): (("v1", "v1beta1", "v1alpha3"), "workloadentries", True, False),
    ("telemetry.istio.io", "Telemetry"): (("v1", "v1alpha1"), "telemetries", True, False),
    (GW, "Gateway"): (("v1", "v1beta1"), "gateways", True, False),
    (GW, "GatewayClass"): (("v1", "v1beta1"), "gatewayclasses", False, False),
    (GW, "HTTPRoute"): (("v1", "v1beta1"), "httproutes", True, False),
    (GW, "GRPCRoute"): (("v1", "v1alpha2"), "grpcroutes", True, False),
    (GW, "TCPRoute"): (("v1alpha2",), "tcproutes", True, False),
    (GW, "TLSRoute"): (("v1alpha2",), "tlsroutes", True, False),
    (GW, "ReferenceGrant"): (("v1beta1", "v1alpha2"), "referencegrants", True, False),
    ("zeromesh.io", "LocalRateLimit"): (("v1alpha1",), "localratelimits", True, False),
    ("zeromesh.io", "TelemetryPolicy"): (("v1alpha1",), "telemetrypolicies", True, False),
}


def test_registry_is_exactly_the_supported_kinds() -> None:
    assert {(k.group, k.kind) for k in ALL_KINDS} == set(EXPECTED)
    assert len(ALL_KINDS) == len(EXPECTED)


@pytest.mark.parametrize(("group", "kind"), sorted(EXPECTED))
def test_kind_facts(group: str, kind: str) -> None:
    versions, plural, namespaced, enforced = EXPECTED[(group, kind)]
    info = find_kind(group, kind)
    assert info is not None
    assert (info.versions, info.plural, info.namespaced, info.enforced) == (
        versions, plural, namespaced, enforced)
    assert info.resource == (f"{plural}.{group}" if group else plural)
    assert info.api_versions == tuple(f"{group}/{v}" if group else v for v in versions)
    for v in versions:
        assert kind_for(f"{group}/{v}" if group else v, kind) is info


@pytest.mark.parametrize(("api_version", "kind"), [
    ("apps/v1beta1", "Deployment"),
    ("v1", "Deployment"),
    ("gateway.networking.k8s.io/v1", "TCPRoute"),
    ("gateway.networking.k8s.io/v1alpha2", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "ReferenceGrant"),
    ("telemetry.istio.io/v1beta1", "Telemetry"),
    ("networking.istio.io/v1", "EnvoyFilter"),
    ("kind.x-k8s.io/v1alpha4", "Cluster"),
    ("v1", "pod"),
])
def test_kind_for_unknown_pairs(api_version: str, kind: str) -> None:
    assert kind_for(api_version, kind) is None


def test_resources_are_unique() -> None:
    resources = [k.resource for k in ALL_KINDS]
    assert len(resources) == len(set(resources))


@pytest.mark.parametrize(("text", "expected"), [
    ("v1", ("", "v1")),
    ("apps/v1", ("apps", "v1")),
    ("gateway.networking.k8s.io/v1beta1", ("gateway.networking.k8s.io", "v1beta1")),
])
def test_split_api_version(text: str, expected: tuple[str, str]) -> None:
    assert split_api_version(text) == expected


CLI = [
    ("pods", [("", "Pod")]), ("pod", [("", "Pod")]), ("po", [("", "Pod")]),
    ("PODS", [("", "Pod")]), ("Pod", [("", "Pod")]),
    ("deploy", [("apps", "Deployment")]), ("deployment", [("apps", "Deployment")]),
    ("deployments", [("apps", "Deployment")]),
    ("deployment.apps", [("apps", "Deployment")]),
    ("deployments.v1.apps", [("apps", "Deployment")]),
    ("rs", [("apps", "ReplicaSet")]),
    ("svc", [("", "Service")]), ("services", [("", "Service")]),
    ("ns", [("", "Namespace")]), ("namespace", [("", "Namespace")]),
    ("sa", [("", "ServiceAccount")]), ("serviceaccounts", [("", "ServiceAccount")]),
    ("cm", [("", "ConfigMap")]), ("configmap", [("", "ConfigMap")]),
    ("secret", [("", "Secret")]), ("secrets", [("", "Secret")]),
    ("no", [("", "Node")]), ("nodes", [("", "Node")]),
    ("ep", [("", "Endpoints")]), ("endpoints", [("", "Endpoints")]),
    ("ev", [("", "Event")]), ("events", [("", "Event")]),
    ("authorizationpolicy", [(SEC, "AuthorizationPolicy")]),
    ("authorizationpolicies", [(SEC, "AuthorizationPolicy")]),
    ("ap", [(SEC, "AuthorizationPolicy")]),
    ("AuthorizationPolicy", [(SEC, "AuthorizationPolicy")]),
    ("authorizationpolicies.security.istio.io", [(SEC, "AuthorizationPolicy")]),
    ("pa", [(SEC, "PeerAuthentication")]), ("ra", [(SEC, "RequestAuthentication")]),
    ("vs", [(NET, "VirtualService")]), ("virtualservice", [(NET, "VirtualService")]),
    ("dr", [(NET, "DestinationRule")]), ("se", [(NET, "ServiceEntry")]),
    ("sidecar", [(NET, "Sidecar")]), ("we", [(NET, "WorkloadEntry")]),
    ("telemetry", [("telemetry.istio.io", "Telemetry")]),
    ("gateway", [(NET, "Gateway"), (GW, "Gateway")]),
    ("gateways", [(NET, "Gateway"), (GW, "Gateway")]),
    ("Gateway", [(NET, "Gateway"), (GW, "Gateway")]),
    ("gw", [(NET, "Gateway"), (GW, "Gateway")]),
    ("gtw", [(GW, "Gateway")]),
    ("gateway.networking.istio.io", [(NET, "Gateway")]),
    ("gateways.networking.istio.io", [(NET, "Gateway")]),
    ("gateways.gateway.networking.k8s.io", [(GW, "Gateway")]),
    ("gateway.gateway.networking.k8s.io", [(GW, "Gateway")]),
    ("gateways.v1.gateway.networking.k8s.io", [(GW, "Gateway")]),
    ("gc", [(GW, "GatewayClass")]), ("gatewayclasses", [(GW, "GatewayClass")]),
    ("httproute", [(GW, "HTTPRoute")]), ("httproutes", [(GW, "HTTPRoute")]),
    ("HTTPRoute", [(GW, "HTTPRoute")]), ("grpcroute", [(GW, "GRPCRoute")]),
    ("tcproute", [(GW, "TCPRoute")]), ("tlsroutes", [(GW, "TLSRoute")]),
    ("refgrant", [(GW, "ReferenceGrant")]), ("referencegrants", [(GW, "ReferenceGrant")]),
    (" pods ", [("", "Pod")]),
    ("nonsense", []), ("", []), ("deploy.apps.v1", []), ("pods.apps", []),
    ("gateways.v1alpha2.gateway.networking.k8s.io", []),
]


@pytest.mark.parametrize(("name", "expected"), CLI)
def test_resolve_cli_name(name: str, expected: list[tuple[str, str]]) -> None:
    assert [(k.group, k.kind) for k in resolve_cli_name(name)] == expected


def test_resolve_returns_fresh_lists() -> None:
    first = resolve_cli_name("pods")
    first.clear()
    assert resolve_cli_name("pods")
