"""Render a node's ClusterIP translation as one atomic nftables script (pure).

This is kube-proxy's job on the local cluster: a service VIP:port is translated
to a random ready endpoint in the node namespace, never inside a pod, so a
mesh capturing traffic in the pod still sees the VIP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zeromesh.local.plan import SERVICE_CIDR

TABLE = "zeromesh"


@dataclass(frozen=True, slots=True)
class ServicePortRule:
    vip: str
    port: int
    protocol: str                             # "TCP" or "UDP"
    endpoints: Sequence[tuple[str, int]]      # (pod ip, target port), ready only


def render(rules: Iterable[ServicePortRule], local_pod_ips: Iterable[str]) -> str:
    """The whole table, replaced in one transaction so no packet sees half a ruleset."""
    lines = [
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    hairpin = sorted(set(local_pod_ips))
    lines.append("  set hairpin {")
    lines.append("    type ipv4_addr . ipv4_addr")
    if hairpin:
        lines.append("    elements = { " + ", ".join(f"{ip} . {ip}" for ip in hairpin) + " }")
    lines.append("  }")
    lines.append("  chain services {")
    for r in sorted(rules, key=lambda r: (r.vip, r.port, r.protocol)):
        if not r.endpoints:
            continue
        proto = r.protocol.lower()
        match = f"ip daddr {r.vip} {proto} dport {r.port}"
        eps = sorted(r.endpoints)
        if len(eps) == 1:
            lines.append(f"    {match} dnat to {eps[0][0]}:{eps[0][1]}")
        else:
            elems = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(eps))
            lines.append(f"    {match} dnat ip to numgen random mod {len(eps)} map {{ {elems} }}")
    lines += [
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    jump services",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    jump services",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    ct status dnat ip saddr . ip daddr @hairpin masquerade",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    ip daddr {SERVICE_CIDR} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {SERVICE_CIDR} reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"
