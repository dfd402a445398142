"""Policy decision cost per connection at the ztunnel, with 10, 100 and 1,000 policies in scope.

Target (issue 5): under 20 µs per decision at 100 policies. Pure CPU work, single process;
pinned with taskset when available so runs compare.

    .venv/bin/python bench/policy_bench.py [--out bench/results/policy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

from zeromesh.policy import Enforcer, Request, Workload, applicable, compile_policy, evaluate

NS = "bench"
WL = Workload(NS, {"app": "echo"}, "echo")


def policy(i: int, kind: str) -> dict[str, Any]:
    stamp = f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
    md = {"name": f"p{i}", "namespace": NS, "creationTimestamp": stamp}
    sel = {"selector": {"matchLabels": {"app": "echo"}}}
    if kind == "lockdown":          # ALLOW by exact principal: the common production shape
        return {"metadata": md, "spec": {**sel, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": [f"cluster.local/ns/c{i}/sa/client"]}}]}]}}
    # A mix: principals, namespaces + ports, ipBlocks DENY with notPrincipals, when conditions.
    match i % 4:
        case 0:
            return {"metadata": md, "spec": {**sel, "rules": [
                {"from": [{"source": {"principals": [f"cluster.local/ns/c{i}/sa/*"]}}]}]}}
        case 1:
            return {"metadata": md, "spec": {**sel, "rules": [
                {"from": [{"source": {"namespaces": [f"c{i}"]}}],
                 "to": [{"operation": {"ports": ["8080"]}}]}]}}
        case 2:
            return {"metadata": md, "spec": {**sel, "action": "DENY", "rules": [
                {"from": [{"source": {"ipBlocks": [f"10.{i % 250}.0.0/16"],
                                      "notPrincipals": ["cluster.local/ns/admin/sa/*"]}}]}]}}
        case _:
            return {"metadata": md, "spec": {**sel, "action": "DENY", "rules": [
                {"when": [{"key": "source.namespace", "values": [f"bad{i}"]}]}]}}


def measure(n: int, kind: str, repeat: int = 7, number: int = 20000) -> dict[str, float]:
    compiled = [compile_policy(policy(i, kind), Enforcer.ZTUNNEL) for i in range(n)]
    ps = applicable(compiled, WL)
    req = Request(f"cluster.local/ns/c{n - 1}/sa/client", "10.244.1.5", "10.244.2.7", 8080)
    evaluate(ps, req)
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            evaluate(ps, req)
        best.append((time.perf_counter() - t0) / number * 1e6)
    return {"best_us": min(best), "median_us": statistics.median(best)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results/policy.json")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    rows = []
    for kind in ("lockdown", "mixed"):
        for n in (10, 100, 1000):
            r = measure(n, kind, number=20000 if n < 1000 else 2000)
            rows.append({"kind": kind, "policies": n, **r})
    print("| policies in scope | lockdown (ALLOW by principal) "
          "| mixed (principal/namespace/ports/CIDR/when) |")
    print("|---:|---:|---:|")
    for n in (10, 100, 1000):
        lk = next(r for r in rows if r["kind"] == "lockdown" and r["policies"] == n)
        mx = next(r for r in rows if r["kind"] == "mixed" and r["policies"] == n)
        print(f"| {n} | {lk['best_us']:.2f} µs | {mx['best_us']:.2f} µs |")
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count()}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
