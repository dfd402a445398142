"""The `zeromesh` command: cluster lifecycle plus kubectl-like resource commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml

from zeromesh.errors import ManifestError, ZeromeshError

DEFAULT_CLUSTER = "zeromesh"


def _cluster(args: argparse.Namespace) -> str:
    return getattr(args, "cluster", None) or os.environ.get("ZEROMESH_CLUSTER") or DEFAULT_CLUSTER


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from zeromesh.cli.client import Client
    return Client(_cluster(args))


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


# ---- up / down -------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from zeromesh.local import cluster
    name = _cluster(args)
    t0 = time.monotonic()
    table = args.image_table or os.environ.get("ZEROMESH_IMAGE_TABLE")
    cfg = cluster.up(name, args.nodes, table, lambda m: print(f"  {m} ...", flush=True),
                     timeout=args.timeout, ca_dir=args.ca_dir,
                     workload_cert_ttl=args.workload_cert_ttl,
                     ingress=False if args.no_ingress else None)
    flag = "" if name == DEFAULT_CLUSTER else f" --cluster {name}"
    print(f"cluster {name!r} is ready: {cfg.nodes} node(s) ({time.monotonic() - t0:.1f}s)")
    if getattr(cfg, "cp_metrics_port", 0):
        print(f"  control plane: metrics http://127.0.0.1:{cfg.cp_metrics_port}/metrics")
    for node, ports in sorted(cfg.node_ports.items()):
        print(f"  {node} node agent: metrics http://127.0.0.1:{ports['metrics']}/metrics, "
              f"admin http://127.0.0.1:{ports['admin']}/config_dump")
    if cfg.ingress and cfg.ingress_ports:
        print(f"  {ingress_line(cfg.ingress_ports)}")
    print(f"""
Try:
  zeromesh{flag} apply -f examples/
  zeromesh{flag} get pods -A -o wide
  zeromesh{flag} exec -n sample-client deploy/curl -- curl -s http://echo.sample-server
  zeromesh{flag} dashboard
  zeromesh{flag} down""")
    return 0


def ingress_line(ports: dict[str, int]) -> str:
    """Where the ingress gateway's listeners are reachable from the host, as `up` prints it."""
    urls = [f"{scheme}://127.0.0.1:{ports[port]} ({port})"
            for scheme, port in (("http", "80"), ("https", "443")) if port in ports]
    return "ingress gateway: " + ", ".join(urls)


def cmd_install(args: argparse.Namespace) -> int:
    """`zeromesh install --ingress`: add the ingress gateway to a cluster started without it."""
    from zeromesh.controlplane import ingress
    from zeromesh.local import cluster
    if not args.ingress:
        _err("nothing to install: give --ingress")
        return 2
    cfg, fresh = cluster.install_ingress(_cluster(args))
    what = "installed" if fresh else "already installed"
    print(f"ingress gateway {what}: deployment/{ingress.NAME} and service/{ingress.NAME} "
          f"in {ingress.NAMESPACE}")
    print(f"  {ingress_line(cfg.ingress_ports)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from zeromesh.local import cluster
    name = _cluster(args)
    cluster.down(name, args.keep_state, lambda m: print(f"  {m} ...", flush=True))
    kept = " (state kept)" if args.keep_state else ""
    print(f"cluster {name!r} is down{kept}")
    return 0


# ---- apply / delete --------------------------------------------------------
def _load(paths: list[str]) -> list[dict[str, Any]]:
    from zeromesh.api import load_path
    docs = []
    for p in paths:
        for d in load_path(p):
            docs.append({"file": d.source.file, "document": d.source.document, "body": d.body})
    return docs


def cmd_apply(args: argparse.Namespace) -> int:
    docs = _load(args.filename)
    if not docs:
        _err("no objects passed to apply")
        return 1
    res = _client(args).call("POST", "/v1/apply",
                             {"documents": docs, "namespace": args.namespace or "default"})
    for w in res["warnings"]:
        print(f"Warning: {w}", file=sys.stderr)
    for r in res["results"]:
        print(f"{_ref(r)} {r['action']}")
    return 0


def _ref(r: dict[str, str]) -> str:
    from zeromesh.api import ALL_KINDS
    info = next((k for k in ALL_KINDS if k.resource == r["resource"]), None)
    group = f".{info.group}" if info and info.group else ""
    return f"{r['kind'].lower()}{group}/{r['name']}"


def cmd_delete(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.filename:
        docs = _load(args.filename)
        res = client.call("POST", "/v1/delete-documents",
                          {"documents": docs, "namespace": args.namespace or "default"})
        rc = 0
        for r in res["results"]:
            if r["action"] == "not found":
                _err(f'{_ref(r)} not found')
                rc = 1 if not args.ignore_not_found else rc
            else:
                print(f'{_ref(r)} deleted')
        return rc
    if not args.kind:
        _err("give -f FILE or KIND NAME...")
        return 2
    infos, names = _kind_and_names(args.kind, args.names)
    if not names:
        _err("give the name of the resource to delete")
        return 2
    info = infos[0]
    rc = 0
    for name in names:
        ns = (args.namespace or "default") if info.namespaced else ""
        try:
            client.call("DELETE", f"/v1/objects/{info.resource}",
                        params={"namespace": ns, "name": name})
            print(f'{info.kind.lower()} "{name}" deleted')
        except ZeromeshError as e:
            if getattr(e, "status", 0) == 404 and args.ignore_not_found:
                continue
            _err(str(e))
            rc = 1
    return rc


def _kind_and_names(kind: str, names: list[str]) -> tuple[list[Any], list[str]]:
    from zeromesh.api import resolve_cli_name
    if "/" in kind and not names:
        kind, name = kind.split("/", 1)
        names = [name]
    infos = resolve_cli_name(kind)
    if not infos:
        raise ZeromeshError(f'the server doesn\'t have a resource type "{kind}"')
    return infos, names


# ---- get -----------------------------------------------------------------
# `get gateway`, `gateways` and `gw` name both kinds: they are shown in one table (tables.py).
BOTH_GATEWAYS = frozenset({"gateways.networking.istio.io", "gateways.gateway.networking.k8s.io"})


def _fetch(client: Any, info: Any, ns: str | None, names: list[str],
           missing_ok: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects of one kind (all, or by name) and the names not found (reported unless `missing_ok`)."""
    if not names:
        return client.get(info.resource, ns)["items"], []
    items: list[dict[str, Any]] = []
    missing = []
    for n in names:
        try:
            items += client.get(info.resource, ns or "", n)["items"]
        except ZeromeshError as e:
            if getattr(e, "status", 0) != 404:
                raise
            missing.append(n)
            if not missing_ok:
                _err(f'{info.plural}{"." + info.group if info.group else ""} "{n}" not found')
    return items, missing


def _ingress_service(client: Any) -> dict[str, Any] | None:
    from zeromesh.controlplane import ingress
    try:
        items: list[dict[str, Any]] = client.get("services", ingress.NAMESPACE, ingress.NAME)["items"]
        return items[0] if items else None
    except ZeromeshError as e:
        if getattr(e, "status", 0) == 404:
            return None
        raise


def cmd_get(args: argparse.Namespace) -> int:
    from zeromesh.cli.tables import render_gateways, render_table
    client = _client(args)
    kinds = args.kind.split(",")
    out_items: list[dict[str, Any]] = []
    tables: list[str] = []
    rc = 0
    for k in kinds:
        infos, names = _kind_and_names(k, list(args.names))
        combined = {i.resource for i in infos} == BOTH_GATEWAYS and len(infos) == 2
        found: list[dict[str, Any]] = []
        missing_everywhere = set(names)
        for info in infos:
            ns: str | None
            if not info.namespaced:
                ns = ""
            elif args.all_namespaces:
                ns = None
            else:
                ns = args.namespace or "default"
            items, missing = _fetch(client, info, ns, names, missing_ok=combined)
            missing_everywhere &= set(missing)
            if not combined:
                rc = 1 if missing else rc
            if args.selector:
                items = [i for i in items if _selector_ok(args.selector, i)]
            if args.output in ("yaml", "json", "name"):
                out_items += items
            elif combined:
                found += items
            else:
                tables.append(render_table(info.resource, items, wide=args.output == "wide",
                                           all_namespaces=bool(args.all_namespaces and info.namespaced),
                                           show_labels=args.show_labels))
        if combined:
            for n in sorted(missing_everywhere):
                _err(f'gateways "{n}" not found')
                rc = 1
            if found:
                tables.append(render_gateways(found, _ingress_service(client),
                                              wide=args.output == "wide",
                                              all_namespaces=bool(args.all_namespaces),
                                              show_labels=args.show_labels))
    tables = [t for t in tables if t]
    if tables:
        print("\n\n".join(tables))
    if args.output == "name":
        for i in out_items:
            print(f"{i.get('kind', '').lower()}/{i['metadata']['name']}")
    elif args.output in ("yaml", "json"):
        doc: Any = out_items[0] if (len(out_items) == 1 and args.names) else {
            "apiVersion": "v1", "kind": "List", "items": out_items, "metadata": {}}
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), end="")
    elif not tables and rc == 0:
        where = "" if args.all_namespaces else f" in {args.namespace or 'default'} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
    return rc


def _selector_ok(selector: str, obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        term = term.strip()
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.strip().rstrip("=")) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term and term not in labels:
            return False
    return True


# ---- label -----------------------------------------------------------------
def cmd_label(args: argparse.Namespace) -> int:
    infos, names = _kind_and_names(args.kind, [])
    if not names:
        if not args.items:
            _err("give KIND NAME key=value|key-")
            return 2
        names = [args.items[0]]
        items = args.items[1:]
    else:
        items = args.items
    info = infos[0]
    set_: dict[str, str] = {}
    remove: list[str] = []
    for it in items:
        if it.endswith("-") and "=" not in it:
            remove.append(it[:-1])
        elif "=" in it:
            k, v = it.split("=", 1)
            set_[k] = v
        else:
            _err(f"invalid label {it!r}: use key=value to set or key- to remove")
            return 2
    if not set_ and not remove:
        _err("give at least one label to set (key=value) or remove (key-)")
        return 2
    from zeromesh.api.names import label_value_error, qualified_name_error
    for k, v in set_.items():
        problem = qualified_name_error(k) or label_value_error(v)
        if problem:
            _err(f"invalid label {k}={v}: {problem}")
            return 2
    ns = (args.namespace or "default") if info.namespaced else ""
    res = _client(args).call("POST", "/v1/label", {
        "resource": info.resource, "namespace": ns, "name": names[0], "set": set_,
        "remove": remove, "overwrite": args.overwrite})
    word = "labeled" if res["changed"] else "not labeled"
    print(f"{info.kind.lower()}/{names[0]} {word}")
    return 0


# ---- exec / logs -----------------------------------------------------------
def _find_pod(args: argparse.Namespace, target: str) -> dict[str, Any]:
    client = _client(args)
    ns = args.namespace or "default"
    if "/" in target:
        kind, name = target.split("/", 1)
        if kind in ("deploy", "deployment", "deployments"):
            pods = client.get("pods", ns)["items"]
            mine = [p for p in pods if any(r.get("kind") == "Deployment" and r.get("name") == name
                                           for r in p["metadata"].get("ownerReferences") or [])
                    and not p["metadata"].get("deletionTimestamp")]
            if not mine:
                raise ZeromeshError(f'deployment "{name}" has no pods in namespace {ns}')
            running = [p for p in mine if p.get("status", {}).get("phase") == "Running"]
            return sorted(running or mine, key=lambda p: p["metadata"]["name"])[0]
        if kind not in ("pod", "pods", "po"):
            raise ZeromeshError(f"cannot exec into {kind}/{name}: use a pod or deploy/NAME")
        target = name
    try:
        return client.get("pods", ns, target)["items"][0]
    except ZeromeshError as e:
        if getattr(e, "status", 0) == 404:
            raise ZeromeshError(f'pod "{target}" not found in namespace {ns}') from e
        raise


def cmd_exec(args: argparse.Namespace) -> int:
    from zeromesh.local.plan import ClusterPlan
    from zeromesh.local.runner import PATH, POD_GID, POD_UID
    from zeromesh.netns.topology import exists
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _err("give a command after --, e.g. zeromesh exec POD -- curl -s http://svc")
        return 2
    pod = _find_pod(args, args.pod)
    md = pod["metadata"]
    netns = ClusterPlan(_cluster(args), 1).pod_netns(md["namespace"], md["name"])
    if pod.get("status", {}).get("phase") != "Running" or not exists(netns):
        raise ZeromeshError(f"pod {md['namespace']}/{md['name']} is not running "
                            f"(phase {pod.get('status', {}).get('phase', 'Pending')})")
    env = {"PATH": PATH, "HOME": "/tmp", "HOSTNAME": md["name"], "LANG": "C.UTF-8",
           "TERM": os.environ.get("TERM", "dumb")}
    argv = ["ip", "netns", "exec", netns, "setpriv", f"--reuid={POD_UID}", f"--regid={POD_GID}",
            "--clear-groups", "--", *command]
    sys.stdout.flush()
    os.execvpe("ip", argv, env)
    return 127  # not reached


def cmd_logs(args: argparse.Namespace) -> int:
    from zeromesh.local.state import Paths
    pod = _find_pod(args, args.pod)
    md = pod["metadata"]
    containers = [c["name"] for c in pod["spec"].get("containers", [])]
    container = args.container or (containers[0] if containers else "")
    if container not in containers:
        raise ZeromeshError(f"container {container!r} is not in pod {md['name']} "
                            f"(containers: {', '.join(containers)})")
    path = Paths(_cluster(args)).pod_log(md["namespace"], md["name"], container)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        data = f.read()
        if args.tail is not None and args.tail >= 0:
            data = b"".join(data.splitlines(keepends=True)[-args.tail:]) if args.tail else b""
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        while args.follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
                if not path.exists():
                    break
    return 0


# ---- wait --------------------------------------------------------------------
def cmd_wait(args: argparse.Namespace) -> int:
    """kubectl wait --for=condition=Ready pods --all, for scripts and the demo."""
    infos, names = _kind_and_names(args.kind, list(args.names))
    info = infos[0]
    cond = args.for_.removeprefix("condition=")
    want_delete = args.for_ == "delete"
    client = _client(args)
    ns = (args.namespace or "default") if info.namespaced else ""
    deadline = time.monotonic() + args.timeout
    while True:
        items = client.get(info.resource, ns)["items"]
        if names:
            items_named = {i["metadata"]["name"]: i for i in items}
            pending = [n for n in names if (n in items_named) != (not want_delete)
                       or (not want_delete and not _has_condition(items_named[n], cond))]
        else:
            items = [i for i in items if not args.selector or _selector_ok(args.selector, i)]
            pending = ([i["metadata"]["name"] for i in items] if want_delete else
                       [i["metadata"]["name"] for i in items if not _has_condition(i, cond)])
            if not items and not want_delete:
                pending = ["(none yet)"]
        if not pending:
            for n in names or [i["metadata"]["name"] for i in items]:
                print(f"{info.kind.lower()}/{n} condition met")
            return 0
        if time.monotonic() > deadline:
            _err(f"timed out waiting for {args.for_} on {info.plural}: {', '.join(pending)}")
            return 1
        time.sleep(0.1)


def _has_condition(obj: dict[str, Any], cond: str) -> bool:
    return any(c.get("type", "").lower() == cond.lower() and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions") or [])


# ---- daemons -----------------------------------------------------------------
def _setup_logging() -> None:
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_controlplane(args: argparse.Namespace) -> int:
    import asyncio

    from zeromesh.controlplane.apiserver import serve
    _setup_logging()
    asyncio.run(serve(_cluster(args)))
    return 0


def cmd_nodeagent(args: argparse.Namespace) -> int:
    import asyncio

    from zeromesh.nodeagent.agent import run
    _setup_logging()
    asyncio.run(run(_cluster(args), args.node))
    return 0


def cmd_waypoint_proxy(args: argparse.Namespace) -> int:
    """The waypoint pod's process: started by the runner, drops to the pod's uid itself."""
    from zeromesh.waypoint.main import run
    _setup_logging()
    return run(_cluster(args), args.credential_fd, args.uid)


def cmd_ps(args: argparse.Namespace) -> int:
    """istioctl proxy-status: every connected proxy and whether it has the latest config."""
    from zeromesh.local.state import Paths, load_config
    res = _client(args).call("GET", "/v1/proxies")
    cfg = load_config(Paths(_cluster(args)))
    ports = cfg.node_ports if cfg else {}
    rows = [["NAME", "KIND", "NODE", "IDENTITY", "SENT", "ACKED", "STATUS", "METRICS"]]
    for px in res["proxies"]:
        state = "SYNCED" if px["in_sync"] else ("NACKED" if px["last_nack"] else "STALE")
        metrics = ports.get(px["node"], {}).get("metrics") if px["kind"] == "nodeagent" else None
        rows.append([px["name"], px["kind"], px["node"] or "-", px["identity"],
                     px["sent_version"], px["acked_version"], state,
                     f"127.0.0.1:{metrics}" if metrics else "-"])
    print(_layout(rows))
    print(f"\ncontrol plane version {res['version']}; {len(res['proxies'])} proxies connected")
    for px in res["proxies"]:
        if px["last_nack"]:
            print(f"  {px['name']} rejected {px['sent_version']}: {px['last_nack']}")
    return 0


def _layout(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def cmd_x_ca(args: argparse.Namespace) -> int:
    res = _client(args).call("GET", "/v1/ca")
    if args.output == "json":
        print(json.dumps(res, indent=2))
        return 0
    root = res["root"]
    print(f"trust domain: {res['trust_domain']}")
    print(f"root:         {root['subject']} (serial {root['serial']}, expires {root['not_after']})"
          f"{' [plug-in CA]' if res['plugin'] else ''}")
    rows = [["TIME", "OUTCOME", "CALLER", "IDENTITY", "SERIAL / REASON"]]
    for s in res["recent"][-args.limit:]:
        rows.append([s["at"][:19], s["outcome"], s["caller"], s["identity"],
                     s["serial"] if s["outcome"] == "signed" else s["reason"]])
    print("\nrecent signings:")
    print(_layout(rows))
    if args.pem:
        print()
        print(root["pem"], end="")
    return 0


def cmd_ztunnel_config(args: argparse.Namespace) -> int:
    """What each node's ztunnel knows: workloads, services, certificates (its admin endpoint)."""
    import urllib.request

    from zeromesh.local.state import Paths, load_config
    cfg = load_config(Paths(_cluster(args)))
    if cfg is None:
        raise ZeromeshError(_client(args).not_running().args[0])
    nodes = [args.node] if args.node else cfg.plan.node_names()
    dumps = []
    for node in nodes:
        port = cfg.node_ports.get(node, {}).get("admin")
        if not port:
            raise ZeromeshError(f"node {node!r} has no node agent admin port in the cluster state")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config_dump", timeout=5) as r:
                dumps.append(json.loads(r.read()))
        except OSError as e:
            raise ZeromeshError(f"node agent of {node} is not answering on 127.0.0.1:{port}: {e}") from e
    if args.output == "json":
        print(json.dumps(dumps if len(dumps) > 1 else dumps[0], indent=2))
        return 0
    if args.what == "workloads":
        rows = [["NODE", "NAMESPACE", "NAME", "IP", "WORKLOAD NODE", "PROTOCOL", "ENROLLED HERE"]]
        rows += [[d["node"], w["namespace"], w["name"], w["ip"], w["node"], w["protocol"],
                  "yes" if w["enrolled_here"] else ""] for d in dumps for w in d["workloads"]]
    elif args.what == "services":
        rows = [["NODE", "NAMESPACE", "NAME", "VIP", "PORTS", "ENDPOINTS"]]
        rows += [[d["node"], s["namespace"], s["name"], s["vip"],
                  ",".join(f"{k}->{v}" for k, v in s["ports"].items()), ",".join(s["endpoints"]) or "-"]
                 for d in dumps for s in d["services"]]
    else:
        rows = [["NODE", "IDENTITY", "SERIAL", "NOT AFTER", "REFRESH AT", "CHAIN"]]
        for d in dumps:
            for c in d["certificates"]:
                if "error" in c:
                    rows.append([d["node"], c["identity"], "-", f"FAILING x{c['failures']}: {c['error']}",
                                 "-", "-"])
                else:
                    rows.append([d["node"], c["identity"], c["serial"], c["not_after"][:19],
                                 c["refresh_at"][:19], " > ".join(c["chain"])])
    print(_layout(rows))
    return 0


def cmd_runner(args: argparse.Namespace) -> int:
    import asyncio

    from zeromesh.local.runner import run_runner
    _setup_logging()
    asyncio.run(run_runner(_cluster(args), args.node))
    return 0


# ---- parser ------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster", default=argparse.SUPPRESS,
                        help="cluster name (default: $ZEROMESH_CLUSTER or 'zeromesh')")
    nsopt = argparse.ArgumentParser(add_help=False)
    nsopt.add_argument("-n", "--namespace", default=None)

    p = argparse.ArgumentParser(prog="zeromesh", parents=[common],
                                description="A sidecarless service mesh that runs Istio ambient YAML.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    s = sub.add_parser("up", parents=[common], help="start a local cluster")
    s.add_argument("--nodes", type=int, default=None, help="number of nodes (default 2)")
    s.add_argument("--image-table", default=None, help="YAML mapping images to host commands")
    s.add_argument("--ca-dir", default=None,
                   help="plug-in CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem")
    s.add_argument("--workload-cert-ttl", type=int, default=None, metavar="SECONDS",
                   help="lifetime of workload certificates (default: the CA's, 24 h)")
    s.add_argument("--no-ingress", action="store_true",
                   help="do not run the ingress gateway (add it later with `install --ingress`)")
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("install", parents=[common], help="add components to a running cluster")
    s.add_argument("--ingress", action="store_true",
                   help="the ingress gateway (istio-system/istio-ingressgateway) on host loopback ports")
    s.set_defaults(func=cmd_install)

    s = sub.add_parser("down", parents=[common], help="stop a local cluster and remove it")
    s.add_argument("--keep-state", action="store_true", help="keep applied resources for the next up")
    s.set_defaults(func=cmd_down)

    s = sub.add_parser("apply", parents=[common, nsopt], help="apply manifests")
    s.add_argument("-f", "--filename", action="append", required=True, help="FILE, DIR or -")
    s.set_defaults(func=cmd_apply)

    s = sub.add_parser("delete", parents=[common, nsopt], help="delete resources")
    s.add_argument("-f", "--filename", action="append")
    s.add_argument("--ignore-not-found", action="store_true")
    s.add_argument("kind", nargs="?")
    s.add_argument("names", nargs="*")
    s.set_defaults(func=cmd_delete)

    s = sub.add_parser("get", parents=[common, nsopt], help="list resources")
    s.add_argument("kind")
    s.add_argument("names", nargs="*")
    s.add_argument("-A", "--all-namespaces", action="store_true")
    s.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"], default=None)
    s.add_argument("-l", "--selector", default=None)
    s.add_argument("--show-labels", action="store_true")
    s.set_defaults(func=cmd_get)

    s = sub.add_parser("label", parents=[common, nsopt], help="set or remove labels")
    s.add_argument("kind")
    s.add_argument("items", nargs="*", help="NAME key=value key-")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_label)

    s = sub.add_parser("exec", parents=[common, nsopt], help="run a command inside a pod")
    s.add_argument("pod", help="POD or deploy/NAME")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_exec)

    s = sub.add_parser("logs", parents=[common, nsopt], help="print a pod's output")
    s.add_argument("pod", help="POD or deploy/NAME")
    s.add_argument("-c", "--container", default=None)
    s.add_argument("-f", "--follow", action="store_true")
    s.add_argument("--tail", type=int, default=None)
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("wait", parents=[common, nsopt], help="wait for a condition")
    s.add_argument("kind")
    s.add_argument("names", nargs="*")
    s.add_argument("--for", dest="for_", default="condition=Ready")
    s.add_argument("--all", action="store_true")
    s.add_argument("-l", "--selector", default=None)
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(func=cmd_wait)

    s = sub.add_parser("ps", parents=[common], help="connected proxies and their config versions")
    s.set_defaults(func=cmd_ps)

    x = sub.add_parser("x", parents=[common], help="experimental and inspection commands")
    xsub = x.add_subparsers(dest="xcommand", metavar="SUBCOMMAND")
    s = xsub.add_parser("ca", parents=[common], help="the CA: root, trust domain, recent signings")
    s.add_argument("-o", "--output", choices=["json"], default=None)
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--pem", action="store_true", help="also print the root certificate")
    s.set_defaults(func=cmd_x_ca)
    from zeromesh.cli.authz import add_parser as add_authz
    add_authz(xsub, common)

    s = sub.add_parser("ztunnel-config", parents=[common],
                       help="what the ztunnels know: workloads, services, certificates")
    s.add_argument("what", choices=["workloads", "services", "certificates", "all"])
    s.add_argument("--node", default=None)
    s.add_argument("-o", "--output", choices=["json"], default=None)
    s.set_defaults(func=cmd_ztunnel_config)

    s = sub.add_parser("nodeagent", parents=[common], help=argparse.SUPPRESS)
    s.add_argument("--node", required=True)
    s.set_defaults(func=cmd_nodeagent)
    s = sub.add_parser("controlplane", parents=[common], help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_controlplane)
    s = sub.add_parser("runner", parents=[common], help=argparse.SUPPRESS)
    s.add_argument("--node", required=True)
    s.set_defaults(func=cmd_runner)
    s = sub.add_parser("waypoint-proxy", parents=[common], help=argparse.SUPPRESS)
    s.add_argument("--credential-fd", type=int, required=True)
    s.add_argument("--uid", type=int, required=True)
    s.set_defaults(func=cmd_waypoint_proxy)
    # (user-facing `waypoint` subcommands are added here by zeromesh.cli.waypoint)
    from zeromesh.cli.waypoint import add_parser as add_waypoint
    add_waypoint(sub, common, nsopt)
    # Observability (issue 8): each module adds its own commands; `xsub` is `zeromesh x …`.
    from zeromesh.cli import dashboard, describe, observe
    observe.add_parser(sub, xsub, common, nsopt)      # x prometheus-config
    dashboard.add_parser(sub, xsub, common, nsopt)    # dashboard
    describe.add_parser(sub, xsub, common, nsopt)     # proxy-config|pc, x describe
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # kubectl accepts flags between positionals (`label svc echo -n ns k=v`): argparse leaves
    # the positionals after a flag over; hand them to the command's list argument.
    list_arg = {"label": "items", "get": "names", "delete": "names", "wait": "names"}.get(
        getattr(args, "cmd", "") or "")
    if extra and list_arg and not any(e.startswith("-") for e in extra):
        getattr(args, list_arg).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ManifestError as e:
        for line in str(e).splitlines():
            _err(line)
        return 1
    except ZeromeshError as e:
        errors = getattr(e, "errors", None)
        if (errors and len(errors) > 1) or (errors and errors[0] != str(e)):
            for line in errors:
                _err(line)
        else:
            _err(str(e))
        return 1
    except ValueError as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
