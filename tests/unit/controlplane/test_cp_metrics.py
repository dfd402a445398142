"""Control-plane health metrics: push streams and the CSR endpoint (`PushMetrics`), the store
revision and CA expiry (the API server's collector), and where the metrics port is recorded."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest

from zeromesh.controlplane.apiserver import HealthCollector
from zeromesh.controlplane.pushserver import PushMetrics
from zeromesh.local import cluster
from zeromesh.local.state import ClusterConfig


def _conn(kind: str) -> Any:
    return SimpleNamespace(status=SimpleNamespace(kind=kind))


def test_push_metrics_by_kind_with_istiod_names() -> None:
    conns = {"a": _conn("nodeagent"), "b": _conn("nodeagent"), "c": _conn("waypoint")}
    m = PushMetrics(lambda: conns)
    m.answered("nodeagent", 0.004, ack=True)
    m.answered("waypoint", 0.2, ack=False)
    m.send_failed("waypoint")
    m.csr(signed=True)
    m.csr(signed=False)
    text = generate_latest(m.registry).decode()
    for line in ('zeromesh_connected_proxies{kind="nodeagent"} 2.0',
                 'zeromesh_connected_proxies{kind="waypoint"} 1.0',
                 'zeromesh_connected_proxies{kind="gateway"} 0.0',
                 "pilot_xds 3.0",
                 'zeromesh_pushes_total{kind="nodeagent",result="ack"} 1.0',
                 'zeromesh_pushes_total{kind="waypoint",result="nack"} 1.0',
                 'zeromesh_pushes_total{kind="waypoint",result="error"} 1.0',
                 'zeromesh_push_duration_seconds_bucket{kind="nodeagent",le="0.005"} 1.0',
                 'zeromesh_push_duration_seconds_bucket{kind="waypoint",le="0.1"} 0.0',
                 'pilot_proxy_convergence_time_bucket{le="0.5"} 2.0',
                 "zeromesh_certificates_issued_total 1.0",
                 # istiod's counters have no _total suffix: exposed untyped under exactly its names.
                 "pilot_total_xds_rejects 1.0", "citadel_server_csr_count 2.0",
                 "citadel_server_success_cert_issuance_count 1.0",
                 "# TYPE citadel_server_csr_count untyped"):
        assert line in text, line


def test_store_revision_and_earliest_root_expiry() -> None:
    late = SimpleNamespace(not_valid_after_utc=dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    early = SimpleNamespace(not_valid_after_utc=dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
    cp = SimpleNamespace(store=SimpleNamespace(revision=lambda: 17),
                         mesh=SimpleNamespace(ca=SimpleNamespace(roots=[late, early])))
    got = {f.name: f.samples[0].value for f in HealthCollector(cp).collect()}  # type: ignore[arg-type]
    stamp = dt.datetime(2035, 1, 1, tzinfo=dt.UTC).timestamp()
    assert got == {"zeromesh_config_version": 17, "zeromesh_ca_root_expiry_timestamp_seconds": stamp,
                   "citadel_server_root_cert_expiry_timestamp": stamp}


def test_metrics_port_is_recorded_and_counted_as_taken() -> None:
    cfg = ClusterConfig(name="c", nodes=1, xds_port=5000, cp_metrics_port=5001,
                        node_ports={"node1": {"metrics": 5002, "admin": 5003}})
    assert cluster._ports_in_use(cfg) == {5000, 5001, 5002, 5003}
    # An older cluster.json without the field still loads.
    assert ClusterConfig(name="c", nodes=1).cp_metrics_port == 0


def test_a_just_spawned_daemon_counts_as_alive() -> None:
    """Right after Popen returns, /proc/PID/cmdline can still be empty; `up` must not take the
    control plane it just started for dead (that made `up` fail now and then)."""
    import subprocess
    import sys
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.1)", "--cluster", "c",
                              "controlplane"], start_new_session=True)
        try:
            assert cluster.pid_alive(p.pid, "--cluster c controlplane ")
            assert not cluster.pid_alive(p.pid, "--cluster c2 controlplane ")
        finally:
            p.wait()
    assert not cluster.pid_alive(p.pid, "--cluster c controlplane ")
