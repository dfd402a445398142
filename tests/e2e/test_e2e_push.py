"""The push stream end to end in one process: a real PushServer and a real PushClient over
mutual TLS on loopback, with the node agent's kind of validator. NACKs keep the last good config."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from zeromesh.controlplane.model import MeshModel
from zeromesh.controlplane.pushserver import PushServer, server_tls
from zeromesh.identity.ca import CertificateAuthority
from zeromesh.identity.certs import generate_key
from zeromesh.identity.files import write_credential
from zeromesh.identity.spiffe import NodeId
from zeromesh.push import protocol as p
from zeromesh.push.client import ConfigRejected, PushClient, client_tls


def pod(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns1", "uid": f"uid-{name}"},
            "spec": {"nodeName": "node1"},
            "status": {"podIP": ip, "phase": "Running"}}


def reject_poison(state: Mapping[str, Mapping[str, Any]], changed: Mapping[str, Mapping[str, Any]]) -> None:
    for rec in state.get("workload", {}).values():
        if rec["name"] == "poison":
            raise ConfigRejected("workload poison: refused by this proxy")


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_nack_keeps_last_good_config_and_reconnect_gets_full_state(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    key = generate_key()
    srv = ca.issue(key.public_key(), "spiffe://cluster.local/ns/istio-system/sa/istiod",
                   dt.timedelta(hours=1), dns_names=["istiod.istio-system.svc"],
                   ips=[ipaddress.ip_address("127.0.0.1")], server=True)
    write_credential(tmp_path, "server", key, srv.chain_pem)
    nkey = generate_key()
    node = ca.issue(nkey.public_key(), NodeId("cluster.local", "node1").uri, dt.timedelta(hours=1))
    write_credential(tmp_path, "node", nkey, node.chain_pem)
    (tmp_path / "root.pem").write_text(ca.trust_bundle_pem())

    async def scenario() -> None:
        model = MeshModel()
        model.update("namespaces", {"metadata": {"name": "ns1"}})
        model.update("pods", pod("a", "10.244.1.2"))
        version = {"v": 1}
        server = PushServer(model, ca, lambda: str(version["v"]), lambda n: set(), lambda ns, n: None)
        runner = web.AppRunner(server.app(), shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(
            str(tmp_path / "server-chain.pem"), str(tmp_path / "server-key.pem"),
            str(tmp_path / "root.pem")))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = PushClient(f"https://127.0.0.1:{port}/v1/stream",
                            lambda: client_tls(str(tmp_path / "node-chain.pem"),
                                               str(tmp_path / "node-key.pem"), str(tmp_path / "root.pem")),
                            p.Hello(p.NODE_AGENT, "ztunnel-node1", "node1"), validate=reject_poison)
        task = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: client.version == "1")
            assert set(client.state["workload"]) == {"uid-a"}
            await wait_for(lambda: server.proxies() and server.proxies()[0]["in_sync"])

            # An incremental change is applied and acknowledged.
            version["v"] = 2
            server.changed(model.update("pods", pod("b", "10.244.1.3")).records)
            await wait_for(lambda: client.version == "2")
            assert set(client.state["workload"]) == {"uid-a", "uid-b"}

            # A change the proxy cannot use is NACKed; it keeps version 2.
            version["v"] = 3
            server.changed(model.update("pods", pod("poison", "10.244.1.4")).records)
            await wait_for(lambda: server.proxies()[0]["nacks"] == 1)
            view = server.proxies()[0]
            assert not view["in_sync"] and view["acked_version"] == "2"
            assert "refused by this proxy" in view["last_nack"]
            assert client.version == "2" and "uid-poison" not in client.state["workload"]

            # Fixing it brings the proxy back in sync.
            version["v"] = 4
            server.changed(model.update("pods", pod("poison", "10.244.1.4"), deleted=True).records)
            await wait_for(lambda: server.proxies()[0]["in_sync"])
            assert client.version == "4" and set(client.state["workload"]) == {"uid-a", "uid-b"}

            # While the stream is down the proxy keeps its config; on reconnect it gets a full state.
            await runner.cleanup()
            await wait_for(lambda: not client.connected)
            model.update("pods", pod("b", "10.244.1.3"), deleted=True)
            model.update("pods", pod("c", "10.244.1.5"))
            assert set(client.state["workload"]) == {"uid-a", "uid-b"}
            version["v"] = 5
            runner2 = web.AppRunner(server.app(), shutdown_timeout=0.2)
            await runner2.setup()
            await web.TCPSite(runner2, "127.0.0.1", port, ssl_context=server_tls(
                str(tmp_path / "server-chain.pem"), str(tmp_path / "server-key.pem"),
                str(tmp_path / "root.pem")), reuse_address=True).start()
            try:
                await wait_for(lambda: client.version == "5", timeout=10)
                assert set(client.state["workload"]) == {"uid-a", "uid-c"}
            finally:
                await runner2.cleanup()
        finally:
            task.cancel()
            await runner.cleanup()

    asyncio.run(scenario())
