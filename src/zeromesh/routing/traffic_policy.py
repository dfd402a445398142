"""DestinationRule ``trafficPolicy`` compiled to the effective policy of each
(host, subset, port), with Istio's merge rules (``MergeSubsetTrafficPolicy``):

1. A ``portLevelSettings`` entry for the port *replaces* the policy it belongs to:
   sections it omits fall back to the defaults, not to the top level.
2. A subset's policy (itself resolved for the port the same way) overrides the
   DestinationRule's section by section (loadBalancer, connectionPool,
   outlierDetection, tls are each taken whole); when the subset had a port-level
   entry for the port, every section comes from it.
3. Several DestinationRules for one host merge as Istio merges them: oldest first,
   subsets added unless the name is taken, the first top-level trafficPolicy wins.
   Rules with a ``workloadSelector`` apply to the selected proxies only and are
   left out here.

Defaults (no policy): LEAST_REQUEST, unlimited pools, 10 s connect timeout, no outlier
detection. What the waypoint does not apply is listed in ``TrafficPolicy.notes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.api.durations import parse_duration
from zeromesh.routing.compile import service_host
from zeromesh.routing.resilience import LbKind, OutlierPolicy, PoolLimits

_SECTIONS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_LB = {"ROUND_ROBIN": LbKind.ROUND_ROBIN, "LEAST_REQUEST": LbKind.LEAST_REQUEST,
       "LEAST_CONN": LbKind.LEAST_REQUEST, "RANDOM": LbKind.RANDOM,
       "PASSTHROUGH": LbKind.PASSTHROUGH, "UNSPECIFIED": LbKind.LEAST_REQUEST}

Section = Mapping[str, Any]
PolicyKey = tuple[str | None, int | None]


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """The effective policy of one cluster (host, subset, port)."""

    load_balancer: LbKind = LbKind.LEAST_REQUEST
    pool: PoolLimits = field(default_factory=PoolLimits)
    outlier: OutlierPolicy | None = None
    notes: tuple[str, ...] = ()

    @property
    def panic_threshold_percent(self) -> float:
        """Istio sets it to ``minHealthPercent`` (default 0: no panic) when outlier
        detection is on; otherwise Envoy's 50 applies."""
        return self.outlier.min_health_percent if self.outlier is not None else 50.0


DEFAULT_TRAFFIC_POLICY = TrafficPolicy()


def _positive(section: Section, name: str) -> int | None:
    """Istio reads 0 as "unset" for pool numbers."""
    value = section.get(name)
    return int(value) if isinstance(value, int) and value > 0 else None


def _duration(section: Section, name: str) -> float | None:
    value = section.get(name)
    return parse_duration(value) if isinstance(value, str) else None


def _load_balancer(lb: Section | None, notes: list[str]) -> LbKind:
    if not lb:
        return LbKind.LEAST_REQUEST
    for unsupported in ("consistentHash", "localityLbSetting", "warmupDurationSecs", "warmup"):
        if lb.get(unsupported):
            notes.append(f"loadBalancer.{unsupported} is not supported (ignored)")
    return _LB.get(str(lb.get("simple", "UNSPECIFIED")).upper(), LbKind.LEAST_REQUEST)


def _pool(cp: Section | None, budget: Section | None, notes: list[str]) -> PoolLimits:
    cp = cp or {}
    tcp: Section = cp.get("tcp") or {}
    http: Section = cp.get("http") or {}
    for name, sec in (("tcp", tcp), ("http", http)):
        for f in ("tcpKeepalive", "maxConnectionDuration", "h2UpgradePolicy", "useClientProtocol",
                  "maxConcurrentStreams"):
            if sec.get(f):
                notes.append(f"connectionPool.{name}.{f} is not applied")
    connect = _duration(tcp, "connectTimeout")
    idle = _duration(http, "idleTimeout")
    if idle is None:
        idle = _duration(tcp, "idleTimeout")
    percent: float | None = None
    min_concurrency = 3
    if budget is not None:
        raw = budget.get("percent")
        raw = raw.get("value") if isinstance(raw, Mapping) else raw
        percent = float(raw) if isinstance(raw, int | float) else 20.0
        if isinstance(budget.get("minRetryConcurrency"), int):
            min_concurrency = int(budget["minRetryConcurrency"])
    return PoolLimits(
        max_connections=_positive(tcp, "maxConnections"),
        max_pending=_positive(http, "http1MaxPendingRequests"),
        max_requests=_positive(http, "http2MaxRequests"),
        max_requests_per_connection=_positive(http, "maxRequestsPerConnection"),
        max_retries=_positive(http, "maxRetries"),
        connect_timeout_s=connect if connect is not None else 10.0,
        idle_timeout_s=idle,
        retry_budget_percent=percent, min_retry_concurrency=min_concurrency)


def _outlier(od: Section | None, notes: list[str]) -> OutlierPolicy | None:
    if od is None:
        return None
    if od.get("consecutiveErrors"):
        notes.append("outlierDetection.consecutiveErrors is deprecated and ignored (as by Istio); "
                     "use consecutive5xxErrors or consecutiveGatewayErrors")
    if od.get("splitExternalLocalOriginErrors") or od.get("consecutiveLocalOriginFailures"):
        notes.append("outlierDetection local-origin error splitting is not supported (ignored)")
    c5 = od.get("consecutive5xxErrors")
    gw = od.get("consecutiveGatewayErrors")
    max_pct = od.get("maxEjectionPercent")
    interval = _duration(od, "interval")
    base = _duration(od, "baseEjectionTime")
    return OutlierPolicy(
        consecutive_5xx=int(c5) if isinstance(c5, int) else 5,
        consecutive_gateway_errors=int(gw) if isinstance(gw, int) else 0,
        interval_s=interval if interval else 10.0,
        base_ejection_time_s=base if base else 30.0,
        max_ejection_percent=int(max_pct) if isinstance(max_pct, int) and max_pct > 0 else 10,
        min_health_percent=float(od.get("minHealthPercent") or 0))


def compile_policy(policy: Section | None) -> TrafficPolicy:
    """One already-merged trafficPolicy (its portLevelSettings are not looked at)."""
    if not policy:
        return DEFAULT_TRAFFIC_POLICY
    notes: list[str] = []
    if policy.get("tls"):
        notes.append("tls is not applied: the waypoint reaches mesh endpoints over HBONE")
    return TrafficPolicy(
        load_balancer=_load_balancer(policy.get("loadBalancer"), notes),
        pool=_pool(policy.get("connectionPool"), policy.get("retryBudget"), notes),
        outlier=_outlier(policy.get("outlierDetection"), notes),
        notes=tuple(notes))


def _for_port(policy: Section, port: int | None) -> tuple[Section, bool]:
    """Istio's GetPortLevelTrafficPolicy: the port's entry alone, or the policy as is."""
    if port is not None:
        for p in policy.get("portLevelSettings") or ():
            if (p.get("port") or {}).get("number") == port:
                return {k: p[k] for k in _SECTIONS if k in p}, True
    return policy, False


def merge_policy(top: Section | None, subset: Section | None, port: int | None) -> Section | None:
    """The raw trafficPolicy Istio applies to (subset, port); see the module docstring."""
    original = _for_port(top, port)[0] if top is not None else None
    if subset is None:
        return original
    sub, port_level = _for_port(subset, port)
    if original is None:
        return sub
    merged = {k: v for k, v in original.items() if k != "portLevelSettings"}
    for k in _SECTIONS:
        if k in sub or port_level:
            merged[k] = sub.get(k)
    if sub.get("retryBudget") is not None:
        merged["retryBudget"] = sub["retryBudget"]
    return {k: v for k, v in merged.items() if v is not None}


def _ports(policy: Section | None) -> set[int]:
    return {int((p.get("port") or {})["number"]) for p in (policy or {}).get("portLevelSettings") or ()
            if (p.get("port") or {}).get("number") is not None}


@dataclass(frozen=True, slots=True)
class DestinationPolicies:
    """Every effective policy of one DestinationRule host. Keys are (subset, port);
    None stands for "any other subset/port"."""

    host: str
    policies: Mapping[PolicyKey, TrafficPolicy]

    def get(self, subset: str | None = None, port: int | None = None) -> TrafficPolicy:
        """The policy of a request to ``subset`` on ``port``. A subset the rule does not
        define gets the top-level policy (routing answers for unknown subsets)."""
        s = subset if any(k[0] == subset for k in self.policies) else None
        p = port if (s, port) in self.policies else None
        return self.policies.get((s, p), DEFAULT_TRAFFIC_POLICY)


def _host(name: str, namespace: str, domain: str) -> str:
    """Istio's ResolveShortnameToFQDN: "*" stays as it is, short names are expanded."""
    return name if name == "*" else service_host(name, namespace, domain)


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def compile_destination_rule(dr: Mapping[str, Any], *, domain: str = "cluster.local") -> DestinationPolicies:
    """A validated (normalised) DestinationRule's policies per (subset, port)."""
    ns, _ = _meta(dr)
    spec = dr.get("spec") or {}
    top = spec.get("trafficPolicy")
    subsets = {str(s["name"]): s.get("trafficPolicy") for s in spec.get("subsets") or ()}
    ports = _ports(top).union(*(_ports(p) for p in subsets.values()))
    policies: dict[PolicyKey, TrafficPolicy] = {}
    for subset in (None, *subsets):
        for port in (None, *sorted(ports)):
            sub = subsets.get(subset) if subset is not None else None
            policies[(subset, port)] = compile_policy(merge_policy(top, sub, port))
    return DestinationPolicies(_host(str(spec["host"]), ns, domain), policies)


def merge_destination_rules(drs: Iterable[Mapping[str, Any]], *,
                            domain: str = "cluster.local") -> list[dict[str, Any]]:
    """One DestinationRule per host, merged as Istio does (see the module docstring)."""

    def age(dr: Mapping[str, Any]) -> tuple[str, str]:
        ns, name = _meta(dr)
        return (str((dr.get("metadata") or {}).get("creationTimestamp") or "\uffff"), f"{ns}/{name}")

    merged: dict[str, dict[str, Any]] = {}
    for dr in sorted(drs, key=age):
        spec = dr.get("spec") or {}
        if spec.get("workloadSelector"):
            continue
        ns, _ = _meta(dr)
        host = _host(str(spec["host"]), ns, domain)
        first = merged.get(host)
        if first is None:
            merged[host] = {"metadata": dict(dr.get("metadata") or {}),
                            "spec": {**spec, "host": host,
                                     "subsets": list(spec.get("subsets") or ())}}
            continue
        fspec = first["spec"]
        taken = {s["name"] for s in fspec["subsets"]}
        fspec["subsets"].extend(s for s in spec.get("subsets") or () if s["name"] not in taken)
        if fspec.get("trafficPolicy") is None and spec.get("trafficPolicy") is not None:
            fspec["trafficPolicy"] = spec["trafficPolicy"]
    return list(merged.values())


def compile_destination_rules(drs: Iterable[Mapping[str, Any]], *,
                              domain: str = "cluster.local") -> dict[str, DestinationPolicies]:
    """Every host's policies, after Istio's merge of rules sharing a host."""
    out: dict[str, DestinationPolicies] = {}
    for dr in merge_destination_rules(drs, domain=domain):
        compiled = compile_destination_rule(dr, domain=domain)
        out[compiled.host] = compiled
    return out


def find_policies(table: Mapping[str, DestinationPolicies], host: str) -> DestinationPolicies | None:
    """The rule for ``host``: an exact host first, else the longest matching wildcard
    ("*.ns.svc.cluster.local", "*")."""
    if host in table:
        return table[host]
    wild = [h for h in table if h.startswith("*") and host.endswith(h[1:])]
    return table[max(wild, key=len)] if wild else None
