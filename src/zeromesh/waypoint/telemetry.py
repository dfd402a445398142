"""HTTP telemetry of a waypoint: Istio's standard HTTP metrics with ``reporter="waypoint"``
(names, labels and buckets as Istio's, so its Grafana dashboards and Kiali work unchanged)
and one JSON access-log line per request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from zeromesh.ztunnel.config import ServiceInfo, WorkloadInfo
from zeromesh.ztunnel.telemetry import LABELS as TCP_LABELS
from zeromesh.ztunnel.telemetry import UNKNOWN, Telemetry, wl_labels

log = logging.getLogger("zeromesh.access")

HTTP_LABELS = (*TCP_LABELS, "response_code", "grpc_response_status")
# Istio's default buckets for istio_request_duration_milliseconds and the byte-size histograms.
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                    300000, 600000, 1800000, 3600000)
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("istio_requests", "Requests handled", HTTP_LABELS, registry=registry)
        self.duration = Histogram("istio_request_duration_milliseconds", "Request duration",
                                  HTTP_LABELS, buckets=DURATION_BUCKETS, registry=registry)
        self.request_bytes = Histogram("istio_request_bytes", "Request sizes (headers and body)",
                                       HTTP_LABELS, buckets=SIZE_BUCKETS, registry=registry)
        self.response_bytes = Histogram("istio_response_bytes", "Response sizes (headers and body)",
                                        HTTP_LABELS, buckets=SIZE_BUCKETS, registry=registry)


@dataclass
class RequestRecord:
    """One request as the waypoint saw it; becomes a metric sample and an access-log line."""
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

    def log_fields(self, duration_ms: float) -> dict[str, Any]:
        d: dict[str, Any] = {
            "msg": "request", "reporter": self.reporter, "method": self.method, "path": self.path,
            "authority": self.authority, "protocol": self.protocol, "status": self.status,
            "flags": self.flags, "route": self.route,
            "src.addr": self.src_addr, "src.workload": self.source.name if self.source else "",
            "src.namespace": self.source.namespace if self.source else "",
            "src.identity": self.src_identity,
            "dst.service": self.service.hostname if self.service else "",
            "dst.addr": self.upstream,
            "dst.workload": self.destination.name if self.destination else "",
            "dst.namespace": self.destination.namespace if self.destination else "",
            "dst.identity": self.dst_identity, "bytes_received": self.request_bytes,
            "bytes_sent": self.response_bytes, "duration_ms": round(duration_ms, 2),
            "attempts": self.attempts}
        if self.request_id:
            d["request_id"] = self.request_id
        if self.reason:
            d["reason"] = self.reason
        return d


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


class WaypointTelemetry(Telemetry):
    """TCP metrics (for traffic that is not HTTP) plus the HTTP ones, in one registry."""

    def __init__(self) -> None:
        super().__init__()
        self.http = HttpMetrics(self.metrics.registry)
        self._http_children: dict[tuple[Any, ...], tuple[Any, Any, Any, Any]] = {}

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
        duration_ms = (time.monotonic() - r.started) * 1000
        got[0].inc()
        got[1].observe(duration_ms)
        got[2].observe(r.request_bytes)
        got[3].observe(r.response_bytes)
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps(r.log_fields(duration_ms)))
