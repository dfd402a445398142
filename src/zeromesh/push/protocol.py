"""Push protocol messages and the per-proxy bookkeeping of what was sent and acknowledged (pure).

Messages are compact JSON objects on one WebSocket stream:

    proxy -> cp   {"type": "hello", "kind": "nodeagent"|"waypoint"|"gateway", "name": ..., "node": ...}
    cp -> proxy   {"type": "update", "nonce": N, "version": "V", "full": bool,
                   "resources": {TYPE: {KEY: record | null}}}
    proxy -> cp   {"type": "ack", "nonce": N, "version": "V"}
                  {"type": "nack", "nonce": N, "version": "V", "error": "..."}

A `null` record removes KEY. A full update replaces everything the proxy has,
so a reconnecting proxy always ends with a consistent state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.errors import ZeromeshError

NODE_AGENT = "nodeagent"
WAYPOINT = "waypoint"
GATEWAY = "gateway"
PROXY_KINDS = (NODE_AGENT, WAYPOINT, GATEWAY)
# Only the ingress gateway terminates TLS with certificates from Secrets: nobody else gets them.
GATEWAY_ONLY_TYPES = frozenset({"secrets", "namespace"})

# What each kind of proxy receives: the node agent (ztunnel) works at L4 and never
# needs L7 routes; a waypoint needs everything.
NODE_AGENT_TYPES = frozenset({
    "workload", "service", "waypoint",
    "authorizationpolicies.security.istio.io",
    "peerauthentications.security.istio.io",
})


class ProtocolError(ZeromeshError):
    """The peer sent something that is not a valid message; the stream is closed."""


def relevant(kind: str, type_: str) -> bool:
    if type_ in GATEWAY_ONLY_TYPES:
        return kind == GATEWAY
    return kind in (WAYPOINT, GATEWAY) or type_ in NODE_AGENT_TYPES


@dataclass(frozen=True, slots=True)
class Hello:
    kind: str
    name: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class Update:
    nonce: int
    version: str
    full: bool
    resources: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: int
    version: str


@dataclass(frozen=True, slots=True)
class Nack:
    nonce: int
    version: str
    error: str


Message = Hello | Update | Ack | Nack


def encode(msg: Message) -> str:
    match msg:
        case Hello(kind, name, node):
            d: dict[str, Any] = {"type": "hello", "kind": kind, "name": name, "node": node}
        case Update(nonce, version, full, resources):
            d = {"type": "update", "nonce": nonce, "version": version, "full": full,
                 "resources": resources}
        case Ack(nonce, version):
            d = {"type": "ack", "nonce": nonce, "version": version}
        case Nack(nonce, version, error):
            d = {"type": "nack", "nonce": nonce, "version": version, "error": error}
    return json.dumps(d, separators=(",", ":"))


def decode(text: str) -> Message:
    try:
        d = json.loads(text)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(d, dict):
        raise ProtocolError("message is not an object")
    try:
        match d.get("type"):
            case "hello":
                if d["kind"] not in PROXY_KINDS:
                    raise ProtocolError(f"unknown proxy kind {d['kind']!r}")
                return Hello(str(d["kind"]), str(d["name"]), str(d.get("node", "")))
            case "update":
                res = d["resources"]
                if not isinstance(res, dict) or not all(isinstance(v, dict) for v in res.values()):
                    raise ProtocolError("update.resources must map type -> {key: record}")
                return Update(int(d["nonce"]), str(d["version"]), bool(d["full"]), res)
            case "ack":
                return Ack(int(d["nonce"]), str(d["version"]))
            case "nack":
                return Nack(int(d["nonce"]), str(d["version"]), str(d.get("error", "")))
            case other:
                raise ProtocolError(f"unknown message type {other!r}")
    except (KeyError, ValueError, TypeError) as e:
        raise ProtocolError(f"malformed {d.get('type')} message: {e!r}") from e


def apply_update(state: Mapping[str, Mapping[str, Any]], update: Update
                 ) -> dict[str, dict[str, Any]]:
    """The proxy's next state; the old one is untouched so a NACK can keep it."""
    if update.full:
        new: dict[str, dict[str, Any]] = {}
    else:
        new = {t: dict(recs) for t, recs in state.items()}
    for type_, recs in update.resources.items():
        bucket = new.setdefault(type_, {})
        for key, rec in recs.items():
            if rec is None:
                bucket.pop(key, None)
            else:
                bucket[key] = rec
    return new


def filter_for(kind: str, resources: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, Mapping[str, Any]]:
    return {t: recs for t, recs in resources.items() if recs and relevant(kind, t)}


@dataclass
class ProxyStatus:
    """What the control plane knows about one connected proxy."""
    id: str
    kind: str
    name: str
    node: str
    identity: str
    connected_at: str
    sent_nonce: int = 0
    sent_version: str = ""
    acked_version: str = ""
    acked_nonce: int = 0
    last_nack: str = ""
    nacks: int = 0
    pending: dict[int, str] = field(default_factory=dict)    # nonce -> version awaiting answer

    def sent(self, nonce: int, version: str) -> None:
        self.sent_nonce, self.sent_version = nonce, version
        self.pending[nonce] = version

    def answered(self, msg: Ack | Nack) -> None:
        version = self.pending.pop(msg.nonce, None)
        if version is None:
            raise ProtocolError(f"answer for unknown nonce {msg.nonce}")
        if isinstance(msg, Ack):
            self.acked_version, self.acked_nonce = version, msg.nonce
            self.last_nack = ""
        else:
            self.nacks += 1
            self.last_nack = msg.error

    def in_sync(self) -> bool:
        """Everything sent was acknowledged (the control plane sends every change it has)."""
        return not self.pending and self.acked_nonce == self.sent_nonce and not self.last_nack

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "node": self.node,
                "identity": self.identity, "connected_at": self.connected_at,
                "sent_version": self.sent_version, "acked_version": self.acked_version,
                "in_sync": self.in_sync(), "nacks": self.nacks, "last_nack": self.last_nack}


def merge_changes(batches: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Coalesce several change batches: the latest record per key wins."""
    out: dict[str, dict[str, Any]] = {}
    for b in batches:
        for t, recs in b.items():
            out.setdefault(t, {}).update(recs)
    return out
