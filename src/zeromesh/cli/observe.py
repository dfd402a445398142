"""`zeromesh x prometheus-config`: the scrape configuration for every component.

The generation is pure (`zeromesh.telemetry.prometheus`); this module only gathers its inputs
(the ports `up` recorded in cluster.json, the waypoint and gateway pods from the control plane)
and writes the result: YAML on stdout, and with `--file-sd DIR` the target files Prometheus
re-reads by itself whenever the command is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from zeromesh.errors import ClusterError
from zeromesh.telemetry.prometheus import (
    ScrapeSetup,
    file_sd_documents,
    metric_table,
    parse_duration,
    proxy_pods,
    scrape_config,
)


def add_parser(sub: Any, xsub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    """Register `x prometheus-config`."""
    s = xsub.add_parser(
        "prometheus-config", parents=[common],
        help="Prometheus scrape configuration for the control plane, node agents, waypoints and gateways",
        description="Print a Prometheus scrape configuration (YAML) whose targets are all on 127.0.0.1. "
                    "Waypoint and gateway pods come and go: with --file-sd DIR their targets are written "
                    "to DIR as file_sd JSON, and re-running the command refreshes them (Prometheus "
                    "notices the files change; no reload needed).")
    s.add_argument("--scrape-interval", default="5s", metavar="DURATION",
                   help="Prometheus duration, e.g. 5s (default), 1s, 1m")
    s.add_argument("--file-sd", metavar="DIR", default=None,
                   help="write the targets to DIR/CLUSTER.{controlplane,ztunnel,proxies}.json and point "
                        "the configuration at them")
    s.add_argument("--list-metrics", action="store_true",
                   help="list the metric names zeromesh exports (and their Istio counterparts) instead")
    s.set_defaults(func=cmd_prometheus_config)


def _cluster(args: argparse.Namespace) -> str:
    from zeromesh.cli.main import DEFAULT_CLUSTER
    return getattr(args, "cluster", None) or os.environ.get("ZEROMESH_CLUSTER") or DEFAULT_CLUSTER


def gather(cluster: str, interval: str) -> ScrapeSetup:
    """The cluster's recorded ports and its current proxy pods (the control plane must run)."""
    from zeromesh.cli.client import Client
    from zeromesh.local.state import Paths, load_config
    cfg = load_config(Paths(cluster))
    if cfg is None:
        raise ClusterError(f"no cluster {cluster!r}: start it with `zeromesh up --cluster {cluster}`")
    pods = Client(cluster).get("pods").get("items", [])
    return ScrapeSetup(cluster=cluster, controlplane_port=cfg.cp_metrics_port, node_ports=cfg.node_ports,
                       proxies=proxy_pods(pods), scrape_interval=interval)


def write_file_sd(directory: Path, docs: dict[str, list[dict[str, Any]]]) -> None:
    """Each file replaced atomically: Prometheus may read it at any moment."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, groups in docs.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(json.dumps(groups, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)


def cmd_prometheus_config(args: argparse.Namespace) -> int:
    if args.list_metrics:
        rows = metric_table()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return 0
    parse_duration(args.scrape_interval)          # a ValueError is reported before any IO
    setup = gather(_cluster(args), args.scrape_interval)
    directory = Path(args.file_sd).resolve() if args.file_sd else None
    if directory is not None:
        write_file_sd(directory, file_sd_documents(setup))
    sys.stdout.write(scrape_config(setup, str(directory) if directory is not None else None))
    if not setup.controlplane_port:
        print("warning: this cluster recorded no control-plane metrics port; run `zeromesh up` again "
              "(after `zeromesh down --keep-state`) to get one", file=sys.stderr)
    return 0
