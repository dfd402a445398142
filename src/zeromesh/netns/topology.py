"""Create and remove the underlay, node and pod namespaces of a local cluster.

Pods get a /32 address and a default route through their node's `cni0`
address, so every packet (same node included) is routed by the node namespace:
that is where ClusterIP translation happens, as kube-proxy would do it.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass

from zeromesh.errors import NetnsError
from zeromesh.local.plan import UNDERLAY_CIDR, ClusterPlan
from zeromesh.netns.cmd import ip_batch, list_netns, run, sysctl

ETC_NETNS = "/etc/netns"


def bridge_mac(index: int) -> str:
    """A stable, locally administered MAC for a node's pod bridge."""
    return f"02:7a:6d:00:{index >> 8 & 0xff:02x}:{index & 0xff:02x}"


def exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _add(name: str) -> None:
    run(["ip", "netns", "add", name])


def create_underlay(plan: ClusterPlan) -> None:
    name = plan.underlay_netns
    if exists(name):
        return
    _add(name)
    ip_batch(name, ["link set lo up", "link add br0 type bridge", "link set br0 up"])


def create_node(plan: ClusterPlan, node: str) -> None:
    """A node namespace: uplink to the underlay, pod bridge, routes to the other nodes."""
    name = plan.node_netns(node)
    if exists(name):
        return
    _add(name)
    try:
        sysctl(name, {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.default.send_redirects": "0",
        })
        gw = plan.node_gateway(node)
        cidr = plan.node_pod_cidr(node)
        lines = [
            "link set lo up",
            f"link add uplink type veth peer name {node} netns {plan.underlay_netns}",
            f"addr add {plan.node_underlay_ip(node)}/{UNDERLAY_CIDR.prefixlen} dev uplink",
            "link set uplink up",
            # A bridge otherwise takes the lowest MAC of its ports, so it would change as
            # pods come and go, leaving pods with a stale gateway MAC (as the CNI bridge
            # plugin does, pin it).
            f"link add cni0 address {bridge_mac(plan.node_index(node))} type bridge",
            f"addr add {gw}/{cidr.prefixlen} dev cni0",
            "link set cni0 up",
            # Service addresses are local here: with no translation rule they reach
            # the input hook, which refuses them like kube-proxy's REJECT.
            "route add local 10.96.0.0/16 dev lo",
        ]
        for other in plan.node_names():
            if other != node:
                lines.append(f"route add {plan.node_pod_cidr(other)} via {plan.node_underlay_ip(other)}")
        ip_batch(name, lines)
        ip_batch(plan.underlay_netns, [f"link set {node} master br0", f"link set {node} up"])
    except NetnsError:
        delete_netns(name)
        raise


@dataclass(frozen=True, slots=True)
class PodNetwork:
    netns: str
    node_netns: str
    veth: str              # node-side interface name
    ip: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    resolv_conf: str
    hosts: str


def create_pod(pod: PodNetwork) -> None:
    """Idempotent: an existing namespace (runner restart) is kept as it is."""
    _write_etc(pod.netns, pod.resolv_conf, pod.hosts)
    if exists(pod.netns):
        return
    # An address reused by a new pod comes with a new MAC: forget the old neighbour entry,
    # or the node keeps sending to a veth that no longer exists until the entry ages out.
    forget_neighbour(pod.node_netns, str(pod.ip))
    _add(pod.netns)
    try:
        sysctl(pod.netns, {
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.conf.all.accept_redirects": "0",
        })
        ip_batch(pod.node_netns, [
            f"link add {pod.veth} type veth peer name eth0 netns {pod.netns}",
            f"link set {pod.veth} master cni0",
            f"link set {pod.veth} up",
        ])
        ip_batch(pod.netns, [
            "link set lo up",
            f"addr add {pod.ip}/32 dev eth0",
            "link set eth0 up",
            f"route add {pod.gateway} dev eth0 scope link",
            f"route add default via {pod.gateway} dev eth0",
        ])
    except NetnsError:
        delete_pod(pod.netns, pod.node_netns, pod.veth)
        raise


def _write_etc(netns: str, resolv_conf: str, hosts: str) -> None:
    """`ip netns exec` bind-mounts these over /etc inside the pod's mount namespace."""
    d = os.path.join(ETC_NETNS, netns)
    os.makedirs(d, mode=0o755, exist_ok=True)
    for fname, content in (("resolv.conf", resolv_conf), ("hosts", hosts)):
        path = os.path.join(d, fname)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def forget_neighbour(node_netns: str, ip: str) -> None:
    if exists(node_netns):
        run(["ip", "-n", node_netns, "neigh", "flush", "to", ip], check=False)


def delete_pod(netns: str, node_netns: str, veth: str, ip: str | None = None) -> None:
    if exists(node_netns):
        run(["ip", "-n", node_netns, "link", "del", veth], check=False)
        if ip:
            forget_neighbour(node_netns, ip)
    delete_netns(netns)


def delete_netns(name: str) -> None:
    if exists(name):
        run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(os.path.join(ETC_NETNS, name), ignore_errors=True)


def cluster_netns(plan_prefix: str) -> list[str]:
    """Every namespace (and /etc/netns leftover) that belongs to one cluster."""
    names = {n for n in list_netns() if n.startswith(plan_prefix)}
    if os.path.isdir(ETC_NETNS):
        names |= {n for n in os.listdir(ETC_NETNS) if n.startswith(plan_prefix)}
    return sorted(names)
