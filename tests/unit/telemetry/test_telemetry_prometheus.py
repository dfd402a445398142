"""The scrape configuration, the relay contract's parsing, the metric catalogue and PromQL
name extraction (`zeromesh.telemetry.prometheus`), and that the catalogue is what the
components really export."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

import zeromesh.telemetry.prometheus as prom
from zeromesh.telemetry.prometheus import (
    METRICS,
    ProxyPod,
    RelayRefused,
    ScrapeSetup,
    exported_series,
    file_sd_documents,
    parse_duration,
    parse_relay_target,
    promql_metric_names,
    proxy_pods,
    relay_path,
    scrape_config,
    target_groups,
)

NODE_PORTS = {"node1": {"metrics": 41001, "admin": 41002}, "node2": {"metrics": 41003, "admin": 41004},
              "node10": {"metrics": 41005, "admin": 41006}}
SETUP = ScrapeSetup("c1", 40000, NODE_PORTS,
                    (ProxyPod("ns1", "waypoint-7d9-x2", "node2", prom.WAYPOINT),
                     ProxyPod("istio-system", "istio-ingressgateway-5-a", "node1", prom.GATEWAY)), "2s")


# ---- relay contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "ns", "pod", "path"), [
    ("/proxy/ns1/wp-1/stats/prometheus", "ns1", "wp-1", "/stats/prometheus"),
    ("/proxy/ns1/wp-1/debug/traces?limit=5&x=a%20b", "ns1", "wp-1", "/debug/traces?limit=5&x=a%20b"),
    ("/proxy/ns1/wp-1/", "ns1", "wp-1", "/"),
    ("/proxy/ns1/wp-1", "ns1", "wp-1", "/"),
    ("/proxy/istio-system/istio-ingressgateway-5575fc89f7-bndht/config_dump", "istio-system",
     "istio-ingressgateway-5575fc89f7-bndht", "/config_dump"),
    # Encoded bytes are passed on encoded: they cannot split the request line the pod reads.
    ("/proxy/ns1/wp-1/a%0d%0aHost:%20evil", "ns1", "wp-1", "/a%0d%0aHost:%20evil"),
])
def test_relay_target_accepted(raw: str, ns: str, pod: str, path: str) -> None:
    t = parse_relay_target(raw)
    assert (t.namespace, t.pod, t.path) == (ns, pod, path)


@pytest.mark.parametrize(("raw", "status"), [
    ("/proxy/ns1/wp-1/../../etc/passwd", 400),
    ("/proxy/ns1/wp-1/x/%2e%2e/config_dump", 400),
    ("/proxy/ns1/wp-1/x/%2E%2E/config_dump", 400),
    ("/proxy/ns1/wp-1/x/%252e%252e/y", 400),
    ("/proxy/ns1/wp-1/stats?path=..", 400),
    ("/proxy/../wp-1/stats", 400),
    ("/proxy/NS/wp-1/stats", 400),
    ("/proxy/ns1/wp_1/stats", 400),
    ("/proxy/ns1/wp-1/a b", 400),
    ("/proxy/ns1/wp-1/a\\b", 400),
    ("/proxy/ns1/wp-1/\u00e9", 400),
    ("/proxy/ns1", 404),
    ("/metrics", 404),
])
def test_relay_target_refused(raw: str, status: int) -> None:
    with pytest.raises(RelayRefused) as e:
        parse_relay_target(raw)
    assert e.value.status == status


def test_relay_path_is_what_the_relay_parses() -> None:
    p = relay_path("ns1", "wp-1", "/stats/prometheus")
    assert p == "/proxy/ns1/wp-1/stats/prometheus"
    t = parse_relay_target(p)
    assert (t.namespace, t.pod, t.path) == ("ns1", "wp-1", "/stats/prometheus")


# ---- scrape configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 s", "0s", "-1s", "1.5s", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def _pod(ns: str, name: str, image: str, node: str = "node1", **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"namespace": ns, "name": name}
    if extra.get("deleting"):
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": md, "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]},
            "status": {"phase": extra.get("phase", "Running")}}


def test_proxy_pods_are_waypoints_and_gateways_by_image() -> None:
    pods = [_pod("ns1", "waypoint-1", "zeromesh/waypoint", "node2"),
            _pod("istio-system", "istio-ingressgateway-1", "docker.io/zeromesh/ingressgateway:1.0"),
            _pod("ns1", "echo-1", "zeromesh/http-echo"),
            _pod("ns1", "waypoint-old", "zeromesh/waypoint", deleting=True),
            _pod("ns1", "waypoint-done", "zeromesh/waypoint", phase="Failed"),
            _pod("ns1", "waypoint-unscheduled", "zeromesh/waypoint", node=""),
            _pod("ns1", "waypoint-pending", "zeromesh/waypoint", phase="Pending")]
    assert proxy_pods(pods) == (
        ProxyPod("istio-system", "istio-ingressgateway-1", "node1", prom.GATEWAY),
        ProxyPod("ns1", "waypoint-1", "node2", prom.WAYPOINT),
        ProxyPod("ns1", "waypoint-pending", "node1", prom.WAYPOINT))


def test_target_groups_label_every_target_and_use_loopback_only() -> None:
    groups = target_groups(SETUP)
    assert groups["zeromesh-controlplane"] == [{"targets": ["127.0.0.1:40000"], "labels": {
        "cluster": "c1", "namespace": "istio-system", "pod": "istiod", "node": "host",
        "component": "controlplane"}}]
    zt = groups["zeromesh-ztunnel"]
    assert [g["labels"]["node"] for g in zt] == ["node1", "node2", "node10"]       # natural order
    assert zt[1] == {"targets": ["127.0.0.1:41003"], "labels": {
        "cluster": "c1", "namespace": "istio-system", "pod": "ztunnel-node2", "node": "node2",
        "component": "ztunnel"}}
    px = {g["labels"]["pod"]: g for g in groups["zeromesh-proxies"]}
    assert px["waypoint-7d9-x2"]["targets"] == ["127.0.0.1:41003"]           # its node's agent
    assert px["istio-ingressgateway-5-a"]["targets"] == ["127.0.0.1:41001"]
    assert px["waypoint-7d9-x2"]["labels"]["component"] == "waypoint"
    for job in groups.values():
        for g in job:
            assert all(t.startswith("127.0.0.1:") for t in g["targets"])
            assert {"pod", "namespace", "node", "component"} <= set(g["labels"])


def test_proxy_on_a_node_without_recorded_port_and_missing_controlplane_port_are_left_out() -> None:
    setup = ScrapeSetup("c1", 0, {"node1": {"metrics": 1}}, (ProxyPod("a", "b", "node9", "waypoint"),))
    groups = target_groups(setup)
    assert groups["zeromesh-controlplane"] == [] and groups["zeromesh-proxies"] == []


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """Prometheus' `replace` relabelling (the only action the configuration uses)."""
    out = dict(labels)
    for r in rules:
        value = r.get("separator", ";").join(out.get(s, "") for s in r["source_labels"])
        m = re.fullmatch(r.get("regex", "(.*)"), value)
        if m:
            groups = (m.group(0), *m.groups())
            out[r["target_label"]] = re.sub(r"\$(\d+)", lambda g, gs=groups: gs[int(g.group(1))],
                                            r.get("replacement", "$1"))
    return out


def test_static_configuration_scrapes_proxies_through_the_relay() -> None:
    text = scrape_config(SETUP)
    assert text.startswith("# Prometheus scrape configuration")
    assert "ns1/waypoint-7d9-x2 (waypoint on node2)" in text
    cfg = yaml.safe_load(text)
    assert cfg["global"] == {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"}
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert list(jobs) == ["zeromesh-controlplane", "zeromesh-ztunnel", "zeromesh-proxies"]
    assert jobs["zeromesh-controlplane"]["metrics_path"] == "/metrics"
    px = jobs["zeromesh-proxies"]
    wp = next(g for g in px["static_configs"] if g["labels"]["pod"] == "waypoint-7d9-x2")
    final = _relabel(px["relabel_configs"], {**wp["labels"], "__metrics_path__": px["metrics_path"]})
    assert final["__metrics_path__"] == "/proxy/ns1/waypoint-7d9-x2/stats/prometheus"
    assert final["instance"] == "ns1/waypoint-7d9-x2"
    assert parse_relay_target(final["__metrics_path__"]).path == "/stats/prometheus"
    zt = jobs["zeromesh-ztunnel"]
    assert _relabel(zt["relabel_configs"], zt["static_configs"][0]["labels"])["instance"] == \
        "istio-system/ztunnel-node1"


def test_long_intervals_keep_prometheus_default_timeout() -> None:
    cfg = yaml.safe_load(scrape_config(ScrapeSetup("c1", 1, {}, (), "1m")))
    assert cfg["global"]["scrape_timeout"] == "10s"


def test_file_sd_configuration_points_at_one_file_per_job() -> None:
    cfg = yaml.safe_load(scrape_config(SETUP, "/tmp/sd"))
    files = [j["file_sd_configs"][0]["files"] for j in cfg["scrape_configs"]]
    assert files == [["/tmp/sd/c1.controlplane.json"], ["/tmp/sd/c1.ztunnel.json"],
                     ["/tmp/sd/c1.proxies.json"]]
    assert all("static_configs" not in j for j in cfg["scrape_configs"])
    docs = file_sd_documents(SETUP)
    assert set(docs) == {"c1.controlplane.json", "c1.ztunnel.json", "c1.proxies.json"}
    assert docs["c1.proxies.json"] == target_groups(SETUP)["zeromesh-proxies"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")
@pytest.mark.parametrize("file_sd", [False, True])
def test_promtool_accepts_the_configuration(tmp_path: Path, file_sd: bool) -> None:
    sd = tmp_path / "sd"
    sd.mkdir()
    for name, groups in file_sd_documents(SETUP).items():
        (sd / name).write_text(json.dumps(groups))
    conf = tmp_path / "prometheus.yml"
    conf.write_text(scrape_config(SETUP, str(sd) if file_sd else None))
    r = subprocess.run(["promtool", "check", "config", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the catalogue ----------------------------------------------------------------------------------
def test_catalogue_names_are_unique_and_istio_counterparts_are_named() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.type in ("counter", "gauge", "histogram", "untyped")
        assert m.type != "counter" or m.name.endswith("_total"), m.name
        assert m.name.startswith(("istio_", "zeromesh_", "pilot_", "citadel_")), m.name
    exported = exported_series()
    assert {"istio_request_duration_milliseconds_bucket", "istio_tcp_sent_bytes_total", "up",
            "zeromesh_push_duration_seconds_bucket", "pilot_xds"} <= exported
    # Every zeromesh health metric with an istiod counterpart is also exported under that name.
    for m in METRICS:
        if m.istio and m.name.startswith("zeromesh_") and " " not in m.istio:
            assert m.istio in prom.METRICS_BY_NAME, m.istio


def _families(registry: CollectorRegistry) -> dict[str, str]:
    """Exposed family name -> type, as a scrape would show it."""
    out = {}
    for fam in registry.collect():
        name = fam.name + ("_total" if fam.type == "counter" else "")
        out[name] = {"unknown": "untyped"}.get(fam.type, fam.type)
    return out


def _catalogue(component: str) -> dict[str, str]:
    return {m.name: m.type for m in METRICS if component in m.components}


def test_catalogue_matches_the_ztunnel_and_waypoint_registries() -> None:
    from zeromesh.waypoint.telemetry import HttpMetrics
    from zeromesh.ztunnel.telemetry import Metrics
    tcp = _families(Metrics().registry)
    reg = CollectorRegistry()
    HttpMetrics(reg)
    http = _families(reg)
    assert {**tcp, **http} == {k: v for k, v in _catalogue(prom.WAYPOINT).items()}
    node = _catalogue(prom.ZTUNNEL)
    assert {k: v for k, v in node.items() if k.startswith("istio_")} == tcp


def test_catalogue_matches_the_node_agent_health_metrics() -> None:
    from zeromesh.nodeagent.agent import HealthCollector
    reg = CollectorRegistry(auto_describe=False)
    reg.register(HealthCollector(lambda: "42", lambda: True, lambda: [("spiffe://td/ns/a/sa/b", 1.5e9)]))
    fams = _families(reg)
    assert fams == {k: v for k, v in _catalogue(prom.ZTUNNEL).items() if not k.startswith("istio_")}


def test_catalogue_matches_the_control_plane_registry() -> None:
    from zeromesh.controlplane.pushserver import PushMetrics
    m = PushMetrics(dict)
    m.answered("nodeagent", 0.01, ack=True)
    m.csr(signed=True)
    fams = _families(m.registry)
    expected = _catalogue(prom.CONTROLPLANE)
    # Read from the store and the CA at scrape time (the API server's collector).
    for name in ("zeromesh_config_version", "zeromesh_ca_root_expiry_timestamp_seconds",
                 "citadel_server_root_cert_expiry_timestamp"):
        assert expected.pop(name) == "gauge"
    assert fams == expected


# ---- PromQL -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("expr", "names"), [
    ('sum(rate(istio_requests_total{reporter="waypoint", response_code=~"5.."}[1m]))',
     {"istio_requests_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket"
     "[$__rate_interval])))", {"istio_request_duration_milliseconds_bucket"}),
    ("(min(zeromesh_ca_root_expiry_timestamp_seconds) - time()) / 86400",
     {"zeromesh_ca_root_expiry_timestamp_seconds"}),
    ('sum(a{x="${v}"} offset 5m) by (le) > bool 1e3 and on(pod) b', {"a", "b"}),
    ('label_replace(up, "x", "$1", "job", "(.*)")', {"up"}),
    ("count(foo) by (node) == 2", {"foo"}),
])
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# ---- purity -------------------------------------------------------------------------------------------
def test_prometheus_module_does_no_io() -> None:
    tree = ast.parse(Path(prom.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {i for i in imported if i.split(".")[0] in ("asyncio", "socket", "subprocess")}
    internal = {i for i in imported if i.startswith("zeromesh")}
    assert internal <= {"zeromesh.errors", "zeromesh.local.images"}, internal
