"""Metrics as Prometheus sees them: what zeromesh exports, how a proxy pod's metrics are
reached from the host, and the scrape configuration `zeromesh x prometheus-config` prints.

Pure: the CLI hands in the cluster config and the pods, and writes what comes back.

The relay contract (served by every node agent on its host-loopback metrics port)::

    GET http://127.0.0.1:<node metrics port>/proxy/<namespace>/<pod>/<path>[?query]
      -> GET http://<pod ip>:15020/<path>[?query], from inside the pod's network namespace

for pods scheduled on that node only (404 otherwise), GET only, no `..`, bounded in time
and size. Prometheus scrapes waypoints and gateways through it
(`/proxy/NS/POD/stats/prometheus`); `/debug/traces` and `/config_dump` go the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

import yaml

from zeromesh.errors import ZeromeshError
from zeromesh.local.images import image_key

# ---- components and the relay ---------------------------------------------------------------------
CONTROLPLANE, ZTUNNEL, WAYPOINT, GATEWAY = "controlplane", "ztunnel", "waypoint", "gateway"
PROXY_IMAGES = {"zeromesh/waypoint": WAYPOINT, "zeromesh/ingressgateway": GATEWAY}
PROXY_ADMIN_PORT = 15020           # Istio's merged metrics/admin port inside a proxy pod
RELAY_PREFIX = "/proxy/"
RELAY_MAX_BYTES = 16 * 1024 * 1024
RELAY_TIMEOUT = 10.0               # seconds for a whole relayed request (connect included)
RELAY_CONNECT_TIMEOUT = 3.0

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


class RelayRefused(ZeromeshError):
    """A relay request that is not served; `status` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RelayTarget:
    namespace: str
    pod: str
    path: str        # what the pod is asked for: "/stats/prometheus?x=1", still percent-encoded


def relay_path(namespace: str, pod: str, path: str) -> str:
    """The node agent path that reaches `path` on port 15020 of a pod (the contract's client side)."""
    return f"{RELAY_PREFIX}{namespace}/{pod}/{path.lstrip('/')}"


def parse_relay_target(raw: str) -> RelayTarget:
    """Read a relay request target as received (percent-encoded, query included). The path is
    passed on still encoded, so nothing decoded here (a `%0d%0a`, a `%2e%2e`) reaches the pod's
    request line as anything but inert text; `..` in any decoding is refused outright."""
    path, has_query, query = raw.partition("?")
    if not path.startswith(RELAY_PREFIX):
        raise RelayRefused(404, "not a relay path: /proxy/NAMESPACE/POD/PATH")
    decoded = raw
    for _ in range(3):
        if ".." in decoded:
            raise RelayRefused(400, "paths containing '..' are refused")
        decoded = unquote(decoded)
    if ".." in decoded:
        raise RelayRefused(400, "paths containing '..' are refused")
    parts = path[len(RELAY_PREFIX):].split("/", 2)
    if len(parts) < 2:
        raise RelayRefused(404, "expected /proxy/NAMESPACE/POD/PATH")
    namespace, pod = unquote(parts[0]), unquote(parts[1])
    tail = parts[2] if len(parts) == 3 else ""
    for what, name in (("namespace", namespace), ("pod", pod)):
        if not _NAME.fullmatch(name):
            raise RelayRefused(400, f"invalid {what} name {name!r}")
    if not _PATH_CHARS.fullmatch(tail) or not _QUERY_CHARS.fullmatch(query):
        raise RelayRefused(400, "the path or query contains characters that must be percent-encoded")
    return RelayTarget(namespace, pod, "/" + tail + (f"?{query}" if has_query else ""))


# ---- what zeromesh exports -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family as exposed (counters with their `_total`); `istio` names the Istio
    metric it corresponds to when the name differs, `aliases` says it is exported under an
    Istio name of its own too."""

    name: str
    type: str                  # counter | gauge | histogram | untyped
    components: tuple[str, ...]
    labels: tuple[str, ...]
    help: str
    istio: str = ""


_PROXIES = (ZTUNNEL, WAYPOINT, GATEWAY)
_L7 = (WAYPOINT, GATEWAY)
_ISTIO = ("reporter", "source_workload", "source_workload_namespace", "source_principal",
          "source_app", "source_version", "source_canonical_service", "source_canonical_revision",
          "source_cluster", "destination_workload", "destination_workload_namespace",
          "destination_principal", "destination_app", "destination_version", "destination_service",
          "destination_service_name", "destination_service_namespace",
          "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
          "request_protocol", "response_flags", "connection_security_policy")
_HTTP = (*_ISTIO, "response_code", "grpc_response_status")

METRICS: tuple[MetricSpec, ...] = (
    # Istio's standard TCP metrics: the ztunnel, and waypoints/gateways for what they relay as TCP.
    MetricSpec("istio_tcp_connections_opened_total", "counter", _PROXIES, _ISTIO, "TCP connections opened"),
    MetricSpec("istio_tcp_connections_closed_total", "counter", _PROXIES, _ISTIO, "TCP connections closed"),
    MetricSpec("istio_tcp_sent_bytes_total", "counter", _PROXIES, _ISTIO,
               "bytes sent back by the destination (Istio's meaning, istio/istio#32399)"),
    MetricSpec("istio_tcp_received_bytes_total", "counter", _PROXIES, _ISTIO,
               "bytes sent towards the destination"),
    MetricSpec("istio_tcp_connections_failed_total", "counter", _PROXIES, _ISTIO,
               "connections that failed (ztunnel's extra metric)"),
    # Istio's standard HTTP metrics: waypoints (reporter=waypoint) and the gateway (reporter=source).
    MetricSpec("istio_requests_total", "counter", _L7, _HTTP, "requests handled"),
    MetricSpec("istio_request_duration_milliseconds", "histogram", _L7, _HTTP, "request duration"),
    MetricSpec("istio_request_bytes", "histogram", _L7, _HTTP, "request sizes"),
    MetricSpec("istio_response_bytes", "histogram", _L7, _HTTP, "response sizes"),
    # Control-plane health: zeromesh's names, and istiod's where it has a direct counterpart.
    MetricSpec("zeromesh_config_version", "gauge", (CONTROLPLANE, ZTUNNEL), (),
               "configuration version: the store revision (control plane) or the last one accepted "
               "(node agent)"),
    MetricSpec("zeromesh_connected_proxies", "gauge", (CONTROLPLANE,), ("kind",),
               "proxies holding a push stream, by kind (nodeagent, waypoint, gateway)", istio="pilot_xds"),
    MetricSpec("zeromesh_push_duration_seconds", "histogram", (CONTROLPLANE,), ("kind",),
               "from a configuration change (or a proxy's hello) to that proxy's ACK/NACK",
               istio="pilot_proxy_convergence_time"),
    MetricSpec("zeromesh_pushes_total", "counter", (CONTROLPLANE,), ("kind", "result"),
               "pushes answered or failed, by proxy kind and result (ack, nack, error)",
               istio="pilot_total_xds_rejects (the nacks)"),
    MetricSpec("zeromesh_ca_root_expiry_timestamp_seconds", "gauge", (CONTROLPLANE,), (),
               "when the earliest trusted root expires (Unix time)",
               istio="citadel_server_root_cert_expiry_timestamp"),
    MetricSpec("zeromesh_certificates_issued_total", "counter", (CONTROLPLANE,), (),
               "workload certificates signed for CSRs", istio="citadel_server_success_cert_issuance_count"),
    MetricSpec("pilot_xds", "gauge", (CONTROLPLANE,), (), "istiod's name: connected proxies"),
    MetricSpec("pilot_proxy_convergence_time", "histogram", (CONTROLPLANE,), (),
               "istiod's name and buckets: configuration change to a proxy's answer (seconds)"),
    MetricSpec("pilot_total_xds_rejects", "untyped", (CONTROLPLANE,), (),
               "istiod's name: configuration updates proxies rejected (NACKs)"),
    MetricSpec("citadel_server_root_cert_expiry_timestamp", "gauge", (CONTROLPLANE,), (),
               "istiod's name: root certificate expiry (Unix time)"),
    MetricSpec("citadel_server_csr_count", "untyped", (CONTROLPLANE,), (),
               "istiod's name: CSRs received"),
    MetricSpec("citadel_server_success_cert_issuance_count", "untyped", (CONTROLPLANE,), (),
               "istiod's name: certificates issued for CSRs"),
    # Node-agent health.
    MetricSpec("zeromesh_workload_certificate_expiry_timestamp_seconds", "gauge", (ZTUNNEL,),
               ("identity",), "when each workload certificate the node agent holds expires (Unix time)"),
    MetricSpec("zeromesh_push_connected", "gauge", (ZTUNNEL,), (),
               "1 while the node agent holds its push stream to the control plane"),
)
METRICS_BY_NAME = {m.name: m for m in METRICS}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                               "scrape_samples_post_metric_relabeling", "scrape_series_added"})


def series_names(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names one family shows in PromQL (prometheus_client adds `_created`)."""
    if spec.type == "histogram":
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count", f"{spec.name}_created")
    if spec.type == "counter":
        return (spec.name, spec.name.removesuffix("_total") + "_created")
    return (spec.name,)


def exported_series() -> frozenset[str]:
    """Every sample name a zeromesh component can expose, plus Prometheus' own per target."""
    return frozenset(n for m in METRICS for n in series_names(m)) | PROMETHEUS_SERIES


# ---- scrape configuration ----------------------------------------------------------------------------
JOB_CONTROLPLANE, JOB_ZTUNNEL, JOB_PROXIES = ("zeromesh-controlplane", "zeromesh-ztunnel",
                                              "zeromesh-proxies")
JOBS = (JOB_CONTROLPLANE, JOB_ZTUNNEL, JOB_PROXIES)
SYSTEM_NAMESPACE = "istio-system"
FILE_SD_REFRESH = "30s"
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration ("5s", "1m30s", "500ms"); ValueError if malformed or 0."""
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None:
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 5s, 1m, 500ms)")
    seconds = sum(int(v) * u for v, u in zip(m.groups(), _UNITS, strict=True) if v)
    if seconds <= 0:
        raise ValueError(f"{text!r}: the scrape interval must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class ProxyPod:
    namespace: str
    pod: str
    node: str
    component: str            # WAYPOINT | GATEWAY


@dataclass(frozen=True, slots=True)
class ScrapeSetup:
    """What a scrape configuration is made from: the cluster's recorded ports and its proxy pods."""

    cluster: str
    controlplane_port: int                               # 0: not recorded (older cluster.json)
    node_ports: Mapping[str, Mapping[str, int]]          # cluster.json node_ports
    proxies: tuple[ProxyPod, ...] = ()
    scrape_interval: str = "5s"


def proxy_pods(pods: Iterable[Mapping[str, Any]]) -> tuple[ProxyPod, ...]:
    """The waypoint and gateway pods (by their component image) that are scheduled and not
    going away; a pending one is kept, so its target answers as soon as it serves."""
    out = []
    for p in pods:
        md, spec, status = p.get("metadata", {}), p.get("spec", {}), p.get("status", {})
        if md.get("deletionTimestamp") or not spec.get("nodeName") \
                or status.get("phase") in ("Succeeded", "Failed"):
            continue
        kinds = {PROXY_IMAGES.get(image_key(c.get("image", ""))) for c in spec.get("containers") or []}
        component = next((k for k in (WAYPOINT, GATEWAY) if k in kinds), None)
        if component:
            out.append(ProxyPod(md["namespace"], md["name"], spec["nodeName"], component))
    return tuple(sorted(out, key=lambda x: (x.namespace, x.pod)))


def _node_key(node: str) -> tuple[int, str]:
    digits = node.removeprefix("node")
    return (int(digits), node) if digits.isdigit() else (1 << 30, node)


def target_groups(setup: ScrapeSetup) -> dict[str, list[dict[str, Any]]]:
    """Prometheus target groups per job (the file_sd JSON shape): every target 127.0.0.1, labels
    saying what is scraped. The control plane runs on the host (node "host", pod "istiod" as
    istiod's counterpart); a node agent is its node's ztunnel (pod "ztunnel-NODE"); a proxy
    pod is scraped at its node agent, the job's relabelling turns namespace/pod into the path."""
    groups: dict[str, list[dict[str, Any]]] = {job: [] for job in JOBS}

    def labels(namespace: str, pod: str, node: str, component: str) -> dict[str, str]:
        return {"cluster": setup.cluster, "namespace": namespace, "pod": pod, "node": node,
                "component": component}

    if setup.controlplane_port:
        groups[JOB_CONTROLPLANE].append({"targets": [f"127.0.0.1:{setup.controlplane_port}"],
                                         "labels": labels(SYSTEM_NAMESPACE, "istiod", "host", CONTROLPLANE)})
    for node in sorted(setup.node_ports, key=_node_key):
        port = setup.node_ports[node].get("metrics")
        if port:
            groups[JOB_ZTUNNEL].append({"targets": [f"127.0.0.1:{port}"],
                                        "labels": labels(SYSTEM_NAMESPACE, f"ztunnel-{node}", node, ZTUNNEL)})
    for px in setup.proxies:
        port = setup.node_ports.get(px.node, {}).get("metrics")
        if port:
            groups[JOB_PROXIES].append({"targets": [f"127.0.0.1:{port}"],
                                        "labels": labels(px.namespace, px.pod, px.node, px.component)})
    return groups


def file_sd_name(cluster: str, job: str) -> str:
    return f"{cluster}.{job.removeprefix('zeromesh-')}.json"


def _job(setup: ScrapeSetup, job: str, groups: list[dict[str, Any]], file_sd_dir: str | None
         ) -> dict[str, Any]:
    d: dict[str, Any] = {"job_name": job,
                         "metrics_path": "/stats/prometheus" if job == JOB_PROXIES else "/metrics"}
    if file_sd_dir is not None:
        path = PurePosixPath(file_sd_dir) / file_sd_name(setup.cluster, job)
        d["file_sd_configs"] = [{"files": [str(path)], "refresh_interval": FILE_SD_REFRESH}]
    else:
        d["static_configs"] = groups
    relabel: list[dict[str, Any]] = []
    if job == JOB_PROXIES:
        relabel.append({"source_labels": ["namespace", "pod"], "separator": "/", "regex": "([^/]+)/([^/]+)",
                        "target_label": "__metrics_path__",
                        "replacement": f"{RELAY_PREFIX}$1/$2/stats/prometheus"})
    if job != JOB_CONTROLPLANE:
        relabel.append({"source_labels": ["namespace", "pod"], "separator": "/", "target_label": "instance"})
    if relabel:
        d["relabel_configs"] = relabel
    return d


def scrape_config(setup: ScrapeSetup, file_sd_dir: str | None = None) -> str:
    """Prometheus YAML: one job per kind of component. With `file_sd_dir` the targets come from
    the files `file_sd_documents` gives (absolute directory expected), so re-running the command
    refreshes them without touching the configuration."""
    interval = parse_duration(setup.scrape_interval)
    timeout = setup.scrape_interval if interval <= 10 else "10s"
    groups = target_groups(setup)
    cfg = {"global": {"scrape_interval": setup.scrape_interval, "scrape_timeout": timeout,
                      "evaluation_interval": setup.scrape_interval},
           "scrape_configs": [_job(setup, job, groups[job], file_sd_dir) for job in JOBS]}
    proxies = "".join(f"#   {p.namespace}/{p.pod} ({p.component} on {p.node})\n" for p in setup.proxies)
    refresh = (f"re-run with --file-sd {file_sd_dir}: Prometheus re-reads the target files by itself."
               if file_sd_dir is not None else "re-run and reload Prometheus (or use --file-sd DIR).")
    header = (f'# Prometheus scrape configuration for zeromesh cluster "{setup.cluster}"\n'
              "# (generated by `zeromesh x prometheus-config`). Every target is on 127.0.0.1:\n"
              "#   the control plane (/metrics), each node agent = its node's ztunnel (/metrics), and\n"
              "#   each waypoint/gateway pod through its node agent's relay\n"
              "#   (/proxy/NAMESPACE/POD/stats/prometheus, built by relabelling).\n"
              f"# Proxy pods now:{'' if proxies else ' none'}\n{proxies}"
              f"# They come and go: {refresh}\n")
    return header + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def file_sd_documents(setup: ScrapeSetup) -> dict[str, list[dict[str, Any]]]:
    """File name → file_sd target groups (JSON), one file per job."""
    return {file_sd_name(setup.cluster, job): groups for job, groups in target_groups(setup).items()}


def metric_table(specs: Sequence[MetricSpec] = METRICS) -> list[list[str]]:
    """Rows for documentation and `--list-metrics`: name, type, components, Istio counterpart."""
    return [["NAME", "TYPE", "COMPONENTS", "ISTIO"]] + [
        [m.name, m.type, ",".join(m.components), m.istio or ("(Istio's own)" if not m.name.startswith(
            "zeromesh_") else "-")] for m in specs]


# ---- PromQL ------------------------------------------------------------------------------------------
_PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                           "or", "unless", "offset", "inf", "nan", "atan2"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+|[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's `$variables` allowed): what is
    left once strings, label matchers, ranges, grouping clauses, functions and keywords are
    taken out. Good enough to check dashboards against `exported_series()`."""
    s = _STRINGS.sub('""', expr)
    s = _VARIABLES.sub("1", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"@\s*\w+(?:\(\))?", " ", s)
    names = set()
    for m in _TOKEN.finditer(s):
        tok = m.group(0)
        if tok[0].isdigit() or tok.lower() in _PROMQL_WORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(tok)
    return names
