"""A minimal valid manifest for every supported kind, for tests and documentation.

Tests elsewhere (store, CLI, controllers) need a well-formed object of a given
kind without caring about its details; building it here keeps those tests from
drifting when validation rules change, and the API tests check that each one
validates cleanly.
"""

from __future__ import annotations

import copy
from typing import Any

from zeromesh.api.kinds import KindInfo

_B64_HELLO = "aGVsbG8="

_SPECS: dict[tuple[str, str], dict[str, Any]] = {
    ("", "Namespace"): {},
    ("", "ServiceAccount"): {},
    ("", "Service"): {"spec": {"selector": {"app": "demo"}, "ports": [{"port": 80}]}},
    ("", "Pod"): {"spec": {"containers": [{"name": "main", "image": "demo"}]}},
    ("", "Secret"): {"data": {"key": _B64_HELLO}},
    ("", "ConfigMap"): {"data": {"key": "value"}},
    ("", "Node"): {},
    ("", "Endpoints"): {"subsets": [{"addresses": [{"ip": "10.0.0.1"}],
                                     "ports": [{"port": 80}]}]},
    ("", "Event"): {"involvedObject": {"kind": "Pod", "name": "demo"}, "reason": "Started",
                    "message": "started", "type": "Normal"},
    ("apps", "Deployment"): {"spec": {
        "selector": {"matchLabels": {"app": "demo"}},
        "template": {"metadata": {"labels": {"app": "demo"}},
                     "spec": {"containers": [{"name": "main", "image": "demo"}]}},
    }},
    ("apps", "ReplicaSet"): {"spec": {
        "selector": {"matchLabels": {"app": "demo"}},
        "template": {"metadata": {"labels": {"app": "demo"}},
                     "spec": {"containers": [{"name": "main", "image": "demo"}]}},
    }},
    ("security.istio.io", "AuthorizationPolicy"): {"spec": {}},
    ("security.istio.io", "PeerAuthentication"): {"spec": {"mtls": {"mode": "STRICT"}}},
    ("security.istio.io", "RequestAuthentication"): {"spec": {
        "jwtRules": [{"issuer": "https://issuer.example.com"}]}},
    ("networking.istio.io", "VirtualService"): {"spec": {
        "hosts": ["demo"], "http": [{"route": [{"destination": {"host": "demo"}}]}]}},
    ("networking.istio.io", "DestinationRule"): {"spec": {"host": "demo"}},
    ("networking.istio.io", "Gateway"): {"spec": {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                     "hosts": ["*"]}]}},
    ("networking.istio.io", "ServiceEntry"): {"spec": {"hosts": ["api.example.com"]}},
    ("networking.istio.io", "Sidecar"): {"spec": {}},
    ("networking.istio.io", "WorkloadEntry"): {"spec": {"address": "10.0.0.2"}},
    ("telemetry.istio.io", "Telemetry"): {"spec": {}},
    ("gateway.networking.k8s.io", "Gateway"): {"spec": {
        "gatewayClassName": "istio",
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
    ("gateway.networking.k8s.io", "GatewayClass"): {"spec": {
        "controllerName": "istio.io/gateway-controller"}},
    ("gateway.networking.k8s.io", "HTTPRoute"): {"spec": {"parentRefs": [{"name": "demo"}]}},
    ("gateway.networking.k8s.io", "GRPCRoute"): {"spec": {
        "parentRefs": [{"name": "demo"}],
        "rules": [{"backendRefs": [{"name": "demo", "port": 9000}]}]}},
    ("gateway.networking.k8s.io", "TCPRoute"): {"spec": {
        "parentRefs": [{"name": "demo"}],
        "rules": [{"backendRefs": [{"name": "demo", "port": 9000}]}]}},
    ("gateway.networking.k8s.io", "TLSRoute"): {"spec": {
        "parentRefs": [{"name": "demo"}], "hostnames": ["demo.example.com"],
        "rules": [{"backendRefs": [{"name": "demo", "port": 443}]}]}},
    ("gateway.networking.k8s.io", "ReferenceGrant"): {"spec": {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                  "namespace": "other"}],
        "to": [{"group": "", "kind": "Service"}]}},
    ("zeromesh.io", "LocalRateLimit"): {"spec": {
        "targetRefs": [{"kind": "Service", "group": "", "name": "demo"}],
        "tokenBucket": {"maxTokens": 10, "tokensPerFill": 10, "fillInterval": "1s"}}},
    ("zeromesh.io", "TelemetryPolicy"): {"spec": {}},
}


def minimal_manifest(info: KindInfo, *, version: str | None = None, name: str = "demo",
                     namespace: str | None = "demo") -> dict[str, Any]:
    """A fresh, valid manifest of ``info``'s kind (namespace only for namespaced kinds)."""
    version = version or info.versions[0]
    metadata: dict[str, Any] = {"name": name}
    if info.namespaced and namespace is not None:
        metadata["namespace"] = namespace
    body: dict[str, Any] = {
        "apiVersion": f"{info.group}/{version}" if info.group else version,
        "kind": info.kind,
        "metadata": metadata,
    }
    body.update(copy.deepcopy(_SPECS[(info.group, info.kind)]))
    return body
