"""Names and addresses of a local cluster, derived from its name alone (pure).

Every namespace name starts with `zm.<cluster>.`; cluster names cannot contain a
dot, so one cluster's prefix never matches another's. Pod and service ranges are
the same in every cluster because they exist only inside that cluster's own
namespaces and are never routed from the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

CLUSTER_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")

POD_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
UNDERLAY_CIDR = ipaddress.IPv4Network("10.255.0.0/24")
MAX_NODES = 200


def check_cluster_name(name: str) -> str:
    """Refuse names that could clash with another cluster's prefix or break ip(8)."""
    if not CLUSTER_NAME_RE.match(name):
        raise ValueError(
            f"invalid cluster name {name!r}: use 1-20 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    cluster: str
    nodes: int

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"--nodes must be between 1 and {MAX_NODES}, got {self.nodes}")

    @property
    def prefix(self) -> str:
        return f"zm.{self.cluster}."

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}underlay"

    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def node_index(self, node: str) -> int:
        if not node.startswith("node") or not node[4:].isdigit():
            raise ValueError(f"not a node of this cluster: {node!r}")
        i = int(node[4:])
        if not 1 <= i <= self.nodes:
            raise ValueError(f"not a node of this cluster: {node!r}")
        return i

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def node_pod_cidr(self, node: str) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{self.node_index(node)}.0/24")

    def node_gateway(self, node: str) -> ipaddress.IPv4Address:
        """The node's address on its pod bridge: pods' default gateway and DNS server."""
        return self.node_pod_cidr(node).network_address + 1

    def node_underlay_ip(self, node: str) -> ipaddress.IPv4Address:
        return UNDERLAY_CIDR.network_address + self.node_index(node)

    def pod_netns(self, namespace: str, pod: str) -> str:
        """Readable when short; hashed when it would not fit a file name."""
        name = f"{self.prefix}{namespace}.{pod}"
        if len(name) <= 120:
            return name
        digest = hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:16]
        return f"{self.prefix}{namespace[:40]}.{pod[:40]}.{digest}"


def allocate(cidr: ipaddress.IPv4Network, used: Iterable[str],
             reserved: int = 1) -> ipaddress.IPv4Address | None:
    """Lowest free host address of `cidr` after the first `reserved` hosts; None when full."""
    taken = {ipaddress.IPv4Address(u) for u in used}
    for i, addr in enumerate(cidr.hosts()):
        if i < reserved:
            continue
        if addr not in taken:
            return addr
    return None


def veth_name(pod_uid: str) -> str:
    """Node-side interface name of a pod's veth (15-char kernel limit)."""
    return "vp" + hashlib.sha1(pod_uid.encode()).hexdigest()[:11]
