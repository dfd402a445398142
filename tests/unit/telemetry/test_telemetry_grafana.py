"""The Grafana dashboards in grafana/ load, and every PromQL expression in them (panels and
template variables) selects only metrics zeromesh exports (`telemetry.prometheus.METRICS`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zeromesh.telemetry.prometheus import exported_series, promql_metric_names

GRAFANA = Path(__file__).resolve().parents[3] / "grafana"
BOARDS = sorted(GRAFANA.glob("*.json"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])


def _expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query: panel targets and query variables (label_values(expr, label))."""
    for p in _panels(board.get("panels") or []):
        for t in p.get("targets") or []:
            if t.get("expr"):
                yield f"panel {p['title']!r}", t["expr"]
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        yield f"variable {v['name']!r}", m.group(1) if m else q


def test_the_three_dashboards_ship() -> None:
    assert {b.name for b in BOARDS} >= {"zeromesh-mesh.json", "zeromesh-controlplane.json",
                                        "zeromesh-ztunnel.json"}


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_uses_only_exported_metrics(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    exported = exported_series()
    seen: set[str] = set()
    for where, expr in _expressions(board):
        names = promql_metric_names(expr)
        assert names, f"{path.name} {where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{path.name} {where}: {sorted(unknown)} are not exported by zeromesh ({expr})"
        seen |= names
    assert len(seen) >= 4


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable(path: Path) -> None:
    """Grafana refuses duplicate panel ids; every panel reads the dashboard's datasource variable."""
    board = json.loads(path.read_text())
    ids = [p["id"] for p in _panels(board["panels"])]
    assert len(ids) == len(set(ids))
    assert any(v["name"] == "datasource" and v["type"] == "datasource"
               for v in board["templating"]["list"])
    for p in _panels(board["panels"]):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]


def test_uids_are_unique() -> None:
    uids = [json.loads(b.read_text())["uid"] for b in BOARDS]
    assert len(uids) == len(set(uids))


def test_mesh_dashboard_has_istio_golden_signals() -> None:
    board = json.loads((GRAFANA / "zeromesh-mesh.json").read_text())
    exprs = " ".join(e for _, e in _expressions(board))
    for needle in ("istio_requests_total", 'response_code=~"5.."', "histogram_quantile(0.5,",
                   "histogram_quantile(0.9,", "histogram_quantile(0.99,", "istio_tcp_sent_bytes_total",
                   "by (source_workload, destination_workload)"):
        assert needle in exprs, needle
