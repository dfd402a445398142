"""`zeromesh x authz check`: would this request be allowed, and which policy decides?

The same engine the ztunnel runs answers, from the live cluster (`--pod`) or from
files alone (`-f`), so users can test a policy before applying it.
Exit codes: 0 allowed, 1 denied, 2 invalid policy or request.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from zeromesh.errors import ManifestError, ZeromeshError
from zeromesh.policy import (
    Enforcer,
    PolicySet,
    Request,
    Target,
    Workload,
    applicable,
    compile_policy,
    evaluate,
    status_message,
)

AP = "authorizationpolicies.security.istio.io"


class BadRequest(ZeromeshError):
    """The described request or destination is incomplete or malformed (exit 2)."""


def add_parser(xsub: Any, common: argparse.ArgumentParser) -> None:
    s = xsub.add_parser("authz", parents=[common], help="authorization policy tools")
    asub = s.add_subparsers(dest="authz_cmd", metavar="SUBCOMMAND")
    c = asub.add_parser("check", parents=[common],
                        help="would a request be allowed, and which policy and rule decide")
    c.add_argument("-f", "--filename", action="append", default=[],
                   help="policies from files (no cluster needed); else the live cluster's")
    c.add_argument("--pod", help="destination pod NS/NAME in the live cluster")
    c.add_argument("--dest-namespace")
    c.add_argument("--dest-labels", default="", help="k=v,k2=v2")
    c.add_argument("--dest-sa", default="default")
    c.add_argument("--dest-ip", default="10.244.0.2")
    c.add_argument("--port", type=int, required=True, help="destination (target) port")
    who = c.add_mutually_exclusive_group()
    who.add_argument("--source-principal", help="e.g. cluster.local/ns/ns1/sa/sleep")
    who.add_argument("--plaintext", action="store_true", help="a client without mesh identity")
    c.add_argument("--source-ip", default="10.244.0.3")
    c.add_argument("--enforcer", choices=["ztunnel", "waypoint"], default="ztunnel")
    c.add_argument("--waypoint", help="waypoint Gateway NAME (its namespace is the destination's)")
    c.add_argument("--method")
    c.add_argument("--path")
    c.add_argument("--host")
    c.add_argument("--header", action="append", default=[], help="K=V (repeatable)")
    c.add_argument("--root-namespace", default="istio-system")
    c.add_argument("-o", "--output", choices=["json"], default=None)
    c.set_defaults(func=cmd_check)


def _labels(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise BadRequest(f"--dest-labels: {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k] = v
    return out


def _ip(flag: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as e:
        raise BadRequest(f"{flag}: {value!r} is not an IP address") from e
    return value


def cmd_check(args: argparse.Namespace) -> int:
    try:
        return _check(args)
    except (BadRequest, ManifestError) as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    from zeromesh.api import load_path, validate_all
    if not args.plaintext and not args.source_principal:
        raise BadRequest("give the source: --source-principal P or --plaintext")
    if not 0 < args.port < 65536:
        raise BadRequest(f"--port: {args.port} is out of range 1-65535")
    enforcer = Enforcer.ZTUNNEL if args.enforcer == "ztunnel" else (
        Enforcer.WAYPOINT if args.method or args.path or args.host or args.header else Enforcer.WAYPOINT_TCP)
    if args.filename:
        docs = [d for f in args.filename for d in load_path(f)]
        objs = [v.obj for v in validate_all(docs) if v.info.resource == AP]
        dest = Workload(args.dest_namespace or "default", _labels(args.dest_labels), args.dest_sa)
        dest_ip = _ip("--dest-ip", args.dest_ip)
        where = "files"
    else:
        from zeromesh.cli.main import _client
        client = _client(args)
        if not args.pod or "/" not in args.pod:
            raise BadRequest("give --pod NS/NAME (the destination in the live cluster), or -f FILE")
        ns, name = args.pod.split("/", 1)
        try:
            pod = client.get("pods", ns, name)["items"][0]
        except ZeromeshError as e:
            raise BadRequest(f"--pod {args.pod}: {e}") from e
        dest = Workload(ns, pod["metadata"].get("labels") or {},
                        pod.get("spec", {}).get("serviceAccountName") or "default")
        dest_ip = pod.get("status", {}).get("podIP") or _ip("--dest-ip", args.dest_ip)
        objs = client.get(AP, None)["items"]
        where = f"cluster {client.cluster}"
    compiled = [compile_policy(o, enforcer, root_namespace=args.root_namespace) for o in objs]
    targets: list[Target] = []
    workload: Workload | None = dest
    if enforcer is not Enforcer.ZTUNNEL and args.waypoint:
        targets = [Target("gateway.networking.k8s.io", "Gateway", args.waypoint, dest.namespace)]
        workload = None
    ps: PolicySet = applicable(compiled, workload, root_namespace=args.root_namespace, targets=targets)
    headers = {}
    for h in args.header:
        if "=" not in h:
            raise BadRequest(f"--header: {h!r} is not K=V")
        k, v = h.split("=", 1)
        headers[k.lower()] = v
    req = Request(args.source_principal if not args.plaintext else None, _ip("--source-ip", args.source_ip),
                  dest_ip, args.port, method=args.method, path=args.path, host=args.host,
                  headers=headers)
    decision = evaluate(ps, req)
    in_scope = [p.key for p in ps.policies]
    notes = [f"{p.key}: {status_message(p)}" for p in compiled if status_message(p)]
    if args.output == "json":
        print(json.dumps({"allowed": decision.allowed, "policy": decision.policy, "rule": decision.rule,
                          "action": decision.action.name if decision.action else None,
                          "reason": decision.reason, "enforcer": enforcer.name.lower(),
                          "policies_in_scope": in_scope, "notes": notes, "source": where}, indent=2))
    else:
        print(f"{'ALLOW' if decision.allowed else 'DENY'}: {decision.reason}")
        print(f"  enforcer: {enforcer.name.lower()}; policies in scope ({where}): "
              f"{', '.join(in_scope) or 'none'}")
        for n in notes:
            print(f"  note: {n}")
    return 0 if decision.allowed else 1
