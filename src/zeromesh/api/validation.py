"""Validation and normalisation of loaded documents into storable objects.

``validate`` turns one LoadedDoc into a Validated (normalised deep copy plus
warnings) or raises ManifestError listing *every* problem in the document;
``validate_all`` does a batch, all-or-nothing, and also refuses the same object
twice in one batch. Every message reads
``<file>: document <n> (<Kind> <namespace>/<name>): <field path>: <what is wrong>``.

Normalisation is deterministic and idempotent (validating a normalised object
returns it unchanged), so re-applying a file is detectably a no-op. It fills
the defaults Kubernetes, Istio and the Gateway API fill, drops server-owned
fields (status, uid, resourceVersion, ...) that ``get -o yaml`` round trips
carry, and never adds any: the store owns those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zeromesh.api import core, gatewayapi, istio_networking, istio_security, workloads, zeromesh_kinds
from zeromesh.api.kinds import ALL_KINDS, KindInfo, find_kind, kinds_named, split_api_version
from zeromesh.api.manifest import LoadedDoc, Source
from zeromesh.api.names import dns1123_label_error
from zeromesh.api.schema import (
    Ctx,
    KindSchema,
    Obj,
    annotation_map,
    any_map,
    describe,
    label_map,
    list_of,
    string,
    string_list,
)
from zeromesh.errors import ManifestError, ManifestErrors

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    **core.SCHEMAS,
    **workloads.SCHEMAS,
    **istio_security.SCHEMAS,
    **istio_networking.SCHEMAS,
    **gatewayapi.SCHEMAS,
    **zeromesh_kinds.SCHEMAS,
}

SERVER_METADATA = frozenset({
    "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds",
})
"""Metadata the store sets; dropped from user input so `get -o yaml` output re-applies."""

_METADATA = Obj(
    {
        "name": string(),
        "namespace": string(),
        "labels": label_map,
        "annotations": annotation_map,
        "generateName": string(),
        "finalizers": string_list,
        "ownerReferences": list_of(any_map),
    },
    unknown="warn",
    drop=SERVER_METADATA,
)
_METADATA_ORDER = ("name", "namespace", "labels", "annotations")
_TOP_ORDER = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True, slots=True)
class Validated:
    """A document that passed validation: its kind, normalised object and warnings."""

    source: Source
    info: KindInfo
    obj: dict[str, Any]
    warnings: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity in the store: (resource, namespace or "", name)."""
        md = self.obj["metadata"]
        return (self.info.resource, md.get("namespace", ""), md["name"])


def describe_resource(kind: str | None, namespace: str | None, name: str | None) -> str:
    """``Deployment ns1/echo``, ``Namespace ns1`` or ``Deployment`` (no name yet)."""
    ident = f"{namespace}/{name}" if namespace and name else (name or "")
    return " ".join(p for p in (kind, ident) if p)


def _prefix(source: Source, kind: str | None, namespace: str | None, name: str | None) -> str:
    what = describe_resource(kind, namespace, name)
    return f"{source} ({what})" if what else str(source)


def _nonempty_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _unknown_kind_message(api_version: str, kind: str) -> str:
    msg = f"unknown kind {json.dumps(kind)} (apiVersion {json.dumps(api_version)})"
    same = kinds_named(kind)
    if not same:
        same = [k for k in ALL_KINDS if k.kind.lower() == kind.lower()]
        if same:
            msg += f"; did you mean kind {json.dumps(same[0].kind)}?"
    if same and same[0].kind == kind:
        versions = [v for k in same for v in k.api_versions]
        msg += "; did you mean apiVersion " + " or ".join(json.dumps(v) for v in versions) + "?"
    supported = sorted({k.kind for k in ALL_KINDS})
    return msg + "; supported kinds: " + ", ".join(supported)


def _resolve(ctx: Ctx, api_version: Any, kind: Any) -> KindInfo | None:
    if not isinstance(kind, str) or not kind:
        ctx.error("kind", "is required" if kind in (None, "")
                  else f"must be a string, got {describe(kind)}")
    if not isinstance(api_version, str) or not api_version:
        hint = ""
        if isinstance(kind, str) and kinds_named(kind):
            hint = " (" + kind + " is served as " + ", ".join(
                v for k in kinds_named(kind) for v in k.api_versions) + ")"
        ctx.error("apiVersion", ("is required" if api_version in (None, "")
                                 else f"must be a string, got {describe(api_version)}") + hint)
    if ctx.errors:
        return None
    group, version = split_api_version(api_version)
    info = find_kind(group, kind)
    if info is None:
        ctx.error("kind", _unknown_kind_message(api_version, kind))
        return None
    if version not in info.versions:
        ctx.error("apiVersion", f"{kind} is not served as {json.dumps(api_version)}; use one "
                                "of: " + ", ".join(info.api_versions))
        return None
    return info


def _check_metadata(ctx: Ctx, value: Any, info: KindInfo, schema: KindSchema,
                    default_namespace: str) -> dict[str, Any]:
    if value is None:
        value = {}
    md: dict[str, Any] = _METADATA(ctx, value, "metadata") if isinstance(value, dict) else {}
    if not isinstance(value, dict):
        ctx.error("metadata", f"must be a map, got {describe(value)}")
    name = md.get("name")
    if name is None or name == "":
        hint = " (generateName is not supported; set metadata.name)" if md.get(
            "generateName") else ""
        ctx.error("metadata.name", "is required" + hint)
    elif isinstance(name, str):
        msg = schema.name_rule(name)
        if msg:
            ctx.error("metadata.name", msg)
    md.pop("generateName", None)
    if info.namespaced:
        ns = md.get("namespace")
        if ns is None or ns == "":
            md["namespace"] = ns = default_namespace
        if isinstance(ns, str):
            msg = dns1123_label_error(ns)
            if msg:
                ctx.error("metadata.namespace", msg)
    else:
        md.pop("namespace", None)  # Kubernetes ignores it on cluster-scoped kinds
    ordered = {k: md[k] for k in _METADATA_ORDER if k in md}
    ordered.update((k, v) for k, v in md.items() if k not in ordered)
    return ordered


def validate(doc: LoadedDoc, default_namespace: str = "default") -> Validated:
    """Validate and normalise one document; raises ManifestError (ManifestErrors when
    the document has several problems), every message naming file, document,
    resource and field."""
    body = doc.body
    if not isinstance(body, dict):
        raise ManifestError(f"{doc.source}: expected a Kubernetes object (a map), got "
                            f"{describe(body)}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    raw_md: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
    name = _nonempty_str(raw_md.get("name"))
    namespace = _nonempty_str(raw_md.get("namespace"))
    info = None
    if isinstance(api_version, str) and isinstance(kind, str):
        info = find_kind(split_api_version(api_version)[0], kind)
    if info is not None:
        namespace = (namespace or default_namespace) if info.namespaced else None
    ctx = Ctx(_prefix(doc.source, _nonempty_str(kind), namespace, name))

    info = _resolve(ctx, api_version, kind)
    if info is None:
        raise _exception(ctx.errors)
    schema = SCHEMAS[(info.group, info.kind)]
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    out["metadata"] = _check_metadata(ctx, body.get("metadata"), info, schema,
                                      default_namespace)
    rest = {k: v for k, v in body.items() if k not in (*_TOP_ORDER, "status")}
    if "spec" in schema.fields and rest.get("spec") is None:
        rest["spec"] = {}
    out.update(Obj(schema.fields, unknown="warn", post=schema.post)(ctx, rest, ""))
    if ctx.errors:
        raise _exception(ctx.errors)
    return Validated(doc.source, info, out, tuple(ctx.warnings))


def _exception(errors: list[str]) -> ManifestError:
    """One problem: a ManifestError; several: ManifestErrors (itself a ManifestError)."""
    if len(errors) == 1:
        return ManifestError(errors[0])
    return ManifestErrors([ManifestError(e) for e in errors])


def validate_all(docs: Iterable[LoadedDoc],
                 default_namespace: str = "default") -> list[Validated]:
    """Validate a batch; raises ManifestErrors with every problem of every document, and
    for an object defined twice in the batch (apply is all-or-nothing)."""
    errors: list[ManifestError] = []
    out: list[Validated] = []
    first: dict[tuple[str, str, str], Validated] = {}
    for doc in docs:
        try:
            v = validate(doc, default_namespace)
        except ManifestErrors as e:
            errors.extend(e.errors)
            continue
        except ManifestError as e:
            errors.append(e)
            continue
        earlier = first.get(v.key)
        if earlier is None:
            first[v.key] = v
            out.append(v)
            continue
        md = v.obj["metadata"]
        what = describe_resource(v.info.kind, md.get("namespace"), md["name"])
        errors.append(ManifestError(
            f"{_prefix(v.source, v.info.kind, md.get('namespace'), md['name'])}: metadata.name: "
            f"duplicate: {what} is also defined in {earlier.source}"))
    if errors:
        raise ManifestErrors(errors)
    return out
