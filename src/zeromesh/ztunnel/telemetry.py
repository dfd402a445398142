"""L4 telemetry of the ztunnel: Istio's TCP metrics (same names and labels, so Istio's
dashboards work) and one JSON access-log line per connection.

The line's fields (``Connection.log_fields``) are documented in ``docs/access-log.md``; they
are addresses, identities and counters the proxy established itself, never text a client
sent, so unlike the waypoint's request lines (``zeromesh.telemetry.masking``) nothing in them
is masked."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from zeromesh.ztunnel.config import ServiceInfo, WorkloadInfo

log = logging.getLogger("zeromesh.access")

LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app",
    "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
    "destination_cluster", "request_protocol", "response_flags", "connection_security_policy",
)
UNKNOWN = "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.opened = Counter("istio_tcp_connections_opened", "TCP connections opened",
                              LABELS, registry=self.registry)
        self.closed = Counter("istio_tcp_connections_closed", "TCP connections closed",
                              LABELS, registry=self.registry)
        self.sent = Counter("istio_tcp_sent_bytes", "Bytes sent during a TCP connection",
                            LABELS, registry=self.registry)
        self.received = Counter("istio_tcp_received_bytes", "Bytes received during a TCP connection",
                                LABELS, registry=self.registry)
        self.failed = Counter("istio_tcp_connections_failed", "TCP connections that failed",
                              LABELS, registry=self.registry)


def wl_labels(prefix: str, wl: WorkloadInfo | None, principal: str, cluster: str) -> dict[str, str]:
    if wl is None:
        return {f"{prefix}_workload": UNKNOWN, f"{prefix}_workload_namespace": UNKNOWN,
                f"{prefix}_principal": principal or UNKNOWN, f"{prefix}_app": UNKNOWN,
                f"{prefix}_version": UNKNOWN, f"{prefix}_canonical_service": UNKNOWN,
                f"{prefix}_canonical_revision": UNKNOWN, f"{prefix}_cluster": UNKNOWN}
    return {f"{prefix}_workload": wl.workload_name, f"{prefix}_workload_namespace": wl.namespace,
            f"{prefix}_principal": principal or UNKNOWN, f"{prefix}_app": wl.canonical_name,
            f"{prefix}_version": wl.canonical_revision, f"{prefix}_canonical_service": wl.canonical_name,
            f"{prefix}_canonical_revision": wl.canonical_revision, f"{prefix}_cluster": cluster}


@dataclass
class Connection:
    """One proxied connection, from the point of view of one ztunnel (source or destination)."""
    direction: str                     # "outbound" | "inbound"
    src_addr: str
    dst_addr: str                      # the L4 peer (ip:15008 for HBONE)
    source: WorkloadInfo | None
    destination: WorkloadInfo | None
    service: ServiceInfo | None = None
    hbone_addr: str = ""
    src_identity: str = ""
    dst_identity: str = ""
    mtls: bool = False
    cluster: str = "Kubernetes"
    started: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0                # towards the destination
    bytes_recv: int = 0                # from the destination
    error: str = ""
    flags: str = "-"

    def labels(self) -> dict[str, str]:
        svc = self.service
        d = {"reporter": "source" if self.direction == "outbound" else "destination",
             **wl_labels("source", self.source, self.src_identity, self.cluster),
             **wl_labels("destination", self.destination, self.dst_identity, self.cluster),
             "destination_service": svc.hostname if svc else
             (self.destination.name if self.destination else UNKNOWN),
             "destination_service_name": svc.name if svc else UNKNOWN,
             "destination_service_namespace": svc.namespace if svc else
             (self.destination.namespace if self.destination else UNKNOWN),
             "request_protocol": "tcp", "response_flags": self.flags,
             "connection_security_policy": "mutual_tls" if self.mtls else "unknown"}
        return d

    def log_fields(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "direction": self.direction, "src.addr": self.src_addr,
            "src.workload": self.source.name if self.source else "",
            "src.namespace": self.source.namespace if self.source else "",
            "src.identity": self.src_identity, "dst.addr": self.dst_addr,
            "dst.hbone_addr": self.hbone_addr,
            "dst.service": self.service.hostname if self.service else "",
            "dst.workload": self.destination.name if self.destination else "",
            "dst.namespace": self.destination.namespace if self.destination else "",
            "dst.identity": self.dst_identity, "security": "mutual_tls" if self.mtls else "none",
            "bytes_sent": self.bytes_sent, "bytes_recv": self.bytes_recv,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if self.error:
            d["error"] = self.error
        return d


class Telemetry:
    """Counters are looked up once per distinct label set: a connection's hot path then costs
    a dict lookup, not a 23-label resolution per counter."""

    CACHE_LIMIT = 10000

    def __init__(self) -> None:
        self.metrics = Metrics()
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any, Any, Any]] = {}

    def _series(self, c: Connection) -> tuple[Any, Any, Any, Any, Any]:
        labels = c.labels()
        key = tuple(labels[k] for k in LABELS)
        got = self._children.get(key)
        if got is None:
            m = self.metrics
            got = (m.opened.labels(*key), m.closed.labels(*key), m.sent.labels(*key),
                   m.received.labels(*key), m.failed.labels(*key))
            if len(self._children) >= self.CACHE_LIMIT:
                self._children.clear()
            self._children[key] = got
        return got

    def opened(self, c: Connection) -> None:
        self._series(c)[0].inc()

    def closed(self, c: Connection) -> None:
        _, closed, sent, received, _ = self._series(c)
        closed.inc()
        # Istio's meaning: "sent" is the response direction (bytes the destination sent back),
        # "received" the request direction, whichever side reports (istio/istio#32399).
        sent.inc(c.bytes_recv)
        received.inc(c.bytes_sent)
        log.info(json.dumps({"msg": "connection complete", **c.log_fields()}))

    def closed_by_policy(self, c: Connection) -> None:
        log.warning(json.dumps({"msg": "connection closed due to policy change", **c.log_fields()}))

    def failed(self, c: Connection) -> None:
        c.flags = c.flags if c.flags != "-" else "CONNECT"
        self._series(c)[4].inc()
        log.warning(json.dumps({"msg": "connection failed", **c.log_fields()}))
