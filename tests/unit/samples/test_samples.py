"""Run the shipped samples as real processes, the way the local cluster does.

The samples must work under the system interpreter with only the stdlib, so
each one is started as ``/usr/bin/python3 <file>`` (falling back to the test
interpreter if there is none) with a minimal environment and a scratch cwd,
bound to 127.0.0.1 on free ports. Every process is stopped by PID in a
finalizer, which also checks that SIGTERM gives exit status 0.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zeromesh.samples import SAMPLES, sample_path

SYSTEM_PYTHON = "/usr/bin/python3"
PYTHON = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
HOST = "127.0.0.1"
POD_ENV = {
    "POD_NAME": "echo-7d9f-abcde",
    "POD_NAMESPACE": "demo",
    "NODE_NAME": "node-1",
    "POD_IP": "10.42.0.7",
    "SERVICE_ACCOUNT": "echo-sa",
    "ZEROMESH_SERVICES": "echo,echo-canary",
}


def free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free loopback ports."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Sample:
    """A running sample process and the ports it listens on."""

    name: str
    proc: subprocess.Popen[bytes]
    ports: list[int]
    log: Path
    stopped_rc: int | None = field(default=None)

    @property
    def port(self) -> int:
        return self.ports[0]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM by PID, wait, SIGKILL if it hangs; return the exit status."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                self.stopped_rc = -9
                return self.stopped_rc
        self.stopped_rc = self.proc.returncode
        return self.stopped_rc


def wait_listening(sample: Sample, timeout: float = 5.0) -> None:
    """Poll every port until it accepts, failing fast if the process died."""
    deadline = time.monotonic() + timeout
    for port in sample.ports:
        while True:
            if sample.proc.poll() is not None:
                pytest.fail(f"{sample.name} exited early:\n{sample.output()}")
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{sample.name} not listening on {port}:\n{sample.output()}")
                time.sleep(0.02)


StartFn = Callable[..., Sample]


def _launcher(log_dir: Path) -> tuple[StartFn, Callable[[], None]]:
    started: list[Sample] = []

    def start(name: str, nports: int = 1, **env: str) -> Sample:
        ports = free_ports(nports)
        log = log_dir / f"{name}-{ports[0]}.log"
        proc_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BIND": HOST,
            "PORTS": ",".join(map(str, ports)),
            **POD_ENV,
            **env,
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [PYTHON, str(sample_path(name))],
                env=proc_env,
                cwd=log_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        sample = Sample(name, proc, ports, log)
        started.append(sample)
        wait_listening(sample)
        return sample

    def finish() -> None:
        codes = {f"{s.name} pid {s.proc.pid}": s.stop() for s in started}
        bad = {k: v for k, v in codes.items() if v != 0}
        assert not bad, f"samples did not exit 0 on SIGTERM: {bad}"

    return start, finish


@pytest.fixture
def start_sample(tmp_path: Path) -> Iterator[StartFn]:
    """Per-test launcher; every process is stopped and checked afterwards."""
    start, finish = _launcher(tmp_path)
    yield start
    finish()


@pytest.fixture(scope="module")
def http_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    start, finish = _launcher(tmp_path_factory.mktemp("http-echo"))
    yield start("http-echo", nports=2)
    finish()


@pytest.fixture(scope="module")
def tcp_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    start, finish = _launcher(tmp_path_factory.mktemp("tcp-echo"))
    yield start("tcp-echo")
    finish()


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    start, finish = _launcher(tmp_path_factory.mktemp("httpbin"))
    yield start("httpbin")
    finish()


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def get_json(
    port: int, method: str, path: str, **kwargs: Any
) -> tuple[http.client.HTTPResponse, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        resp, data = request(conn, method, path, **kwargs)
    finally:
        conn.close()
    return resp, json.loads(data) if data else None


# -- package ----------------------------------------------------------------


def test_sample_paths_exist_and_unknown_name_is_clear() -> None:
    for name, file_name in SAMPLES.items():
        path = sample_path(name)
        assert path.name == file_name
        assert path.is_file()
    with pytest.raises(KeyError, match=r"unknown sample 'nginx'.*http-echo"):
        sample_path("nginx")


def test_samples_import_only_stdlib() -> None:
    stdlib = set(sys.stdlib_module_names)
    for name in SAMPLES:
        source = sample_path(name).read_text()
        for line in source.splitlines():
            words = line.split()
            if line.startswith(("import ", "from ")) and words[1] != "__future__":
                assert words[1].split(".")[0] in stdlib, f"{name}: {line}"


# -- http-echo --------------------------------------------------------------


def test_http_echo_describes_request_and_pod(http_echo: Sample) -> None:
    port = http_echo.ports[1]
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    conn.putrequest("GET", "/some/path?x=1&y=two")
    conn.putheader("X-Custom-Header", "Abc")
    conn.putheader("X-Dup", "one")
    conn.putheader("X-Dup", "two")
    conn.endheaders()
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()

    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert int(resp.getheader("Content-Length", "-1")) == len(raw)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    data = json.loads(raw)
    assert data["path"] == "/some/path?x=1&y=two"
    assert data["host"] == f"{HOST}:{port}"
    assert data["method"] == "GET"
    assert data["proto"] == "HTTP/1.1"
    assert data["headers"]["X-Custom-Header"] == "Abc"
    assert data["headers"]["X-Dup"] == "one, two"
    assert data["body_length"] == 0
    assert data["remote_ip"] == HOST
    assert data["remote_addr"].startswith(f"{HOST}:")
    assert data["local_port"] == port
    assert data["pod"] == POD_ENV["POD_NAME"]
    assert data["namespace"] == "demo"
    assert data["node"] == "node-1"
    assert data["pod_ip"] == "10.42.0.7"
    assert data["service_account"] == "echo-sa"
    assert data["service"] == "echo"
    assert data["services"] == ["echo", "echo-canary"]


def test_http_echo_listens_on_every_port(http_echo: Sample) -> None:
    assert len(http_echo.ports) == 2
    for port in http_echo.ports:
        resp, data = get_json(port, "GET", "/")
        assert resp.status == 200
        assert data["local_port"] == port
    ports = ",".join(map(str, http_echo.ports))
    assert f"http-echo listening on {HOST}:{ports}" in http_echo.output()


def test_http_echo_keep_alive_and_any_method(http_echo: Sample) -> None:
    conn = http.client.HTTPConnection(HOST, http_echo.port, timeout=5)
    try:
        resp1, raw1 = request(conn, "GET", "/first")
        sock = conn.sock
        resp2, raw2 = request(conn, "POST", "/second", body=b"hello")
        resp3, raw3 = request(conn, "PURGE", "/third", body=b"x" * 100_000)
        assert conn.sock is sock  # http.client reconnects silently otherwise
    finally:
        conn.close()
    first, second, third = (json.loads(r) for r in (raw1, raw2, raw3))
    assert [resp1.status, resp2.status, resp3.status] == [200, 200, 200]
    assert first["remote_addr"] == second["remote_addr"] == third["remote_addr"]
    assert (second["method"], second["path"], second["body_length"]) == ("POST", "/second", 5)
    assert (third["method"], third["body_length"]) == ("PURGE", 100_000)


def test_http_echo_chunked_body_and_http10(http_echo: Sample) -> None:
    with socket.create_connection((HOST, http_echo.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
            b"GET /old HTTP/1.0\r\n\r\n"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk  # the HTTP/1.0 request makes the server close
    bodies = [json.loads(line) for line in raw.split(b"\n") if line.startswith(b"{")]
    assert [b["body_length"] for b in bodies] == [7, 0]
    assert bodies[1]["proto"] == "HTTP/1.0"
    assert bodies[1]["host"] == ""


def test_http_echo_exits_zero_with_open_connections(start_sample: StartFn) -> None:
    sample = start_sample("http-echo", POD_NAME="p")
    conns = [http.client.HTTPConnection(HOST, sample.port, timeout=5) for _ in range(20)]
    try:
        for conn in conns:
            assert request(conn, "GET", "/")[0].status == 200
        started = time.monotonic()
        assert sample.stop() == 0
        assert time.monotonic() - started < 3
    finally:
        for conn in conns:
            conn.close()


# -- tcp-echo ---------------------------------------------------------------


def tcp_round_trip(port: int, payload: bytes, expect_len: Callable[[bytes], bool]) -> bytes:
    """Send ``payload`` from a thread while reading, then half-close."""
    with socket.create_connection((HOST, port), timeout=5) as sock:

        def sender() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        thread.join(timeout=5)
    assert expect_len(bytes(received))
    return bytes(received)


def test_tcp_echo_round_trips_one_mib(tcp_echo: Sample) -> None:
    payload = os.urandom(1024 * 1024)
    received = tcp_round_trip(tcp_echo.port, payload, lambda r: len(r) == len(payload))
    assert received == payload
    assert f"tcp-echo listening on {HOST}:{tcp_echo.port}" in tcp_echo.output()


def test_tcp_echo_prefix_per_chunk(start_sample: StartFn) -> None:
    sample = start_sample("tcp-echo", ECHO_PREFIX="hello ")
    with socket.create_connection((HOST, sample.port), timeout=5) as sock:
        sock.sendall(b"world\n")
        got = b""
        while len(got) < len(b"hello world\n"):
            got += sock.recv(1024)
    assert got == b"hello world\n"

    payload = b"x" * (1024 * 1024)  # never contains the prefix
    received = tcp_round_trip(sample.port, payload, lambda r: len(r) >= len(payload))
    chunks = received.count(b"hello ")
    assert chunks >= 1
    assert len(received) == len(payload) + chunks * len(b"hello ")
    assert received.replace(b"hello ", b"") == payload
    assert sample.stop() == 0


# -- httpbin ----------------------------------------------------------------


def test_httpbin_status_codes(httpbin: Sample) -> None:
    conn = http.client.HTTPConnection(HOST, httpbin.port, timeout=5)
    try:
        resp, body = request(conn, "GET", "/status/418")
        assert (resp.status, body) == (418, b"")
        resp, body = request(conn, "POST", "/status/503", body=b"ignored")
        assert (resp.status, body) == (503, b"")
        resp, _ = request(conn, "GET", "/status/500,502")
        assert resp.status in (500, 502)
        resp, _ = request(conn, "GET", "/status/200:0,201:1")
        assert resp.status == 201
        resp, body = request(conn, "GET", "/status/204")
        assert (resp.status, body) == (204, b"")
        resp, body = request(conn, "GET", "/status/teapot")
        assert resp.status == 400
        assert json.loads(body)["pod"] == POD_ENV["POD_NAME"]
    finally:
        conn.close()


def test_httpbin_delay(httpbin: Sample) -> None:
    started = time.monotonic()
    resp, data = get_json(httpbin.port, "GET", "/delay/0.2?a=b")
    assert time.monotonic() - started >= 0.2
    assert resp.status == 200
    assert data["args"] == {"a": "b"}
    assert data["url"] == f"http://{HOST}:{httpbin.port}/delay/0.2?a=b"
    assert data["pod"] == POD_ENV["POD_NAME"]
    assert get_json(httpbin.port, "GET", "/delay/-1")[0].status == 400


def test_httpbin_headers_ip_user_agent(httpbin: Sample) -> None:
    resp, data = get_json(httpbin.port, "GET", "/headers", headers={"X-Test": "yes"})
    assert resp.status == 200
    assert data["headers"]["X-Test"] == "yes"
    assert data["pod"] == POD_ENV["POD_NAME"]
    resp, data = get_json(httpbin.port, "GET", "/ip")
    assert data["origin"] == HOST
    resp, data = get_json(httpbin.port, "GET", "/user-agent", headers={"User-Agent": "ua/1"})
    assert data["user-agent"] == "ua/1"


def test_httpbin_get_and_methods(httpbin: Sample) -> None:
    resp, data = get_json(httpbin.port, "GET", "/get?x=1&x=2&y=3")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert data["args"] == {"x": ["1", "2"], "y": "3"}
    assert data["origin"] == HOST
    assert data["url"] == f"http://{HOST}:{httpbin.port}/get?x=1&x=2&y=3"
    resp, data = get_json(httpbin.port, "GET", "/get?x=1")
    assert data["args"] == {"x": "1"}
    assert get_json(httpbin.port, "POST", "/get", body=b"")[0].status == 405
    resp, data = get_json(httpbin.port, "PUT", "/put", body=b"plain text")
    assert (resp.status, data["method"], data["data"], data["json"]) == (
        200,
        "PUT",
        "plain text",
        None,
    )
    resp, data = get_json(
        httpbin.port,
        "POST",
        "/post",
        body=b"a=1&b=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert data["form"] == {"a": "1", "b": "2"}


def test_httpbin_anything_and_keep_alive(httpbin: Sample) -> None:
    payload = {"hello": "mesh", "n": 3}
    conn = http.client.HTTPConnection(HOST, httpbin.port, timeout=5)
    try:
        resp, raw = request(
            conn,
            "POST",
            "/anything/foo?q=1",
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        sock = conn.sock
        resp2, raw2 = request(conn, "DELETE", "/anything")
        resp3, raw3 = request(conn, "GET", "/no/such/path")
        resp4, raw4 = request(conn, "GET", "/")
        assert conn.sock is sock
    finally:
        conn.close()
    data = json.loads(raw)
    assert resp.status == 200
    assert data["method"] == "POST"
    assert data["json"] == payload
    assert json.loads(data["data"]) == payload
    assert data["args"] == {"q": "1"}
    assert data["url"].endswith("/anything/foo?q=1")
    assert data["pod"] == POD_ENV["POD_NAME"]
    assert (resp2.status, json.loads(raw2)["method"]) == (200, "DELETE")
    assert resp3.status == 404
    assert json.loads(raw3)["error"] == "not found"
    assert resp4.status == 200
    assert "/status/{codes}" in json.loads(raw4)["endpoints"]
