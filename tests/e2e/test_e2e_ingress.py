"""The ingress gateway end to end (issue 7): from the host, through the gateway published on
loopback, into a meshed namespace over HBONE with the gateway's identity; edge allow lists by
client address; HTTPS with a certificate from a Secret; Gateway API HTTPRoute behaviour in
the spirit of its conformance suite."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2ekit import Cluster, unique_name

GW_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"

BACKENDS = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio.io/dataplane-mode: ambient, edge: allowed}}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: echo, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo-v1, namespace: {ns}}}
spec:
  selector: {{app: echo, version: v1}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-v2, namespace: {ns}}}
spec:
  selector: {{app: echo, version: v2}}
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
      containers: [{{name: echo, image: zeromesh/http-echo, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: only-the-gateway, namespace: {ns}}}
spec:
  action: ALLOW
  rules: [{{from: [{{source: {{principals: ["{principal}"]}}}}]}}]
"""

ISTIO_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["istio.example.com"]
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["secure.example.com"]
    tls: {{mode: SIMPLE, credentialName: {secret}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: {ns}}}
spec:
  hosts: ["istio.example.com", "secure.example.com"]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: echo-v1, port: {{number: 80}}}}}}]
"""

EDGE_POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-allow-list-{tag}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules: [{{from: [{{source: {{remoteIpBlocks: ["{block}"]}}}}]}}]
"""


def eventually(check, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def ingress_port(c: Cluster, port: int) -> int:
    svc = c.get("services", "istio-system", "istio-ingressgateway")
    return next(int(p["nodePort"]) for p in svc["spec"]["ports"] if int(p["port"]) == port)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl on the host; only ever to 127.0.0.1 (--resolve pins names to it)."""
    return subprocess.run(["curl", "-s", "-m", "5", *args], capture_output=True, text=True, timeout=20)


def code(host: str, port: int, path: str = "/", *opts: str) -> str:
    return curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {host}", *opts,
                f"http://127.0.0.1:{port}{path}").stdout


CA: dict[str, bytes] = {}


@pytest.fixture(scope="module")
def edge(cluster: Cluster) -> Iterator[tuple[Cluster, str, int]]:
    """A meshed namespace whose only ALLOW names the gateway, and an Istio Gateway (HTTP for
    istio.example.com, HTTPS for secure.example.com with a Secret's certificate) routing to it."""
    ns = unique_name("edge")
    secret = unique_name("cert")
    try:
        cluster.apply("-", input=BACKENDS.format(ns=ns, principal=GW_PRINCIPAL))
        cluster.wait_ready(ns, count=2)
        cluster.wait_ready("istio-system", timeout=60)
        ca, cert, key = _tls_material("secure.example.com")
        CA["pem"] = ca
        cluster.apply("-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret, "namespace": "istio-system"},
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}))
        cluster.apply("-", input=ISTIO_GATEWAY.format(ns=ns, secret=secret))
        yield cluster, ns, ingress_port(cluster, 80)
    finally:
        cluster.z("delete", "namespace", ns, check=False)
        cluster.z("delete", "secret", secret, "-n", "istio-system", check=False)


def _tls_material(host: str) -> tuple[bytes, bytes, bytes]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test edge CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def test_the_gateway_is_published_on_loopback_and_listed(edge: tuple[Cluster, str, int]) -> None:
    c, _, port = edge
    svc = c.z("get", "svc", "-n", "istio-system").stdout
    assert "127.0.0.1" in svc and f"80:{port}/TCP" in svc


def test_istio_gateway_reaches_a_mesh_service_that_allows_only_the_gateway(
        edge: tuple[Cluster, str, int]) -> None:
    c, _, port = edge
    ca = CA["pem"]
    eventually(lambda: code("istio.example.com", port) == "200", "the gateway never routed to echo")
    body = json.loads(curl("-H", "Host: istio.example.com", f"http://127.0.0.1:{port}/hi").stdout)
    assert body["pod"].startswith("echo-v1-") and body["path"] == "/hi"
    assert code("unknown.example.com", port) == "404"               # no route for that host
    # HTTPS: the certificate from the Secret, verified by curl against our CA.
    tls_port = ingress_port(c, 443)
    with tempfile.TemporaryDirectory() as d:
        ca_file = Path(d) / "ca.pem"
        ca_file.write_bytes(ca)
        resolve = f"secure.example.com:{tls_port}:127.0.0.1"
        eventually(lambda: curl("--cacert", str(ca_file), "--resolve", resolve, "-o", "/dev/null",
                                "-w", "%{http_code}", f"https://secure.example.com:{tls_port}/").stdout
                   == "200", "HTTPS through the gateway")
        wrong = curl("--cacert", str(ca_file), "--resolve", f"other.example.com:{tls_port}:127.0.0.1",
                     f"https://other.example.com:{tls_port}/")
        assert wrong.returncode in (35, 60), wrong                   # handshake refused: no certificate


def test_edge_allow_lists_by_client_address(edge: tuple[Cluster, str, int]) -> None:
    c, _, port = edge
    tag = unique_name("p")
    eventually(lambda: code("istio.example.com", port) == "200", "gateway route")
    try:
        c.apply("-", input=EDGE_POLICY.format(tag=tag, block="10.0.0.0/8"))
        eventually(lambda: code("istio.example.com", port) == "403",
                   "remoteIpBlocks did not refuse 127.0.0.1")
        c.apply("-", input=EDGE_POLICY.format(tag=tag, block="127.0.0.1/32"))
        eventually(lambda: code("istio.example.com", port) == "200", "remoteIpBlocks did not admit 127.0.0.1")
    finally:
        c.z("delete", "authorizationpolicies.security.istio.io", f"edge-allow-list-{tag}", "-n",
            "istio-system", check=False)


# ---- Gateway API: HTTPRoute core behaviour -----------------------------------------------------
def _gapi(ns: str, other: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {ns}}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.gapi.example"
    allowedRoutes: {{namespaces: {{from: Same}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: main, namespace: {ns}}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: ["app.gapi.example"]
  rules:
  - matches: [{{path: {{type: Exact, value: /exact}}}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{{name: x-version, value: two}}]}}]
    backendRefs: [{{name: echo-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{{name: echo-v1, port: 80, weight: 50}}, {{name: echo-v2, port: 80, weight: 50}}]
  - matches: [{{path: {{type: PathPrefix, value: /hdr}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-added, value: by-route}}]}}
    backendRefs: [{{name: echo-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{hostname: new.gapi.example, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /missing}}}}]
    backendRefs: [{{name: does-not-exist, port: 80}}]
  - backendRefs: [{{name: echo-v1, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: elsewhere, namespace: {other}}}
spec:
  parentRefs: [{{name: web, namespace: {ns}}}]
  hostnames: ["other.gapi.example"]
  rules: [{{backendRefs: [{{name: echo-v1, namespace: {ns}, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: from-other, namespace: {ns}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {other}}}]
  to: [{{group: "", kind: Service}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: no-intersection, namespace: {ns}}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: ["app.elsewhere.example"]
  rules: [{{backendRefs: [{{name: echo-v1, port: 80}}]}}]
"""


def _pod(c: Cluster, port: int, host: str, path: str, *opts: str) -> dict[str, Any]:
    out = curl(*opts, "-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}").stdout
    return json.loads(out)


def test_gateway_api_httproute_core(edge: tuple[Cluster, str, int]) -> None:
    c, ns, port = edge
    other = unique_name("other")
    try:
        c.z("apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {other}}}\n")
        c.apply("-", input=_gapi(ns, other))
        host = "app.gapi.example"
        eventually(lambda: code(host, port, "/") == "200", "HTTPRoute never attached")
        assert _pod(c, port, host, "/exact")["pod"].startswith("echo-v2-")
        assert _pod(c, port, host, "/exact/no")["pod"].startswith("echo-v1-")     # Exact is exact
        assert _pod(c, port, host, "/v2/x")["pod"].startswith("echo-v2-")
        assert _pod(c, port, host, "/", "-H", "x-version: two")["pod"].startswith("echo-v2-")
        seen = {_pod(c, port, host, "/split")["pod"][:8] for _ in range(30)}
        assert seen == {"echo-v1-", "echo-v2-"}
        assert _pod(c, port, host, "/hdr")["headers"].get("x-added") == "by-route"
        redirect = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", f"Host: {host}",
                        f"http://127.0.0.1:{port}/old/page").stdout
        assert redirect == "301 http://new.gapi.example/old/page", redirect
        assert code(host, port, "/missing") == "500"                                # missing backend
        assert code("app.elsewhere.example", port) == "404"                        # no hostname intersection
        assert code("other.gapi.example", port) == "404"                           # allowedRoutes: Same
        st = c.get("httproutes.gateway.networking.k8s.io", other, "elsewhere")["status"]["parents"][0]
        accepted = next(x for x in st["conditions"] if x["type"] == "Accepted")
        assert accepted["status"] == "False" and accepted["reason"] == "NotAllowedByListeners"
        st = c.get("httproutes.gateway.networking.k8s.io", ns, "main")["status"]["parents"][0]
        resolved = next(x for x in st["conditions"] if x["type"] == "ResolvedRefs")
        assert resolved["status"] == "False" and resolved["reason"] == "BackendNotFound"
        # allowedRoutes: All admits the other namespace's route.
        c.apply("-", input=_gapi(ns, other).replace("from: Same", "from: All"))
        eventually(lambda: code("other.gapi.example", port) == "200", "allowedRoutes All")
        gw = c.z("get", "gateway", "-A").stdout
        assert f"127.0.0.1:{port}" in gw and "web" in gw
    finally:
        c.z("delete", "namespace", other, check=False)


def test_gateway_metrics_report_as_the_source_workload(edge: tuple[Cluster, str, int]) -> None:
    c, ns, port = edge
    eventually(lambda: code("istio.example.com", port) == "200", "gateway route")
    pod = next(p["metadata"]["name"] for p in c.pods("istio-system")
               if p["metadata"]["labels"].get("istio") == "ingressgateway")
    text = c.exec("istio-system", pod, "curl", "-s", "http://127.0.0.1:15020/stats/prometheus").stdout
    lines = [ln for ln in text.splitlines() if ln.startswith("istio_requests_total{")]
    assert any('reporter="source"' in ln and 'source_workload="istio-ingressgateway"' in ln
               and f'destination_service="echo-v1.{ns}.svc.cluster.local"' in ln
               and 'response_code="200"' in ln for ln in lines), lines


MESH_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      gatewayTopology:
        numTrustedProxies: 1
"""


def _restart_gateway(c: Cluster) -> None:
    for p in c.pods("istio-system"):
        if p["metadata"]["labels"].get("istio") == "ingressgateway":
            c.z("delete", "pod", p["metadata"]["name"], "-n", "istio-system")
    eventually(lambda: len(c.pods("istio-system")) == 1, "gateway pod not recreated")
    c.wait_ready("istio-system", timeout=60)


def test_x_forwarded_for_counts_only_with_trusted_hops(edge: tuple[Cluster, str, int]) -> None:
    c, _, port = edge
    tag = unique_name("xff")
    xff = ("-H", "X-Forwarded-For: 203.0.113.7")
    try:
        c.apply("-", input=EDGE_POLICY.format(tag=tag, block="203.0.113.7/32"))
        eventually(lambda: code("istio.example.com", port) == "403", "policy not applied")
        assert code("istio.example.com", port, "/", *xff) == "403"       # untrusted header ignored
        c.apply("-", input=MESH_CONFIG)
        _restart_gateway(c)
        eventually(lambda: code("istio.example.com", port, "/", *xff) == "200",
                   "trusted hop not honoured")
        assert code("istio.example.com", port) == "403"                  # no header: the peer, refused
    finally:
        c.z("delete", "authorizationpolicies.security.istio.io", f"edge-allow-list-{tag}", "-n",
            "istio-system", check=False)
        c.z("delete", "configmap", "istio", "-n", "istio-system", check=False)


L7_AT_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge-l7, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["l7.example.com"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge-l7, namespace: {ns}}}
spec:
  hosts: ["l7.example.com"]
  gateways: [edge-l7]
  http:
  - match: [{{uri: {{prefix: /teapot}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: echo-v1}}}}]
  - route: [{{destination: {{host: echo-v1}}}}]
    timeout: 5s
    retries: {{attempts: 2, retryOn: 5xx}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: edge-jwt-{tag}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules: [{{issuer: "https://edge.example", jwks: '{jwks}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-jwt-{tag}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/secure*"]}}}}]
"""

RATE_LIMIT = """\
apiVersion: zeromesh.io/v1alpha1
kind: LocalRateLimit
metadata: {{name: edge-l7, namespace: {ns}}}
spec:
  targetRefs: [{{group: networking.istio.io, kind: Gateway, name: edge-l7}}]
  tokenBucket: {{maxTokens: 3, tokensPerFill: 1, fillInterval: 60s}}
"""


def test_waypoint_l7_features_work_at_the_gateway(edge: tuple[Cluster, str, int]) -> None:
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    c, ns, port = edge
    tag = unique_name("l7")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "alg": "RS256"})
    good = pyjwt.encode({"iss": "https://edge.example", "sub": "alice", "exp": int(time.time()) + 600},
                        key, algorithm="RS256", headers={"kid": "k1"})
    host = "l7.example.com"
    try:
        c.apply("-", input=L7_AT_GATEWAY.format(ns=ns, tag=tag, jwks=json.dumps({"keys": [jwk]})))
        eventually(lambda: code(host, port, "/teapot") == "418", "fault at the gateway")
        eventually(lambda: code(host, port, "/secure") == "403", "JWT requirement at the gateway")
        assert code(host, port, "/secure", "-H", "authorization: Bearer not.a.jwt") == "401"
        assert code(host, port, "/secure", "-H", f"authorization: Bearer {good}") == "200"
        c.apply("-", input=RATE_LIMIT.format(ns=ns))
        eventually(lambda: code(host, port, "/") == "429", "rate limit at the gateway", timeout=15)
    finally:
        c.z("delete", "requestauthentications.security.istio.io", f"edge-jwt-{tag}", "-n",
            "istio-system", check=False)
        c.z("delete", "authorizationpolicies.security.istio.io", f"edge-jwt-{tag}", "-n", "istio-system",
            check=False)
