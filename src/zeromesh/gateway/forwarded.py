"""Who the client is at the edge: X-Forwarded-For with a number of trusted hops (pure).

Istio configures it per gateway with the pod annotation ``proxy.istio.io/config``
(``gatewayTopology.numTrustedProxies``), which becomes Envoy's ``xff_num_trusted_hops``
with ``use_remote_address: true``. Without trusted hops the header is ignored: anyone can
write it, so an allow list on ``remoteIpBlocks`` must not believe it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


def trusted_hops_from_annotations(annotations: Mapping[str, str] | None) -> int:
    """``gatewayTopology.numTrustedProxies`` from the pod's ``proxy.istio.io/config``
    annotation (YAML or JSON); 0 when absent or unreadable."""
    raw = (annotations or {}).get(PROXY_CONFIG_ANNOTATION)
    if not raw:
        return 0
    try:
        doc: Any = yaml.safe_load(raw)
    except yaml.YAMLError:
        return 0
    topology = doc.get("gatewayTopology") if isinstance(doc, Mapping) else None
    n = topology.get("numTrustedProxies") if isinstance(topology, Mapping) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def client_address(peer_ip: str, xff: str | None, trusted_hops: int) -> str:
    """The trusted client address, by Envoy's rule for an edge proxy: with N > 0 trusted hops
    it is the Nth address from the right of X-Forwarded-For (as received); with 0, or when the
    header has fewer than N entries or that entry is not an IP address, the peer's address."""
    if trusted_hops <= 0 or not xff:
        return peer_ip
    entries = [e.strip() for e in xff.split(",")]
    if len(entries) < trusted_hops:
        return peer_ip
    candidate = entries[-trusted_hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer_ip
