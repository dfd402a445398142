"""Rules for what runs: Pod specs, Pods, Deployments and ReplicaSets.

Pods on the local cluster are network namespaces running real processes, so a
lot of Kubernetes' pod spec (resources, probes, volumes, security contexts)
has nothing to act on. Those fields are kept and produce one warning each, so
a manifest written for Kubernetes applies unchanged while the user learns what
is not honoured. Fields that would change the network model (hostNetwork) are
refused outright.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zeromesh.api.core import PORT, protocol
from zeromesh.api.names import dns1123_label_error, dns1123_subdomain_error, iana_svc_name_error
from zeromesh.api.schema import (
    Check,
    Ctx,
    KindSchema,
    Obj,
    annotation_map,
    any_list,
    any_map,
    boolean,
    child,
    extend,
    integer,
    label_map,
    list_of,
    present,
    string,
    string_list,
)
from zeromesh.api.selectors import LABEL_SELECTOR, is_empty_selector, match_label_selector

NOT_HONOURED = "not honoured by the local cluster; accepted and ignored"

_FIELD_PATHS = frozenset({
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
    "status.podIPs",
})
_KEYED_FIELD_PATH = re.compile(r"^metadata\.(labels|annotations)\['[^']+'\]$")
_ENV_SOURCES = ("fieldRef", "secretKeyRef", "configMapKeyRef", "resourceFieldRef")


def _field_path_rule(s: str) -> str | None:
    if s in _FIELD_PATHS or _KEYED_FIELD_PATH.match(s):
        return None
    return (f"unsupported fieldPath {json.dumps(s)}; supported: " + ", ".join(sorted(_FIELD_PATHS))
            + ", metadata.labels['<key>'], metadata.annotations['<key>']")


def _env_source_post(ctx: Ctx, src: dict[str, Any], path: str) -> None:
    if len(present(src, _ENV_SOURCES)) != 1:
        ctx.error(path, "must set exactly one of: " + ", ".join(_ENV_SOURCES))


def _key_ref() -> Obj:
    return Obj({"name": string(nonempty=True, rule=dns1123_subdomain_error),
                "key": string(nonempty=True), "optional": boolean},
               required=("name", "key"), unknown="warn")


ENV_SOURCE = Obj(
    {
        "fieldRef": Obj({"fieldPath": string(rule=_field_path_rule), "apiVersion": string()},
                        required=("fieldPath",), unknown="warn"),
        "secretKeyRef": _key_ref(),
        "configMapKeyRef": _key_ref(),
        "resourceFieldRef": any_map,
    },
    unknown="warn",
    warn={"resourceFieldRef": NOT_HONOURED},
    post=_env_source_post,
)


def _env_var_post(ctx: Ctx, env: dict[str, Any], path: str) -> None:
    if env.get("value") and "valueFrom" in env:
        ctx.error(child(path, "valueFrom"), "may not be set when value is not empty")


ENV_VAR = Obj(
    {"name": string(nonempty=True, rule=lambda s: "must not contain '='" if "=" in s else None),
     "value": string(), "valueFrom": ENV_SOURCE},
    required=("name",), unknown="warn", post=_env_var_post)

CONTAINER_PORT = Obj(
    {
        "containerPort": PORT,
        "name": string(rule=iana_svc_name_error),
        "protocol": protocol(),
        "hostPort": PORT,
        "hostIP": string(),
    },
    required=("containerPort",),
    unknown="warn",
    defaults={"protocol": "TCP"},
    warn={"hostPort": NOT_HONOURED + " (reach pods through Services)",
          "hostIP": NOT_HONOURED},
)

CONTAINER = Obj(
    {
        "name": string(nonempty=True, rule=dns1123_label_error),
        "image": string(nonempty=True),
        "command": string_list,
        "args": string_list,
        "workingDir": string(),
        "env": list_of(ENV_VAR),
        "envFrom": list_of(any_map),
        "ports": list_of(CONTAINER_PORT, unique="name"),
        "imagePullPolicy": string(enum=("Always", "IfNotPresent", "Never")),
        "resources": any_map,
        "livenessProbe": any_map,
        "readinessProbe": any_map,
        "startupProbe": any_map,
        "securityContext": any_map,
        "volumeMounts": any_list,
        "lifecycle": any_map,
        # Always present in `get -o yaml` round trips; harmless.
        "terminationMessagePath": string(),
        "terminationMessagePolicy": string(),
    },
    required=("name", "image"),
    unknown="warn",
    warn={
        "imagePullPolicy": "not honoured: the local cluster resolves images through its image "
                           "table; accepted and ignored",
        "resources": NOT_HONOURED + " (no CPU or memory limits are applied)",
        "livenessProbe": NOT_HONOURED + " (probes are not run)",
        "readinessProbe": NOT_HONOURED + " (probes are not run; the pod is ready once started)",
        "startupProbe": NOT_HONOURED + " (probes are not run)",
        "securityContext": NOT_HONOURED,
        "volumeMounts": NOT_HONOURED + " (volumes are not mounted)",
        "lifecycle": NOT_HONOURED + " (lifecycle hooks are not run)",
    },
)


def _pod_spec_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    alias = spec.pop("serviceAccount", None)
    if isinstance(alias, str) and alias:
        if "serviceAccountName" not in spec:
            spec["serviceAccountName"] = alias
        elif spec["serviceAccountName"] != alias:
            ctx.warn(child(path, "serviceAccount"),
                     "deprecated alias differs from serviceAccountName and is ignored")
    spec.setdefault("serviceAccountName", "default")
    if spec.get("hostNetwork") is True:
        ctx.error(child(path, "hostNetwork"), "hostNetwork is not supported by the local "
                                              "cluster (every pod has its own network namespace)")
    seen: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        items = spec.get(field)
        for i, c in enumerate(items if isinstance(items, list) else []):
            name = c.get("name") if isinstance(c, dict) else None
            if not isinstance(name, str):
                continue
            where = f"{child(path, field)}[{i}]"
            if name in seen and not seen[name].startswith(child(path, field) + "["):
                ctx.error(child(where, "name"), f'duplicate name "{name}" (also used by '
                                                f"{seen[name]})")
            seen.setdefault(name, where)


POD_SPEC = Obj(
    {
        "containers": list_of(CONTAINER, min_items=1, unique="name"),
        "initContainers": list_of(CONTAINER, unique="name"),
        "volumes": any_list,
        "securityContext": any_map,
        "tolerations": any_list,
        "affinity": any_map,
        "hostNetwork": boolean,
        "imagePullSecrets": any_list,
        "terminationGracePeriodSeconds": integer(0),
        "nodeSelector": label_map,
        "serviceAccountName": string(rule=dns1123_subdomain_error),
        "serviceAccount": string(rule=dns1123_subdomain_error),
        "nodeName": string(rule=dns1123_subdomain_error),
        "restartPolicy": string(enum=("Always", "OnFailure", "Never")),
    },
    required=("containers",),
    unknown="warn",
    defaults={"restartPolicy": "Always"},
    warn={
        "initContainers": "init containers are not run by the local cluster",
        "volumes": NOT_HONOURED + " (volumes are not provided)",
        "securityContext": NOT_HONOURED,
        "tolerations": NOT_HONOURED + " (nodes have no taints)",
        "affinity": NOT_HONOURED + " (use nodeSelector or nodeName)",
    },
    post=_pod_spec_post,
)


def _template_spec_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    _pod_spec_post(ctx, spec, path)
    if spec.get("restartPolicy") not in ("Always", None):
        ctx.error(child(path, "restartPolicy"), 'unsupported value "'
                  f'{spec["restartPolicy"]}"; a Deployment\'s pods must use "Always"')


TEMPLATE = Obj(
    {
        "metadata": Obj({"labels": label_map, "annotations": annotation_map, "name": string(),
                         "namespace": string(), "generateName": string()},
                        unknown="warn",
                        drop=frozenset({"creationTimestamp", "uid", "resourceVersion"})),
        "spec": extend(POD_SPEC, post=_template_spec_post),
    },
    required=("spec",),
    unknown="warn",
)


def _workload_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    selector, template = spec.get("selector"), spec.get("template")
    if not isinstance(selector, dict) or not isinstance(template, dict):
        return
    if is_empty_selector(selector):
        ctx.error(child(path, "selector"), "must not be empty: set matchLabels (an empty "
                                           "selector would select every pod)")
        return
    meta = template.get("metadata")
    have = meta.get("labels") if isinstance(meta, dict) else None
    match_labels = selector.get("matchLabels", {})
    exprs = selector.get("matchExpressions", [])
    if not isinstance(match_labels, dict) or not isinstance(exprs, list):
        return  # already reported
    if not all(isinstance(e, dict) for e in exprs):
        return
    if not match_label_selector(selector, have if isinstance(have, dict) else {}):
        ctx.error(child(path, "selector"),
                  f"does not match {child(path, 'template')}.metadata.labels")


_WORKLOAD_FIELDS: dict[str, Check] = {
    "replicas": integer(0),
    "selector": LABEL_SELECTOR,
    "template": TEMPLATE,
    "minReadySeconds": integer(0),
}

REPLICA_SET_SPEC = Obj(_WORKLOAD_FIELDS, required=("selector", "template"), unknown="warn",
                       defaults={"replicas": 1}, post=_workload_post)

DEPLOYMENT_SPEC = extend(REPLICA_SET_SPEC, fields={
    "strategy": any_map,
    "revisionHistoryLimit": integer(0),
    "progressDeadlineSeconds": integer(1),
    "paused": boolean,
})

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    ("", "Pod"): KindSchema({"spec": POD_SPEC}),
    ("apps", "Deployment"): KindSchema({"spec": DEPLOYMENT_SPEC}),
    ("apps", "ReplicaSet"): KindSchema({"spec": REPLICA_SET_SPEC}),
}
