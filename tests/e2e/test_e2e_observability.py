"""Access logs with masking and tracing end to end (issue 8): a request carrying a bearer token
and a card number through a waypoint is logged masked; requests through the waypoint and the
ingress gateway make a server span at the proxy and a client span for the upstream call, keep
the client's trace id, and the upstream receives a traceparent under that trace id.

(The OTLP exporter is tested against an in-process collector in
tests/unit/waypoint/test_waypoint_tracing.py: a waypoint in its pod's netns cannot reach a
collector on the host's loopback.)"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2ekit import Cluster, unique_name

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
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  selector: {{app: echo}}
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
metadata: {{name: client, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      nodeSelector: {{name: node1}}
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
"""

MASKING = """\
apiVersion: zeromesh.io/v1alpha1
kind: TelemetryPolicy
metadata: {{name: mask, namespace: {ns}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}}]
  accessLogging:
    requestHeaders: [authorization, x-card, x-request-id]
    masking:
      queryParameters: [token]
      patterns: [{{name: order-secret, regex: 'osec-[a-z0-9]{{12}}'}}]
"""

BAD_PATTERN = """\
apiVersion: zeromesh.io/v1alpha1
kind: TelemetryPolicy
metadata: {{name: bad, namespace: {ns}}}
spec:
  accessLogging:
    masking:
      patterns: [{{name: broken, regex: '(unclosed'}}]
"""

EDGE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["{host}"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: {ns}}}
spec:
  hosts: ["{host}"]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: echo, port: {{number: 80}}}}}}]
"""

CARD = "4111111111111111"
CARD_SPACED = "4111 1111 1111 1111"


def eventually(check, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def access_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(x.split("zeromesh.access: ", 1)[1]) for x in text.splitlines()
            if "zeromesh.access: " in x and '"msg": "request"' in x]


def pod_named(c: Cluster, ns: str, prefix: str) -> str:
    return next(p["metadata"]["name"] for p in c.pods(ns) if p["metadata"]["name"].startswith(prefix))


def traces(c: Cluster, ns: str, pod: str) -> list[dict[str, Any]]:
    out = c.exec(ns, pod, "curl", "-s", "-m", "5", "http://127.0.0.1:15020/debug/traces?limit=50").stdout
    return json.loads(out)


def new_context() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def mesh(cluster: Cluster) -> Iterator[tuple[Cluster, str, str]]:
    """An app namespace bound to its waypoint (istio.io/use-waypoint), with a masking policy."""
    ns = unique_name("obs")
    try:
        cluster.apply("-", input=APP.format(ns=ns))
        cluster.wait_ready(ns, count=2)
        cluster.z("waypoint", "apply", "-n", ns, "--enroll-namespace", "--wait")
        cluster.wait_ready(ns, count=3)
        cluster.apply("-", input=MASKING.format(ns=ns))
        wp = pod_named(cluster, ns, "waypoint-")
        yield cluster, ns, wp
    finally:
        cluster.z("delete", "namespace", ns, check=False)


def test_a_bad_masking_pattern_is_refused_at_apply(mesh: tuple[Cluster, str, str]) -> None:
    c, ns, _ = mesh
    r = c.z("apply", "-f", "-", input=BAD_PATTERN.format(ns=ns), check=False)
    assert r.returncode != 0
    assert "spec.accessLogging.masking.patterns[0].regex: invalid regular expression" in r.stderr + r.stdout


def test_bearer_token_and_card_numbers_are_logged_masked(mesh: tuple[Cluster, str, str]) -> None:
    c, ns, wp = mesh
    token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(24)
    order_secret = "osec-" + secrets.token_hex(6)
    marker = secrets.token_hex(6)

    def send() -> str:
        r = c.curl(ns, "deploy/client", f"http://echo.{ns}/pay?card={CARD}&token=t0p&ref={order_secret}",
                   "-H", f"Authorization: Bearer {token}", "-H", f"x-card: {CARD_SPACED}",
                   "-H", f"x-request-id: {marker}", "-o", "/dev/null", "-w", "%{http_code}")
        return r.stdout

    eventually(lambda: send() == "200", "the request through the waypoint never succeeded")

    def logged() -> list[dict[str, Any]]:
        text = c.z("logs", "-n", ns, wp).stdout
        return [x for x in access_lines(text) if x.get("request_id") == marker]

    eventually(lambda: bool(logged()), "the waypoint never logged the request")
    text = c.z("logs", "-n", ns, wp).stdout
    for secret in (token, CARD, CARD_SPACED, order_secret, "t0p"):
        assert secret not in text, f"{secret!r} reached the waypoint's log"
    line = logged()[-1]
    assert line["path"] == "/pay?card=****&token=****&ref=****"
    assert line["request_headers"]["authorization"] == "Bearer ****"
    assert line["request_headers"]["x-card"] == "****"
    assert line["reporter"] == "waypoint" and line["status"] == 200
    assert line["dst.service"] == f"echo.{ns}.svc.cluster.local" and line["dst.workload"].startswith("echo-")
    assert len(line["trace_id"]) == 32 and line["start_time"].endswith("Z")


def test_a_request_through_the_waypoint_is_traced_and_propagated(mesh: tuple[Cluster, str, str]) -> None:
    c, ns, wp = mesh
    trace_id, caller_span, traceparent = new_context()
    r = c.curl(ns, "deploy/client", f"http://echo.{ns}/traced?card={CARD}",
               "-H", f"traceparent: {traceparent}")
    echoed = json.loads(r.stdout)
    seen = {k.lower(): v for k, v in echoed["headers"].items()}
    version, got_trace, upstream_parent, flags = seen["traceparent"].split("-")
    assert (version, got_trace, flags) == ("00", trace_id, "01")
    assert upstream_parent != caller_span
    assert seen["x-b3-traceid"] == trace_id and seen["x-b3-spanid"] == upstream_parent

    def ours() -> dict[str, Any] | None:
        return next((t for t in traces(c, ns, wp) if t["trace_id"] == trace_id), None)

    eventually(lambda: ours() is not None, "the waypoint kept no trace for the request")
    trace = ours()
    assert trace is not None
    by_kind = {s["kind"]: s for s in trace["spans"]}
    server, client = by_kind["SERVER"], by_kind["CLIENT"]
    assert server["parent_span_id"] == caller_span
    assert server["service"] == f"waypoint.{ns}"
    assert server["name"] == f"echo.{ns}.svc.cluster.local:80/*"
    assert server["attributes"]["http.status_code"] == 200
    assert "****" in server["attributes"]["http.url"] and CARD not in json.dumps(trace)
    assert client["parent_span_id"] == server["span_id"]
    assert client["span_id"] == upstream_parent              # what the app received
    assert client["attributes"]["http.status_code"] == 200
    assert client["attributes"]["istio.destination_workload"] == "echo"
    assert client["duration_ms"] <= server["duration_ms"]
    assert server["start_unix_nano"] <= client["start_unix_nano"]


def test_a_request_through_the_ingress_gateway_is_traced(mesh: tuple[Cluster, str, str]) -> None:
    c, ns, _ = mesh
    host = f"{ns}.example.com"
    c.apply("-", input=EDGE.format(ns=ns, host=host))
    c.wait_ready("istio-system", timeout=60)
    svc = c.get("services", "istio-system", "istio-ingressgateway")
    port = next(int(p["nodePort"]) for p in svc["spec"]["ports"] if int(p["port"]) == 80)
    trace_id, caller_span, traceparent = new_context()

    def get() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-s", "-m", "5", "-H", f"Host: {host}",
                               "-H", f"traceparent: {traceparent}", f"http://127.0.0.1:{port}/edge?card={CARD}"],
                              capture_output=True, text=True, timeout=20)

    eventually(lambda: get().stdout.startswith("{"), "the gateway never routed to echo")
    seen = {k.lower(): v for k, v in json.loads(get().stdout)["headers"].items()}
    assert seen["traceparent"].split("-")[1] == trace_id
    gw = pod_named(c, "istio-system", "istio-ingressgateway-")

    def ours() -> dict[str, Any] | None:
        return next((t for t in traces(c, "istio-system", gw) if t["trace_id"] == trace_id), None)

    eventually(lambda: ours() is not None, "the gateway kept no trace for the request")
    trace = ours()
    assert trace is not None
    servers = [s for s in trace["spans"] if s["kind"] == "SERVER"]
    clients = [s for s in trace["spans"] if s["kind"] == "CLIENT"]
    assert servers and clients
    assert all(s["service"] == "istio-ingressgateway.istio-system" for s in trace["spans"])
    assert all(s["parent_span_id"] == caller_span for s in servers)
    assert {cl["parent_span_id"] for cl in clients} <= {s["span_id"] for s in servers}
    assert seen["traceparent"].split("-")[2] in {cl["span_id"] for cl in clients}
    assert servers[0]["attributes"]["istio.reporter"] == "source"
    # The gateway's own access log masks the card number by default (no policy selects it).
    log = c.z("logs", "-n", "istio-system", gw).stdout
    assert CARD not in log
    assert any(x["path"] == "/edge?card=****" for x in access_lines(log))
