"""What the API does to the store: apply, delete, label, status, events (no HTTP here).

Apply is all-or-nothing per invocation: every document is validated, then
checked against what is stored, and only then written in one batch. Labels and
annotations follow kubectl's three-way merge (the last applied configuration is
kept in the same annotation kubectl uses) so labels added by `zeromesh label`
survive a re-apply of the manifest that did not mention them.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.api import LoadedDoc, Source, Validated, validate_all
from zeromesh.controlplane import objects as o
from zeromesh.controlplane.controllers import Controllers
from zeromesh.controlplane.store import Obj, SqliteStore
from zeromesh.errors import ManifestError, ManifestErrors, NotFound, ZeromeshError

log = logging.getLogger("zeromesh.api")

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "ownerReferences")


class Refused(ZeromeshError):
    """The request is understood but not allowed; maps to HTTP 4xx with this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ApplyResult:
    results: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def where(v: Validated) -> str:
    md = v.obj["metadata"]
    ident = f"{md['namespace']}/{md['name']}" if v.info.namespaced else md["name"]
    return f"{v.source} ({v.info.kind} {ident})"


def docs_from_wire(documents: Iterable[Mapping[str, Any]]) -> list[LoadedDoc]:
    return [LoadedDoc(Source(str(d["file"]), int(d["document"])), d["body"]) for d in documents]


class Operations:
    def __init__(self, store: SqliteStore, controllers: Controllers) -> None:
        self.store = store
        self.controllers = controllers

    # ---- apply -----------------------------------------------------------
    def apply(self, documents: list[LoadedDoc], default_namespace: str) -> ApplyResult:
        validated = validate_all(documents, default_namespace)
        errors: list[ManifestError] = []
        batch_namespaces = {v.obj["metadata"]["name"] for v in validated
                            if v.info.resource == "namespaces"}
        plans: list[tuple[Validated, Obj | None, Obj]] = []
        for v in validated:
            resource, ns, name = v.key
            live = self.store.get(resource, ns, name)
            try:
                self._check(v, live, batch_namespaces)
                plans.append((v, live, self._merge(v, live)))
            except Refused as e:
                errors.append(ManifestError(f"{where(v)}: {e}"))
        if errors:
            raise ManifestErrors(errors)
        out = ApplyResult()
        with self.store.batch():
            for v, live, new in plans:
                resource, ns, name = v.key
                out.warnings.extend(v.warnings)
                if live is not None and _same(live, new):
                    action = "unchanged"
                else:
                    self.store.put(resource, new)
                    action = "configured" if live is not None else "created"
                out.results.append({"resource": resource, "kind": v.info.kind,
                                    "namespace": ns, "name": name, "action": action})
        return out

    def _check(self, v: Validated, live: Obj | None, batch_namespaces: set[str]) -> None:
        resource, ns, name = v.key
        if v.info.namespaced:
            nsobj = self.store.get("namespaces", "", ns)
            if nsobj is None and ns not in batch_namespaces:
                raise Refused(f"metadata.namespace: namespace {ns!r} not found "
                              "(create it first or include it in the same apply)")
            if nsobj is not None and o.is_terminating(nsobj):
                raise Refused(f"metadata.namespace: namespace {ns!r} is being deleted")
        if resource == "nodes" and live is None:
            names = ", ".join(n["metadata"]["name"] for n in self.store.list("nodes"))
            raise Refused(f"metadata.name: node {name!r} does not exist in this cluster "
                          f"(nodes: {names}); nodes are made by `zeromesh up --nodes N`")
        if live is None:
            return
        if resource == "services":
            want = v.obj.get("spec", {}).get("clusterIP")
            have = live.get("spec", {}).get("clusterIP")
            if want and have and want != have:
                raise Refused(f"spec.clusterIP: field is immutable (is {have}, manifest says {want})")
        if resource == "pods":
            want_spec = copy.deepcopy(v.obj.get("spec", {}))
            have_spec = copy.deepcopy(live.get("spec", {}))
            if "nodeName" not in want_spec:
                have_spec.pop("nodeName", None)
            if want_spec != have_spec:
                raise Refused("spec: Forbidden: pod updates may not change fields of the spec; "
                              "delete the pod and apply it again, or use a Deployment")
        if o.is_terminating(live):
            raise Refused("metadata.deletionTimestamp: the object is being deleted; retry shortly")

    def _merge(self, v: Validated, live: Obj | None) -> Obj:
        new = copy.deepcopy(v.obj)
        md = new["metadata"]
        applied = json.dumps(v.obj, sort_keys=True, separators=(",", ":"))
        if live is None:
            md["uid"] = o.new_uid()
            md["creationTimestamp"] = o.now()
            if "spec" in new:
                md["generation"] = 1
        else:
            lmd = live["metadata"]
            prev = json.loads((lmd.get("annotations") or {}).get(LAST_APPLIED, "{}"))
            prev_md = prev.get("metadata", {})
            for fld in ("labels", "annotations"):
                kept = {k: val for k, val in (lmd.get(fld) or {}).items()
                        if k not in (prev_md.get(fld) or {}) and k != LAST_APPLIED}
                kept.update(md.get(fld) or {})
                if kept:
                    md[fld] = kept
                else:
                    md.pop(fld, None)
            for k in SYSTEM_META:
                if k in lmd:
                    md[k] = copy.deepcopy(lmd[k])
            if "status" in live:
                new["status"] = copy.deepcopy(live["status"])
            if v.info.resource == "nodes":
                new["spec"] = copy.deepcopy(live.get("spec", {}))
            if v.info.resource == "services":
                lspec = live.get("spec", {})
                for k in ("clusterIP", "clusterIPs"):
                    if k in lspec and k not in new.get("spec", {}):
                        new.setdefault("spec", {})[k] = copy.deepcopy(lspec[k])
            if v.info.resource == "pods" and "nodeName" in live.get("spec", {}):
                new.setdefault("spec", {}).setdefault("nodeName", live["spec"]["nodeName"])
            if "spec" in new and new.get("spec") != live.get("spec"):
                md["generation"] = int(lmd.get("generation", 1)) + 1
        md.setdefault("annotations", {})[LAST_APPLIED] = applied
        return new

    # ---- delete ----------------------------------------------------------
    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            where_ = f"{namespace}/{name}" if namespace else name
            raise NotFound(f'{resource} "{where_}" not found')
        if resource == "nodes":
            raise Refused("nodes of the local cluster are removed by `zeromesh down`", 403)
        if resource == "pods":
            self.controllers.delete_pod(obj)
        elif resource == "namespaces":
            if namespace == "" and name in ("default", "kube-system", "istio-system"):
                raise Refused(f"namespace {name!r} is a system namespace and cannot be deleted", 403)
            if not o.is_terminating(obj):
                obj["metadata"]["deletionTimestamp"] = o.now()
                obj["status"] = {"phase": "Terminating"}
                self.store.put("namespaces", obj)
        else:
            self.store.delete(resource, namespace, name)
        return obj

    def delete_documents(self, documents: list[LoadedDoc],
                         default_namespace: str) -> list[dict[str, str]]:
        out = []
        for v in validate_all(documents, default_namespace):
            resource, ns, name = v.key
            try:
                self.delete(resource, ns, name)
                action = "deleted"
            except NotFound:
                action = "not found"
            out.append({"resource": resource, "kind": v.info.kind, "namespace": ns,
                        "name": name, "action": action})
        return out

    def finalize_pod(self, namespace: str, name: str, uid: str) -> None:
        """The runner has stopped the pod and removed its namespace."""
        pod = self.store.get("pods", namespace, name)
        if pod is not None and pod["metadata"].get("uid") == uid:
            self.store.delete("pods", namespace, name)

    # ---- label -----------------------------------------------------------
    def label(self, resource: str, namespace: str, name: str, set_: Mapping[str, str],
              remove: Iterable[str], overwrite: bool) -> tuple[Obj, bool]:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            where_ = f"{namespace}/{name}" if namespace else name
            raise NotFound(f'{resource} "{where_}" not found')
        lbls = dict(obj["metadata"].get("labels") or {})
        before = dict(lbls)
        for k, val in set_.items():
            if k in lbls and lbls[k] != val and not overwrite:
                raise Refused(f"'{k}' already has a value ({lbls[k]}), and --overwrite is false")
            lbls[k] = val
        for k in remove:
            lbls.pop(k, None)
        if lbls == before:
            return obj, False
        obj["metadata"]["labels"] = lbls
        return self.store.put(resource, obj), True

    # ---- runner-facing ---------------------------------------------------
    def put_status(self, resource: str, namespace: str, name: str, status: Obj,
                   uid: str | None = None) -> bool:
        obj = self.store.get(resource, namespace, name)
        if obj is None or (uid and obj["metadata"].get("uid") != uid):
            raise NotFound(f"{resource} {namespace}/{name} not found")
        if obj.get("status") == status:
            return False
        obj["status"] = status
        self.store.put(resource, obj)
        return True

    def emit_event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        """Aggregate repeats of the same event on the same object, as Kubernetes does."""
        md = involved["metadata"]
        ns = md.get("namespace") or "default"
        kind = involved.get("kind", "")
        for ev in self.store.iter_raw("events"):
            io = ev.get("involvedObject", {})
            if (ev["metadata"]["namespace"] == ns and io.get("name") == md["name"]
                    and io.get("kind") == kind and io.get("uid") == md.get("uid")
                    and ev.get("reason") == reason and ev.get("message") == message):
                updated = copy.deepcopy(ev)
                updated["count"] = int(ev.get("count", 1)) + 1
                updated["lastTimestamp"] = o.now()
                self.store.put("events", updated)
                return
        now = o.now()
        self.store.put("events", {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{md['name']}.{secrets.token_hex(8)}", "namespace": ns,
                         "uid": o.new_uid(), "creationTimestamp": now},
            "involvedObject": {"kind": kind, "name": md["name"], "namespace": ns,
                               "uid": md.get("uid", "")},
            "type": type_, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "zeromesh"},
        })
        log.info("event %s %s %s/%s: %s", type_, reason, ns, md["name"], message)


def _same(live: Obj, new: Obj) -> bool:
    a = copy.deepcopy(live)
    a["metadata"].pop("resourceVersion", None)
    return a == new
