"""`zeromesh dashboard` in headless Chromium (issue 8): the graph shows the client and the echo
server with an mTLS edge between them, clicking the echo workload shows its SPIFFE identity and
the ALLOW policy in force, and a screenshot of it is not blank."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ekit import ROOT, Cluster, unique_name

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

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
      serviceAccountName: client
      nodeSelector: {{name: node1}}
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: echo-allow-client, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/{ns}/sa/client]}}}}]
"""


# ---- a PNG reader small enough to trust (Pillow is not installed) ---------------------------
def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG, per the PNG spec."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def colours(data: bytes) -> set[tuple[int, int, int]]:
    width, _, rows = png_pixels(data)
    bpp = len(rows[0]) // width
    return {(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, len(r), bpp)}


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def app(cluster: Cluster) -> Iterator[tuple[Cluster, str]]:
    """An ambient namespace: client on node1, echo on node2, an ALLOW policy selecting echo,
    and a few requests so the ztunnels' TCP metrics have something to say."""
    ns = unique_name("dash")
    try:
        cluster.apply("-", input=APP.format(ns=ns))
        cluster.wait_ready(ns, 2)
        for _ in range(4):
            out = cluster.curl(ns, "deploy/client", f"http://echo.{ns}/hello")
            assert out.returncode == 0 and '"path": "/hello"' in out.stdout, out.stdout + out.stderr
        yield cluster, ns
    finally:
        cluster.z("delete", "namespace", ns, check=False)


@pytest.fixture
def dashboard(app: tuple[Cluster, str]) -> Iterator[str]:
    """`zeromesh dashboard --port 0 --no-browser` as a child process; yields the URL it printed."""
    c, _ = app
    proc = subprocess.Popen([sys.executable, "-m", "zeromesh", "--cluster", c.name, "dashboard",
                             "--port", "0", "--no-browser"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline, line = time.monotonic() + 20, ""
        while "http://" not in line:
            assert proc.poll() is None, f"dashboard exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "the dashboard printed no URL"
            if sel.select(timeout=1):
                line = proc.stdout.readline()
        url = line[line.index("http://"):].split()[0]
        assert url.startswith("http://127.0.0.1:") and "token=" in url, line
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


# ---- the test -----------------------------------------------------------------------------------
def test_dashboard_graph_details_and_screenshot(app: tuple[Cluster, str], dashboard: str,
                                                browser: webdriver.Chrome, tmp_path: Path) -> None:
    _, ns = app
    client, echo = f"wl:{ns}/client", f"wl:{ns}/echo"

    # the JSON API wants the token printed with the URL
    base, token = dashboard.split("/?token=")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/state", timeout=10)
    assert refused.value.code == 401
    req = urllib.request.Request(f"{base}/api/graph", headers={"X-Zeromesh-Token": token})
    with urllib.request.urlopen(req, timeout=15) as r:
        graph = json.loads(r.read())["graph"]
    assert client in {n["id"] for n in graph["nodes"]}

    browser.get(dashboard)
    wait = WebDriverWait(browser, 30, poll_frequency=0.5,
                         ignored_exceptions=(StaleElementReferenceException,))
    edge_css = (f'g.edge[data-source="{client}"][data-target="{echo}"][data-protocol="tcp"]'
                f'[data-mtls="true"]')
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'g.node[data-id="{client}"]')
               and d.find_elements(By.CSS_SELECTOR, f'g.node[data-id="{echo}"]')
               and d.find_elements(By.CSS_SELECTOR, f"{edge_css} .lock"))
    label = browser.find_element(By.CSS_SELECTOR, f"{edge_css} .edge-label").text
    assert label.startswith("TCP ") and "conn" in label, label
    assert browser.find_element(By.CSS_SELECTOR, f'g.node[data-id="{echo}"]').get_attribute(
        "data-enrolled") == "true"

    # click the echo workload: its identity and the policy in force appear beside the graph
    def click_echo(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, f'g.node[data-id="{echo}"]').click()
        return d.find_element(By.ID, "detail").is_displayed()
    wait.until(click_echo)
    identity = f"spiffe://cluster.local/ns/{ns}/sa/echo"
    wait.until(lambda d: identity in d.find_element(By.CSS_SELECTOR, "#detail .identity").text)
    policies = browser.find_element(By.CSS_SELECTOR, "#detail ul.policies")
    item = policies.find_element(By.CSS_SELECTOR, f'li[data-policy="{ns}/echo-allow-client"]')
    assert "ALLOW" in item.text and "ztunnel" in item.text, item.text
    assert "mTLS" in browser.find_element(By.CSS_SELECTOR, "#detail ul.connections").text

    # the policies page says where the policy applies
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-page="policies"]').click()
    wait.until(lambda d: f"{ns}/echo-" in d.find_element(By.ID, "authz").text)
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-page="graph"]').click()

    # a screenshot that is not blank: many colours; the graph's own pixels (without the legend,
    # which has the same colours) include the mTLS green and an ambient workload's fill
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)), "no screenshot"
    seen = colours(shot.read_bytes())
    assert len(seen) > 50, f"screenshot looks blank: {len(seen)} colours"
    in_graph = colours(browser.find_element(By.ID, "graph-wrap").screenshot_as_png)
    assert (0x2E, 0x7D, 0x32) in in_graph, "no mTLS lock in the graph"
    assert (0xD3, 0xF0, 0xEC) in in_graph, "no ambient workload in the graph"
    blank = tmp_path / "blank.png"
    browser.get("about:blank")
    browser.save_screenshot(str(blank))
    assert len(colours(blank.read_bytes())) <= 2 < len(seen)


def test_png_reader_agrees_with_a_known_image() -> None:
    """The reader the screenshot check relies on, on an image built here with every filter."""
    width, height = 3, 5
    pixels = [[(x * 40 + y, y * 50, (x + y) * 30) for x in range(width)] for y in range(height)]
    raw = b""
    prev = bytes(width * 3)
    for y, row in enumerate(pixels):
        line = bytes(v for px in row for v in px)
        ftype = y % 5
        if ftype == 1:
            enc = bytes((line[i] - (line[i - 3] if i >= 3 else 0)) & 0xFF for i in range(len(line)))
        elif ftype == 2:
            enc = bytes((a - b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            enc = bytes((line[i] - (((line[i - 3] if i >= 3 else 0) + prev[i]) >> 1)) & 0xFF
                        for i in range(len(line)))
        elif ftype == 4:
            out = []
            for i in range(len(line)):
                a, b, c = (line[i - 3] if i >= 3 else 0), prev[i], (prev[i - 3] if i >= 3 else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                out.append((line[i] - (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF)
            enc = bytes(out)
        else:
            enc = line
        raw += bytes([ftype]) + enc
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    w, h, rows = png_pixels(png)
    assert (w, h) == (width, height)
    assert rows == [bytes(v for px in row for v in px) for row in pixels]
    assert len(colours(png)) == width * height
