"""DestinationRule trafficPolicy compiled per (host, subset, port), with Istio's merges."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.api import LoadedDoc, Source, validate
from zeromesh.routing.resilience import LbKind, OutlierPolicy, PoolLimits
from zeromesh.routing.traffic_policy import (
    DEFAULT_TRAFFIC_POLICY,
    DestinationPolicies,
    TrafficPolicy,
    compile_destination_rule,
    compile_destination_rules,
    compile_policy,
    find_policies,
    merge_destination_rules,
    merge_policy,
)


def dr(spec: dict[str, Any], name: str = "rule", ns: str = "shop",
       created: str | None = None) -> dict[str, Any]:
    """A DestinationRule, validated and normalised as the store would keep it."""
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    body = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
            "spec": spec}
    obj = validate(LoadedDoc(Source("t.yaml", 1), body)).obj
    if created:
        obj["metadata"]["creationTimestamp"] = created
    return obj


# ---- one policy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("lb", "kind"), [
    (None, LbKind.LEAST_REQUEST),  # Istio's default
    ({"simple": "ROUND_ROBIN"}, LbKind.ROUND_ROBIN),
    ({"simple": "LEAST_REQUEST"}, LbKind.LEAST_REQUEST),
    ({"simple": "LEAST_CONN"}, LbKind.LEAST_REQUEST),
    ({"simple": "RANDOM"}, LbKind.RANDOM),
    ({"simple": "PASSTHROUGH"}, LbKind.PASSTHROUGH),
    ({"simple": "UNSPECIFIED"}, LbKind.LEAST_REQUEST),
    ({"consistentHash": {"httpHeaderName": "x-user"}}, LbKind.LEAST_REQUEST),
])
def test_load_balancer(lb: dict[str, Any] | None, kind: LbKind) -> None:
    policy = {"loadBalancer": lb} if lb is not None else {"connectionPool": {}}
    assert compile_policy(policy).load_balancer is kind


def test_unsupported_load_balancer_settings_are_noted() -> None:
    tp = compile_policy({"loadBalancer": {"consistentHash": {"httpHeaderName": "x"},
                                          "warmupDurationSecs": "10s"}})
    assert tp.notes == ("loadBalancer.consistentHash is not supported (ignored)",
                        "loadBalancer.warmupDurationSecs is not supported (ignored)")


@pytest.mark.parametrize(("pool", "budget", "expected"), [
    ({}, None, PoolLimits()),
    ({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}},
     None, PoolLimits(max_connections=1, max_pending=1, max_requests_per_connection=1)),
    ({"http": {"http2MaxRequests": 50, "maxRetries": 4}}, None,
     PoolLimits(max_requests=50, max_retries=4)),
    # zeros are "unset" for Istio: unlimited
    ({"tcp": {"maxConnections": 0}, "http": {"http1MaxPendingRequests": 0, "http2MaxRequests": 0,
                                             "maxRequestsPerConnection": 0, "maxRetries": 0}},
     None, PoolLimits()),
    ({"tcp": {"connectTimeout": "500ms", "idleTimeout": "1h"}}, None,
     PoolLimits(connect_timeout_s=0.5, idle_timeout_s=3600.0)),
    ({"tcp": {"idleTimeout": "1h"}, "http": {"idleTimeout": "1m"}}, None,
     PoolLimits(idle_timeout_s=60.0)),  # http's idle timeout wins
    ({}, {}, PoolLimits(retry_budget_percent=20.0)),
    ({}, {"percent": {"value": 35}, "minRetryConcurrency": 5},
     PoolLimits(retry_budget_percent=35.0, min_retry_concurrency=5)),
])
def test_connection_pool(pool: dict[str, Any], budget: dict[str, Any] | None, expected: PoolLimits) -> None:
    policy: dict[str, Any] = {"connectionPool": pool}
    if budget is not None:
        policy["retryBudget"] = budget
    assert compile_policy(policy).pool == expected


@pytest.mark.parametrize(("od", "expected"), [
    (None, None),
    ({}, OutlierPolicy()),  # Envoy: 5 consecutive 5xx, gateway errors off, 10 s, 30 s, 10 %
    ({"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 3},
     OutlierPolicy(consecutive_5xx=0, consecutive_gateway_errors=3)),
    ({"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "3m", "maxEjectionPercent": 100,
      "minHealthPercent": 40},
     OutlierPolicy(consecutive_5xx=2, interval_s=1.0, base_ejection_time_s=180.0,
                   max_ejection_percent=100, min_health_percent=40.0)),
    ({"maxEjectionPercent": 0}, OutlierPolicy()),  # 0 is "unset": Envoy's 10
])
def test_outlier_detection(od: dict[str, Any] | None, expected: OutlierPolicy | None) -> None:
    policy = {"outlierDetection": od} if od is not None else {"connectionPool": {}}
    assert compile_policy(policy).outlier == expected


def test_deprecated_consecutive_errors_is_ignored_with_a_note() -> None:
    tp = compile_policy({"outlierDetection": {"consecutiveErrors": 3}})
    assert tp.outlier == OutlierPolicy()
    assert "consecutiveErrors is deprecated" in tp.notes[0]


@pytest.mark.parametrize(("policy", "threshold"), [
    (TrafficPolicy(), 50.0),  # no outlier detection: Envoy's default
    (TrafficPolicy(outlier=OutlierPolicy()), 0.0),  # Istio: minHealthPercent, default 0 (no panic)
    (TrafficPolicy(outlier=OutlierPolicy(min_health_percent=30)), 30.0),
])
def test_panic_threshold(policy: TrafficPolicy, threshold: float) -> None:
    assert policy.panic_threshold_percent == threshold


def test_notes_for_what_the_waypoint_does_not_apply() -> None:
    tp = compile_policy({"tls": {"mode": "SIMPLE"},
                         "connectionPool": {"tcp": {"tcpKeepalive": {"time": "10s"}},
                                            "http": {"h2UpgradePolicy": "UPGRADE"}}})
    assert tp.notes == ("tls is not applied: the waypoint reaches mesh endpoints over HBONE",
                        "connectionPool.tcp.tcpKeepalive is not applied",
                        "connectionPool.http.h2UpgradePolicy is not applied")


def test_empty_policy_is_the_default() -> None:
    assert compile_policy(None) is DEFAULT_TRAFFIC_POLICY
    assert compile_policy({}) is DEFAULT_TRAFFIC_POLICY
    assert TrafficPolicy(LbKind.LEAST_REQUEST, PoolLimits(), None, ()) == DEFAULT_TRAFFIC_POLICY


# ---- merges: subsets and ports ------------------------------------------------------------

REVIEWS = {
    "host": "reviews",
    "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"},
        "connectionPool": {"tcp": {"maxConnections": 100}},
        "outlierDetection": {"consecutive5xxErrors": 7},
        "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}],
    },
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"},
         "trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 10}}}},
        {"name": "v3", "labels": {"version": "v3"},
         "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                           "portLevelSettings": [{"port": {"number": 8080},
                                                  "connectionPool": {"tcp": {"maxConnections": 1}}}]}},
    ],
}
OD7 = OutlierPolicy(consecutive_5xx=7)
P100 = PoolLimits(max_connections=100)

MERGES: list[tuple[str | None, int | None, LbKind, PoolLimits, OutlierPolicy | None]] = [
    (None, None, LbKind.RANDOM, P100, OD7),
    # a top-level port entry replaces the whole policy: omitted sections are defaults
    (None, 9080, LbKind.ROUND_ROBIN, PoolLimits(), None),
    (None, 8080, LbKind.RANDOM, P100, OD7),  # no top-level entry for 8080
    (None, 1234, LbKind.RANDOM, P100, OD7),  # a port nobody mentions
    # a subset without a policy inherits everything
    ("v1", None, LbKind.RANDOM, P100, OD7),
    ("v1", 9080, LbKind.ROUND_ROBIN, PoolLimits(), None),
    # a subset section replaces the top-level section whole (maxConnections is not kept)
    ("v2", None, LbKind.RANDOM, PoolLimits(max_requests=10), OD7),
    ("v2", 9080, LbKind.ROUND_ROBIN, PoolLimits(max_requests=10), None),
    ("v3", None, LbKind.LEAST_REQUEST, P100, OD7),
    # a subset port entry replaces every section (omitted: defaults)
    ("v3", 8080, LbKind.LEAST_REQUEST, PoolLimits(max_connections=1), None),
    # the subset merges over the top-level port entry
    ("v3", 9080, LbKind.LEAST_REQUEST, PoolLimits(), None),
    # a subset the rule does not define: the top-level policy
    ("v9", None, LbKind.RANDOM, P100, OD7),
    ("v9", 9080, LbKind.ROUND_ROBIN, PoolLimits(), None),
]


@pytest.mark.parametrize(("subset", "port", "lb", "pool", "outlier"), MERGES)
def test_subset_and_port_merges(subset: str | None, port: int | None, lb: LbKind, pool: PoolLimits,
                                outlier: OutlierPolicy | None) -> None:
    compiled = compile_destination_rule(dr(REVIEWS))
    assert compiled.host == "reviews.shop.svc.cluster.local"
    tp = compiled.get(subset, port)
    assert (tp.load_balancer, tp.pool, tp.outlier) == (lb, pool, outlier)


def test_precomputed_keys() -> None:
    compiled = compile_destination_rule(dr(REVIEWS))
    assert set(compiled.policies) == {(s, p) for s in (None, "v1", "v2", "v3") for p in (None, 8080, 9080)}


@pytest.mark.parametrize(("top", "subset", "port", "expected"), [
    (None, None, None, None),
    (None, {"loadBalancer": {"simple": "RANDOM"}}, None, {"loadBalancer": {"simple": "RANDOM"}}),
    ({"loadBalancer": {"simple": "RANDOM"}}, None, 80, {"loadBalancer": {"simple": "RANDOM"}}),
    ({"tls": {"mode": "SIMPLE"}, "retryBudget": {"percent": {"value": 5}}},
     {"retryBudget": {"percent": {"value": 9}}}, None,
     {"tls": {"mode": "SIMPLE"}, "retryBudget": {"percent": {"value": 9}}}),
    # a port-level entry drops what port entries cannot carry
    ({"retryBudget": {}, "portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]},
     None, 80, {"tls": {"mode": "SIMPLE"}}),
])
def test_merge_policy_raw(top: dict[str, Any] | None, subset: dict[str, Any] | None, port: int | None,
                          expected: dict[str, Any] | None) -> None:
    assert merge_policy(top, subset, port) == expected


def test_rule_without_policy() -> None:
    compiled = compile_destination_rule(dr({"host": "ratings.other.svc.cluster.local",
                                            "subsets": [{"name": "v1", "labels": {"v": "1"}}]}))
    assert compiled.host == "ratings.other.svc.cluster.local"
    assert compiled.get() is DEFAULT_TRAFFIC_POLICY
    assert compiled.get("v1", 80) is DEFAULT_TRAFFIC_POLICY


# ---- several rules ------------------------------------------------------------------------

def test_rules_for_one_host_merge_oldest_first() -> None:
    newer = dr({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
                "subsets": [{"name": "v1", "labels": {"version": "new"}},
                            {"name": "v2", "labels": {"version": "v2"}}]},
               name="b", created="2024-02-01T00:00:00Z")
    older = dr({"host": "reviews.shop.svc.cluster.local",
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
               name="a", created="2024-01-01T00:00:00Z")
    (merged,) = merge_destination_rules([newer, older])
    assert merged["metadata"]["name"] == "a"
    assert merged["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}},
                                         {"name": "v2", "labels": {"version": "v2"}}]
    # the older rule had no top-level policy: the newer one's is used
    assert merged["spec"]["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    table = compile_destination_rules([newer, older])
    assert table["reviews.shop.svc.cluster.local"].get("v2").load_balancer is LbKind.RANDOM


def test_first_top_level_policy_wins() -> None:
    a = dr({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
           name="a", created="2024-01-01T00:00:00Z")
    b = dr({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
           name="b", created="2024-02-01T00:00:00Z")
    table = compile_destination_rules([b, a])
    assert table["reviews.shop.svc.cluster.local"].get().load_balancer is LbKind.ROUND_ROBIN


def test_workload_selector_rules_are_left_out() -> None:
    rule = dr({"host": "reviews", "workloadSelector": {"matchLabels": {"app": "x"}},
               "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
    assert compile_destination_rules([rule]) == {}


def test_different_hosts_and_namespaces() -> None:
    table = compile_destination_rules([dr({"host": "reviews"}, ns="a"), dr({"host": "reviews"}, ns="b"),
                                       dr({"host": "*.example.com"}), dr({"host": "*"})])
    assert sorted(table) == ["*", "*.example.com", "reviews.a.svc.cluster.local",
                             "reviews.b.svc.cluster.local"]


@pytest.mark.parametrize(("host", "found"), [
    ("reviews.a.svc.cluster.local", "reviews.a.svc.cluster.local"),
    ("api.example.com", "*.example.com"),
    ("deep.api.example.com", "*.example.com"),
    ("example.org", "*"),
])
def test_find_policies(host: str, found: str) -> None:
    table = {h: DestinationPolicies(h, {}) for h in ("reviews.a.svc.cluster.local", "*.example.com", "*")}
    result = find_policies(table, host)
    assert result is not None and result.host == found
    assert find_policies({"x.y": DestinationPolicies("x.y", {})}, "z.y") is None


def test_durations_in_istio_form() -> None:
    tp = compile_policy({"outlierDetection": {"interval": "500ms", "baseEjectionTime": "1h"},
                         "connectionPool": {"tcp": {"connectTimeout": "1m"}}})
    assert tp.outlier is not None
    assert (tp.outlier.interval_s, tp.outlier.base_ejection_time_s, tp.pool.connect_timeout_s) == (
        0.5, 3600.0, 60.0)
