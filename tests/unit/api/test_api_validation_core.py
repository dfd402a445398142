"""Core and apps kinds: Service, Pod spec, Deployment, Secret, ConfigMap and friends."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api

DELETE = "<delete>"  # see conftest.patched
SVC = ("", "Service")
POD = ("", "Pod")
DEP = ("apps", "Deployment")
RS = ("apps", "ReplicaSet")
SECRET = ("", "Secret")
CM = ("", "ConfigMap")
C0 = "spec.containers[0]"
T = "spec.template.spec"
TC0 = f"{T}.containers[0]"

ERRORS: list[tuple[tuple[str, str], dict[str, Any], str, str]] = [
    # Service
    (SVC, {"spec.type": "ExternalName", "spec.externalName": "x.example.com"}, "spec.type",
     "ExternalName services are not supported"),
    (SVC, {"spec.type": "Bogus"}, "spec.type",
     'unsupported value "Bogus"; must be one of: ClusterIP, NodePort, LoadBalancer'),
    (SVC, {"spec.ports[0].port": 70000}, "spec.ports[0].port", "70000 is out of range 1-65535"),
    (SVC, {"spec.ports[0].port": 0}, "spec.ports[0].port", "0 is out of range 1-65535"),
    (SVC, {"spec.ports[0].port": "80"}, "spec.ports[0].port",
     'must be an integer, got string "80"; remove the quotes'),
    (SVC, {"spec.ports[0].port": DELETE, "spec.ports[0].targetPort": 80}, "spec.ports[0].port",
     "is required"),
    (SVC, {"spec.ports[0].targetPort": 0}, "spec.ports[0].targetPort", "out of range 1-65535"),
    (SVC, {"spec.ports[0].targetPort": "8080"}, "spec.ports[0].targetPort",
     "not a valid port name"),
    (SVC, {"spec.ports[0].targetPort": "very-long-port-name"}, "spec.ports[0].targetPort",
     "at most 15 characters"),
    (SVC, {"spec.ports[0].targetPort": 1.5}, "spec.ports[0].targetPort",
     "must be an integer or a string"),
    (SVC, {"spec.ports[0].protocol": "SCTP"}, "spec.ports[0].protocol",
     "SCTP is not supported by the local cluster"),
    (SVC, {"spec.ports[0].protocol": "tcp"}, "spec.ports[0].protocol",
     'unsupported value "tcp"; must be one of: TCP, UDP, SCTP'),
    (SVC, {"spec.ports[1]": {"port": 81}}, "spec.ports[0].name",
     "is required when the service has more than one port"),
    (SVC, {"spec.ports[0].name": "a", "spec.ports[1]": {"port": 81, "name": "a"}},
     "spec.ports[1].name", 'duplicate name "a" (also used by spec.ports[0])'),
    (SVC, {"spec.ports[0].name": "a", "spec.ports[1]": {"port": 80, "name": "b"}},
     "spec.ports[1].port", "duplicate port 80/TCP (also used by spec.ports[0])"),
    (SVC, {"spec.ports[0].name": "Http"}, "spec.ports[0].name", "not a valid DNS-1123 label"),
    (SVC, {"spec.ports": {"port": 80}}, "spec.ports", "must be a list, got a map"),
    (SVC, {"spec.clusterIP": "10.0.0.300"}, "spec.clusterIP",
     'must be an IPv4 address or "None"'),
    (SVC, {"spec.clusterIP": "fd00::1"}, "spec.clusterIP", 'must be an IPv4 address or "None"'),
    (SVC, {"spec.selector": {"app": 1}}, "spec.selector[app]", 'quote it in YAML: "1"'),
    # Pod spec, through a Pod
    (POD, {"spec.containers": []}, "spec.containers", "must not be empty"),
    (POD, {"spec.containers": DELETE}, "spec.containers", "is required"),
    (POD, {f"{C0}.name": "Main"}, f"{C0}.name", "not a valid DNS-1123 label"),
    (POD, {f"{C0}.name": DELETE}, f"{C0}.name", "is required"),
    (POD, {"spec.containers[1]": {"name": "main", "image": "x"}}, "spec.containers[1].name",
     'duplicate name "main" (also used by spec.containers[0])'),
    (POD, {"spec.initContainers": [{"name": "main", "image": "x"}]}, f"{C0}.name",
     'duplicate name "main" (also used by spec.initContainers[0])'),
    (POD, {f"{C0}.image": DELETE}, f"{C0}.image", "is required"),
    (POD, {f"{C0}.image": ""}, f"{C0}.image", "must not be empty"),
    (POD, {f"{C0}.command": ["sleep", 10]}, f"{C0}.command[1]",
     'must be a string, got integer 10; quote it in YAML: "10"'),
    (POD, {f"{C0}.args": "--flag"}, f"{C0}.args", 'must be a list, got string "--flag"'),
    (POD, {f"{C0}.env": [{"name": "PORT", "value": 8080}]}, f"{C0}.env[0].value",
     'quote it in YAML: "8080"'),
    (POD, {f"{C0}.env": [{"name": "DEBUG", "value": True}]}, f"{C0}.env[0].value",
     "got boolean true; quote it in YAML"),
    (POD, {f"{C0}.env": [{"value": "x"}]}, f"{C0}.env[0].name", "is required"),
    (POD, {f"{C0}.env": [{"name": "A=B", "value": "x"}]}, f"{C0}.env[0].name",
     "must not contain '='"),
    (POD, {f"{C0}.env": [{"name": "A", "value": "x",
                          "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
     f"{C0}.env[0].valueFrom", "may not be set when value is not empty"),
    (POD, {f"{C0}.env": [{"name": "A", "valueFrom": {}}]}, f"{C0}.env[0].valueFrom",
     "must set exactly one of: fieldRef, secretKeyRef, configMapKeyRef, resourceFieldRef"),
    (POD, {f"{C0}.env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}]},
     f"{C0}.env[0].valueFrom.fieldRef.fieldPath", 'unsupported fieldPath "spec.x"'),
    (POD, {f"{C0}.env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
     f"{C0}.env[0].valueFrom.secretKeyRef.key", "is required"),
    (POD, {f"{C0}.env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"key": "k"}}}]},
     f"{C0}.env[0].valueFrom.configMapKeyRef.name", "is required"),
    (POD, {f"{C0}.ports": [{"containerPort": 70000}]}, f"{C0}.ports[0].containerPort",
     "70000 is out of range 1-65535"),
    (POD, {f"{C0}.ports": [{"name": "http"}]}, f"{C0}.ports[0].containerPort", "is required"),
    (POD, {f"{C0}.ports": [{"containerPort": 80, "name": "a-very-long-port-name"}]},
     f"{C0}.ports[0].name", "at most 15 characters"),
    (POD, {f"{C0}.ports": [{"containerPort": 80, "name": "http"},
                           {"containerPort": 81, "name": "http"}]},
     f"{C0}.ports[1].name", 'duplicate name "http"'),
    (POD, {f"{C0}.ports": [{"containerPort": 80, "protocol": "SCTP"}]},
     f"{C0}.ports[0].protocol", "SCTP is not supported"),
    (POD, {f"{C0}.imagePullPolicy": "Sometimes"}, f"{C0}.imagePullPolicy",
     "must be one of: Always, IfNotPresent, Never"),
    (POD, {"spec.hostNetwork": True}, "spec.hostNetwork", "hostNetwork is not supported"),
    (POD, {"spec.restartPolicy": "Sometimes"}, "spec.restartPolicy",
     "must be one of: Always, OnFailure, Never"),
    (POD, {"spec.nodeSelector": {"disk": 1}}, "spec.nodeSelector[disk]", "quote it"),
    (POD, {"spec.serviceAccountName": "Bad_SA"}, "spec.serviceAccountName",
     "not a valid DNS-1123 subdomain"),
    (POD, {"spec.terminationGracePeriodSeconds": -1}, "spec.terminationGracePeriodSeconds",
     "must not be negative"),
    # Deployment / ReplicaSet
    (DEP, {"spec.replicas": -1}, "spec.replicas", "-1 must not be negative"),
    (DEP, {"spec.replicas": "3"}, "spec.replicas", "remove the quotes"),
    (DEP, {"spec.replicas": True}, "spec.replicas", "must be an integer, got boolean true"),
    (DEP, {"spec.selector": DELETE}, "spec.selector", "is required"),
    (DEP, {"spec.template": DELETE}, "spec.template", "is required"),
    (DEP, {"spec.template.spec": DELETE}, "spec.template.spec", "is required"),
    (DEP, {"spec.selector.matchLabels": {"app": "other"}}, "spec.selector",
     "does not match spec.template.metadata.labels"),
    (DEP, {"spec.template.metadata": DELETE}, "spec.selector",
     "does not match spec.template.metadata.labels"),
    (DEP, {"spec.selector": {}}, "spec.selector", "must not be empty"),
    (DEP, {"spec.selector.matchExpressions": [{"key": "tier", "operator": "In"}]},
     "spec.selector.matchExpressions[0].values", "must not be empty when operator is In"),
    (DEP, {"spec.selector.matchExpressions": [{"key": "tier", "operator": "Exists",
                                               "values": ["a"]}]},
     "spec.selector.matchExpressions[0].values", "must be empty when operator is Exists"),
    (DEP, {"spec.selector.matchExpressions": [{"key": "tier", "operator": "Like"}]},
     "spec.selector.matchExpressions[0].operator", "must be one of: In, NotIn, Exists"),
    (DEP, {"spec.selector.matchExpressions": [{"operator": "Exists"}]},
     "spec.selector.matchExpressions[0].key", "is required"),
    (DEP, {"spec.selector.matchExpressions": [{"key": "tier", "operator": "Exists"}]},
     "spec.selector", "does not match spec.template.metadata.labels"),
    (DEP, {f"{T}.restartPolicy": "Never"}, f"{T}.restartPolicy",
     'a Deployment\'s pods must use "Always"'),
    (DEP, {f"{TC0}.ports": [{"containerPort": 70000}]}, f"{TC0}.ports[0].containerPort",
     "70000 is out of range 1-65535"),
    (DEP, {f"{TC0}.image": 5}, f"{TC0}.image", 'quote it in YAML: "5"'),
    (DEP, {"spec.revisionHistoryLimit": -2}, "spec.revisionHistoryLimit", "must not be negative"),
    (RS, {"spec.selector.matchLabels": {"app": "x"}}, "spec.selector", "does not match"),
    # Secret and ConfigMap
    (SECRET, {"data.key": "not base64!"}, "data[key]", "is not valid base64"),
    (SECRET, {"data.key": 5}, "data[key]", "must be a base64-encoded string, got integer 5"),
    (SECRET, {"data": {"bad key": "aGk="}}, "data[bad key]", 'invalid key "bad key"'),
    (SECRET, {"stringData": {"port": 5432}}, "stringData[port]", 'quote it in YAML: "5432"'),
    (SECRET, {"type": "kubernetes.io/tls"}, "data[tls.crt]",
     "is required for a kubernetes.io/tls secret"),
    (SECRET, {"immutable": "yes"}, "immutable", 'must be a boolean, got string "yes"'),
    (CM, {"data.port": 8080}, "data[port]", 'quote it in YAML: "8080"'),
    (CM, {"data.flag": False}, "data[flag]", "got boolean false; quote it in YAML"),
    (CM, {"data": {"a/b": "x"}}, "data[a/b]", "invalid key"),
    (CM, {"binaryData": {"key": "aGk="}}, "binaryData[key]", "duplicate key: also present"),
    (CM, {"binaryData": {"bin": "%%%"}}, "binaryData[bin]", "is not valid base64"),
    # the rest of core/v1
    (("", "Endpoints"), {"subsets[0].addresses[0].ip": "nope"}, "subsets[0].addresses[0].ip",
     '"nope" is not a valid IP address'),
    (("", "Endpoints"), {"subsets[0].ports[0].port": 0}, "subsets[0].ports[0].port",
     "out of range"),
    (("", "Event"), {"count": -1}, "count", "must not be negative"),
    (("", "ServiceAccount"), {"automountServiceAccountToken": "false"},
     "automountServiceAccountToken", "remove the quotes"),
    (("", "Node"), {"spec": "x"}, "spec", "must be a map"),
]


def _case_id(case: tuple[tuple[str, str], dict[str, Any], str, str]) -> str:
    return f"{case[0][1]}:{case[2]}"


@pytest.mark.parametrize("case", ERRORS, ids=[_case_id(c) for c in ERRORS])
def test_errors(api: Api, case: tuple[tuple[str, str], dict[str, Any], str, str]) -> None:
    kind, changes, path, fragment = case
    api.expect_error(api.minimal(*kind, **changes), path, fragment)


WARNINGS: list[tuple[tuple[str, str], dict[str, Any], str, str]] = [
    (SVC, {"spec.type": "NodePort"}, "spec.type",
     "NodePort is accepted but the local cluster treats it as ClusterIP"),
    (SVC, {"spec.type": "LoadBalancer"}, "spec.type", "treats it as ClusterIP"),
    (SVC, {"spec.externalIPs": ["1.2.3.4"]}, "spec.externalIPs", "not honoured"),
    (SVC, {"spec.frobnicate": 1}, "spec.frobnicate",
     "field is not known to zeromesh and is ignored"),
    (SVC, {"spec.ports[0].frob": 1}, "spec.ports[0].frob", "field is not known"),
    *[(POD, {f"{C0}.{field}": value}, f"{C0}.{field}", "not honoured")
      for field, value in [
          ("imagePullPolicy", "Always"), ("resources", {"limits": {"cpu": "1"}}),
          ("livenessProbe", {"httpGet": {"port": 80}}), ("readinessProbe", {"exec": {}}),
          ("startupProbe", {"tcpSocket": {"port": 80}}),
          ("securityContext", {"runAsUser": 1000}),
          ("volumeMounts", [{"name": "v", "mountPath": "/data"}]),
          ("lifecycle", {"preStop": {"exec": {"command": ["x"]}}}),
      ]],
    *[(POD, {f"spec.{field}": value}, f"spec.{field}", "not honoured")
      for field, value in [
          ("volumes", [{"name": "v", "emptyDir": {}}]), ("securityContext", {"fsGroup": 1}),
          ("tolerations", [{"operator": "Exists"}]), ("affinity", {"nodeAffinity": {}}),
      ]],
    (POD, {"spec.initContainers": [{"name": "init", "image": "x"}]}, "spec.initContainers",
     "init containers are not run by the local cluster"),
    (POD, {f"{C0}.ports": [{"containerPort": 80, "hostPort": 8080}]},
     f"{C0}.ports[0].hostPort", "not honoured"),
    (POD, {f"{C0}.tty": True}, f"{C0}.tty", "field is not known to zeromesh and is ignored"),
    (POD, {"spec.dnsPolicy": "ClusterFirst"}, "spec.dnsPolicy", "field is not known"),
    (POD, {f"{C0}.env": [{"name": "A", "valueFrom": {"resourceFieldRef": {
        "resource": "limits.cpu"}}}]}, f"{C0}.env[0].valueFrom.resourceFieldRef", "not honoured"),
    (POD, {"spec.serviceAccountName": "a", "spec.serviceAccount": "b"}, "spec.serviceAccount",
     "deprecated alias differs from serviceAccountName and is ignored"),
    (DEP, {f"{TC0}.readinessProbe": {"httpGet": {"port": 80}}}, f"{TC0}.readinessProbe",
     "probes are not run"),
    (DEP, {"spec.template.metadata.foo": 1}, "spec.template.metadata.foo", "field is not known"),
]


@pytest.mark.parametrize("case", WARNINGS, ids=[_case_id(c) for c in WARNINGS])
def test_warnings(api: Api, case: tuple[tuple[str, str], dict[str, Any], str, str]) -> None:
    kind, changes, path, fragment = case
    api.expect_warning(api.minimal(*kind, **changes), path, fragment)


@pytest.mark.parametrize("field", ["resources", "securityContext", "volumeMounts"])
def test_empty_unhonoured_fields_do_not_warn(api: Api, field: str) -> None:
    empty: Any = [] if field == "volumeMounts" else {}
    assert api.warnings(api.minimal(*POD, **{f"{C0}.{field}": empty})) == []


def test_each_unhonoured_field_warns_once(api: Api) -> None:
    body = api.minimal(*POD, **{f"{C0}.resources": {"limits": {}}, f"{C0}.lifecycle": {"x": 1},
                                "spec.volumes": [{"name": "v"}]})
    warnings = api.warnings(body)
    assert len(warnings) == 3
    assert all(w.startswith(api.prefix(body) + ": spec.") for w in warnings)


def test_unknown_fields_are_dropped_and_known_kept(api: Api) -> None:
    body = api.minimal(*POD, **{f"{C0}.tty": True, f"{C0}.resources": {"limits": {"cpu": 1}},
                                f"{C0}.terminationMessagePolicy": "File"})
    c = api.one(body).obj["spec"]["containers"][0]
    assert "tty" not in c
    assert c["resources"] == {"limits": {"cpu": 1}}
    assert c["terminationMessagePolicy"] == "File"


# ---- normalisation ----------------------------------------------------------------


def test_service_defaults(api: Api) -> None:
    spec = api.one(api.minimal(*SVC, **{"spec.ports[1]": {"port": 53, "name": "dns",
                                                          "protocol": "UDP",
                                                          "targetPort": "dns-udp"},
                                        "spec.ports[0].name": "http"})).obj["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [
        {"port": 80, "name": "http", "protocol": "TCP", "targetPort": 80},
        {"port": 53, "name": "dns", "protocol": "UDP", "targetPort": "dns-udp"},
    ]


@pytest.mark.parametrize(("cluster_ip", "kept"), [("None", True), ("10.96.0.10", True),
                                                  ("", False)])
def test_service_cluster_ip(api: Api, cluster_ip: str, kept: bool) -> None:
    spec = api.one(api.minimal(*SVC, **{"spec.clusterIP": cluster_ip})).obj["spec"]
    assert ("clusterIP" in spec) is kept


def test_headless_selectorless_service_without_ports(api: Api) -> None:
    v = api.one(api.minimal(*SVC, **{"spec.ports": [], "spec.selector": DELETE,
                                     "spec.clusterIP": "None"}))
    assert v.obj["spec"] == {"ports": [], "clusterIP": "None", "type": "ClusterIP"}


def test_pod_defaults(api: Api) -> None:
    spec = api.one(api.minimal(*POD, **{f"{C0}.ports": [{"containerPort": 80}]})).obj["spec"]
    assert spec["serviceAccountName"] == "default"
    assert spec["restartPolicy"] == "Always"
    assert spec["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"spec.serviceAccount": "legacy"}, "legacy"),
    ({"spec.serviceAccount": "legacy", "spec.serviceAccountName": "legacy"}, "legacy"),
    ({"spec.serviceAccountName": "new"}, "new"),
])
def test_service_account_alias(api: Api, changes: dict[str, Any], expected: str) -> None:
    v = api.one(api.minimal(*POD, **changes))
    assert v.obj["spec"]["serviceAccountName"] == expected
    assert "serviceAccount" not in v.obj["spec"]
    assert v.warnings == ()


def test_deployment_defaults_and_kept_fields(api: Api) -> None:
    body = api.minimal(*DEP, **{"spec.strategy": {"type": "Recreate"},
                                "spec.revisionHistoryLimit": 3,
                                "spec.progressDeadlineSeconds": 600, "spec.minReadySeconds": 5,
                                "spec.template.metadata.creationTimestamp": None})
    v = api.one(body)
    spec = v.obj["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"],
            spec["minReadySeconds"]) == (3, 600, 5)
    assert spec["template"]["metadata"] == {"labels": {"app": "demo"}}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert v.warnings == ()


@pytest.mark.parametrize("exprs", [
    [{"key": "app", "operator": "In", "values": ["demo", "other"]}],
    [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
    [{"key": "app", "operator": "Exists"}],
    [{"key": "tier", "operator": "DoesNotExist"}],
])
def test_deployment_match_expressions_that_match(api: Api, exprs: list[dict[str, Any]]) -> None:
    v = api.one(api.minimal(*DEP, **{"spec.selector.matchExpressions": exprs}))
    assert v.obj["spec"]["selector"]["matchExpressions"] == exprs


def test_deployment_replicas_zero_is_fine(api: Api) -> None:
    assert api.one(api.minimal(*DEP, **{"spec.replicas": 0})).obj["spec"]["replicas"] == 0


def test_secret_string_data_is_merged_into_data(api: Api) -> None:
    v = api.one(api.minimal(*SECRET, **{"stringData": {"password": "s3cret", "key": "new"}}))
    assert v.obj["type"] == "Opaque"
    assert "stringData" not in v.obj
    assert v.obj["data"] == {"key": base64.b64encode(b"new").decode(),
                             "password": base64.b64encode(b"s3cret").decode()}


def test_secret_tls_with_both_keys(api: Api) -> None:
    body = api.minimal(*SECRET, type="kubernetes.io/tls",
                       data={"tls.crt": "Y2VydA==", "tls.key": "a2V5"})
    assert api.one(body).obj["type"] == "kubernetes.io/tls"


def test_configmap_keeps_strings(api: Api) -> None:
    v = api.one(api.minimal(*CM, data={"port": "8080", "file.conf": "a\nb\n"},
                            binaryData={"blob": "AAEC"}))
    assert v.obj["data"] == {"port": "8080", "file.conf": "a\nb\n"}
    assert v.obj["binaryData"] == {"blob": "AAEC"}


def test_endpoints_port_protocol_default(api: Api) -> None:
    obj = api.one(api.minimal("", "Endpoints")).obj
    assert obj["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
