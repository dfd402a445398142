"""The whole JSON state from one round's inputs, who may read it, and that the model stays pure."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from uikit import authz, mesh, sample, scrape, service, workload

import zeromesh.ui
from zeromesh.ui.access import decide
from zeromesh.ui.metrics import TCP_OPENED
from zeromesh.ui.state import Inputs, Source, build_state

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def test_state_of_a_client_calling_an_echo_server() -> None:
    client = workload("a", "client-1", sa="client", workload_name="client", labels={"app": "client"})
    echo = workload("a", "echo-1", sa="echo", workload_name="echo", labels={"app": "echo"}, node="node2",
                    ip="10.244.2.5")
    records = mesh([client, echo], services=[service("a", "echo", "10.96.0.11", [echo])],
                   policies=[authz("a", "allow-client", selector={"app": "echo"}, rules=[
                       {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/client"]}}]}])])
    now = scrape([sample(TCP_OPENED, 3, target="node2/ztunnel", reporter="destination")], at=10.0)
    before = scrape([sample(TCP_OPENED, 1, target="node2/ztunnel", reporter="destination")], at=8.0)
    inputs = Inputs("c1", "cluster.local", records, now,
                    sources=[Source("node2 ztunnel metrics", "http://127.0.0.1:1/metrics", "ok"),
                             Source("a/wp traces", "http://127.0.0.1:1/proxy/a/wp/debug/traces", "absent",
                                    "404 not found")])
    state = json.loads(json.dumps(build_state(inputs, before, NOW)))
    assert state["cluster"] == "c1" and state["generated_at"] == "2026-11-23T12:00:00+00:00"
    [e] = [e for e in state["graph"]["edges"] if e["protocol"] == "tcp"]
    assert (e["source"], e["target"], e["mtls"]) == ("wl:a/client", "wl:a/echo", True)
    assert e["connection_rate"] == 1.0                  # 2 more connections in 2 s
    d = state["details"]["wl:a/echo"]
    assert d["identities"] == ["spiffe://cluster.local/ns/a/sa/echo"]
    assert [(p["policy"], p["action"], p["enforced_by"]) for p in d["policies"]] == [
        ("a/allow-client", "ALLOW", "ztunnel")]
    assert d["inbound"] == [e["id"]] and d["services"] == ["svc:a/echo"] and d["mtls_modes"] == ["PERMISSIVE"]
    assert state["details"]["wl:a/client"]["outbound"] == [e["id"]]
    assert state["policies"]["authorization"][0]["applies_to"][0]["pod"] == "a/echo-1"
    assert [s["status"] for s in state["sources"]] == ["ok", "absent"]
    assert state["traces"] == [] and state["certificates"] == [] and state["waypoints"] == []


def test_state_of_an_empty_or_unreachable_cluster() -> None:
    state = build_state(Inputs("c1", "cluster.local", {}, scrape([])), None, NOW)
    assert state["graph"] == {"nodes": [], "edges": [], "window": None}
    assert state["workloads"] == [] and state["details"] == {}


@pytest.mark.parametrize(("path", "host", "token", "want"), [
    ("/", "127.0.0.1:8080", None, 0),
    ("/static/app.js", "localhost:8080", None, 0),
    ("/api/state", "127.0.0.1:8080", "s3cret", 0),
    ("/api/state", "127.0.0.1:8080", None, 401),
    ("/api/graph", "127.0.0.1:8080", "wrong", 401),
    ("/", "evil.example:8080", None, 421),            # DNS rebinding: the page's own name
    ("/api/state", "127.0.0.1:9999", "s3cret", 421),
    ("/", None, None, 421),
])
def test_who_may_read_the_dashboard(path: str, host: str | None, token: str | None, want: int) -> None:
    assert decide(path, host, token, 8080, "s3cret") == want


PURE = ("access", "graph", "metrics", "pages", "policies", "state")


@pytest.mark.parametrize("module", PURE)
def test_the_model_does_no_io(module: str) -> None:
    """Decide, then do IO: only collect.py and server.py may touch sockets or the loop."""
    src = Path(zeromesh.ui.__file__).with_name(f"{module}.py").read_text(encoding="utf-8")
    names: set[str] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    bad = {n for n in names if n.split(".")[0] in ("asyncio", "socket", "subprocess", "aiohttp")
           or n in ("zeromesh.ui.collect", "zeromesh.ui.server")}
    assert not bad, f"zeromesh.ui.{module} imports {sorted(bad)}"


def test_static_files_ship_with_the_package_and_use_nothing_from_the_internet() -> None:
    static = resources.files("zeromesh.ui").joinpath("static")
    for name in ("index.html", "app.js", "app.css"):
        text = static.joinpath(name).read_text(encoding="utf-8")
        local = text.replace("http://www.w3.org/2000/svg", "")      # a namespace name, never fetched
        assert "http://" not in local and "https://" not in local, name
    html = static.joinpath("index.html").read_text(encoding="utf-8")
    assert '<script src="/static/app.js">' in html and 'href="/static/app.css"' in html
    code = [line for line in static.joinpath("app.js").read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("//")]
    assert not [line for line in code if "innerHTML" in line]     # names come from user manifests
