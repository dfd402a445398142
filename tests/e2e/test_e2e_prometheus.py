"""A real Prometheus scrapes a 2-node cluster with a waypoint (issue 8): Debian's binary, run by
the test on a free loopback port with the configuration `zeromesh x prometheus-config` prints
(file_sd targets, refreshed by re-running the command when the waypoint appears), answers the
queries Istio's Grafana dashboards use. Also the node agent's relay contract, from the host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2ekit import Cluster, unique_name

from zeromesh.local.state import Paths, load_config

PROMETHEUS = "/usr/bin/prometheus"
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"
WAYPOINT_REQUESTS = 'sum(rate(istio_requests_total{reporter="waypoint"}[1m]))'
WAYPOINT_ERRORS = 'sum(rate(istio_requests_total{reporter="waypoint", response_code=~"5.."}[1m]))'

APP = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: echo, namespace: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: flaky, namespace: {ns}}}
spec:
  selector: {{app: flaky}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      serviceAccountName: echo
      nodeSelector: {{name: node2}}
      containers: [{{name: echo, image: zeromesh/http-echo, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: flaky, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: flaky}}}}
  template:
    metadata: {{labels: {{app: flaky}}}}
    spec:
      serviceAccountName: echo
      nodeSelector: {{name: node2}}
      containers:
      - name: echo
        image: zeromesh/http-echo
        ports: [{{containerPort: 8080}}]
        env: [{{name: FAIL_EVERY, value: "2"}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      nodeSelector: {{name: node1}}
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
"""

POKE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: poke, namespace: {ns}}}
spec:
  action: DENY
  rules: [{{from: [{{source: {{principals: [cluster.local/ns/nowhere/sa/nobody-{n}]}}}}]}}]
"""

pytestmark = pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK),
                                reason="Debian's prometheus is not installed (apt-get install prometheus)")


def eventually(check: Callable[[], Any], what: str, timeout: float = 60, every: float = 0.5) -> Any:
    """The check's first truthy answer, or fail saying what never happened (and the last answer)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} (last: {last!r})")


def http_get(url: str, method: str = "GET", timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def traffic(c: Cluster, ns: str, n: int = 10) -> None:
    """n GETs to echo and n to flaky (every other one answers 500) from the client pod."""
    script = (f"i=0; while [ $i -lt {n} ]; do curl -s -o /dev/null -m 5 http://echo.{ns}/x; "
              f"curl -s -o /dev/null -m 5 http://flaky.{ns}/; i=$((i+1)); done")
    c.exec(ns, "deploy/client", "sh", "-c", script, timeout=120)


@pytest.fixture(scope="module")
def mesh(cluster: Cluster) -> Iterator[tuple[Cluster, str]]:
    ns = unique_name("prom")
    try:
        cluster.apply("-", input=APP.format(ns=ns))
        cluster.wait_ready(ns, count=3)
        yield cluster, ns
    finally:
        cluster.z("delete", "namespace", ns, check=False)


def waypoint_pod(c: Cluster, ns: str) -> dict[str, Any]:
    return next(p for p in c.pods(ns) if p["metadata"]["labels"].get(GATEWAY_LABEL))


class Prometheus:
    """Debian's binary as a plain child process of the test (never the packaged service)."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited; see prometheus.log"
        try:
            return http_get(f"{self.url}/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert status == 200, body
        data = json.loads(body)["data"]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(json.loads(http_get(f"{self.url}/api/v1/targets")[1])["data"]["activeTargets"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def test_prometheus_answers_istio_dashboard_queries(mesh: tuple[Cluster, str]) -> None:
    c, ns = mesh
    with tempfile.TemporaryDirectory(prefix="zm-prom-") as tmp:
        work = Path(tmp)
        sd = work / "sd"
        config = work / "prometheus.yml"

        def generate() -> str:
            out = c.z("x", "prometheus-config", "--scrape-interval", "1s", "--file-sd", str(sd)).stdout
            config.write_text(out)
            return out

        # Without the waypoint first, so the refresh by re-running the command is what brings
        # its target in.
        assert not any(p["metadata"]["labels"].get(GATEWAY_LABEL) for p in c.pods(ns))
        out = generate()
        assert "job_name: zeromesh-proxies" in out and f"{ns}/" not in out.split("scrape_configs")[0]
        prom = Prometheus(config, work)
        try:
            eventually(prom.ready, "prometheus never became ready", timeout=30)
            c.z("waypoint", "apply", "-n", ns, "--enroll-namespace", "--wait")
            wp = waypoint_pod(c, ns)
            generate()
            proxies = json.loads((sd / f"{c.name}.proxies.json").read_text())
            assert any(g["labels"]["pod"] == wp["metadata"]["name"] and g["labels"]["component"] == "waypoint"
                       for g in proxies), proxies

            def all_up() -> list[dict[str, Any]] | None:
                ts = prom.targets()
                pods = {t["labels"].get("pod") for t in ts if t["health"] == "up"}
                return ts if wp["metadata"]["name"] in pods and all(t["health"] == "up" for t in ts) else None
            targets = eventually(all_up, "not every target is up", timeout=60)
            by_component = {t["labels"]["component"] for t in targets}
            assert by_component == {"controlplane", "ztunnel", "waypoint", "gateway"}, by_component
            for t in targets:
                assert {"pod", "namespace", "node", "component"} <= set(t["labels"]), t["labels"]
                assert t["scrapeUrl"].startswith("http://127.0.0.1:"), t["scrapeUrl"]

            def value(promql: str) -> float | None:
                res = prom.query(promql)
                return float(res[0]["value"][1]) if res else None

            def answered(promql: str, ok: Callable[[float], bool] = lambda v: v > 0,
                         poke: Callable[[], None] = lambda: traffic(c, ns)) -> float:
                """Traffic (or `poke`) until the query returns what a dashboard would show."""
                def check() -> float | None:
                    v = value(promql)
                    if v is not None and v == v and ok(v):      # v == v: not NaN
                        return v
                    poke()
                    return None
                return float(eventually(check, f"no answer to {promql}", timeout=90, every=0.1))

            # Istio's service/workload dashboards: request rate, error rate, P50/P90/P99 duration.
            answered(WAYPOINT_REQUESTS)
            answered(WAYPOINT_ERRORS)
            errors = prom.query(f"{WAYPOINT_ERRORS} / {WAYPOINT_REQUESTS}")
            assert 0 < float(errors[0]["value"][1]) < 1, errors
            for q in (0.50, 0.90, 0.99):
                answered(f"histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket"
                         f'{{reporter="waypoint"}}[1m])) by (le))')
            by_dest = prom.query('sum(rate(istio_requests_total{reporter="waypoint"}[1m])) '
                                 "by (destination_workload, response_code)")
            assert {(r["metric"]["destination_workload"], r["metric"]["response_code"]) for r in by_dest} \
                >= {("echo", "200"), ("flaky", "500")}, by_dest
            # TCP bytes by source/destination workload (ztunnel): client -> waypoint -> echo.
            answered('sum(rate(istio_tcp_sent_bytes_total{source_workload="client"}[1m]))')
            tcp = prom.query("sum(rate(istio_tcp_sent_bytes_total[1m])) "
                             "by (source_workload, destination_workload)")
            pairs = {(r["metric"].get("source_workload"), r["metric"].get("destination_workload"))
                     for r in tcp}
            assert ("client", "waypoint") in pairs, pairs
            assert ("waypoint", "echo") in pairs, pairs
            # Series carry where they came from.
            src = prom.query('istio_requests_total{reporter="waypoint", destination_workload="echo"}')
            where = {"pod": wp["metadata"]["name"], "namespace": ns, "component": "waypoint",
                     "node": wp["spec"]["nodeName"]}
            assert src and all(r["metric"].items() >= where.items() for r in src), src

            # Control-plane and node-agent health.
            assert value('zeromesh_connected_proxies{kind="nodeagent"}') == 2
            assert (value('zeromesh_connected_proxies{kind="waypoint"}') or 0) >= 1
            assert (value("pilot_xds") or 0) >= 4          # 2 node agents, the waypoint, the gateway
            assert (value("zeromesh_config_version") or 0) > 0
            assert (value("zeromesh_ca_root_expiry_timestamp_seconds") or 0) > time.time()
            assert (value("citadel_server_root_cert_expiry_timestamp") or 0) > time.time()
            assert (value("sum(zeromesh_certificates_issued_total)") or 0) > 0
            assert (value('sum(zeromesh_pushes_total{result="ack"})') or 0) > 0
            pokes = iter(range(1000))

            def change_config() -> None:
                """A policy change every proxy is pushed (and ACKs) while Prometheus watches."""
                c.apply("-", input=POKE.format(ns=ns, n=next(pokes)))
                time.sleep(1)
            answered("histogram_quantile(0.99, sum(rate(zeromesh_push_duration_seconds_bucket[1m])) by (le))",
                     lambda v: 0 < v < 30, change_config)
            answered("histogram_quantile(0.99, sum(rate(pilot_proxy_convergence_time_bucket[1m])) by (le))",
                     lambda v: 0 < v <= 30, change_config)
            assert value('count(zeromesh_push_connected{component="ztunnel"} == 1)') == 2
            expiry = prom.query("zeromesh_workload_certificate_expiry_timestamp_seconds")
            assert any(r["metric"]["identity"] == f"spiffe://cluster.local/ns/{ns}/sa/client"
                       and r["metric"]["node"] == "node1" and float(r["value"][1]) > time.time()
                       for r in expiry), expiry
        finally:
            prom.stop()


def test_relay_reaches_proxy_pods_on_their_node_only(mesh: tuple[Cluster, str]) -> None:
    c, ns = mesh
    c.z("waypoint", "apply", "-n", ns, "--enroll-namespace", "--wait")
    wp = waypoint_pod(c, ns)
    name, node = wp["metadata"]["name"], wp["spec"]["nodeName"]
    other = "node1" if node == "node2" else "node2"
    ports = load_config(Paths(c.name)).node_ports   # type: ignore[union-attr]
    here, there = ports[node]["metrics"], ports[other]["metrics"]
    status, text = eventually(lambda: (r := http_get(f"http://127.0.0.1:{here}/proxy/{ns}/{name}/stats/"
                                                     "prometheus"))[0] == 200 and r, "relay never answered")
    assert "# TYPE istio_requests_total counter" in text
    status, text = http_get(f"http://127.0.0.1:{here}/proxy/{ns}/{name}/config_dump")
    assert status == 200 and json.loads(text)["waypoint"] == f"{ns}/waypoint"
    # Pods of another node, unknown pods, `..`, other methods: refused.
    status, text = http_get(f"http://127.0.0.1:{there}/proxy/{ns}/{name}/stats/prometheus")
    assert status == 404 and f"runs on {node}" in text, text
    assert http_get(f"http://127.0.0.1:{here}/proxy/{ns}/nope/stats/prometheus")[0] == 404
    assert http_get(f"http://127.0.0.1:{here}/proxy/{ns}/{name}/x/%2e%2e/config_dump")[0] == 400
    assert http_get(f"http://127.0.0.1:{here}/proxy/{ns}/{name}/stats/prometheus", method="POST")[0] == 405
    # A pod with nothing on 15020 answers 502 quickly (echo is on node2).
    echo = next(p for p in c.pods(ns) if p["metadata"]["labels"].get("app") == "echo")
    started = time.monotonic()
    status, _ = http_get(f"http://127.0.0.1:{ports['node2']['metrics']}/proxy/{ns}/"
                         f"{echo['metadata']['name']}/stats/prometheus")
    assert status == 502 and time.monotonic() - started < 5
