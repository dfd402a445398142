"""kubectl-like tables for `zeromesh get` (pure: dicts in, text out).

Users compare our output with what kubectl prints, so the columns, the cell
formats and the alignment follow kubectl's printers (k8s.io/kubernetes
pkg/printers/internalversion) and, for custom resources, the CRDs'
additionalPrinterColumns. Each resource is one entry in `COLUMN_SETS`; a
resource without an entry gets kubectl's generic NAME/AGE table.

Deliberate choices, where kubectl's behaviour could not be copied verbatim:

* Layout is kubectl's tabwriter (min cell width 6, padding 3) with trailing
  blanks stripped; the text has no final newline, and "" for no objects.
* A cell kubectl leaves empty (a missing custom-resource field) is empty here.
* Pods: a container counts as ready when `ready` is true and it is neither
  waiting nor terminated (kubectl also insists on `state.running`).
  Restartable (sidecar) init containers are treated as ordinary init containers.
* Deployments and replica sets: a missing `spec.replicas` means 1 (the API
  default); missing status counters mean 0.
* Nodes, wide: INTERNAL-IP and POD-CIDR (zeromesh's own; kubectl shows OS details).
* Gateway API gateways: PROGRAMMED is "Unknown" until the condition exists.
* `get gateway` (also `gateways`, `gw`) names Istio's and the Gateway API's kind;
  kubectl would pick one. Both are listed in one table (`render_gateways`):
  NAME, CLASS, ADDRESS, PROGRAMMED, AGE. CLASS is the Gateway API class, and
  `networking.istio.io` for Istio Gateways (they have no class; the group is
  what tells the two kinds apart, also for two gateways of the same name).
  ADDRESS is where traffic for the gateway arrives: `127.0.0.1:PORT` on the
  host for the ones the ingress gateway serves (Istio Gateways selecting
  `istio: ingressgateway`, or without a selector; class `istio`), taken from
  the first of their server/listener ports the ingress Service publishes;
  otherwise the Gateway's first status address (a waypoint's ClusterIP).
* Events are sorted by their LAST SEEN time, oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

Obj = Mapping[str, Any]

__all__ = ["COLUMN_SETS", "Column", "TableSpec", "age", "render_gateways", "render_table"]

# kubectl's printers.GetNewTabWriter: minwidth 6, padding 3.
_MIN_WIDTH = 6
_PADDING = 3
# kubectl truncates load-balancer addresses to this width unless -o wide.
_LB_WIDTH = 16
_NONE = "<none>"
_EPOCH = datetime.min.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- time


def _parse_time(timestamp: str | None) -> datetime | None:
    """RFC 3339 (with or without fractions) to an aware datetime; None if absent or bad."""
    if not timestamp:
        return None
    try:
        parsed = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(d: timedelta) -> str:
    """kubectl's duration.HumanDuration: 2-3 significant figures of a duration.

    <2m "Ns"; <10m "XmYs" ("Xm" when Y is 0); <3h "Xm"; <8h "XhYm" ("Xh"
    when Y is 0); <48h "Xh"; <8d "XdYh"; <2y "Xd"; <8y "XyYd"; else "Xy".
    Up to one second in the future reads "0s" (clock skew); more is "<invalid>".
    """
    us = d // timedelta(microseconds=1)
    seconds = int(us / 1_000_000)  # Go's int(d.Seconds()) truncates toward zero
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime) -> str:
    """How long ago `timestamp` was, as kubectl's AGE column shows it ("<unknown>" if absent).

    Follows kubectl's translateTimestampSince + duration.HumanDuration exactly,
    e.g. 119s → "119s", 125s → "2m5s", 600s → "10m", 3h20m → "3h20m", 9h → "9h",
    3d4h → "3d4h", 30d → "30d". A naive `now` is taken as UTC.
    """
    then = _parse_time(timestamp)
    if then is None:
        return "<unknown>"
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return human_duration(now - then)


# --------------------------------------------------------------------------- helpers


def _get(obj: Any, *path: str | int) -> Any:
    """Walk dicts/lists along `path`; None as soon as a step is missing."""
    cur = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                return None
            cur = cur[step]
        else:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(step)
        if cur is None:
            return None
    return cur


def _list(obj: Any, *path: str | int) -> list[Any]:
    value = _get(obj, *path)
    return value if isinstance(value, list) else []


def _map(obj: Any, *path: str | int) -> Mapping[str, Any]:
    value = _get(obj, *path)
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _go_json(value: Any) -> str:
    """Go's json.Marshal: compact, sorted keys, HTML-escaped (<, >, &)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _jsonpath_text(value: Any) -> str:
    """A custom-resource column cell, as kubectl's JSONPath printer renders one value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _go_json(value)
    return str(value)


def _condition(obj: Obj, ctype: str) -> Mapping[str, Any] | None:
    for cond in _list(obj, "status", "conditions"):
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


def _format_labels(labels: Mapping[str, Any]) -> str:
    """labels.FormatLabels: sorted k=v joined by commas, "<none>" when empty."""
    if not labels:
        return _NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _label_selector(selector: Any) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key."""
    if not isinstance(selector, Mapping):
        return ""
    reqs: list[tuple[str, str]] = [
        (k, f"{k}={v}") for k, v in _map(selector, "matchLabels").items()
    ]
    for expr in _list(selector, "matchExpressions"):
        key = _str(_get(expr, "key"))
        op = _get(expr, "operator")
        values = ",".join(sorted(_str(v) for v in _list(expr, "values")))
        if op == "In":
            reqs.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def _container_cells(containers: list[Any]) -> tuple[str, str]:
    names = ",".join(_str(_get(c, "name")) for c in containers)
    images = ",".join(_str(_get(c, "image")) for c in containers)
    return names, images


# --------------------------------------------------------------------------- table model


@dataclass(frozen=True, slots=True)
class _Ctx:
    now: datetime
    wide: bool


Cell = Callable[[Obj, _Ctx], str]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header and how to compute a cell. `wide` columns need -o wide."""

    header: str
    cell: Cell
    wide: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    """How one resource is printed. `namespaced=None`: decide from the objects."""

    columns: tuple[Column, ...]
    namespaced: bool | None = True
    sort_key: Callable[[Obj], Any] | None = None


def _age_of(path: tuple[str, ...]) -> Cell:
    return lambda o, c: age(_get(o, *path), c.now)


def _field(*path: str | int) -> Cell:
    """A custom-resource column reading one JSONPath-like field."""
    return lambda o, c: _jsonpath_text(_get(o, *path))


NAME = Column("NAME", lambda o, c: _str(_get(o, "metadata", "name")))
NAMESPACE = Column("NAMESPACE", lambda o, c: _str(_get(o, "metadata", "namespace")))
AGE = Column("AGE", _age_of(("metadata", "creationTimestamp")))


# --------------------------------------------------------------------------- pods


class _PodView(NamedTuple):
    ready: str
    status: str
    restarts: str


def _later(current: datetime | None, timestamp: Any) -> datetime | None:
    candidate = _parse_time(timestamp) if isinstance(timestamp, str) else None
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def _terminated_reason(term: Mapping[str, Any], prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + str(term["reason"])
    if _int(term.get("signal")):
        return f"{prefix}Signal:{_int(term.get('signal'))}"
    return f"{prefix}ExitCode:{_int(term.get('exitCode'))}"


def _pod_view(pod: Obj, now: datetime) -> _PodView:
    """kubectl's printPod: READY, STATUS and RESTARTS come out of one pass."""
    status = _map(pod, "status")
    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    sched = _condition(pod, "PodScheduled")
    if sched is not None and sched.get("reason") == "SchedulingGated":
        reason = "SchedulingGated"

    ready = 0
    restarts = 0
    last_restart: datetime | None = None
    initializing = False
    n_init = len(_list(pod, "spec", "initContainers"))
    for i, cs in enumerate(_list(status, "initContainerStatuses")):
        restarts += _int(_get(cs, "restartCount"))
        last_restart = _later(last_restart, _get(cs, "lastState", "terminated", "finishedAt"))
        term = _get(cs, "state", "terminated")
        waiting_reason = _str(_get(cs, "state", "waiting", "reason"))
        if isinstance(term, Mapping) and _int(term.get("exitCode")) == 0:
            continue
        if isinstance(term, Mapping):
            reason = _terminated_reason(term, "Init:")
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = "Init:" + waiting_reason
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break

    initialized = _get(_condition(pod, "Initialized"), "status") == "True"
    if not initializing or initialized:
        restarts = 0
        last_restart = None
        has_running = False
        for cs in reversed(_list(status, "containerStatuses")):
            restarts += _int(_get(cs, "restartCount"))
            last_restart = _later(last_restart, _get(cs, "lastState", "terminated", "finishedAt"))
            waiting = _get(cs, "state", "waiting")
            term = _get(cs, "state", "terminated")
            if isinstance(waiting, Mapping) and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(term, Mapping):
                reason = _terminated_reason(term)
            elif _get(cs, "ready") is True and waiting is None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = _get(_condition(pod, "Ready"), "status") == "True"
            reason = "Running" if pod_ready else "NotReady"

    if _get(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    total = len(_list(pod, "spec", "containers"))
    return _PodView(f"{ready}/{total}", reason, restarts_text)


def _pod_ip(pod: Obj, c: _Ctx) -> str:
    ip = _get(pod, "status", "podIPs", 0, "ip") or _get(pod, "status", "podIP")
    return _str(ip) or _NONE


def _readiness_gates(pod: Obj, c: _Ctx) -> str:
    gates = _list(pod, "spec", "readinessGates")
    if not gates:
        return _NONE
    true = 0
    for gate in gates:
        cond = _condition(pod, _str(_get(gate, "conditionType")))
        if cond is not None and cond.get("status") == "True":
            true += 1
    return f"{true}/{len(gates)}"


_POD = TableSpec(
    (
        NAME,
        Column("READY", lambda o, c: _pod_view(o, c.now).ready),
        Column("STATUS", lambda o, c: _pod_view(o, c.now).status),
        Column("RESTARTS", lambda o, c: _pod_view(o, c.now).restarts),
        AGE,
        Column("IP", _pod_ip, wide=True),
        Column("NODE", lambda o, c: _str(_get(o, "spec", "nodeName")) or _NONE, wide=True),
        Column(
            "NOMINATED NODE",
            lambda o, c: _str(_get(o, "status", "nominatedNodeName")) or _NONE,
            wide=True,
        ),
        Column("READINESS GATES", _readiness_gates, wide=True),
    )
)


# --------------------------------------------------------------------------- services


def _service_type(svc: Obj) -> str:
    return _str(_get(svc, "spec", "type")) or "ClusterIP"


def _cluster_ip(svc: Obj, c: _Ctx) -> str:
    ip = _get(svc, "spec", "clusterIPs", 0) or _get(svc, "spec", "clusterIP")
    return _str(ip) or _NONE


def _lb_ingress(svc: Obj, wide: bool) -> str:
    found: set[str] = set()
    for ing in _list(svc, "status", "loadBalancer", "ingress"):
        value = _get(ing, "ip") or _get(ing, "hostname")
        if value:
            found.add(str(value))
    text = ",".join(sorted(found))
    if not wide and len(text) > _LB_WIDTH:
        text = text[: _LB_WIDTH - 3] + "..."
    return text


def _external_ip(svc: Obj, c: _Ctx) -> str:
    """kubectl's getServiceExternalIP."""
    kind = _service_type(svc)
    external = [_str(ip) for ip in _list(svc, "spec", "externalIPs")]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else _NONE
    if kind == "LoadBalancer":
        lb = _lb_ingress(svc, c.wide)
        if external:
            return ",".join([*(lb.split(",") if lb else []), *external])
        return lb or "<pending>"
    if kind == "ExternalName":
        return _str(_get(svc, "spec", "externalName"))
    return "<unknown>"


def _ports(svc: Obj, c: _Ctx) -> str:
    pieces = []
    for port in _list(svc, "spec", "ports"):
        proto = _str(_get(port, "protocol")) or "TCP"
        number = _int(_get(port, "port"))
        node_port = _int(_get(port, "nodePort"))
        pieces.append(f"{number}:{node_port}/{proto}" if node_port > 0 else f"{number}/{proto}")
    return ",".join(pieces) or _NONE


_SERVICE = TableSpec(
    (
        NAME,
        Column("TYPE", lambda o, c: _service_type(o)),
        Column("CLUSTER-IP", _cluster_ip),
        Column("EXTERNAL-IP", _external_ip),
        Column("PORT(S)", _ports),
        AGE,
        Column("SELECTOR", lambda o, c: _format_labels(_map(o, "spec", "selector")), wide=True),
    )
)


# --------------------------------------------------------------------------- workloads


def _desired(o: Obj) -> int:
    replicas = _get(o, "spec", "replicas")
    return 1 if replicas is None else _int(replicas)


def _status_int(name: str) -> Cell:
    return lambda o, c: str(_int(_get(o, "status", name)))


def _pod_template_containers(o: Obj) -> list[Any]:
    return _list(o, "spec", "template", "spec", "containers")


_WORKLOAD_WIDE = (
    Column("CONTAINERS", lambda o, c: _container_cells(_pod_template_containers(o))[0], wide=True),
    Column("IMAGES", lambda o, c: _container_cells(_pod_template_containers(o))[1], wide=True),
    Column("SELECTOR", lambda o, c: _label_selector(_get(o, "spec", "selector")), wide=True),
)


_DEPLOYMENT = TableSpec(
    (
        NAME,
        Column("READY", lambda o, c: f"{_int(_get(o, 'status', 'readyReplicas'))}/{_desired(o)}"),
        Column("UP-TO-DATE", _status_int("updatedReplicas")),
        Column("AVAILABLE", _status_int("availableReplicas")),
        AGE,
        *_WORKLOAD_WIDE,
    )
)

_REPLICASET = TableSpec(
    (
        NAME,
        Column("DESIRED", lambda o, c: str(_desired(o))),
        Column("CURRENT", _status_int("replicas")),
        Column("READY", _status_int("readyReplicas")),
        AGE,
        *_WORKLOAD_WIDE,
    )
)


# --------------------------------------------------------------------------- cluster objects


def _node_status(node: Obj, c: _Ctx) -> str:
    cond = _condition(node, "Ready")
    status = ["Unknown"] if cond is None else ["Ready" if cond.get("status") == "True" else "NotReady"]
    if _get(node, "spec", "unschedulable") is True:
        status.append("SchedulingDisabled")
    return ",".join(status)


def _node_roles(node: Obj, c: _Ctx) -> str:
    prefix = "node-role.kubernetes.io/"
    roles: set[str] = set()
    for key, value in _map(node, "metadata", "labels").items():
        if key.startswith(prefix) and key[len(prefix) :]:
            roles.add(key[len(prefix) :])
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return ",".join(sorted(roles)) or _NONE


def _node_internal_ip(node: Obj, c: _Ctx) -> str:
    for addr in _list(node, "status", "addresses"):
        if _get(addr, "type") == "InternalIP":
            return _str(_get(addr, "address")) or _NONE
    return _NONE


_NODE = TableSpec(
    (
        NAME,
        Column("STATUS", _node_status),
        Column("ROLES", _node_roles),
        AGE,
        Column(
            "VERSION",
            lambda o, c: _str(_get(o, "status", "nodeInfo", "kubeletVersion")) or "zeromesh",
        ),
        Column("INTERNAL-IP", _node_internal_ip, wide=True),
        Column("POD-CIDR", lambda o, c: _str(_get(o, "spec", "podCIDR")) or _NONE, wide=True),
    ),
    namespaced=False,
)

_NAMESPACE = TableSpec(
    (NAME, Column("STATUS", lambda o, c: _str(_get(o, "status", "phase")) or "Active"), AGE),
    namespaced=False,
)


def _secret_data(o: Obj, c: _Ctx) -> str:
    # The API server folds stringData into data, so count the union of keys.
    return str(len(set(_map(o, "data")) | set(_map(o, "stringData"))))


def _format_endpoints(ep: Obj, c: _Ctx) -> str:
    """kubectl's formatEndpoints: ip:port per ready address and port, first 3 then "+ N more..."."""
    subsets = _list(ep, "subsets")
    if not subsets:
        return _NONE
    shown: list[str] = []
    limit = 3
    more = False
    count = 0
    for subset in subsets:
        ips = [_str(_get(a, "ip")) for a in _list(subset, "addresses")]
        ports = _list(subset, "ports")
        if not ports:
            count += len(ips)
            for ip in ips:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(ip)
            continue
        for port in ports:
            count += len(ips)
            number = _int(_get(port, "port"))
            for ip in ips:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(f"[{ip}]:{number}" if ":" in ip else f"{ip}:{number}")
    text = ",".join(shown)
    if more:
        return f"{text} + {count - limit} more..."
    return text or _NONE


# --------------------------------------------------------------------------- events


def _event_last_seen(ev: Obj) -> str | None:
    """LAST SEEN: series, then lastTimestamp, firstTimestamp, eventTime, creation time."""
    for path in (
        ("series", "lastObservedTime"),
        ("lastTimestamp",),
        ("firstTimestamp",),
        ("eventTime",),
        ("metadata", "creationTimestamp"),
    ):
        value = _get(ev, *path)
        if isinstance(value, str) and _parse_time(value) is not None:
            return value
    return None


def _event_first_seen(ev: Obj) -> str | None:
    for path in (("firstTimestamp",), ("eventTime",), ("metadata", "creationTimestamp")):
        value = _get(ev, *path)
        if isinstance(value, str) and _parse_time(value) is not None:
            return value
    return None


def _event_object(ev: Obj, c: _Ctx) -> str:
    kind = _str(_get(ev, "involvedObject", "kind")).lower()
    name = _str(_get(ev, "involvedObject", "name"))
    return f"{kind}/{name}" if name else kind


def _event_source(ev: Obj, c: _Ctx) -> str:
    component = _str(_get(ev, "source", "component")) or _str(_get(ev, "reportingComponent"))
    instance = _str(_get(ev, "source", "host")) or _str(_get(ev, "reportingInstance"))
    return f"{component}, {instance}" if instance else component


def _event_count(ev: Obj, c: _Ctx) -> str:
    if isinstance(_get(ev, "series"), Mapping):
        return str(_int(_get(ev, "series", "count")))
    return str(_int(_get(ev, "count")) or 1)


_EVENT = TableSpec(
    (
        Column("LAST SEEN", lambda o, c: age(_event_last_seen(o), c.now)),
        Column("TYPE", lambda o, c: _str(_get(o, "type"))),
        Column("REASON", lambda o, c: _str(_get(o, "reason"))),
        Column("OBJECT", _event_object),
        Column("SUBOBJECT", lambda o, c: _str(_get(o, "involvedObject", "fieldPath")), wide=True),
        Column("SOURCE", _event_source, wide=True),
        Column("MESSAGE", lambda o, c: _str(_get(o, "message")).strip()),
        Column("FIRST SEEN", lambda o, c: age(_event_first_seen(o), c.now), wide=True),
        Column("COUNT", _event_count, wide=True),
        Column("NAME", lambda o, c: _str(_get(o, "metadata", "name")), wide=True),
    ),
    sort_key=lambda o: _parse_time(_event_last_seen(o)) or _EPOCH,
)


# --------------------------------------------------------------------------- the registry

_GENERIC = TableSpec((NAME, AGE), namespaced=None)


def _condition_status(ctype: str, missing: str = "") -> Cell:
    """`.status.conditions[?(@.type==ctype)].status`, as a CRD printer column."""
    return lambda o, c: _str(_get(_condition(o, ctype), "status")) or missing


COLUMN_SETS: dict[str, TableSpec] = {
    "pods": _POD,
    "services": _SERVICE,
    "deployments.apps": _DEPLOYMENT,
    "replicasets.apps": _REPLICASET,
    "namespaces": _NAMESPACE,
    "nodes": _NODE,
    "serviceaccounts": TableSpec(
        (NAME, Column("SECRETS", lambda o, c: str(len(_list(o, "secrets")))), AGE)
    ),
    "secrets": TableSpec(
        (
            NAME,
            Column("TYPE", lambda o, c: _str(_get(o, "type")) or "Opaque"),
            Column("DATA", _secret_data),
            AGE,
        )
    ),
    "configmaps": TableSpec(
        (
            NAME,
            Column("DATA", lambda o, c: str(len(_map(o, "data")) + len(_map(o, "binaryData")))),
            AGE,
        )
    ),
    "endpoints": TableSpec((NAME, Column("ENDPOINTS", _format_endpoints), AGE)),
    "events": _EVENT,
    # Gateway API (CRD additionalPrinterColumns).
    "gatewayclasses.gateway.networking.k8s.io": TableSpec(
        (
            NAME,
            Column("CONTROLLER", _field("spec", "controllerName")),
            Column("ACCEPTED", _condition_status("Accepted")),
            AGE,
            Column("DESCRIPTION", _field("spec", "description"), wide=True),
        ),
        namespaced=False,
    ),
    "gateways.gateway.networking.k8s.io": TableSpec(
        (
            NAME,
            Column("CLASS", _field("spec", "gatewayClassName")),
            Column("ADDRESS", _field("status", "addresses", 0, "value")),
            Column("PROGRAMMED", _condition_status("Programmed", "Unknown")),
            AGE,
        )
    ),
    "httproutes.gateway.networking.k8s.io": TableSpec(
        (NAME, Column("HOSTNAMES", _field("spec", "hostnames")), AGE)
    ),
    "grpcroutes.gateway.networking.k8s.io": TableSpec(
        (NAME, Column("HOSTNAMES", _field("spec", "hostnames")), AGE)
    ),
    # Istio (CRD additionalPrinterColumns).
    "gateways.networking.istio.io": TableSpec((NAME, AGE)),
    "virtualservices.networking.istio.io": TableSpec(
        (
            NAME,
            Column("GATEWAYS", _field("spec", "gateways")),
            Column("HOSTS", _field("spec", "hosts")),
            AGE,
        )
    ),
    "destinationrules.networking.istio.io": TableSpec(
        (NAME, Column("HOST", _field("spec", "host")), AGE)
    ),
    "serviceentries.networking.istio.io": TableSpec(
        (
            NAME,
            Column("HOSTS", _field("spec", "hosts")),
            Column("LOCATION", _field("spec", "location")),
            Column("RESOLUTION", _field("spec", "resolution")),
            AGE,
        )
    ),
    "workloadentries.networking.istio.io": TableSpec(
        (NAME, AGE, Column("ADDRESS", _field("spec", "address")))
    ),
    "authorizationpolicies.security.istio.io": TableSpec(
        (NAME, Column("ACTION", _field("spec", "action")), AGE)
    ),
    "peerauthentications.security.istio.io": TableSpec(
        (NAME, Column("MODE", _field("spec", "mtls", "mode")), AGE)
    ),
}

# Cluster-scoped resources that have no entry above (they get the generic table).
_CLUSTER_SCOPED = frozenset(
    {
        "clusterroles.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
        "persistentvolumes",
        "storageclasses.storage.k8s.io",
        "priorityclasses.scheduling.k8s.io",
        "ingressclasses.networking.k8s.io",
    }
)


# --------------------------------------------------------------------------- rendering


def _namespaced(resource: str, spec: TableSpec, objs: Iterable[Obj]) -> bool:
    if spec.namespaced is not None:
        return spec.namespaced
    if resource in _CLUSTER_SCOPED:
        return False
    return any(_get(o, "metadata", "namespace") for o in objs)


def _layout(rows: list[list[str]]) -> str:
    """kubectl's tabwriter: each column but the last padded to max(widest + 3, 6)."""
    widths = [
        max(_MIN_WIDTH, max(len(row[i]) for row in rows) + _PADDING)
        for i in range(len(rows[0]) - 1)
    ]
    lines = []
    for row in rows:
        head = "".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append((head + row[-1]).rstrip())
    return "\n".join(lines)


def _labels_cell(obj: Obj, _: _Ctx) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


LABELS = Column("LABELS", _labels_cell)


def render_table(
    resource: str,
    objs: list[dict[str, Any]],
    *,
    wide: bool = False,
    all_namespaces: bool = False,
    show_labels: bool = False,
    now: datetime | None = None,
) -> str:
    """The table `kubectl get <resource>` would print for `objs` ("" when there are none).

    `resource` is the plural id ("pods", "deployments.apps", ...); unknown ones
    get NAME/AGE. With `all_namespaces`, namespaced resources get a leading
    NAMESPACE column. Rows keep the given order, except events (by last seen).
    """
    if not objs:
        return ""
    spec = COLUMN_SETS.get(resource, _GENERIC)
    return _render(spec, objs, wide=wide, show_labels=show_labels, now=now,
                   namespace_column=all_namespaces and _namespaced(resource, spec, objs))


def _render(spec: TableSpec, objs: list[dict[str, Any]], *, wide: bool, show_labels: bool,
            now: datetime | None, namespace_column: bool) -> str:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    ctx = _Ctx(now=now, wide=wide)
    columns = [col for col in spec.columns if wide or not col.wide]
    if namespace_column:
        columns.insert(0, NAMESPACE)
    if show_labels:
        columns.append(LABELS)
    ordered = sorted(objs, key=spec.sort_key) if spec.sort_key else objs
    rows = [[col.header for col in columns]]
    rows.extend([col.cell(obj, ctx) for col in columns] for obj in ordered)
    return _layout(rows)


# --------------------------------------------------------------------------- both gateway kinds

_ISTIO_GROUP = "networking.istio.io"


def _group(obj: Obj) -> str:
    return _str(_get(obj, "apiVersion")).rpartition("/")[0]


def _ports_of(gw: Obj) -> list[int]:
    """Server ports of an Istio Gateway, listener ports of a Gateway API one, in order."""
    if _group(gw) == _ISTIO_GROUP:
        raw = [_get(server, "port", "number") for server in _list(gw, "spec", "servers")]
    else:
        raw = [_get(listener, "port") for listener in _list(gw, "spec", "listeners")]
    return [_int(p) for p in raw if _int(p) > 0]


def gateway_address(gw: Obj, ingress_service: Obj | None) -> str:
    """The ADDRESS cell of the combined gateway table (see the module's notes)."""
    from zeromesh.controlplane import ingress

    if _group(gw) == _ISTIO_GROUP:
        if not ingress.selects_ingress(gw):
            return ""
        return ingress.loopback_address(_ports_of(gw), ingress_service)
    if ingress.serves_class(_str(_get(gw, "spec", "gatewayClassName"))):
        address = ingress.loopback_address(_ports_of(gw), ingress_service)
        if address:
            return address
    return _jsonpath_text(_get(gw, "status", "addresses", 0, "value"))


def _gateway_class(gw: Obj, c: _Ctx) -> str:
    if _group(gw) == _ISTIO_GROUP:
        return _ISTIO_GROUP
    return _jsonpath_text(_get(gw, "spec", "gatewayClassName"))


def render_gateways(
    objs: list[dict[str, Any]],
    ingress_service: Obj | None,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
    show_labels: bool = False,
    now: datetime | None = None,
) -> str:
    """One table for Istio (`networking.istio.io`) and Gateway API Gateways, told apart by their
    `apiVersion`; `ingress_service` is istio-system/istio-ingressgateway (None if not installed).
    Rows are sorted by namespace and name, Istio's first on a tie ("" for no objects)."""
    if not objs:
        return ""
    spec = TableSpec(
        (
            NAME,
            Column("CLASS", _gateway_class),
            Column("ADDRESS", lambda o, c: gateway_address(o, ingress_service)),
            Column("PROGRAMMED", _condition_status("Programmed", "Unknown")),
            AGE,
        ),
        sort_key=lambda o: (_str(_get(o, "metadata", "namespace")), _str(_get(o, "metadata", "name")),
                            _group(o) != _ISTIO_GROUP),
    )
    return _render(spec, objs, wide=wide, show_labels=show_labels, now=now,
                   namespace_column=all_namespaces)
