"""HTTP telemetry of a waypoint (and the ingress gateway): Istio's standard HTTP metrics with
``reporter="waypoint"`` (names, labels and buckets as Istio's, so its Grafana dashboards and Kiali
work unchanged), one JSON access-log line per request (``docs/access-log.md``) with client values
masked, and spans (``docs/tracing.md``): kept in memory for ``/debug/traces`` and exported over
OTLP/HTTP when a collector is configured.

What applies comes from ``zeromesh.io`` TelemetryPolicies (and Istio Telemetry's sampling), resolved
per proxy and per destination service once per config version (:class:`TelemetrySettings`); the
engine asks for the settings of a request's service, a dict lookup.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from zeromesh.api.durations import parse_duration
from zeromesh.telemetry import tracing as tr
from zeromesh.telemetry.masking import DEFAULT_MASKER, Masker, MaskingError, masker_from_spec
from zeromesh.ztunnel.config import ROOT_NAMESPACE, ServiceInfo, WorkloadInfo
from zeromesh.ztunnel.telemetry import LABELS as TCP_LABELS
from zeromesh.ztunnel.telemetry import UNKNOWN, Telemetry, wl_labels

log = logging.getLogger("zeromesh.access")
tlog = logging.getLogger("zeromesh.tracing")

HTTP_LABELS = (*TCP_LABELS, "response_code", "grpc_response_status")
# Istio's default buckets for istio_request_duration_milliseconds and the byte-size histograms.
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                    300000, 600000, 1800000, 3600000)
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

TELEMETRY_POLICIES = "telemetrypolicies.zeromesh.io"
ISTIO_TELEMETRY = "telemetries.telemetry.istio.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_BODY_LIMIT = 4096


# ---- what applies: TelemetryPolicy (and Istio Telemetry's sampling) per proxy and service ------------
@dataclass(frozen=True, slots=True)
class LogSettings:
    """How one request's access-log line is written."""
    masker: Masker = DEFAULT_MASKER
    request_headers: tuple[str, ...] = ()        # logged under request_headers, masked
    body: bool = False
    body_limit: int = DEFAULT_BODY_LIMIT


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """An OTLP/HTTP collector: the traces URL (``…/v1/traces``), extra headers, timeout."""
    endpoint: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Scoped:
    """The settings of requests to one destination service (or to none in particular)."""
    log: LogSettings
    sampling: float


@dataclass(frozen=True, slots=True)
class ProxyScope:
    """Which proxy this is, for policy selection."""
    namespace: str
    gateway: str = ""                      # the waypoint's Gateway name
    labels: Mapping[str, str] = field(default_factory=dict)
    root_namespace: str = ROOT_NAMESPACE


DEFAULT_LOG = LogSettings()
DEFAULT_SCOPED = Scoped(DEFAULT_LOG, tr.DEFAULT_SAMPLING)


def _otlp_from_env(env: Mapping[str, str]) -> OtlpTarget | None:
    """OpenTelemetry's own variables: a traces URL, or a base URL to which ``/v1/traces`` is added."""
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or ""
    if not url and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if not url:
        return None
    headers = []
    for item in (env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
                 or "").split(","):
        k, sep, v = item.partition("=")
        if sep and k.strip():
            headers.append((k.strip(), v.strip()))
    return OtlpTarget(url, tuple(headers))


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env[name]) if env.get(name) else default
    except ValueError:
        return default


def _level(obj: Mapping[str, Any], scope: ProxyScope) -> tuple[int | None, list[str]]:
    """How specifically a policy selects this proxy (0 root namespace, 1 its namespace, 2 by
    selector or by its Gateway; None: not at all), and the services (``ns/name``) it targets."""
    md = obj.get("metadata") or {}
    ns = str(md.get("namespace") or "default")
    spec = obj.get("spec") or {}
    refs = list(spec.get("targetRefs") or ())
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    if refs:
        level, services = None, []
        for ref in refs:
            kind, group = ref.get("kind"), ref.get("group", "")
            if kind == "Service" and group in ("", "core"):
                services.append(f"{ns}/{ref.get('name')}")
            elif kind == "Gateway" and group == GATEWAY_GROUP and ns == scope.namespace \
                    and ref.get("name") == scope.gateway:
                level = 2
        return level, services
    selector = spec.get("selector")
    if selector is not None:
        wanted = selector.get("matchLabels") or {}
        if ns in (scope.namespace, scope.root_namespace) and all(
                scope.labels.get(k) == v for k, v in wanted.items()):
            return 2, []
        return None, []
    if ns == scope.root_namespace:
        return 0, []
    return (1, []) if ns == scope.namespace else (None, [])


def _order(obj: Mapping[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


_MASKERS: dict[str, Masker] = {}


def _masker(specs: list[Mapping[str, Any]]) -> Masker:
    """Maskers are compiled once per distinct set of rules (pushes rebuild the settings often)."""
    key = json.dumps(specs, sort_keys=True)
    got = _MASKERS.get(key)
    if got is None:
        if len(_MASKERS) > 256:
            _MASKERS.clear()
        got = _MASKERS[key] = masker_from_spec(specs)
    return got


class TelemetrySettings:
    """Every TelemetryPolicy (and Istio Telemetry ``tracing``) in force at one proxy, resolved.

    Lists (masking rules, logged headers) are the union of every applicable policy, so a
    narrower policy can add masks but never drop the mesh's; single values (body logging,
    sampling, replacement, collector) come from the most specific one: a policy targeting the
    request's Service, then one selecting the proxy (selector or its Gateway), then the proxy's
    namespace, then the root namespace, then the environment.
    """

    def __init__(self, policies: Iterable[Mapping[str, Any]] = (),
                 telemetries: Iterable[Mapping[str, Any]] = (), scope: ProxyScope | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        scope = scope or ProxyScope("")
        self.problems: list[str] = []
        base_sampling = _env_float(env, "ZEROMESH_TRACE_SAMPLING", tr.DEFAULT_SAMPLING)
        self.otlp = _otlp_from_env(env)
        self.max_traces = int(_env_float(env, "ZEROMESH_TRACES_KEPT", tr.DEFAULT_KEPT_TRACES))
        # (level, order, kind, obj): Istio Telemetry sorts before a TelemetryPolicy at one level.
        proxy: list[tuple[int, tuple[str, str], int, Mapping[str, Any]]] = []
        service: dict[str, list[tuple[int, tuple[str, str], int, Mapping[str, Any]]]] = {}
        for kind, objs in ((0, telemetries), (1, policies)):
            for obj in objs:
                if not obj:
                    continue
                level, services = _level(obj, scope)
                if level is not None:
                    proxy.append((level, _order(obj), kind, obj))
                for key in services:
                    service.setdefault(key, []).append((3, _order(obj), kind, obj))
        proxy.sort(key=lambda t: t[:3])
        for _, _, kind, obj in proxy:           # per-proxy values: most specific last
            tracing = self._tracing(kind, obj)
            if kind == 1 and isinstance(tracing.get("otlp"), Mapping):
                o = tracing["otlp"]
                try:
                    timeout = parse_duration(o["timeout"]) if o.get("timeout") else 10.0
                except ValueError:
                    timeout = 10.0
                self.otlp = OtlpTarget(str(o.get("endpoint")),
                                       tuple((str(k), str(v)) for k, v in (o.get("headers") or {}).items()),
                                       timeout)
            if kind == 1 and tracing.get("maxTraces") is not None:
                self.max_traces = int(tracing["maxTraces"])
        self._base = base_sampling
        self.proxy = self._resolve([t[2:] for t in proxy])
        self.by_service = {key: self._resolve([t[2:] for t in sorted(proxy + extra, key=lambda t: t[:3])])
                           for key, extra in service.items()}

    @staticmethod
    def _tracing(kind: int, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        spec = obj.get("spec") or {}
        if kind == 0:                           # Istio Telemetry: a list; its first entry counts
            entries = spec.get("tracing") or []
            return entries[0] if entries and isinstance(entries[0], Mapping) else {}
        got = spec.get("tracing")
        return got if isinstance(got, Mapping) else {}

    def _resolve(self, chain: list[tuple[int, Mapping[str, Any]]] | list[Any]) -> Scoped:
        sampling = self._base
        masks: list[Mapping[str, Any]] = []
        headers: list[str] = []
        body, limit = False, DEFAULT_BODY_LIMIT
        for kind, obj in chain:
            tracing = self._tracing(kind, obj)
            pct = tracing.get("randomSamplingPercentage")
            if isinstance(pct, int | float) and not isinstance(pct, bool):
                sampling = float(pct)
            if kind == 0:
                continue
            al = (obj.get("spec") or {}).get("accessLogging") or {}
            if isinstance(al.get("masking"), Mapping):
                masks.append(al["masking"])
            for h in al.get("requestHeaders") or ():
                if str(h).lower() not in headers:
                    headers.append(str(h).lower())
            b = al.get("body")
            if isinstance(b, Mapping):
                if b.get("enabled") is not None:
                    body = bool(b["enabled"])
                if b.get("maxBytes") is not None:
                    limit = int(b["maxBytes"])
        try:
            masker = _masker(masks) if masks else DEFAULT_MASKER
        except MaskingError as e:              # validated at apply; a bad push masks everything known
            self.problems.append(str(e))
            masker = _masker([{k: v for k, v in m.items() if k != "patterns"} for m in masks])
            body = False
        return Scoped(LogSettings(masker, tuple(headers), body, limit), sampling)

    def for_service(self, svc: ServiceInfo | None) -> Scoped:
        if svc is None or not self.by_service:
            return self.proxy
        return self.by_service.get(svc.key, self.proxy)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("istio_requests", "Requests handled", HTTP_LABELS, registry=registry)
        self.duration = Histogram("istio_request_duration_milliseconds", "Request duration",
                                  HTTP_LABELS, buckets=DURATION_BUCKETS, registry=registry)
        self.request_bytes = Histogram("istio_request_bytes", "Request sizes (headers and body)",
                                       HTTP_LABELS, buckets=SIZE_BUCKETS, registry=registry)
        self.response_bytes = Histogram("istio_response_bytes", "Response sizes (headers and body)",
                                        HTTP_LABELS, buckets=SIZE_BUCKETS, registry=registry)


_second: list[Any] = [-1, ""]


Attempt = tuple[str, float, float, int, str, str, str, int, str, str, int, str]
"""An upstream attempt as kept for its CLIENT span: (span id, start, end, status, endpoint
address, cluster host, destination workload, service port, subset, backend host, attempt
number, error)."""


def client_attributes(a: Attempt) -> tuple[str, dict[str, Any]]:
    """An upstream attempt's span name (Envoy's) and attributes."""
    _, _, _, status, addr, cluster, workload, port, subset, host, number, error = a
    attrs: dict[str, Any] = {"http.status_code": status, "upstream_address": addr, "peer.address": addr,
                             "upstream_cluster": cluster, "attempt": number, "component": "proxy"}
    if workload:
        attrs["istio.destination_workload"] = workload
    if error:
        attrs["error"] = error
    return f"router outbound|{port}|{subset}|{host} egress", attrs


def iso_time(monotonic_s: float) -> str:
    """RFC 3339 UTC with milliseconds; the seconds part is formatted once per second."""
    ns = tr.unix_ns(monotonic_s)
    sec, rest = divmod(ns, 1_000_000_000)
    if _second[0] != sec:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{rest // 1_000_000:03d}Z"


@dataclass
class RequestRecord:
    """One request as the waypoint saw it; becomes a metric sample, an access-log line and spans."""
    src_addr: str
    source: WorkloadInfo | None
    src_identity: str
    method: str
    path: str
    authority: str
    protocol: str = "http"
    service: ServiceInfo | None = None
    destination: WorkloadInfo | None = None
    dst_identity: str = ""
    upstream: str = ""
    route: str = ""
    status: int = 0
    flags: str = "-"
    request_bytes: int = 0
    response_bytes: int = 0
    mtls_in: bool = True
    reason: str = ""
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)
    request_id: str = ""
    grpc_status: str = ""
    reporter: str = "waypoint"          # the ingress gateway reports as Istio's do: "source"
    cluster: str = "Kubernetes"
    headers: list[tuple[str, str]] | None = None     # the request's own (references, not copies)
    body: bytes = b""
    settings: LogSettings = DEFAULT_LOG
    ended: float = 0.0

    # The trace context and the last upstream attempt are plain values on the record, defaults
    # here (not dataclass fields: no cost unless set). An object of their own per request, freed
    # with the record, would keep CPython's collector busy under load (see TraceRing).
    trace_id = ""                       # "" when the request is not traced (a local error)
    span_id = ""                        # this proxy's SERVER span
    parent_span_id = ""                 # the caller's span
    sampled = False
    tracestate = ""
    b3_single = False
    a_span_id = ""                      # the last upstream attempt's CLIENT span (Attempt fields)
    a_start = 0.0
    a_end = 0.0
    a_status = 0
    a_cluster = ""
    a_workload = ""
    a_port = 0
    a_subset = ""
    a_host = ""
    a_number = 0
    a_error = ""
    retried: list[Attempt] | None = None   # earlier attempts, when there were retries
    ua = ""                             # user-agent, kept by a trace slot (which keeps no headers)
    rid_client = False                  # ... and whether the client sent x-request-id

    def labels(self) -> tuple[str, ...]:
        svc = self.service
        d = {"reporter": self.reporter,
             **wl_labels("source", self.source, self.src_identity, self.cluster),
             **wl_labels("destination", self.destination, self.dst_identity, self.cluster),
             "destination_service": svc.hostname if svc else UNKNOWN,
             "destination_service_name": svc.name if svc else UNKNOWN,
             "destination_service_namespace": svc.namespace if svc else UNKNOWN,
             "request_protocol": self.protocol, "response_flags": self.flags,
             "connection_security_policy": ("unknown" if self.reporter == "source"
                                            else "mutual_tls" if self.mtls_in else "none"),
             "response_code": str(self.status), "grpc_response_status": self.grpc_status}
        return tuple(d[k] for k in HTTP_LABELS)

    def masked(self) -> dict[str, Any]:
        """The values a client controls, masked (for spans; the log line masks the same)."""
        m = self.settings.masker
        out: dict[str, Any] = {"path": m.text(self.path), "authority": m.text(self.authority)}
        self._client_values(m, out)
        return out

    def _client_values(self, m: Masker, out: dict[str, Any]) -> None:
        """The optional client values (request id, headers, reason, body), masked, into ``out``."""
        if self.request_id:
            out["request_id"] = self.request_id          # ours, unless the client sent one (below)
        if self.headers:
            wanted = self.settings.request_headers
            ua = xff = ctype = None
            logged: dict[str, str] = {}
            for k, v in self.headers:
                if k == "user-agent":
                    ua = v
                elif k == "x-forwarded-for":
                    xff = v
                elif k == "content-type":
                    ctype = v
                elif k == "x-request-id" and self.request_id:
                    out["request_id"] = m.text(self.request_id)
                if wanted and k in wanted:
                    v = m.header(k, v)
                    logged[k] = f"{logged[k]},{v}" if k in logged else v
            if ua is not None:
                out["user_agent"] = m.header("user-agent", ua)
            if xff is not None:
                out["x_forwarded_for"] = m.header("x-forwarded-for", xff)
            if logged:
                out["request_headers"] = logged
        elif self.rid_client and self.request_id:
            out["request_id"] = m.text(self.request_id)
        if self.reason:
            out["reason"] = m.text(self.reason)
        if self.settings.body and self.body and self.headers is not None:
            ctype = next((v for k, v in self.headers if k == "content-type"), "")
            out["body"], cut = m.body(self.body, ctype, self.settings.body_limit)
            if cut:
                out["body_truncated"] = True

    def log_fields(self, duration_ms: float) -> dict[str, Any]:
        m = self.settings.masker
        src, dst, svc = self.source, self.destination, self.service
        d: dict[str, Any] = {
            "msg": "request", "start_time": iso_time(self.started), "reporter": self.reporter,
            "method": self.method, "path": m.text(self.path), "authority": m.text(self.authority),
            "protocol": self.protocol, "status": self.status, "flags": self.flags, "route": self.route,
            "src.addr": self.src_addr, "src.workload": src.name if src else "",
            "src.namespace": src.namespace if src else "", "src.identity": self.src_identity,
            "dst.service": svc.hostname if svc else "", "dst.addr": self.upstream,
            "dst.workload": dst.name if dst else "", "dst.namespace": dst.namespace if dst else "",
            "dst.identity": self.dst_identity, "bytes_received": self.request_bytes,
            "bytes_sent": self.response_bytes, "duration_ms": round(duration_ms, 2),
            "attempts": self.attempts}
        self._client_values(m, d)
        if self.grpc_status:
            d["grpc_status"] = self.grpc_status
        if self.trace_id:
            d["trace_id"], d["span_id"] = self.trace_id, self.span_id
        return d

    def attempted(self, span_id: str, start: float, end: float, status: int, up: Any, port: int,
                  backend: Any, error: str) -> None:
        """One upstream attempt of a sampled request (``up``: the endpoint, an Upstream)."""
        if self.a_span_id:
            if self.retried is None:
                self.retried = []
            self.retried.append(self.last_attempt())
        self.a_span_id, self.a_start, self.a_end, self.a_status = span_id, start, end, status
        self.a_cluster = up.service.hostname if up.service else up.ip
        self.a_workload = up.workload.workload_name if up.workload is not None else ""
        self.a_port, self.a_subset, self.a_host = port, backend.subset or "", backend.host
        self.a_number, self.a_error = self.attempts, error

    def last_attempt(self) -> Attempt:
        return (self.a_span_id, self.a_start, self.a_end, self.a_status, self.upstream, self.a_cluster,
                self.a_workload, self.a_port, self.a_subset, self.a_host, self.a_number, self.a_error)

    def spans(self) -> list[tr.Span]:
        """The request's SERVER span and a CLIENT span per upstream attempt, made from the
        finished record (names and attributes once they are read)."""
        failed = self.status >= 500 or self.status == 0
        out = [tr.Span(self.trace_id, self.span_id, self.parent_span_id, "", tr.SERVER, self.started,
                       self.ended, status=tr.ERROR if failed else tr.UNSET, lazy=self.server_attributes)]
        attempts = [*(self.retried or ()), self.last_attempt()] if self.a_span_id else []
        for a in attempts:
            status = a[3]
            out.append(tr.Span(self.trace_id, a[0], self.span_id, "", tr.CLIENT, a[1], a[2],
                               status=tr.ERROR if status == 0 or status >= 500 else tr.UNSET,
                               lazy=functools.partial(client_attributes, a)))
        return out

    def server_attributes(self) -> tuple[str, dict[str, Any]]:
        """Attribute names as Envoy/Istio tag a proxy's span; client values masked as in the log."""
        masked = self.masked()
        svc = self.service
        host = svc.hostname if svc else self.authority
        attrs: dict[str, Any] = {
            "http.method": self.method, "http.url": f"http://{masked['authority']}{masked['path']}",
            "http.protocol": self.protocol, "http.status_code": self.status,
            "response_flags": self.flags, "component": "proxy", "istio.reporter": self.reporter,
            "downstream_cluster": self.source.namespace if self.source else "-",
            "peer.address": self.src_addr, "request_size": self.request_bytes,
            "response_size": self.response_bytes, "upstream_cluster": host,
            "upstream_address": self.upstream or "-"}
        if "user_agent" in masked:
            attrs["user_agent"] = masked["user_agent"]
        elif self.ua:
            attrs["user_agent"] = self.settings.masker.header("user-agent", self.ua)
        if "request_id" in masked:
            attrs["guid:x-request-id"] = masked["request_id"]
        if self.route:
            attrs["route"] = self.route
        if "reason" in masked:
            attrs["reason"] = masked["reason"]
        if self.grpc_status:
            attrs["grpc.status_code"] = self.grpc_status
        return f"{host}:{self._port()}/*", attrs

    def _port(self) -> str:
        _, _, port = self.authority.rpartition(":")
        return port if port.isdigit() else "80"


class BatchedLogHandler(logging.Handler):
    """Access-log lines collected and written together: a write (and flush) per request cost
    a proxy about a quarter of its time per request. Lines wait at most ``interval`` seconds;
    warnings and errors go out at once."""

    def __init__(self, stream: Any, fmt: logging.Formatter | None, interval: float = 0.2,
                 limit: int = 256 * 1024) -> None:
        super().__init__()
        self.stream = stream
        if fmt is not None:
            self.setFormatter(fmt)
        self.interval = interval
        self.limit = limit
        self.lines: list[str] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.lines.append(line)
        self.size += len(line)
        if record.levelno >= logging.WARNING or self.size >= self.limit:
            self.flush()
        elif self.timer is None:
            try:
                self.timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:          # no event loop: write now
                self.flush()

    def flush(self) -> None:
        self.timer = None
        if not self.lines:
            return
        text = "\n".join(self.lines) + "\n"
        self.lines, self.size = [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        super().close()


def batch_access_log() -> None:
    """Send the access log through a :class:`BatchedLogHandler` writing where the root
    logger's first handler writes, with the same format."""
    root = logging.getLogger().handlers
    target = next((h for h in root if isinstance(h, logging.StreamHandler)), None)
    if target is None:
        return
    handler = BatchedLogHandler(target.stream, target.formatter)
    log.addHandler(handler)
    log.propagate = False


def _slot() -> RequestRecord:
    return RequestRecord("", None, "", "", "", "")


def _trace_id(r: RequestRecord) -> str:
    return r.trace_id


class OtlpExporter:
    """Spans to an OTLP/HTTP collector through the OpenTelemetry SDK: its OTLPSpanExporter behind
    a BatchSpanProcessor (a thread of its own, so the event loop never waits for the collector).
    The SDK is imported only when a collector is configured."""

    def __init__(self, target: OtlpTarget, service: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.target = target
        self.service = service
        self.resource = Resource.create({"service.name": service, "service.namespace":
                                         service.rpartition(".")[2] if "." in service else ""})
        self.scope = InstrumentationScope("zeromesh.waypoint")
        self.exporter = OTLPSpanExporter(endpoint=target.endpoint, headers=dict(target.headers),
                                         timeout=target.timeout)
        self.processor = BatchSpanProcessor(self.exporter, schedule_delay_millis=1000)

    def export(self, spans: Iterable[tr.Span]) -> None:
        for s in spans:
            self.processor.on_end(self.readable(s))

    def readable(self, s: tr.Span) -> Any:
        """One of our spans as the SDK's ReadableSpan."""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        s.resolve()
        flags = TraceFlags(TraceFlags.SAMPLED)
        ctx = SpanContext(int(s.trace_id, 16), int(s.span_id, 16), is_remote=False, trace_flags=flags)
        parent = (SpanContext(int(s.trace_id, 16), int(s.parent_span_id, 16), is_remote=True,
                              trace_flags=flags) if s.parent_span_id else None)
        status = {tr.ERROR: Status(StatusCode.ERROR), tr.OK: Status(StatusCode.OK)}.get(s.status, Status())
        return ReadableSpan(name=s.name, context=ctx, parent=parent, resource=self.resource,
                            attributes=s.attributes, kind=SpanKind.SERVER if s.kind == tr.SERVER
                            else SpanKind.CLIENT, status=status, start_time=tr.unix_ns(s.start),
                            end_time=tr.unix_ns(s.end), instrumentation_scope=self.scope)

    def close(self) -> None:
        """Send what is queued (bounded by the exporter's timeout), then stop the thread."""
        self.processor.shutdown()


class WaypointTelemetry(Telemetry):
    """TCP metrics (for traffic that is not HTTP) plus the HTTP ones, in one registry; the
    access log; the traces of recent requests and the exporter, if any."""

    def __init__(self, service: str = "waypoint", settings: TelemetrySettings | None = None) -> None:
        super().__init__()
        self.http = HttpMetrics(self.metrics.registry)
        self._http_children: dict[tuple[Any, ...], tuple[Any, Any, Any, Any]] = {}
        self.service = service                 # the reporter's name in spans: "echo-wp.ns2"
        self.settings = settings or TelemetrySettings()
        self.traces = tr.TraceRing(self.settings.max_traces, _slot)
        self.exporter: OtlpExporter | None = None
        self._apply_exporter()

    def configure(self, settings: TelemetrySettings, service: str | None = None) -> None:
        """A new config version: settings swapped at once; the exporter follows its target."""
        for problem in settings.problems:
            tlog.warning("TelemetryPolicy: %s", problem)
        self.settings = settings
        if service is not None and service != self.service:
            self.service = service
            self._close_exporter()
        self.traces.resize(settings.max_traces)
        self._apply_exporter()

    def _apply_exporter(self) -> None:
        target = self.settings.otlp
        if self.exporter is not None and self.exporter.target == target:
            return
        self._close_exporter()
        if target is None:
            return
        try:
            self.exporter = OtlpExporter(target, self.service)
            tlog.info("exporting spans of %s to %s (OTLP/HTTP)", self.service, target.endpoint)
        except Exception as e:               # a missing SDK or a bad URL: keep serving without
            tlog.warning("cannot export spans to %s: %s", target.endpoint, e)

    def _close_exporter(self) -> None:
        exporter, self.exporter = self.exporter, None
        if exporter is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            exporter.close()
            return
        loop.run_in_executor(None, exporter.close)    # flushing may wait for the collector

    def close(self) -> None:
        exporter, self.exporter = self.exporter, None
        if exporter is not None:
            exporter.close()

    def recent_traces(self, limit: int | None = None) -> list[dict[str, Any]]:
        return [tr.trace_json(tid, [s for slot in slots for s in slot.spans()], self.service)
                for tid, slots in self.traces.recent(_trace_id, limit)]

    def request_done(self, r: RequestRecord) -> None:
        # The 25 label values are derived only from these: look the series up by them.
        src, dst, svc = r.source, r.destination, r.service
        short = (src.uid if src else "", r.src_identity, dst.uid if dst else "", r.dst_identity,
                 svc.key if svc else "", r.status, r.flags, r.protocol, r.mtls_in, r.grpc_status,
                 r.reporter)
        got = self._http_children.get(short)
        if got is None:
            key = r.labels()
            m = self.http
            got = (m.requests.labels(*key), m.duration.labels(*key), m.request_bytes.labels(*key),
                   m.response_bytes.labels(*key))
            if len(self._http_children) >= self.CACHE_LIMIT:
                self._http_children.clear()
            self._http_children[short] = got
        now = time.monotonic()
        duration_ms = (now - r.started) * 1000
        got[0].inc()
        got[1].observe(duration_ms)
        got[2].observe(r.request_bytes)
        got[3].observe(r.response_bytes)
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps(r.log_fields(duration_ms)))
        if r.sampled:
            r.ended = now
            slot = self.traces.claim()
            if slot is not None:                 # copied into a slot made at start: nothing is kept
                d = slot.__dict__                # alive that was made for this request
                ua, rid_client = "", False
                for k, v in r.headers or ():
                    if k == "user-agent":
                        ua = v
                    elif k == "x-request-id":
                        rid_client = True
                d.clear()
                d.update(r.__dict__)
                d["headers"], d["body"], d["ua"], d["rid_client"] = None, b"", ua, rid_client
            if self.exporter is not None:
                self.exporter.export(r.spans())
