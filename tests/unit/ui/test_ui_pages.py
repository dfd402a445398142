"""Rows of the dashboard's pages: certificates, traces, waypoints, services, workloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from uikit import mesh, service, waypoint, workload

from zeromesh.ui.pages import certificate_rows, service_rows, trace_rows, waypoint_rows, workload_rows
from zeromesh.ztunnel.config import Snapshot

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def cert(identity: str, not_after: str, refresh_at: str) -> dict[str, Any]:
    return {"identity": identity, "serial": "ab12", "not_before": "2026-11-23T00:00:00+00:00",
            "not_after": not_after, "refresh_at": refresh_at, "chain": [identity, "CN=root"]}


@pytest.mark.parametrize(("entry", "state", "expires_in"), [
    (cert("spiffe://cluster.local/ns/a/sa/echo", "2026-11-24T00:00:00+00:00", "2026-11-23T18:00:00+00:00"),
     "valid", 12 * 3600.0),
    (cert("spiffe://cluster.local/ns/a/sa/echo", "2026-11-23T13:00:00+00:00", "2026-11-23T11:00:00+00:00"),
     "renewing", 3600.0),
    (cert("spiffe://cluster.local/ns/a/sa/echo", "2026-11-23T11:00:00+00:00", "2026-11-23T10:00:00+00:00"),
     "expired", -3600.0),
    ({"identity": "spiffe://cluster.local/ns/a/sa/echo", "failures": 3, "error": "CA refused"},
     "failing", None),
])
def test_certificate_rows(entry: dict[str, Any], state: str, expires_in: float | None) -> None:
    snap = Snapshot.from_state(mesh([workload("a", "echo-1", sa="echo")]), "1")
    dump = {"holder": "node2 ztunnel", "node": "node2", "certificates": [entry]}
    [row] = certificate_rows([dump], snap, NOW)
    assert row["state"] == state and row.get("expires_in") == expires_in
    assert row["pods"] == ["a/echo-1"] and row["holder"] == "node2 ztunnel"


def span(sid: str, parent: str, start_ms: float, dur: float, service: str, status: Any = "OK"
         ) -> dict[str, Any]:
    return {"span_id": sid, "parent_span_id": parent, "name": f"op-{sid}", "service": service,
            "kind": "server", "start_unix_nano": int(1_700_000_000_000_000_000 + start_ms * 1e6),
            "duration_ms": dur, "attributes": {"http.method": "GET"}, "status": status}


def test_traces_join_spans_of_one_trace_across_proxies_newest_first() -> None:
    gw = [{"trace_id": "t1", "spans": [span("s1", "", 0, 10, "istio-ingressgateway")]},
          {"trace_id": "t2", "spans": [span("x1", "", 500, 2, "istio-ingressgateway")]}]
    wp = [{"trace_id": "t1", "spans": [span("s2", "s1", 2, 6, "waypoint"),
                                       span("s3", "s2", 3, 4, "waypoint", {"code": "ERROR"})]}]
    rows = trace_rows({"istio-system/gw": gw, "a/wp": wp})
    assert [r["trace_id"] for r in rows] == ["t2", "t1"]
    t1 = rows[1]
    assert t1["name"] == "op-s1" and t1["root_service"] == "istio-ingressgateway"
    assert t1["services"] == ["istio-ingressgateway", "waypoint"] and t1["duration_ms"] == 10.0
    assert t1["error"] is True and t1["proxies"] == ["a/wp", "istio-system/gw"]
    assert [(s["span_id"], s["offset_ms"], s["depth"]) for s in t1["spans"]] == [
        ("s1", 0.0, 0), ("s2", 2.0, 1), ("s3", 3.0, 2)]
    assert t1["method"] == "GET"
    assert trace_rows({"p": gw}, limit=1)[0]["trace_id"] == "t2"
    assert trace_rows({"p": [{"no": "id"}, {"trace_id": "empty", "spans": []}]}) == []


def test_waypoint_rows_say_what_each_serves_and_whether_it_is_programmed() -> None:
    echo = workload("a", "echo-1", sa="echo", ip="10.244.2.5")
    bound = workload("a", "db-1", sa="db", waypoint="a/wp", ip="10.244.2.6")
    pod = workload("a", "wp-1", sa="wp", labels={"gateway.networking.k8s.io/gateway-name": "wp"},
                   enrolled=False, workload_name="wp", ip="10.244.1.9")
    snap = Snapshot.from_state(mesh([echo, bound, pod],
                                    services=[service("a", "echo", "10.96.0.11", [echo], waypoint="a/wp")],
                                    waypoints=[waypoint("a", "wp", serves="all")]), "1")
    gw = {"metadata": {"namespace": "a", "name": "wp"}, "spec": {"gatewayClassName": "istio-waypoint"},
          "status": {"addresses": [{"value": "10.96.0.12"}],
                     "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]}}
    other = {"metadata": {"namespace": "a", "name": "edge"}, "spec": {"gatewayClassName": "istio"}}
    proxies = [{"name": "wp-1", "identity": "spiffe://cluster.local/zeromesh/pod/a/wp-1/sa/wp",
                "in_sync": True, "acked_version": "7", "nacks": 0},
               {"name": "wp-1", "identity": "spiffe://cluster.local/zeromesh/pod/b/wp-1/sa/wp",
                "in_sync": False}]
    [row] = waypoint_rows([gw, other], {"a/wp": waypoint("a", "wp", serves="all")}, snap, proxies)
    assert row["services"] == ["a/echo"] and row["workloads"] == ["a/db-1"]
    assert row["programmed"]["status"] == "True" and row["addresses"] == ["10.96.0.12"]
    assert [p["pod"] for p in row["pods"]] == ["wp-1"]
    assert row["proxies"] == [{"name": "wp-1", "in_sync": True, "acked_version": "7", "nacks": 0}]


def test_workload_and_service_rows() -> None:
    echo = workload("a", "echo-1", sa="echo", workload_name="echo", ip="10.244.2.5")
    plain = workload("b", "old-1", enrolled=False, ip="10.244.2.6")
    svc = service("a", "echo", "10.96.0.11", [echo], waypoint="a/wp")
    snap = Snapshot.from_state(mesh([echo, plain], services=[svc], waypoints=[waypoint("a", "wp")]), "1")
    rows = {r["pod"]: r for r in workload_rows(snap)}
    assert rows["echo-1"]["identity"] == "spiffe://cluster.local/ns/a/sa/echo"
    assert rows["echo-1"]["node_id"] == "wl:a/echo" and rows["echo-1"]["enrolled"] is True
    assert rows["echo-1"]["waypoints"] == ["a/wp (service a/echo)"]
    assert rows["old-1"]["identity"] == "" and rows["old-1"]["protocol"] == "TCP"
    [srow] = service_rows([svc], {echo["uid"]: echo})
    assert srow["ports"] == ["80/TCP→8080 (http)"] and srow["waypoint"] == "a/wp"
    assert srow["endpoints"] == [{"pod": "a/echo-1", "ip": "10.244.2.5", "ready": True}]
