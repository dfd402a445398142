"""In-pod traffic redirection for the ztunnel: nftables rules and a policy route in the pod's netns.

This is Istio ambient's in-pod capture (istio-cni, nftables mode), translated
rule for rule, so the ztunnel sees what Istio's ztunnel sees:

* ``output`` nat (priority -100): the pod's own outgoing TCP is REDIRECTed to
  :15001 (outbound capture), except the proxy's own sockets (``meta mark``
  0x539, set with ``SO_MARK``), replies of connections the proxy opened to the
  app (``ct mark`` 0x111), and anything leaving through ``lo`` (127.0.0.0/8, or
  the app calling itself by its pod IP; Istio's ``! -d 127.0.0.1 -o lo``
  accept plus its ``! -d 127.0.0.1`` on the redirect rule).
* ``prerouting`` nat (priority -100): incoming TCP is REDIRECTed to :15006
  (inbound plaintext), except HBONE on :15008 (the proxy listens there
  itself), connections the proxy opened to the app (``ct mark`` 0x111) and
  anything arriving on ``lo``.
* ``output`` route (priority -150, Istio's mangle): a proxy packet (mark 0x539)
  that opens a connection towards the app (daddr is the pod IP, original
  direction) marks the connection with ``ct mark`` 0x111; the app's reply
  packets on such a connection get ``meta mark`` 0x111 from the ct mark.  A
  ``route`` chain re-runs the routing decision when the mark changes, so
* the policy route ``ip rule fwmark 0x111 lookup 100`` with ``local 0.0.0.0/0
  dev lo table 100`` delivers those replies, which are addressed to the
  spoofed client IP the proxy bound with ``IP_TRANSPARENT``, back to the proxy's
  local socket instead of sending them out of ``eth0``.

Since Istio 1.24 inbound capture uses REDIRECT rather than TPROXY; the
original destination comes from ``SO_ORIGINAL_DST`` either way.

Differences from DESIGN.md's recipe, which says "a route chain on output sets
``ct mark 0x111`` for mark-0x539 packets and copies it to the packet mark for
replies": taken literally that also marks the proxy's *outbound* connections
(client pod → remote destination, mark 0x539).  The proxy's second packet on
such a connection would then get mark 0x111 restored, be routed by table 100
into ``lo`` and never leave the pod, so outbound relaying breaks after the SYN.
Istio avoids it by setting the connmark in mangle PREROUTING, i.e. only on
packets that looped back to a local app.  Here the set is restricted to
packets going to the pod's own IP in the connection's original direction
(i.e. connections the proxy opened to the app; the proxy's replies on a
captured outbound connection also go to the pod IP, but in the reply
direction) and the restore to the reply direction (the app's packets, not the
proxy's own), which keeps everything in one ``route`` chain.  Checked on this
kernel: with the literal recipe curl through the relay times out, with these
rules it works.  Marks are compared exactly, not under Istio's 0xfff mask:
zeromesh sets the whole mark.

The policy rule has preference 32764 (before ``main``), so `remove` finds
exactly the rule `install` added.  Only IPv4 is policy-routed: pods of the
local cluster have no IPv6 address.
"""

from __future__ import annotations

import ipaddress

from zeromesh.netns import cmd

TABLE = "zeromesh-inpod"
PROXY_MARK = 0x539
CONN_MARK = 0x111
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
HBONE_PORT = 15008
ROUTE_TABLE = 100
RULE_PREF = 32764


def render_rules(*, pod_ip: str, mark: int = PROXY_MARK, conn_mark: int = CONN_MARK,
                 outbound_port: int = OUTBOUND_PORT, inbound_port: int = INBOUND_PORT,
                 hbone_port: int = HBONE_PORT, table_id: int = ROUTE_TABLE) -> str:
    """The pod's whole capture table, replaced in one transaction (create, delete, recreate).

    ``table_id`` only appears in a comment: nftables cannot add the policy
    route, `install` does, but the script says which table completes it.
    """
    ip = ipaddress.IPv4Address(pod_ip)   # refuse anything that is not an IPv4 address
    m, c = f"{mark:#x}", f"{conn_mark:#x}"
    lines = [
        f"# zeromesh in-pod capture for {ip}; completed by: ip rule fwmark {c} lookup {table_id},",
        f"# ip route local 0.0.0.0/0 dev lo table {table_id}",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain mangle-output {",
        "    type route hook output priority mangle; policy accept;",
        f"    meta mark {m} ip daddr {ip} ct direction original ct mark set {c}",
        f"    ct direction reply ct mark {c} meta mark set ct mark",
        "  }",
        "  chain nat-output {",
        "    type nat hook output priority -100; policy accept;",
        f"    meta mark {m} return",
        f"    ct mark {c} return",
        "    ip daddr 127.0.0.0/8 return",
        '    oif "lo" return',
        f"    meta l4proto tcp redirect to :{outbound_port}",
        "  }",
        "  chain nat-prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    tcp dport {hbone_port} return",
        f"    ct mark {c} return",
        '    iif "lo" return',
        f"    meta l4proto tcp redirect to :{inbound_port}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_remove() -> str:
    """Delete the capture table; creating it first makes a second removal harmless."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def _rule_args(conn_mark: int, table_id: int) -> list[str]:
    return ["pref", str(RULE_PREF), "fwmark", f"{conn_mark:#x}", "lookup", str(table_id)]


def _has_rule(netns: str, conn_mark: int, table_id: int) -> bool:
    out = cmd.run(["ip", "-n", netns, "-4", "rule", "show", "pref", str(RULE_PREF)])
    want = f"fwmark {conn_mark:#x} lookup {table_id}"
    return any(want in line for line in out.splitlines())


def install(netns: str, pod_ip: str, *, conn_mark: int = CONN_MARK, table_id: int = ROUTE_TABLE) -> None:
    """Capture the pod's TCP (idempotent): route first, so no reply is ever misrouted."""
    cmd.run(["ip", "-n", netns, "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo",
             "table", str(table_id)])
    if not _has_rule(netns, conn_mark, table_id):
        cmd.run(["ip", "-n", netns, "-4", "rule", "add", *_rule_args(conn_mark, table_id)])
    cmd.nft(netns, render_rules(pod_ip=pod_ip, conn_mark=conn_mark, table_id=table_id))


def remove(netns: str, *, conn_mark: int = CONN_MARK, table_id: int = ROUTE_TABLE) -> None:
    """Undo `install` (idempotent): the namespace is left with no table, rule or table-100 route."""
    cmd.nft(netns, render_remove())
    while _has_rule(netns, conn_mark, table_id):
        cmd.run(["ip", "-n", netns, "-4", "rule", "del", *_rule_args(conn_mark, table_id)])
    cmd.run(["ip", "-n", netns, "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo",
             "table", str(table_id)], check=False)   # already gone on a second removal
