"""Rules for the core/v1 kinds other than Pod: Service, config and identity objects.

Services get Kubernetes' defaults (protocol TCP, targetPort = port) so what is
stored is what ``kubectl get -o yaml`` would show. Service types the local
cluster cannot provide are accepted with a warning when they degrade safely to
ClusterIP, and refused when they cannot (ExternalName).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from zeromesh.api.names import (
    config_key_error,
    dns1035_label_error,
    dns1123_label_error,
    iana_svc_name_error,
    ip_error,
    ipv4_error,
)
from zeromesh.api.schema import (
    Check,
    Ctx,
    KindSchema,
    Obj,
    any_list,
    any_map,
    any_value,
    boolean,
    child,
    describe,
    int_or_string,
    integer,
    label_map,
    list_of,
    map_of,
    string,
    string_list,
)

PORT = integer(1, 65535)
SCTP_UNSUPPORTED = "SCTP is not supported by the local cluster"


def protocol() -> Check:
    """TCP (the default) or UDP; SCTP is a valid Kubernetes value we cannot serve."""
    return string(enum=("TCP", "UDP", "SCTP"),
                  rule=lambda s: SCTP_UNSUPPORTED if s == "SCTP" else None)


def _base64_value(ctx: Ctx, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        ctx.error(path, f"must be a base64-encoded string, got {describe(value)}")
        return value
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        ctx.error(path, f"is not valid base64 ({e}); put plain text under stringData instead")
    return value


def _cluster_ip_rule(s: str) -> str | None:
    if s in ("None", ""):
        return None
    return None if ipv4_error(s) is None else f'"{s}" must be an IPv4 address or "None"'


# ---- Service -----------------------------------------------------------------

def _service_port_post(ctx: Ctx, port: dict[str, Any], path: str) -> None:
    if "targetPort" not in port and isinstance(port.get("port"), int):
        port["targetPort"] = port["port"]


SERVICE_PORT = Obj(
    {
        "name": string(rule=dns1123_label_error),
        "protocol": protocol(),
        "appProtocol": string(),
        "port": PORT,
        "targetPort": int_or_string(PORT, string(rule=iana_svc_name_error)),
        "nodePort": PORT,
    },
    required=("port",),
    unknown="warn",
    defaults={"protocol": "TCP"},
    post=_service_port_post,
)


def _service_spec_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    kind = spec.get("type")
    if kind in ("NodePort", "LoadBalancer"):
        ctx.warn(child(path, "type"), f"{kind} is accepted but the local cluster treats it as "
                                      "ClusterIP (no node ports or load balancers)")
    elif kind == "ExternalName":
        ctx.error(child(path, "type"), "ExternalName services are not supported")
    if spec.get("clusterIP") == "":
        del spec["clusterIP"]  # "" asks for an address to be allocated, same as absent
    ports = spec.get("ports")
    if not isinstance(ports, list):
        return
    seen: dict[tuple[Any, Any], int] = {}
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        where = f"{child(path, 'ports')}[{i}]"
        if len(ports) > 1 and "name" not in p:
            ctx.error(child(where, "name"), "is required when the service has more than one port")
        key = (p.get("port"), p.get("protocol"))
        if not isinstance(key[0], int):
            continue
        if key in seen:
            ctx.error(child(where, "port"), f"duplicate port {key[0]}/{key[1]} (also used by "
                                            f"{child(path, 'ports')}[{seen[key]}])")
        else:
            seen[key] = i


SERVICE_SPEC = Obj(
    {
        "type": string(enum=("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")),
        "ports": list_of(SERVICE_PORT, unique="name"),
        "selector": label_map,
        "clusterIP": string(rule=_cluster_ip_rule),
        "clusterIPs": string_list,
        "externalName": string(),
        # Accepted and kept; they change nothing on the local cluster.
        **{f: any_value for f in (
            "sessionAffinity", "sessionAffinityConfig", "externalTrafficPolicy",
            "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy", "publishNotReadyAddresses",
            "allocateLoadBalancerNodePorts", "loadBalancerClass", "loadBalancerSourceRanges",
            "loadBalancerIP", "healthCheckNodePort", "externalIPs", "trafficDistribution")},
    },
    unknown="warn",
    defaults={"type": "ClusterIP"},
    warn={"externalIPs": "not honoured by the local cluster"},
    post=_service_spec_post,
)

# ---- Secret and ConfigMap ----------------------------------------------------


def _secret_post(ctx: Ctx, obj: dict[str, Any], path: str) -> None:
    """Kubernetes merges the write-only stringData into data (base64) on write."""
    obj.setdefault("type", "Opaque")
    string_data = obj.get("stringData")
    data = obj.get("data", {})
    if (isinstance(string_data, dict) and isinstance(data, dict)
            and all(isinstance(v, str) for v in string_data.values())):
        for k, v in string_data.items():
            data[k] = base64.b64encode(v.encode("utf-8")).decode("ascii")
        obj["data"] = data
        del obj["stringData"]
    if obj.get("type") == "kubernetes.io/tls" and isinstance(obj.get("data"), dict):
        for key in ("tls.crt", "tls.key"):
            if key not in obj["data"]:
                ctx.error(f"data[{key}]", "is required for a kubernetes.io/tls secret")


SECRET = KindSchema(
    {
        "data": map_of(_base64_value, key_rule=config_key_error),
        "stringData": map_of(string(), key_rule=config_key_error),
        "type": string(nonempty=True),
        "immutable": boolean,
    },
    post=_secret_post,
)


def _configmap_post(ctx: Ctx, obj: dict[str, Any], path: str) -> None:
    data, binary = obj.get("data"), obj.get("binaryData")
    if isinstance(data, dict) and isinstance(binary, dict):
        for k in binary:
            if k in data:
                ctx.error(f"binaryData[{k}]", "duplicate key: also present in data")


CONFIG_MAP = KindSchema(
    {
        "data": map_of(string(), key_rule=config_key_error),
        "binaryData": map_of(_base64_value, key_rule=config_key_error),
        "immutable": boolean,
    },
    post=_configmap_post,
)

# ---- the rest of core/v1 -------------------------------------------------------

ENDPOINT_ADDRESS = Obj(
    {"ip": string(rule=ip_error), "hostname": string(), "nodeName": string(),
     "targetRef": any_map},
    required=("ip",), unknown="warn")

ENDPOINT_PORT = Obj(
    {"name": string(), "port": PORT, "protocol": protocol(), "appProtocol": string()},
    required=("port",), unknown="warn", defaults={"protocol": "TCP"})

ENDPOINTS = KindSchema({
    "subsets": list_of(Obj({
        "addresses": list_of(ENDPOINT_ADDRESS),
        "notReadyAddresses": list_of(ENDPOINT_ADDRESS),
        "ports": list_of(ENDPOINT_PORT),
    }, unknown="warn")),
})

EVENT = KindSchema({
    "involvedObject": any_map,
    "reason": string(),
    "message": string(),
    "type": string(),
    "count": integer(0),
    "source": any_map,
    "firstTimestamp": any_value,
    "lastTimestamp": any_value,
    "eventTime": any_value,
    "series": any_map,
    "action": string(),
    "related": any_map,
    "reportingComponent": string(),
    "reportingInstance": string(),
})

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    ("", "Namespace"): KindSchema(
        {"spec": Obj({"finalizers": string_list}, unknown="keep")},
        name_rule=dns1123_label_error),
    ("", "ServiceAccount"): KindSchema({
        "secrets": any_list,
        "imagePullSecrets": any_list,
        "automountServiceAccountToken": boolean,
    }),
    ("", "Service"): KindSchema({"spec": SERVICE_SPEC}, name_rule=dns1035_label_error),
    ("", "Secret"): SECRET,
    ("", "ConfigMap"): CONFIG_MAP,
    ("", "Node"): KindSchema({"spec": any_map}),
    ("", "Endpoints"): ENDPOINTS,
    ("", "Event"): EVENT,
}
