"""Where a cluster keeps its state (root-only) and its runtime files, and its recorded config."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zeromesh.local.plan import ClusterPlan, check_cluster_name

STATE_ROOT = Path(os.environ.get("ZEROMESH_STATE_ROOT", "/var/lib/zeromesh"))
RUN_ROOT = Path(os.environ.get("ZEROMESH_RUN_ROOT", "/run/zeromesh"))


@dataclass
class ClusterConfig:
    """What `up` decided once and every daemon reads: recorded in the state directory."""

    name: str
    nodes: int
    image_table: dict[str, Any] = field(default_factory=dict)
    python: str = ""          # interpreter pod processes can run (sample apps)
    trust_domain: str = "cluster.local"
    xds_port: int = 0         # the control plane's mTLS port for proxies on the host's loopback
    cp_metrics_port: int = 0  # the control plane's Prometheus /metrics on the host's loopback (istiod: 15014)
    workload_cert_ttl: int = 0   # seconds; 0 = the CA's default (24 h)
    # Per node agent: host-loopback ports for metrics (Istio's 15020) and admin (15000).
    node_ports: dict[str, dict[str, int]] = field(default_factory=dict)
    # The ingress gateway (istio-system/istio-ingressgateway): `up --no-ingress` leaves it out,
    # `install --ingress` adds it later; kept across restarts.
    ingress: bool = True
    # Its traffic ports published on the host's loopback (the Service's nodePorts), gateway port →
    # loopback port: {"80": P, "443": Q} (keys: `controlplane.ingress.PORT_KEYS`); {} when not installed.
    ingress_ports: dict[str, int] = field(default_factory=dict)

    @property
    def plan(self) -> ClusterPlan:
        return ClusterPlan(self.name, self.nodes)


@dataclass(frozen=True)
class Paths:
    cluster: str

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)

    @property
    def state(self) -> Path:
        return STATE_ROOT / self.cluster

    @property
    def run(self) -> Path:
        return RUN_ROOT / self.cluster

    @property
    def config(self) -> Path:
        return self.state / "cluster.json"

    @property
    def db(self) -> Path:
        return self.state / "store.db"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pods"

    @property
    def socket(self) -> Path:
        return self.run / "controlplane.sock"

    @property
    def pids(self) -> Path:
        return self.run / "pids"

    @property
    def samples(self) -> Path:
        """World-readable copy of the sample apps: pod processes run as an unprivileged user."""
        return self.run / "samples"

    @property
    def ca(self) -> Path:
        """The CA's own files (self-signed root, or the plug-in CA copied at `up --ca-dir`)."""
        return self.state / "ca"

    @property
    def ca_plugin(self) -> Path:
        return self.state / "ca-plugin"

    @property
    def tls(self) -> Path:
        """The control plane's serving certificate and the trust bundle proxies verify it with."""
        return self.state / "tls"

    @property
    def root_cert(self) -> Path:
        return self.tls / "root-cert.pem"

    def node_credential(self, node: str) -> Path:
        return self.state / "nodes" / node

    def pod_log(self, namespace: str, pod: str, container: str) -> Path:
        return self.pod_logs / namespace / pod / f"{container}.log"


def load_config(paths: Paths) -> ClusterConfig | None:
    try:
        data = json.loads(paths.config.read_text())
    except FileNotFoundError:
        return None
    return ClusterConfig(**data)


def save_config(paths: Paths, cfg: ClusterConfig) -> None:
    paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.state, 0o700)
    tmp = paths.config.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))
    os.chmod(tmp, 0o600)
    os.replace(tmp, paths.config)
