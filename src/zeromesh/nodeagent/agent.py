"""The node agent process: node credential, push stream, last good configuration."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from typing import Any

from zeromesh.local.state import Paths, load_config
from zeromesh.push import protocol as p
from zeromesh.push.client import ConfigRejected, PushClient, client_tls

log = logging.getLogger("zeromesh.nodeagent")

REQUIRED = {"workload": ("uid", "ip", "namespace", "name", "protocol"),
            "service": ("namespace", "name", "hostname", "ports", "endpoints")}


def validate(state: Mapping[str, Mapping[str, Any]], changed: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a configuration this node agent could not act on (the update is NACKed).
    Only the records the update changed need checking: the rest were accepted before."""
    for type_, fields in REQUIRED.items():
        for key, rec in changed.get(type_, {}).items():
            if rec is None:
                continue
            missing = [f for f in fields if f not in rec]
            if missing:
                raise ConfigRejected(f"{type_} {key}: missing {', '.join(missing)}")
            if type_ == "workload" and rec["protocol"] not in ("HBONE", "TCP"):
                raise ConfigRejected(f"workload {key}: unknown protocol {rec['protocol']!r}")


async def run(cluster: str, node: str) -> None:
    paths = Paths(cluster)
    cfg = load_config(paths)
    if cfg is None:
        raise SystemExit(f"no cluster state at {paths.config}")
    cred = paths.node_credential(node)
    def url() -> str:
        current = load_config(paths) or cfg
        return f"https://127.0.0.1:{current.xds_port}/v1/stream"

    client = PushClient(
        url,
        lambda: client_tls(str(cred / "node-chain.pem"), str(cred / "node-key.pem"),
                           str(paths.root_cert)),
        p.Hello(p.NODE_AGENT, f"ztunnel-{node}", node), validate=validate,
        on_state=lambda state, version: log.info(
            "config version %s: %d workloads, %d services", version,
            len(state.get("workload", {})), len(state.get("service", {}))))
    task = asyncio.create_task(client.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    task.cancel()
    log.info("node agent %s stopped", node)
