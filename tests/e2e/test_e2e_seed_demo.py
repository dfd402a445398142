"""The conference demo (examples/istio-ambient-demo = ../shared/seed-demo), its files applied
unchanged, step by step as its README describes; steps 5+ arrive with the gateway and waypoints."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest
from e2ekit import SEED, Cluster

NS2_ECHO = "http://echoserver-service-ns2.ns2.svc.cluster.local"
NS1_ECHO = "http://echoserver-service-ns1.ns1.svc.cluster.local"


def reaches(c: Cluster, ns: str, deploy: str, url: str) -> bool:
    return c.curl(ns, f"deploy/{deploy}", url).returncode == 0


def eventually(check, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster


def test_step1_resources_run_and_are_meshed(demo: Cluster) -> None:
    demo.apply(SEED / "resources-ns1.yaml", SEED / "resources-ns2.yaml")
    demo.wait_ready("ns1", count=3)
    demo.wait_ready("ns2", count=4)
    for ns in ("ns1", "ns2"):
        assert demo.get("namespaces", None, ns)["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    eventually(lambda: "HBONE" in demo.z("ztunnel-config", "workloads", "--node", "node1").stdout,
               "workloads not enrolled")


def test_step2_sleep_reaches_echo_over_mtls(demo: Cluster) -> None:
    eventually(lambda: reaches(demo, "ns1", "sleep-depl-ns1", NS2_ECHO), "ns1 sleep cannot reach ns2 echo")
    r = demo.curl("ns1", "deploy/sleep-depl-ns1", NS2_ECHO)
    assert "echoserver-depl-ns2-v" in json.loads(r.stdout)["pod"]
    certs = demo.z("ztunnel-config", "certificates").stdout
    assert "spiffe://cluster.local/ns/ns1/sa/sleep-service-account-ns1" in certs
    assert "spiffe://cluster.local/ns/ns2/sa/echo-service-account-ns2" in certs


def test_step3_deny_all_refuses(demo: Cluster) -> None:
    demo.apply(SEED / "deny-all-l4.yaml")
    eventually(lambda: not reaches(demo, "ns1", "sleep-depl-ns1", NS2_ECHO), "deny-all did not refuse")


def test_step4_allow_ns1_sleep_to_ns2_echo_only(demo: Cluster) -> None:
    demo.apply(SEED / "allow-comms-echo-ns2.yaml")
    eventually(lambda: reaches(demo, "ns1", "sleep-depl-ns1", NS2_ECHO), "the allow did not open the path")
    assert not reaches(demo, "ns2", "sleep-depl-ns2", NS1_ECHO)
    assert not reaches(demo, "ns1", "notsleep-depl-ns1", NS2_ECHO)


def _gateway(demo: Cluster, path: str = "/") -> tuple[str, str]:
    svc = demo.get("services", "istio-system", "istio-ingressgateway")
    port = next(int(p["nodePort"]) for p in svc["spec"]["ports"] if int(p["port"]) == 80)
    r = subprocess.run(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=20)
    body, _, code = r.stdout.rpartition("\n")
    return code, body


def test_step5_ingress_gateway_is_refused_by_ns1_deny_all(demo: Cluster) -> None:
    demo.wait_ready("istio-system", timeout=60)
    demo.apply(SEED / "istio-gateway.yaml")
    # The route exists (not 404) but ns1's ztunnel refuses the gateway: no echo answer.
    eventually(lambda: _gateway(demo)[0] not in ("404", "000"), "the gateway route never applied",
               timeout=20)
    code, body = _gateway(demo)
    assert code != "200" and "echoserver-depl-ns1" not in body, (code, body)


def test_step6_allowing_the_gateway_principal_opens_ns1(demo: Cluster) -> None:
    demo.apply(SEED / "allow-comms-echo-ns1.yaml")
    eventually(lambda: _gateway(demo)[0] == "200", "the gateway never reached ns1's echo", timeout=20)
    assert "echoserver-depl-ns1" in _gateway(demo)[1]


def test_step7_waypoint_allows_get_and_denies_post(demo: Cluster) -> None:
    demo.apply(SEED / "waypoint-proxy.yaml", SEED / "allow-get-to-echo-ns2.yaml")
    gw = "echo-service-account-ns2-gw"
    eventually(lambda: any(p["metadata"]["labels"].get("istio.io/gateway-name") == gw
                           for p in demo.pods("ns2")), "no waypoint pod", timeout=20)
    demo.wait_ready("ns2", count=5)

    def code(*opts: str) -> str:
        return demo.curl("ns1", "deploy/sleep-depl-ns1", NS2_ECHO, "-o", "/dev/null",
                         "-w", "%{http_code}", *opts).stdout.strip()
    eventually(lambda: code() == "200", "GET through the waypoint", timeout=20)
    assert code("-X", "POST") == "403"
    # The other namespace's sleep is still refused (the waypoint enforces ns2's deny-all).
    assert demo.curl("ns2", "deploy/sleep-depl-ns2", NS2_ECHO, "-o", "/dev/null",
                     "-w", "%{http_code}").stdout.strip() == "403"


def test_step8_canary_sends_about_90_percent_to_v1(demo: Cluster) -> None:
    demo.apply(SEED / "canary.yaml")
    time.sleep(1.5)
    script = f"for i in $(seq 100); do curl -s -m 5 {NS2_ECHO}; echo; done"
    out = demo.exec("ns1", "deploy/sleep-depl-ns1", "sh", "-c", script, timeout=120).stdout
    pods = [json.loads(line)["pod"] for line in out.splitlines() if line.startswith("{")]
    assert len(pods) == 100
    v1 = sum(1 for p in pods if p.startswith("echoserver-depl-ns2-v1"))
    v2 = sum(1 for p in pods if p.startswith("echoserver-depl-ns2-v2"))
    assert v1 + v2 == 100 and 80 <= v1 <= 100, (v1, v2)


def test_step9_observe_proxies_and_describe(demo: Cluster) -> None:
    ps = demo.z("ps").stdout
    for kind in ("nodeagent", "waypoint", "gateway"):
        assert any(kind in line and "SYNCED" in line for line in ps.splitlines()), ps
    echo = next(p["metadata"]["name"] for p in demo.pods("ns2")
                if p["metadata"]["name"].startswith("echoserver-depl-ns2-v1"))
    out = demo.z("x", "describe", "pod", echo, "-n", "ns2").stdout
    assert "spiffe://cluster.local/ns/ns2/sa/echo-service-account-ns2" in out
    assert "Waypoint: ns2/echo-service-account-ns2-gw" in out and "for-service-account" in out
    assert "ns2/allow-get-to-echo-ns2" in out and "ns2/echoserver-vs" in out
    svc = demo.z("x", "describe", "svc", "echoserver-service-ns2", "-n", "ns2").stdout
    assert "HBONE" in svc and "echo-service-account-ns2-gw" in svc
    wp = next(p["metadata"]["name"] for p in demo.pods("ns2")
              if p["metadata"]["labels"].get("istio.io/gateway-name") == "echo-service-account-ns2-gw")
    routes = json.loads(demo.z("pc", "routes", wp, "-n", "ns2").stdout)
    assert routes == {"echoserver-service-ns2.ns2.svc.cluster.local": ["ns2/echoserver-vs/http[0]"]}
    certs = json.loads(demo.z("pc", "certificates", echo, "-n", "ns2").stdout)
    assert any(c.get("identity") == "spiffe://cluster.local/ns/ns2/sa/echo-service-account-ns2"
               for c in certs)


def test_step9_metrics_and_graph(demo: Cluster) -> None:
    """TCP and HTTP metrics for the demo's calls, and both namespaces in the dashboard's graph
    with mTLS edges."""
    import os
    import signal
    import sys
    import urllib.request

    from e2ekit import ROOT

    for _ in range(3):
        demo.curl("ns1", "deploy/sleep-depl-ns1", NS2_ECHO)
    proc = subprocess.Popen([sys.executable, "-m", "zeromesh", "--cluster", demo.name, "dashboard",
                             "--port", "0", "--no-browser"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        base, _, query = url.partition("/?token=")

        def graph() -> dict:  # type: ignore[type-arg]
            req = urllib.request.Request(f"{base}/api/graph", headers={"X-Zeromesh-Token": query})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())["graph"] or {"nodes": [], "edges": []}

        def ok() -> bool:
            g = graph()
            ids = {n["id"] for n in g["nodes"]}
            mtls = [e for e in g["edges"] if e.get("mtls") and e["protocol"] == "tcp"]
            http = [e for e in g["edges"] if e["protocol"] == "http" and e.get("requests")]
            return (any(i.startswith("wl:ns1/") for i in ids) and any(i.startswith("wl:ns2/") for i in ids)
                    and any(e["source"].startswith("wl:ns1/") for e in mtls) and bool(http))
        eventually(ok, "the graph never showed ns1 -> ns2 with mTLS and HTTP edges", timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
