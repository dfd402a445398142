"""Rules every kind shares: identity, metadata, message format, normalisation, batches."""

from __future__ import annotations

import copy
import glob
import os
from typing import TYPE_CHECKING, Any

import pytest

from zeromesh.api import (
    ALL_KINDS,
    KindInfo,
    LoadedDoc,
    ManifestError,
    ManifestErrors,
    Source,
    load_path,
    validate,
    validate_all,
)
from zeromesh.api.examples import minimal_manifest

if TYPE_CHECKING:
    from conftest import Api

DELETE = "<delete>"  # see conftest.patched
FILE = "t.yaml"  # what the api fixture names its manifests
SEED_DIR = "/work/shared/seed-demo"
KIND_VERSIONS = [(info, v) for info in ALL_KINDS for v in info.versions]


def _id(param: Any) -> str:
    info, version = param
    return f"{info.group or 'core'}/{version}/{info.kind}"


@pytest.mark.parametrize("case", KIND_VERSIONS, ids=[_id(c) for c in KIND_VERSIONS])
def test_every_kind_and_version_round_trips(api: Api, case: tuple[KindInfo, str]) -> None:
    info, version = case
    body = minimal_manifest(info, version=version, namespace="ns1")
    v = api.one(body)
    assert v.info is info
    assert v.source == Source(FILE, 2)
    assert v.obj["apiVersion"] == body["apiVersion"] and v.obj["kind"] == info.kind
    assert v.key == (info.resource, "ns1" if info.namespaced else "", "demo")
    assert ("namespace" in v.obj["metadata"]) is info.namespaced
    again = validate(LoadedDoc(v.source, v.obj))
    assert again.obj == v.obj, "normalisation must be idempotent"
    assert again.warnings == v.warnings


@pytest.mark.parametrize("info", ALL_KINDS, ids=lambda i: f"{i.group or 'core'}/{i.kind}")
def test_validated_object_is_a_deep_copy(info: KindInfo) -> None:
    body = minimal_manifest(info)
    before = copy.deepcopy(body)
    v = validate(LoadedDoc(Source("f.yaml", 1), body))
    assert body == before, "the input must not be modified"

    def containers(x: Any) -> list[int]:
        if isinstance(x, dict):
            return [id(x), *(i for y in x.values() for i in containers(y))]
        if isinstance(x, list):
            return [id(x), *(i for y in x for i in containers(y))]
        return []

    assert not set(containers(v.obj)) & set(containers(body))


def test_namespace_defaults_and_cluster_scoped_namespace_is_dropped(api: Api) -> None:
    dep = api.minimal("apps", "Deployment", **{"metadata.namespace": DELETE})
    assert api.one(dep, ns="team-a").obj["metadata"]["namespace"] == "team-a"
    assert api.one(dep, ns="team-a").key == ("deployments.apps", "team-a", "demo")
    ns = api.minimal("", "Namespace", **{"metadata.namespace": "whatever"})
    v = api.one(ns)
    assert "namespace" not in v.obj["metadata"] and v.warnings == ()
    assert v.key == ("namespaces", "", "demo")
    explicit = api.minimal("", "Service", **{"metadata.namespace": "ns9"})
    assert api.one(explicit, ns="other").obj["metadata"]["namespace"] == "ns9"


def test_server_fields_are_dropped(api: Api) -> None:
    body = api.minimal("", "Service", **{
        "metadata.uid": "1234", "metadata.resourceVersion": "7",
        "metadata.creationTimestamp": "2024-01-01T00:00:00Z", "metadata.generation": 3,
        "metadata.managedFields": [{"manager": "kubectl"}], "metadata.selfLink": "/x",
        "status": {"loadBalancer": {}}, "metadata.generateName": "demo-",
    })
    v = api.one(body)
    assert v.warnings == ()
    assert set(v.obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(v.obj["metadata"]) == {"name", "namespace"}


def test_key_order_is_canonical(api: Api) -> None:
    body = api.minimal("", "ConfigMap", **{"metadata.labels": {"a": "b"}})
    body = {"data": body["data"], "metadata": {"labels": {"a": "b"}, "name": "demo"},
            "kind": "ConfigMap", "apiVersion": "v1"}
    obj = api.one(body).obj
    assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]
    assert list(obj["metadata"]) == ["name", "namespace", "labels"]


def test_missing_spec_becomes_empty(api: Api) -> None:
    body = api.minimal("security.istio.io", "AuthorizationPolicy", spec=DELETE)
    assert api.one(body).obj["spec"] == {}
    body = api.minimal("security.istio.io", "AuthorizationPolicy", spec=None)
    assert api.one(body).obj["spec"] == {}
    assert api.one(api.minimal("", "Namespace")).obj["spec"] == {}


def test_null_fields_mean_unset(api: Api) -> None:
    body = api.minimal("", "Service", **{"spec.clusterIP": None, "metadata.labels": None})
    obj = api.one(body).obj
    assert "clusterIP" not in obj["spec"] and "labels" not in obj["metadata"]


D = ("apps", "Deployment")
S = ("", "Service")
NS = ("", "Namespace")
ERRORS: list[tuple[tuple[str, str], dict[str, Any], str, str]] = [
    (D, {"metadata.name": DELETE}, "metadata.name", "is required"),
    (D, {"metadata.name": ""}, "metadata.name", "is required"),
    (D, {"metadata.name": DELETE, "metadata.generateName": "x-"}, "metadata.name",
     "generateName is not supported"),
    (D, {"metadata.name": "Echo_1"}, "metadata.name", "not a valid DNS-1123 subdomain"),
    (D, {"metadata.name": "a" * 254}, "metadata.name", "at most 253 characters"),
    (D, {"metadata.name": 12}, "metadata.name", "must be a string, got integer 12"),
    (NS, {"metadata.name": "a.b"}, "metadata.name", "not a valid DNS-1123 label"),
    (NS, {"metadata.name": "a" * 64}, "metadata.name", "not a valid DNS-1123 label"),
    (S, {"metadata.name": "1svc"}, "metadata.name", "not a valid DNS-1035 label"),
    (S, {"metadata.name": "svc.x"}, "metadata.name", "not a valid DNS-1035 label"),
    (D, {"metadata.namespace": "NS1"}, "metadata.namespace", "not a valid DNS-1123 label"),
    (D, {"metadata": ["x"]}, "metadata", "must be a map, got a list"),
    (D, {"metadata.labels": {"app": 1}}, "metadata.labels[app]",
     'must be a string, got integer 1; quote it in YAML: "1"'),
    (D, {"metadata.labels": {"enabled": True}}, "metadata.labels[enabled]",
     "got boolean true; quote it in YAML"),
    (D, {"metadata.labels": {"app": "a b"}}, "metadata.labels[app]", 'invalid value "a b"'),
    (D, {"metadata.labels": {"app": "x" * 64}}, "metadata.labels[app]", "at most 63"),
    (D, {"metadata.labels": {"-bad": "x"}}, "metadata.labels[-bad]", 'invalid key "-bad"'),
    (D, {"metadata.labels": {"Bad_Prefix/x": "y"}}, "metadata.labels[Bad_Prefix/x]",
     "prefix before '/' must be a DNS-1123 subdomain"),
    (D, {"metadata.labels": {"a/" + "x" * 64: "y"}}, "metadata.labels[a/" + "x" * 64 + "]",
     "name part must be at most 63"),
    (D, {"metadata.labels": ["app=x"]}, "metadata.labels", "must be a map, got a list"),
    (D, {"metadata.annotations": {"replicas": 3}}, "metadata.annotations[replicas]",
     'quote it in YAML: "3"'),
    (D, {"metadata.annotations": {"bad key": "x"}}, "metadata.annotations[bad key]",
     "invalid key"),
    (D, {"spec": ["not", "a", "map"]}, "spec", "must be a map, got a list"),
    (D, {"spec": "x"}, "spec", 'must be a map, got string "x"'),
]


@pytest.mark.parametrize(("kind", "changes", "path", "fragment"), ERRORS)
def test_generic_errors(api: Api, kind: tuple[str, str], changes: dict[str, Any], path: str,
                        fragment: str) -> None:
    api.expect_error(api.minimal(*kind, **changes), path, fragment)


def test_labels_accept_valid_keys_and_empty_values(api: Api) -> None:
    labels = {"app": "", "app.kubernetes.io/name": "x.y-z_1", "k8s.io/a": "A" * 63,
              "a_b.c-d": "v"}
    v = api.one(api.minimal("apps", "Deployment", **{"metadata.labels": labels}))
    assert v.obj["metadata"]["labels"] == labels


IDENTITY_ERRORS = [
    ({"kind": "Pod", "metadata": {"name": "p"}}, "(Pod p): apiVersion: is required (Pod is "
                                                  "served as v1)"),
    ({"apiVersion": "v1", "metadata": {"name": "p"}}, "(p): kind: is required"),
    ({"apiVersion": 1, "kind": "Pod", "metadata": {"name": "p"}},
     "(Pod p): apiVersion: must be a string, got integer 1"),
    ({"apiVersion": "v1", "kind": ["Pod"], "metadata": {"name": "p"}},
     "(p): kind: must be a string, got a list"),
    ({"apiVersion": "x/v1", "kind": "Foo", "metadata": {"name": "f", "namespace": "n"}},
     '(Foo n/f): kind: unknown kind "Foo" (apiVersion "x/v1"); supported kinds: '
     "AuthorizationPolicy, ConfigMap, Deployment"),
    ({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}},
     '(Deployment default/d): apiVersion: Deployment is not served as "apps/v1beta1"; use '
     "one of: apps/v1"),
    ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "TCPRoute",
      "metadata": {"name": "t"}},
     'apiVersion: TCPRoute is not served as "gateway.networking.k8s.io/v1"; use one of: '
     "gateway.networking.k8s.io/v1alpha2"),
    ({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "d"}},
     'kind: unknown kind "Deployment" (apiVersion "v1"); did you mean apiVersion "apps/v1"?'),
    ({"apiVersion": "apps/v1", "kind": "deployment", "metadata": {"name": "d"}},
     'did you mean kind "Deployment"?'),
    ({"apiVersion": "v1", "kind": "Gateway", "metadata": {"name": "g"}},
     'did you mean apiVersion "networking.istio.io/v1" or "networking.istio.io/v1beta1" or '
     '"networking.istio.io/v1alpha3" or "gateway.networking.k8s.io/v1"'),
    ({"apiVersion": "kind.x-k8s.io/v1alpha4", "kind": "Cluster", "name": "ambient"},
     '(Cluster): kind: unknown kind "Cluster"'),
]


@pytest.mark.parametrize(("body", "fragment"), IDENTITY_ERRORS)
def test_identity_errors(api: Api, body: dict[str, Any], fragment: str) -> None:
    messages = api.errors(body)
    assert len(messages) >= 1
    assert all(m.startswith(f"{FILE}: document 2 (") for m in messages)
    assert any(fragment in m for m in messages), messages


def test_validate_raises_single_error_or_all_of_them() -> None:
    src = Source("f.yaml", 1)
    one = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 0}]}}
    with pytest.raises(ManifestError) as info:
        validate(LoadedDoc(src, one))
    assert not isinstance(info.value, ManifestErrors)
    assert str(info.value) == ("f.yaml: document 1 (Service default/s): spec.ports[0].port: 0 "
                               "is out of range 1-65535")
    two = copy.deepcopy(one)
    two["spec"]["ports"].append({"port": 70000})
    with pytest.raises(ManifestErrors) as many:
        validate(LoadedDoc(src, two))
    assert len(many.value.errors) == 4  # two ranges, two missing names


def test_validate_rejects_non_mapping_body() -> None:
    with pytest.raises(ManifestError, match=r"f\.yaml: document 1: expected a Kubernetes object"):
        validate(LoadedDoc(Source("f.yaml", 1), ["x"]))  # type: ignore[arg-type]


def test_unknown_top_level_and_metadata_fields_warn_and_are_dropped(api: Api) -> None:
    body = api.minimal("", "ConfigMap", extra=1, **{"metadata.colour": "red"})
    v = api.one(body)
    assert "extra" not in v.obj and "colour" not in v.obj["metadata"]
    prefix = api.prefix(body)
    assert f"{prefix}: extra: field is not known to zeromesh and is ignored" in v.warnings
    assert f"{prefix}: metadata.colour: field is not known to zeromesh and is ignored" in (
        v.warnings)


# ---- batches ------------------------------------------------------------------------


def test_validate_all_collects_every_error_of_every_document(api: Api) -> None:
    good = api.minimal("", "ConfigMap")
    bad_svc = api.minimal("", "Service", **{"metadata.name": "svc", "spec.ports[0].port": 0})
    bad_dep = api.minimal("apps", "Deployment", **{"metadata.name": "dep",
                                                   "spec.replicas": -1})
    unknown = {"apiVersion": "x/v1", "kind": "Foo", "metadata": {"name": "f"}}
    messages = api.errors(good, bad_svc, bad_dep, unknown)
    assert messages[0].startswith(
        f"{FILE}: document 3 (Service ns1/svc): spec.ports[0].port: 0 is out of range")
    assert messages[1].startswith(
        f"{FILE}: document 4 (Deployment ns1/dep): spec.replicas: -1 must not be negative")
    assert messages[2].startswith(f'{FILE}: document 5 (Foo f): kind: unknown kind "Foo"')
    assert len(messages) == 3


def test_validate_all_reports_duplicates(api: Api) -> None:
    a = api.minimal("", "ConfigMap")
    b = api.minimal("", "ConfigMap", **{"data.key": "other"})
    c = api.minimal("", "ConfigMap", **{"metadata.namespace": "ns2"})
    ap1 = api.minimal("security.istio.io", "AuthorizationPolicy")
    ap2 = api.minimal("security.istio.io", "AuthorizationPolicy",
                      apiVersion="security.istio.io/v1beta1")
    messages = api.errors(a, b, c, ap1, ap2)
    assert messages == [
        f"{FILE}: document 3 (ConfigMap ns1/demo): metadata.name: duplicate: ConfigMap "
        f"ns1/demo is also defined in {FILE}: document 2",
        f"{FILE}: document 6 (AuthorizationPolicy ns1/demo): metadata.name: duplicate: "
        f"AuthorizationPolicy ns1/demo is also defined in {FILE}: document 5",
    ]


def test_same_name_in_different_kinds_is_fine(api: Api) -> None:
    istio = api.minimal("networking.istio.io", "Gateway")
    k8s = api.minimal("gateway.networking.k8s.io", "Gateway")
    assert [v.key[0] for v in api.ok(istio, k8s)] == [
        "gateways.networking.istio.io", "gateways.gateway.networking.k8s.io"]


def test_validate_all_keeps_order_and_warnings(api: Api) -> None:
    bodies = [api.minimal("", "Namespace"), api.minimal(
        "", "Pod", **{"spec.containers[0].resources": {"limits": {"cpu": "1"}}})]
    out = api.ok(*bodies)
    assert [v.info.kind for v in out] == ["Namespace", "Pod"]
    assert out[0].warnings == () and len(out[1].warnings) == 1


def test_validate_all_of_nothing() -> None:
    assert validate_all([]) == []


# ---- the reference scenario -----------------------------------------------------------

SEED_FILES = sorted(glob.glob(os.path.join(SEED_DIR, "*.yaml")))
needs_seed = pytest.mark.skipif(not os.path.isdir(SEED_DIR),
                                reason=f"{SEED_DIR} (the reference demo) is not present")


@needs_seed
@pytest.mark.parametrize("path", [p for p in SEED_FILES if not p.endswith("kind-cluster.yaml")],
                         ids=os.path.basename)
def test_seed_demo_files_validate(path: str) -> None:
    validated = validate_all(load_path(path))
    assert validated
    for v in validated:
        assert validate(LoadedDoc(v.source, v.obj)).obj == v.obj
        for w in v.warnings:
            assert w.startswith(f"{path}: document ")


@needs_seed
def test_seed_demo_whole_directory_validates_except_the_kind_cluster() -> None:
    docs = [d for d in load_path(SEED_DIR) if not d.source.file.endswith("kind-cluster.yaml")]
    kinds = {v.info.kind for v in validate_all(docs)}
    assert {"Namespace", "ServiceAccount", "Service", "Deployment", "AuthorizationPolicy",
            "VirtualService", "DestinationRule", "Gateway"} <= kinds


@needs_seed
def test_seed_demo_kind_cluster_is_an_unknown_kind() -> None:
    path = os.path.join(SEED_DIR, "kind-cluster.yaml")
    with pytest.raises(ManifestErrors) as info:
        validate_all(load_path(path))
    (message,) = [str(e) for e in info.value.errors]
    assert message.startswith(
        f'{path}: document 1 (Cluster): kind: unknown kind "Cluster" (apiVersion '
        f'"kind.x-k8s.io/v1alpha4"); supported kinds: ')


@needs_seed
def test_seed_demo_normalised_details() -> None:
    by_name = {v.obj["metadata"]["name"]: v
               for p in SEED_FILES if not p.endswith("kind-cluster.yaml")
               for v in validate_all(load_path(p))}
    svc = by_name["sleep-service-ns1"].obj["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == [{"port": 80, "name": "http", "protocol": "TCP", "targetPort": 80}]
    dep = by_name["sleep-depl-ns1"].obj["spec"]["template"]["spec"]
    assert dep["restartPolicy"] == "Always"
    assert dep["serviceAccountName"] == "sleep-service-account-ns1"
    assert by_name["deny-all"].obj["spec"] == {}
    waypoint = by_name["echo-service-account-ns2-gw"]
    assert waypoint.info.group == "gateway.networking.k8s.io"
    assert waypoint.obj["metadata"]["annotations"] == {
        "istio.io/for-service-account": "echo-service-account-ns2"}
    gw = by_name["gateway-ns1"]
    assert gw.info.group == "networking.istio.io"
    warned = [w for v in by_name.values() for w in v.warnings]
    assert warned and all("imagePullPolicy" in w for w in warned)
