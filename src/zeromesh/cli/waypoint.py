"""`zeromesh waypoint generate|apply|list|status|delete`: istioctl's waypoint commands.

A waypoint is a Gateway API `Gateway` of class `istio-waypoint` with one HBONE
listener on 15008; the control plane deploys it (see
`zeromesh.controlplane.waypoints`). These commands write and read that Gateway
through the control plane's API, with istioctl's flags and messages
(`istioctl/pkg/waypoint/waypoint.go`), so scripts written for istioctl read the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import yaml

from zeromesh.errors import ZeromeshError

GATEWAYS = "gateways.gateway.networking.k8s.io"
WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_FOR = "istio.io/waypoint-for"
USE_WAYPOINT = "istio.io/use-waypoint"
DATAPLANE_MODE = "istio.io/dataplane-mode"
TRAFFIC_TYPES = ("service", "workload", "all", "none")
DEFAULT_NAME = "waypoint"
WAIT_TIMEOUT = 90.0        # istioctl's --waypoint-timeout default


class WaypointError(ZeromeshError):
    """A waypoint command cannot do what was asked; the message names the waypoint or namespace."""


# ---- pure parts ------------------------------------------------------------------------------------
def make_gateway(name: str, namespace: str | None, traffic: str | None) -> dict[str, Any]:
    """The Gateway istioctl generates; no `istio.io/waypoint-for` label unless asked (the
    control plane's default is `service`), no namespace unless one was given."""
    name = name or DEFAULT_NAME
    if name == "none":
        raise WaypointError("invalid name provided for waypoint, 'none' is a reserved value")
    from zeromesh.api.names import dns1035_label_error
    problem = dns1035_label_error(name)
    if problem:
        raise WaypointError(f"invalid waypoint name {name!r}: {problem} (it also names the waypoint's "
                            "Deployment and Service)")
    if traffic is not None and traffic not in TRAFFIC_TYPES:
        raise WaypointError(f"invalid traffic type: {traffic}. Valid options are: {sorted(TRAFFIC_TYPES)}")
    metadata: dict[str, Any] = {"name": name}
    if traffic:
        metadata["labels"] = {WAYPOINT_FOR: traffic}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": metadata,
            "spec": {"gatewayClassName": WAYPOINT_CLASS,
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def to_yaml(gw: dict[str, Any]) -> str:
    """Keys sorted, as istioctl's Go marshaller writes them."""
    return yaml.safe_dump(gw, sort_keys=True, default_flow_style=False)


def is_waypoint(gw: dict[str, Any]) -> bool:
    return gw.get("spec", {}).get("gatewayClassName") == WAYPOINT_CLASS


def programmed(gw: dict[str, Any]) -> dict[str, Any]:
    for c in gw.get("status", {}).get("conditions") or []:
        if c.get("type") == "Programmed":
            return dict(c)
    return {}


def traffic_type(gw: dict[str, Any]) -> str:
    """What the waypoint serves: its label, else the control plane's default (`service`)."""
    return str((gw["metadata"].get("labels") or {}).get(WAYPOINT_FOR) or "service")


def layout(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def list_table(gateways: list[dict[str, Any]], all_namespaces: bool) -> str:
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "TRAFFIC TYPE", "PROGRAMMED", "ADDRESS"]]
    for gw in sorted(gateways, key=lambda g: (g["metadata"]["namespace"], g["metadata"]["name"])):
        md = gw["metadata"]
        addrs = gw.get("status", {}).get("addresses") or []
        row = [md["name"], traffic_type(gw), programmed(gw).get("status", "False"),
               ",".join(a.get("value", "") for a in addrs) or "<none>"]
        rows.append(([md["namespace"]] if all_namespaces else []) + row)
    return layout(rows)


# ---- commands --------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Any:
    from zeromesh.cli.main import _client as client
    return client(args)


def _namespace(args: argparse.Namespace) -> str:
    return str(args.namespace or "default")


def _get_namespace(client: Any, ns: str) -> dict[str, Any]:
    try:
        return dict(client.get("namespaces", "", ns)["items"][0])
    except ZeromeshError as e:
        if getattr(e, "status", 0) == 404:
            raise WaypointError(f"namespace {ns!r} not found") from e
        raise


def _waypoints(client: Any, ns: str | None) -> list[dict[str, Any]]:
    return [g for g in client.get(GATEWAYS, ns)["items"] if is_waypoint(g)]


def cmd_generate(args: argparse.Namespace) -> int:
    print(to_yaml(make_gateway(args.name, args.namespace, args.traffic)), end="")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    ns = _namespace(args)
    gw = make_gateway(args.name, ns, args.traffic)
    name = gw["metadata"]["name"]
    client = _client(args)
    nsobj = _get_namespace(client, ns)
    labels = nsobj["metadata"].get("labels") or {}
    if args.enroll_namespace:
        current = labels.get(USE_WAYPOINT)
        if current and current != name and not args.overwrite:
            print(f"Warning: namespace {ns} already uses waypoint {current!r} ({USE_WAYPOINT}={current}); "
                  "add --overwrite to switch it; nothing was applied", file=sys.stderr)
            return 0
        if labels.get(DATAPLANE_MODE) != "ambient":
            print(f"Warning: namespace {ns} is not enrolled in ambient. Consider running "
                  f"`zeromesh label namespace {ns} {DATAPLANE_MODE}=ambient`", file=sys.stderr)
    client.call("POST", "/v1/apply", {
        "documents": [{"file": "waypoint apply", "document": 1, "body": gw}], "namespace": ns})
    print(f"waypoint {ns}/{name} applied")
    if args.wait:
        rc = _wait_programmed(client, ns, name, args.waypoint_timeout)
        if rc:
            return rc
        print(f"waypoint {ns}/{name} is ready")
    if args.enroll_namespace:
        client.call("POST", "/v1/label", {"resource": "namespaces", "namespace": "", "name": ns,
                                          "set": {USE_WAYPOINT: name}, "remove": [], "overwrite": True})
        print(f'namespace {ns} labeled with "{USE_WAYPOINT}: {name}"')
    return 0


def _wait_programmed(client: Any, ns: str, name: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    cond: dict[str, Any] = {}
    while True:
        try:
            cond = programmed(client.get(GATEWAYS, ns, name)["items"][0])
        except ZeromeshError as e:
            if getattr(e, "status", 0) != 404:
                raise
            raise WaypointError(f"waypoint {ns}/{name} not found (deleted while waiting)") from e
        if cond.get("status") == "True":
            return 0
        if time.monotonic() >= deadline:
            why = f": {cond.get('reason')}: {cond.get('message')}" if cond else ""
            print(f"error: timed out after {timeout:g}s waiting for waypoint {ns}/{name} to be "
                  f"programmed{why}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def cmd_list(args: argparse.Namespace) -> int:
    gws = _waypoints(_client(args), None if args.all_namespaces else _namespace(args))
    if not gws:
        print("No waypoints found.")
        return 0
    print(list_table(gws, args.all_namespaces))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """istioctl waypoint status: each waypoint's Programmed condition, reason and message."""
    ns = _namespace(args)
    client = _client(args)
    gws = _waypoints(client, ns)
    if args.names:
        known = {g["metadata"]["name"] for g in gws}
        missing = [n for n in args.names if n not in known]
        if missing:
            raise WaypointError("; ".join(f"waypoint {ns}/{n} not found" for n in missing))
        gws = [g for g in gws if g["metadata"]["name"] in args.names]
    if not gws:
        print("No waypoints found.")
        return 0
    rows = [["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]]
    for gw in sorted(gws, key=lambda g: g["metadata"]["name"]):
        c = programmed(gw)
        rows.append([gw["metadata"]["name"], c.get("status", "Unknown"), "Programmed",
                     c.get("reason", "Pending"), c.get("message", "not reconciled yet")])
    print(layout(rows))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if args.all and args.names:
        raise WaypointError("cannot specify waypoint names when deleting all waypoints")
    if not args.all and not args.names:
        raise WaypointError("must specify a waypoint name or delete all using --all")
    ns = _namespace(args)
    client = _client(args)
    known = {g["metadata"]["name"] for g in _waypoints(client, ns)}
    names = sorted(known) if args.all else list(dict.fromkeys(args.names))
    rc = 0
    deleted: list[str] = []
    for name in names:
        if name not in known:
            print(f"error: waypoint {ns}/{name} not found", file=sys.stderr)
            rc = 1
            continue
        try:
            client.call("DELETE", f"/v1/objects/{GATEWAYS}", params={"namespace": ns, "name": name})
        except ZeromeshError as e:
            if getattr(e, "status", 0) != 404:
                raise
            print(f"error: waypoint {ns}/{name} not found", file=sys.stderr)
            rc = 1
            continue
        print(f"waypoint {ns}/{name} deleted")
        deleted.append(name)
    if args.all and not names:
        print("No waypoints found.")
    # istioctl leaves the namespace's binding label in place; say so, since it now points nowhere.
    in_use = None
    if deleted:
        in_use = (_get_namespace(client, ns)["metadata"].get("labels") or {}).get(USE_WAYPOINT)
    if in_use in deleted:
        print(f"note: namespace {ns} still has {USE_WAYPOINT}={in_use}; remove it with "
              f"`zeromesh label namespace {ns} {USE_WAYPOINT}-`", file=sys.stderr)
    return rc


def _help(parser: argparse.ArgumentParser) -> Any:
    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2
    return show


# ---- parser ----------------------------------------------------------------------------------------
def add_parser(sub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    w = sub.add_parser("waypoint", parents=[common],
                       help="generate, apply, list, inspect and delete waypoints (istioctl waypoint)")
    w.set_defaults(func=_help(w))
    wsub = w.add_subparsers(dest="waypoint_cmd", metavar="SUBCOMMAND")
    name = argparse.ArgumentParser(add_help=False)
    name.add_argument("--name", default=DEFAULT_NAME, help="name of the waypoint (default: waypoint)")
    traffic = argparse.ArgumentParser(add_help=False)
    traffic.add_argument("--for", dest="traffic", default=None, choices=TRAFFIC_TYPES,
                         help="traffic the waypoint serves (label istio.io/waypoint-for; "
                              "unset means service)")

    s = wsub.add_parser("generate", parents=[common, nsopt, name, traffic],
                        help="print a waypoint Gateway as YAML")
    s.set_defaults(func=cmd_generate)

    s = wsub.add_parser("apply", parents=[common, nsopt, name, traffic],
                        help="apply a waypoint Gateway (the control plane deploys it)")
    s.add_argument("--enroll-namespace", action="store_true",
                   help=f"label the namespace {USE_WAYPOINT}=NAME once applied")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the waypoint the namespace already uses (with --enroll-namespace)")
    s.add_argument("-w", "--wait", action="store_true", help="wait until the waypoint is Programmed")
    s.add_argument("--waypoint-timeout", type=float, default=WAIT_TIMEOUT, metavar="SECONDS",
                   help="how long --wait waits (default 90)")
    s.set_defaults(func=cmd_apply)

    s = wsub.add_parser("list", parents=[common, nsopt], help="list waypoints")
    s.add_argument("-A", "--all-namespaces", action="store_true")
    s.set_defaults(func=cmd_list)

    s = wsub.add_parser("status", parents=[common, nsopt], help="show waypoints' Programmed condition")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.set_defaults(func=cmd_status)

    s = wsub.add_parser("delete", parents=[common, nsopt], help="delete waypoints")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--all", action="store_true", help="delete every waypoint in the namespace")
    s.set_defaults(func=cmd_delete)
