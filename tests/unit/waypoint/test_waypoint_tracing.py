"""The engine's access log and spans end to end in one process: masking from a TelemetryPolicy,
the caller's trace kept, a client span per upstream attempt whose id the upstream receives, the
scoping of policies, and OTLP/HTTP export to an in-process collector."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from zeromesh.telemetry import tracing as tr
from zeromesh.waypoint.config import Upstream, WaypointConfig
from zeromesh.waypoint.duplex import Duplex, StreamDuplex
from zeromesh.waypoint.engine import HttpEngine, Peer
from zeromesh.waypoint.telemetry import (
    OtlpExporter,
    OtlpTarget,
    ProxyScope,
    TelemetrySettings,
    WaypointTelemetry,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
CARD = "4111 1111 1111 1111"
SCOPE = ProxyScope("ns", "wp", {"gateway.networking.k8s.io/gateway-name": "wp"})


def policy(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "zeromesh.io/v1alpha1", "kind": "TelemetryPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def push_state(port: int, flaky_port: int) -> dict[str, Any]:
    def wl(name: str) -> dict[str, Any]:
        return {"uid": f"u-{name}", "namespace": "ns", "name": name, "ip": "127.0.0.1", "node": "n1",
                "service_account": name, "labels": {"app": name}, "protocol": "TCP",
                "workload_name": name, "canonical_name": name, "canonical_revision": "v1"}

    def svc(name: str, vip: str, p: int) -> dict[str, Any]:
        return {"namespace": "ns", "name": name, "hostname": f"{name}.ns.svc.cluster.local", "vip": vip,
                "ports": [{"port": 80, "target_port": p, "name": "http"}],
                "endpoints": [{"workload_uid": f"u-{name}", "ip": "127.0.0.1", "ports": {"80": p},
                               "ready": True}]}
    return {"workload": {"u-echo": wl("echo"), "u-flaky": wl("flaky")},
            "service": {"ns/echo": svc("echo", "10.96.0.10", port), "ns/flaky": svc("flaky", "10.96.0.11",
                                                                                  flaky_port)},
            "virtualservices.networking.istio.io": {"ns/flaky": {
                "metadata": {"name": "flaky", "namespace": "ns"},
                "spec": {"hosts": ["flaky"], "http": [{"route": [{"destination": {"host": "flaky"}}],
                                                       "retries": {"attempts": 3, "retryOn": "5xx"}}]}}}}


@contextlib.asynccontextmanager
async def engine(settings: TelemetrySettings
                 ) -> AsyncIterator[tuple[HttpEngine, WaypointConfig, list[bytes]]]:
    heads: list[bytes] = []
    calls = {"flaky": 0}

    async def handle(kind: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                if length:
                    await r.readexactly(length)
                heads.append(head)
                calls[kind] = calls.get(kind, 0) + 1
                if kind == "flaky" and calls[kind] % 2:
                    w.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await w.drain()
        w.close()

    echo = await asyncio.start_server(lambda r, w: handle("echo", r, w), "127.0.0.1", 0)
    flaky = await asyncio.start_server(lambda r, w: handle("flaky", r, w), "127.0.0.1", 0)
    ports = (echo.sockets[0].getsockname()[1], flaky.sockets[0].getsockname()[1])
    cfg = WaypointConfig.build(push_state(*ports), "1", namespace="ns", name="wp")

    async def connect(up: Upstream, _: list[tuple[str, str]]) -> Duplex:
        r, w = await asyncio.open_connection(up.ip, up.port)
        return StreamDuplex(r, w)

    eng = HttpEngine(lambda: cfg, connect, WaypointTelemetry("wp.ns", settings))
    try:
        yield eng, cfg, heads
    finally:
        eng.close()
        echo.close()
        flaky.close()


async def request(eng: HttpEngine, cfg: WaypointConfig, vip: str, raw: bytes) -> bytes:
    """One request through ``eng.serve`` over a loopback socket pair."""
    dest = cfg.resolve(f"{vip}:80")
    assert dest is not None
    done = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await eng.serve(StreamDuplex(r, w), dest, Peer("cluster.local/ns/ns/sa/client", "127.0.0.1", 1, None))
        done.set()

    front = await asyncio.start_server(serve, "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
    w.write(raw)
    await w.drain()
    out = await asyncio.wait_for(r.read(), 5)
    w.close()
    await asyncio.wait_for(done.wait(), 5)
    front.close()
    return out


MASKING = policy("mask", "istio-system", {"accessLogging": {
    "requestHeaders": ["authorization", "x-card"], "body": {"enabled": True},
    "masking": {"queryParameters": ["pan"], "jsonFields": ["password"]}}})


def test_request_is_logged_masked_and_traced_with_the_callers_trace_id(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zeromesh.access")
    body = json.dumps({"user": "a", "password": "hunter2"}).encode()
    raw = (f"POST /pay?pan={CARD.replace(' ', '%20')}&x=1 HTTP/1.1\r\nhost: echo\r\n"
           f"authorization: Bearer eyJhbGciOi.secret-token\r\nx-card: {CARD}\r\n"
           f"traceparent: 00-{TID}-00f067aa0ba902b7-01\r\ntracestate: vendor=1\r\n"
           f"x-b3-traceid: {'1' * 32}\r\nx-b3-spanid: {'2' * 16}\r\ncontent-type: application/json\r\n"
           f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body

    async def main() -> tuple[bytes, list[bytes], WaypointTelemetry]:
        async with engine(TelemetrySettings([MASKING], scope=SCOPE, env={})) as (eng, cfg, heads):
            out = await request(eng, cfg, "10.96.0.10", raw)
            return out, heads, eng.telemetry  # type: ignore[return-value]
    out, heads, tel = asyncio.run(main())
    assert out.startswith(b"HTTP/1.1 200")
    # The upstream got our context, not the client's raw B3 headers, under the caller's trace id.
    head = heads[0].decode().lower()
    lines = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    version, trace_id, parent, flags = lines["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TID, "01")
    assert lines["x-b3-traceid"] == TID and lines["x-b3-spanid"] == parent
    assert lines["tracestate"] == "vendor=1"
    assert head.count("traceparent") == 1 and "1" * 32 not in head
    # Spans: the server span continues the caller's, the client span is what the upstream saw.
    (trace,) = tel.recent_traces()
    assert trace["trace_id"] == TID
    server, client = trace["spans"]
    assert (server["kind"], server["parent_span_id"]) == ("SERVER", "00f067aa0ba902b7")
    assert server["service"] == "wp.ns"
    assert (client["kind"], client["parent_span_id"], client["span_id"]) == (
        "CLIENT", server["span_id"], parent)
    assert server["name"] == "echo.ns.svc.cluster.local:80/*"
    assert client["name"] == "router outbound|80||echo.ns.svc.cluster.local egress"
    assert server["attributes"]["http.status_code"] == 200 and client["attributes"]["http.status_code"] == 200
    assert "4111" not in json.dumps(trace) and "pan=****" in server["attributes"]["http.url"]
    # The access log line: masked everywhere, with the trace.
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zeromesh.access"]
    text = json.dumps(line)
    for secret in ("4111", "secret-token", "hunter2"):
        assert secret not in text
    assert line["path"] == "/pay?pan=****&x=1"
    assert line["request_headers"] == {"authorization": "Bearer ****", "x-card": "****"}
    assert line["body"] == '{"user":"a","password":"****"}'
    assert (line["trace_id"], line["span_id"]) == (TID, server["span_id"])
    assert line["start_time"].endswith("Z") and line["status"] == 200


def test_each_retry_is_a_client_span_and_sends_its_own_span_id() -> None:
    raw = b"GET /r HTTP/1.1\r\nhost: flaky\r\nconnection: close\r\n\r\n"

    async def main() -> tuple[bytes, list[bytes], WaypointTelemetry]:
        async with engine(TelemetrySettings(env={})) as (eng, cfg, heads):
            out = await request(eng, cfg, "10.96.0.11", raw)
            return out, heads, eng.telemetry  # type: ignore[return-value]
    out, heads, tel = asyncio.run(main())
    assert out.startswith(b"HTTP/1.1 200")
    (trace,) = tel.recent_traces()
    _, *clients = trace["spans"]
    assert [c["attributes"]["http.status_code"] for c in clients] == [503, 200]
    assert [c["status"] for c in clients] == ["ERROR", "UNSET"]
    assert [c["attributes"]["attempt"] for c in clients] == [1, 2]
    sent = [h.decode().lower().split("traceparent: ")[1].split("\r\n")[0].split("-")[2] for h in heads]
    assert sent == [c["span_id"] for c in clients]


def test_unsampled_requests_propagate_but_are_not_kept() -> None:
    raw = b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n"

    async def main() -> tuple[list[bytes], WaypointTelemetry]:
        async with engine(TelemetrySettings(env={"ZEROMESH_TRACE_SAMPLING": "0"})) as (eng, cfg, heads):
            await request(eng, cfg, "10.96.0.10", raw)
            return heads, eng.telemetry  # type: ignore[return-value]
    heads, tel = asyncio.run(main())
    assert tel.recent_traces() == []
    assert b"-00\r\n" in heads[0] and b"x-b3-sampled: 0" in heads[0]


# ---- which policies apply ---------------------------------------------------------------------------
class _Svc:
    def __init__(self, key: str) -> None:
        self.key = key


@pytest.mark.parametrize(("policies", "service", "sampling", "masked_headers"), [
    ([], None, 100.0, set()),
    ([policy("root", "istio-system", {"tracing": {"randomSamplingPercentage": 10}})], None, 10.0, set()),
    ([policy("root", "istio-system", {"tracing": {"randomSamplingPercentage": 10}}),
      policy("ns", "ns", {"tracing": {"randomSamplingPercentage": 20}})], None, 20.0, set()),
    ([policy("other-ns", "other", {"tracing": {"randomSamplingPercentage": 20}})], None, 100.0, set()),
    ([policy("sel", "ns", {"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "wp"}},
                           "tracing": {"randomSamplingPercentage": 30}}),
      policy("ns", "ns", {"tracing": {"randomSamplingPercentage": 20}})], None, 30.0, set()),
    ([policy("sel-other", "ns", {"selector": {"matchLabels": {"app": "x"}},
                                 "tracing": {"randomSamplingPercentage": 30}})], None, 100.0, set()),
    ([policy("gw", "ns", {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": "wp"}], "tracing": {"randomSamplingPercentage": 40}})],
     None, 40.0, set()),
    # a Service-targeted policy: only for that service; masks add up with the mesh's
    ([policy("root", "istio-system", {"accessLogging": {"masking": {"headers": ["x-a"]}}}),
      policy("svc", "ns", {"targetRefs": [{"kind": "Service", "name": "echo"}],
                           "accessLogging": {"masking": {"headers": ["x-b"]}},
                           "tracing": {"randomSamplingPercentage": 50}})], "ns/echo", 50.0, {"x-a", "x-b"}),
    ([policy("root", "istio-system", {"accessLogging": {"masking": {"headers": ["x-a"]}}}),
      policy("svc", "ns", {"targetRefs": [{"kind": "Service", "name": "echo"}],
                           "accessLogging": {"masking": {"headers": ["x-b"]}}})], "ns/other", 100.0, {"x-a"}),
])
def test_policy_scoping(policies: list[dict[str, Any]], service: str | None, sampling: float,
                        masked_headers: set[str]) -> None:
    s = TelemetrySettings(policies, scope=SCOPE, env={})
    got = s.for_service(_Svc(service) if service else None)  # type: ignore[arg-type]
    assert got.sampling == sampling
    assert {h for h in ("x-a", "x-b") if got.log.masker.header(h, "v") == "****"} == masked_headers


def test_istio_telemetry_sampling_and_env_collector() -> None:
    telemetry = {"metadata": {"name": "mesh-default", "namespace": "istio-system"},
                 "spec": {"tracing": [{"randomSamplingPercentage": 5}]}}
    s = TelemetrySettings([], [telemetry], SCOPE, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
                                                      "OTEL_EXPORTER_OTLP_HEADERS": "a=b"})
    assert s.proxy.sampling == 5.0
    assert s.otlp == OtlpTarget("http://c:4318/v1/traces", (("a", "b"),))
    s = TelemetrySettings([policy("p", "ns", {"tracing": {"otlp": {"endpoint": "http://x:1/v1/traces",
                                                                   "timeout": "2s"}, "maxTraces": 7}})],
                          [telemetry], SCOPE, env={})
    assert s.otlp == OtlpTarget("http://x:1/v1/traces", (), 2.0) and s.max_traces == 7


# ---- OTLP/HTTP export to an in-process collector ----------------------------------------------------
@contextlib.contextmanager
def collector() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    got: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                data = gzip.decompress(data)
            got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1/traces", got
    finally:
        srv.shutdown()
        srv.server_close()


def test_spans_are_exported_over_otlp_http() -> None:
    with collector() as (url, got):
        exporter = OtlpExporter(OtlpTarget(url, (("x-tenant", "t1"),), 5.0), "echo-wp.ns2")
        server = tr.Span(TID, "1" * 16, "2" * 16, "echo.ns2.svc.cluster.local:80/*", tr.SERVER, 10.0, 10.25,
                         {"http.status_code": 503}, tr.ERROR)
        client = tr.Span(TID, "3" * 16, "1" * 16, "router outbound|80||echo egress", tr.CLIENT, 10.01, 10.2,
                         {"upstream_address": "10.244.2.3:8080"})
        exporter.export([server, client])
        exporter.close()                   # flushes the batch
    assert got, "nothing reached the collector"
    path, headers, data = got[0]
    assert path == "/v1/traces" and headers["x-tenant"] == "t1"
    assert headers["content-type"] == "application/x-protobuf"
    req = ExportTraceServiceRequest()
    req.ParseFromString(data)
    (rs,) = req.resource_spans
    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
    assert attrs["service.name"] == "echo-wp.ns2"
    spans = {s.name: s for ss in rs.scope_spans for s in ss.spans}
    srv, cli = spans["echo.ns2.svc.cluster.local:80/*"], spans["router outbound|80||echo egress"]
    assert srv.trace_id.hex() == TID and srv.span_id.hex() == "1" * 16
    assert srv.parent_span_id.hex() == "2" * 16
    assert cli.parent_span_id == srv.span_id
    assert srv.kind == 2 and cli.kind == 3                        # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    assert srv.status.code == 2                                   # STATUS_CODE_ERROR
    assert srv.end_time_unix_nano - srv.start_time_unix_nano == pytest.approx(250_000_000, abs=1000)
    assert {a.key: a.value.int_value for a in srv.attributes}["http.status_code"] == 503


def test_configured_collector_receives_the_requests_spans() -> None:
    raw = b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n"
    with collector() as (url, got):
        async def main() -> None:
            settings = TelemetrySettings(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url})
            async with engine(settings) as (eng, cfg, _):
                await request(eng, cfg, "10.96.0.10", raw)
                eng.telemetry.close()  # type: ignore[attr-defined]
        asyncio.run(main())
    names = set()
    for _, _, data in got:
        req = ExportTraceServiceRequest()
        req.ParseFromString(data)
        names |= {s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert names == {"echo.ns.svc.cluster.local:80/*", "router outbound|80||echo.ns.svc.cluster.local egress"}
