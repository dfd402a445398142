"""The mesh side of the control plane: model, CA, credentials, push listeners, status write-back.

Store changes feed the model; the model's derived changes go to the push
server; problems the model finds become status conditions on the resource
that caused them (or an event, for pods, whose status belongs to their runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from zeromesh.controlplane import objects as o
from zeromesh.controlplane.model import GATEWAYS, INPUT_RESOURCES, MeshModel, Problem, to_wire
from zeromesh.controlplane.pushserver import PushServer, server_tls
from zeromesh.controlplane.store import SqliteStore
from zeromesh.errors import NetnsError
from zeromesh.gateway.status import CONTROLLER_NAME, gateway_statuses, route_statuses
from zeromesh.identity.ca import CertificateAuthority
from zeromesh.identity.certs import generate_key, load_chain, pem, refresh_at
from zeromesh.identity.files import write_credential
from zeromesh.identity.spiffe import NodeId, PodId
from zeromesh.local.state import ClusterConfig, Paths
from zeromesh.netns.enter import call_in_netns
from zeromesh.policy import Enforcer, compile_policy, status_message

log = logging.getLogger("zeromesh.mesh")

XDS_PORT_IN_NODES = 15012      # istiod's port; pods (waypoints) reach it at their node's address
NODE_CREDENTIAL_TTL = dt.timedelta(days=30)
SERVER_NAME = "istiod.istio-system.svc"
WAYPOINT_CONDITION = "istio.io/WaypointBound"
AUTHZ = "authorizationpolicies.security.istio.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
GATEWAY_STATUS_INPUTS = frozenset({HTTPROUTES, GATEWAYS, "services", "namespaces", "secrets",
                                   "referencegrants.gateway.networking.k8s.io"})


class MeshService:
    def __init__(self, cfg: ClusterConfig, paths: Paths, store: SqliteStore,
                 emit: Callable[[dict[str, Any], str, str, str], None]) -> None:
        self.cfg = cfg
        self.paths = paths
        self.store = store
        self.emit = emit
        self.model = MeshModel(cfg.trust_domain)
        plugin = paths.ca_plugin if paths.ca_plugin.exists() else None
        self.ca = CertificateAuthority.load_or_create(paths.ca, cfg.trust_domain, plugin_dir=plugin)
        self.push = PushServer(self.model, self.ca, self.version, self._pods_on_node, self._pod)
        self._runners: list[web.AppRunner] = []
        self._loaded = False
        self._gw_status_pending = False

    def version(self) -> str:
        return str(self.store.revision())

    def _pods_on_node(self, node: str) -> set[tuple[str, str]]:
        return {(p["metadata"]["namespace"], p.get("spec", {}).get("serviceAccountName") or "default")
                for p in self.store.iter_raw("pods")
                if p.get("spec", {}).get("nodeName") == node and not o.is_terminating(p)}

    def _pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get("pods", namespace, name)

    # ---- store -> model -> push ------------------------------------------------------
    def on_change(self, type_: str, resource: str, obj: dict[str, Any]) -> None:
        if not self._loaded or resource not in INPUT_RESOURCES:
            return
        if resource == AUTHZ and type_ != "DELETED":
            asyncio.get_running_loop().call_soon(self._policy_status, obj)
        if resource in GATEWAY_STATUS_INPUTS and not self._gw_status_pending:
            self._gw_status_pending = True      # coalesce a burst of changes into one pass
            asyncio.get_running_loop().call_later(0.05, self._gateway_api_status)
        changes = self.model.update(resource, obj, deleted=type_ == "DELETED")
        problems = changes.records.pop("problem", {})
        self.push.changed(changes.records)
        if problems:
            asyncio.get_running_loop().call_soon(self._write_problems, problems)

    def _policy_status(self, obj: dict[str, Any]) -> None:
        """Say on the policy what the ztunnel enforces of it, as istiod's status does."""
        md = obj["metadata"]
        live = self.store.get(AUTHZ, md["namespace"], md["name"])
        if live is None:
            return
        compiled = compile_policy(live, Enforcer.ZTUNNEL)
        message = status_message(compiled)
        status = live.setdefault("status", {})
        if message:
            changed = o.set_condition(status, "ZtunnelAccepted", "False", "UnsupportedValue", message)
        elif live.get("spec", {}).get("targetRef") or live.get("spec", {}).get("targetRefs"):
            changed = o.set_condition(status, "ZtunnelAccepted", "False", "NotApplicable",
                                      "targetRefs policies are enforced by waypoints, not the ztunnel")
        else:
            changed = o.set_condition(status, "ZtunnelAccepted", "True", "Accepted", "")
        if changed:
            self.store.put(AUTHZ, live)
        if message:
            log.info("AuthorizationPolicy %s/%s: %s", md["namespace"], md["name"], message)

    def _gateway_api_status(self) -> None:
        """Gateway API status for the ingress gateway's Gateways (class istio) and the HTTPRoutes
        attached to them, as istiod writes it: why a route does or does not attach."""
        self._gw_status_pending = False
        try:
            state = self.model.snapshot()
            labels = {n: dict(ns.get("metadata", {}).get("labels") or {})
                      for n, ns in self.model.namespaces.items()}
            for key, parents in route_statuses(state, namespaces=labels).items():
                ns, name = key.split("/", 1)
                obj = self.store.get(HTTPROUTES, ns, name)
                if obj is None:
                    continue
                status = obj.setdefault("status", {})
                merged = [_merge_parent(p, status.get("parents") or []) for p in parents]
                ours = {json.dumps(p["parentRef"], sort_keys=True) for p in parents}
                others = [p for p in status.get("parents") or []
                          if p.get("controllerName") != CONTROLLER_NAME
                          and json.dumps(p.get("parentRef"), sort_keys=True) not in ours]
                if merged + others != (status.get("parents") or []):
                    status["parents"] = merged + others
                    self.store.put(HTTPROUTES, obj)
            for key, frag in gateway_statuses(state, namespaces=labels, address="127.0.0.1").items():
                ns, name = key.split("/", 1)
                obj = self.store.get(GATEWAYS, ns, name)
                if obj is None:
                    continue
                status = obj.setdefault("status", {})
                new = dict(status)
                new["conditions"] = _merge_conditions(frag.get("conditions") or [],
                                                      status.get("conditions") or [])
                old_listeners = {li.get("name"): li.get("conditions") or []
                                 for li in status.get("listeners") or []}
                new["listeners"] = [{**li, "conditions": _merge_conditions(
                    li.get("conditions") or [], old_listeners.get(li.get("name"), []))}
                    for li in frag.get("listeners") or []]
                if "addresses" in frag:
                    new["addresses"] = frag["addresses"]
                if new != status:
                    obj["status"] = new
                    self.store.put(GATEWAYS, obj)
        except Exception:
            log.exception("could not write Gateway API status")

    def _write_problems(self, problems: dict[str, Problem | None]) -> None:
        for key, prob in problems.items():
            resource, ns, name = key.split("/", 2)
            try:
                self._write_problem(resource, ns, name, prob)
            except Exception:
                log.exception("could not record status for %s", key)

    def _write_problem(self, resource: str, ns: str, name: str, prob: Problem | None) -> None:
        if prob is not None:
            log.warning("%s %s/%s: %s: %s", resource, ns, name, prob.reason, prob.message)
        obj = self.store.get(resource, ns, name)
        if obj is None:
            return
        if resource == "pods":
            if prob is not None:
                self.emit(obj, "Warning", prob.reason, prob.message)
            return
        status = obj.setdefault("status", {})
        if resource == GATEWAYS:
            ok = prob is None
            changed = o.set_condition(status, "Accepted", "True" if ok else "False",
                                      "Accepted" if ok else prob.reason, "" if ok else prob.message)
        elif prob is None:
            conds = status.get("conditions") or []
            kept = [c for c in conds if c.get("type") != WAYPOINT_CONDITION]
            changed = len(kept) != len(conds)
            status["conditions"] = kept
        else:
            changed = o.set_condition(status, WAYPOINT_CONDITION, "False", prob.reason, prob.message)
        if changed:
            self.store.put(resource, obj)

    # ---- credentials --------------------------------------------------------------------
    def _ensure_credentials(self) -> None:
        """Node credentials are issued when a node joins and renewed past half-life."""
        now = dt.datetime.now(dt.UTC)
        self.paths.tls.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.paths.root_cert.write_text(self.ca.trust_bundle_pem())
        for node in self.cfg.plan.node_names():
            d = self.paths.node_credential(node)
            if self._fresh(d / "node-chain.pem", now):
                continue
            key = generate_key()
            signed = self.ca.issue(key.public_key(), NodeId(self.cfg.trust_domain, node).uri,
                                   NODE_CREDENTIAL_TTL)
            write_credential(d, "node", key, signed.chain_pem)
            log.info("issued node credential for %s (serial %s)", node, signed.serial)
        if not self._fresh(self.paths.tls / "server-chain.pem", now):
            key = generate_key()
            ips = [ipaddress.ip_address("127.0.0.1")] + [
                ipaddress.ip_address(str(self.cfg.plan.node_gateway(n)))
                for n in self.cfg.plan.node_names()]
            signed = self.ca.issue(
                key.public_key(),
                f"spiffe://{self.cfg.trust_domain}/ns/istio-system/sa/istiod",
                NODE_CREDENTIAL_TTL, dns_names=[SERVER_NAME, "istiod.istio-system.svc.cluster.local"],
                ips=ips, server=True)
            write_credential(self.paths.tls, "server", key, signed.chain_pem)

    def bootstrap_credential(self, namespace: str, pod: str) -> dict[str, Any]:
        """A waypoint or gateway pod's credential for the control plane, bound to the pod and its
        service account; the runtime hands it to the pod (the CA then gives that pod only its own
        identity). The private key is generated here and returned once, over the root-only socket."""
        obj = self.store.get("pods", namespace, pod)
        if obj is None or o.is_terminating(obj):
            raise LookupError(f"pod {namespace}/{pod} not found")
        sa = obj.get("spec", {}).get("serviceAccountName") or "default"
        key = generate_key()
        signed = self.ca.issue(key.public_key(), PodId(self.cfg.trust_domain, namespace, pod, sa).uri,
                               dt.timedelta(hours=24))
        return {"key_pem": pem(key), "cert_chain": signed.chain_pem, "identity": signed.identity,
                "root_pem": self.ca.trust_bundle_pem(), "xds_port": self.cfg.xds_port}

    @staticmethod
    def _fresh(chain_file: Any, now: dt.datetime) -> bool:
        try:
            leaf = load_chain(chain_file.read_bytes())[0]
        except (OSError, ValueError, IndexError):
            return False
        return refresh_at(leaf) > now

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._ensure_credentials()
        objs = [(r, obj) for r in INPUT_RESOURCES for obj in self.store.list(r)]
        changes = self.model.load(objs)
        self._loaded = True
        problems = changes.records.pop("problem", {})
        if problems:
            self._write_problems(problems)
        for ap in self.store.list(AUTHZ):
            self._policy_status(ap)
        self._gateway_api_status()
        tls = server_tls(str(self.paths.tls / "server-chain.pem"), str(self.paths.tls / "server-key.pem"),
                         str(self.paths.root_cert))
        app = self.push.app()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        host = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host.bind(("127.0.0.1", self.cfg.xds_port))
        await web.SockSite(runner, host, ssl_context=tls).start()
        for node in self.cfg.plan.node_names():
            gw = str(self.cfg.plan.node_gateway(node))

            def make(gw: str = gw) -> socket.socket:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((gw, XDS_PORT_IN_NODES))
                return s
            try:
                sock = await asyncio.to_thread(call_in_netns, self.cfg.plan.node_netns(node), make)
            except (OSError, NetnsError) as e:
                log.error("no push listener in %s: %s", node, e)
                continue
            await web.SockSite(runner, sock, ssl_context=tls).start()
        log.info("push/CA endpoint on 127.0.0.1:%d and <node>:%d; %d workloads, %d services",
                 self.cfg.xds_port, XDS_PORT_IN_NODES, len(self.model.workloads),
                 len(self.model.services))

    async def stop(self) -> None:
        for r in self._runners:
            with contextlib.suppress(Exception):
                await r.cleanup()

    # ---- views -----------------------------------------------------------------------------
    def ca_view(self) -> dict[str, Any]:
        root = load_chain(self.ca.root_pem.encode())[0]
        return {
            "trust_domain": self.cfg.trust_domain,
            "root": {"subject": root.subject.rfc4514_string(),
                     "serial": format(root.serial_number, "x"),
                     "not_after": root.not_valid_after_utc.isoformat(),
                     "pem": self.ca.root_pem},
            "plugin": self.paths.ca_plugin.exists(),
            "recent": [{"at": s.at.isoformat(), "caller": s.caller, "identity": s.identity,
                        "outcome": s.outcome, "reason": s.reason, "serial": s.serial,
                        "not_after": s.not_after.isoformat() if s.not_after else ""}
                       for s in self.ca.recent(100)],
        }

    def records(self, type_: str) -> dict[str, Any]:
        snap = self.model.snapshot()
        if type_ == "problems":
            return {"/".join(k): to_wire(v) for k, v in self.model.problems.items()}
        return {k: to_wire(v) for k, v in snap.get(type_, {}).items()}


def _merge_conditions(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New conditions, keeping each one's lastTransitionTime when nothing about it changed."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c.get("type"))
        same = prev is not None and all(prev.get(k) == c.get(k) for k in
                                        ("status", "reason", "message", "observedGeneration"))
        out.append({**c, "lastTransitionTime": prev.get("lastTransitionTime") if same and prev
                    else o.now()})
    return out


def _merge_parent(new: dict[str, Any], old_parents: list[dict[str, Any]]) -> dict[str, Any]:
    ref = json.dumps(new["parentRef"], sort_keys=True)
    prev = next((p for p in old_parents if json.dumps(p.get("parentRef"), sort_keys=True) == ref), {})
    return {**new, "conditions": _merge_conditions(new["conditions"], prev.get("conditions") or [])}
