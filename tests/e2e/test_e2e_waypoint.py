"""Waypoints end to end (issue 6): a real waypoint pod deployed from a Gateway, traffic
redirected to it by the ztunnel, L7 policy, canary split, retries, faults and JWT, for both
generations of binding (the older for-service-account annotation and istio.io/use-waypoint)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
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
metadata: {{name: echo-v1, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: echo, version: v1}}}}
  template:
    metadata: {{labels: {{app: echo, version: v1}}}}
    spec:
      serviceAccountName: echo
      nodeSelector: {{name: node2}}
      containers: [{{name: echo, image: zeromesh/http-echo, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo-v2, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: echo, version: v2}}}}
  template:
    metadata: {{labels: {{app: echo, version: v2}}}}
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

LEGACY_WAYPOINT = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: echo-wp
  namespace: {ns}
  annotations: {{istio.io/for-service-account: echo}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: get-only, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{istio.io/gateway-name: echo-wp}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/{ns}/sa/client]}}}}]
    to: [{{operation: {{methods: [GET]}}}}]
"""

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: {ns}}}
spec:
  hosts: [echo]
  http:
  - match: [{{uri: {{prefix: /teapot}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: echo}}}}]
  - route:
    - {{destination: {{host: echo, subset: v1}}, weight: 90}}
    - {{destination: {{host: echo, subset: v2}}, weight: 10}}
    headers:
      response:
        set: {{x-canary: "yes"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: {ns}}}
spec:
  host: echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

RETRIES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flaky, namespace: {ns}}}
spec:
  hosts: [flaky.{ns}.svc.cluster.local]
  http:
  - route: [{{destination: {{host: flaky}}}}]
    retries: {{attempts: 3, retryOn: 5xx}}
"""

JWT_RULES = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{istio.io/gateway-name: echo-wp}}}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: secure-needs-jwt, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{istio.io/gateway-name: echo-wp}}}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: [/secure*]}}}}]
"""


def eventually(check, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def status(c: Cluster, ns: str, url: str, *opts: str) -> str:
    r = c.curl(ns, "deploy/client", url, "-o", "/dev/null", "-w", "%{http_code}", *opts)
    return r.stdout.strip()


def burst(c: Cluster, ns: str, url: str, n: int) -> list[dict[str, Any]]:
    """n sequential GETs from the client pod in one exec; one JSON echo per line."""
    script = f'i=0; while [ $i -lt {n} ]; do curl -s -m 5 {url}; echo; i=$((i+1)); done'
    out = c.exec(ns, "deploy/client", "sh", "-c", script, timeout=300).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def legacy(cluster: Cluster) -> Iterator[tuple[Cluster, str]]:
    ns = unique_name("wp")
    try:
        cluster.apply("-", input=APP.format(ns=ns))
        cluster.wait_ready(ns, count=4)
        cluster.apply("-", input=LEGACY_WAYPOINT.format(ns=ns))
        eventually(lambda: len(cluster.pods(ns)) == 5, "no waypoint pod was created")
        cluster.wait_ready(ns, count=5)
        yield cluster, ns
    finally:
        cluster.z("delete", "namespace", ns, check=False)


def test_waypoint_pod_runs_as_the_gateway_with_its_own_identity(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    wp = [p for p in c.pods(ns) if p["metadata"]["labels"].get("istio.io/gateway-name") == "echo-wp"]
    assert len(wp) == 1
    assert wp[0]["spec"]["serviceAccountName"] == "echo-wp"
    assert wp[0]["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "echo-wp"
    # The waypoint's own workload certificate came from the CA, for its own service account.
    log = c.z("logs", "-n", ns, wp[0]["metadata"]["name"]).stdout
    assert f"spiffe://cluster.local/ns/{ns}/sa/echo-wp" in log


def test_l7_policy_allows_get_and_denies_post_at_the_waypoint(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    url = f"http://echo.{ns}"
    eventually(lambda: status(c, ns, url) == "200", "GET through the waypoint did not work")
    r = c.curl(ns, "deploy/client", url, "-X", "POST", "-d", "x", "-w", " %{http_code}")
    assert r.stdout.endswith(" 403"), r.stdout
    assert "RBAC: access denied" in r.stdout and "waypoint" not in r.stdout.lower()


def test_http2_prior_knowledge_through_the_waypoint(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    r = c.curl(ns, "deploy/client", f"http://echo.{ns}/h2", "--http2-prior-knowledge",
               "-w", " %{http_version} %{http_code}")
    assert r.stdout.endswith(" 2 200"), r.stdout
    assert json.loads(r.stdout.rsplit(" ", 2)[0])["path"] == "/h2"
    r = c.curl(ns, "deploy/client", f"http://echo.{ns}/h2", "--http2-prior-knowledge", "-X", "POST",
               "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == "403"


def test_canary_split_90_10_with_short_hosts(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    c.apply("-", input=ROUTES.format(ns=ns))
    eventually(lambda: status(c, ns, f"http://echo.{ns}/teapot") == "418", "the VirtualService never applied")
    answers = burst(c, ns, f"http://echo.{ns}/", 500)
    assert len(answers) == 500
    v1 = sum(1 for a in answers if a["pod"].startswith("echo-v1-"))
    assert 425 <= v1 <= 475, f"{v1}/500 answers from v1"


def test_fault_abort_returns_its_status_and_response_headers_are_set(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    assert status(c, ns, f"http://echo.{ns}/teapot/x") == "418"
    r = c.curl(ns, "deploy/client", f"http://echo.{ns}/", "-i")
    assert "x-canary: yes" in r.stdout.lower()


def test_retry_rule_hides_a_backend_that_fails_every_other_request(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    url = f"http://flaky.{ns}/"
    before = [status(c, ns, url) for _ in range(6)]
    assert "500" in before, before          # Istio's default retries do not retry a 500
    c.apply("-", input=RETRIES.format(ns=ns))
    time.sleep(1.5)
    after = [status(c, ns, url) for _ in range(10)]
    assert after == ["200"] * 10, after


def test_jwt_protected_path_answers_401_403_200(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    c.apply("-", input=JWT_RULES.format(ns=ns, jwks=json.dumps({"keys": [jwk]})))
    now = int(time.time())
    good = jwt.encode({"iss": "https://issuer.example", "sub": "alice", "exp": now + 600}, key,
                      algorithm="RS256", headers={"kid": "k1"})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"iss": "https://issuer.example", "sub": "mallory", "exp": now + 600}, other,
                        algorithm="RS256", headers={"kid": "k1"})
    url = f"http://echo.{ns}/secure"
    eventually(lambda: status(c, ns, url) == "403", "the JWT requirement never applied")
    assert status(c, ns, url, "-H", f"authorization: Bearer {forged}") == "401"
    assert status(c, ns, url, "-H", f"authorization: Bearer {good}") == "200"
    assert status(c, ns, f"http://echo.{ns}/open") == "200"      # no token: allowed elsewhere


def test_waypoint_metrics_count_requests_with_istio_labels(legacy: tuple[Cluster, str]) -> None:
    c, ns = legacy
    wp = next(p["metadata"]["name"] for p in c.pods(ns)
              if p["metadata"]["labels"].get("istio.io/gateway-name") == "echo-wp")
    text = c.exec(ns, wp, "curl", "-s", "http://127.0.0.1:15020/stats/prometheus").stdout
    lines = [ln for ln in text.splitlines() if ln.startswith("istio_requests_total{")]
    assert any('reporter="waypoint"' in ln and 'response_code="403"' in ln
               and f'source_principal="spiffe://cluster.local/ns/{ns}/sa/client"' in ln for ln in lines)
    assert any('response_code="200"' in ln and 'destination_workload="echo-v1"' in ln for ln in lines)
    assert "istio_request_duration_milliseconds_bucket{" in text


# ---- the current generation: istio.io/use-waypoint, targetRefs, ztunnel admits the waypoint ----
CURRENT = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: echo-callers, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [{principals}]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: get-only, namespace: {ns}}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/{ns}/sa/client]}}}}]
    to: [{{operation: {{methods: [GET]}}}}]
"""


def test_use_waypoint_binding_needs_the_destination_to_allow_the_waypoint(cluster: Cluster) -> None:
    c = cluster
    ns = unique_name("wpn")
    try:
        c.apply("-", input=APP.format(ns=ns))
        c.wait_ready(ns, count=4)
        c.z("waypoint", "apply", "-n", ns, "--enroll-namespace", "--wait")
        client = f"cluster.local/ns/{ns}/sa/client"
        c.apply("-", input=CURRENT.format(ns=ns, principals=client))
        url = f"http://echo.{ns}"
        # The ztunnel at echo sees the waypoint's identity, which its ALLOW does not name.
        eventually(lambda: status(c, ns, url) in ("503", "502"), "traffic bypassed the waypoint")
        c.apply("-", input=CURRENT.format(ns=ns, principals=f"{client}, cluster.local/ns/{ns}/sa/waypoint"))
        eventually(lambda: status(c, ns, url) == "200", "allowing the waypoint did not open the path")
        assert status(c, ns, url, "-X", "POST") == "403"
    finally:
        c.z("delete", "namespace", ns, check=False)
