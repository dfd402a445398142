"""The in-pod capture script (pure rendering; the kernel's verdict is in tests/e2e/test_e2e_redirect.py)."""

from __future__ import annotations

import re

import pytest

from zeromesh.netns.podredirect import TABLE, render_remove, render_rules

POD = "10.244.1.3"


def chains(script: str) -> dict[str, list[str]]:
    """Chain name -> its lines (hook declaration first), from the rendered table body."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for raw in script.splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"chain (\S+) \{", line):
            current = m.group(1)
            out[current] = []
        elif line == "}":
            current = None
        elif current is not None:
            out[current].append(line)
    return out


def chain_with_hook(script: str, hook: str) -> list[str]:
    found = [lines for lines in chains(script).values() if lines and lines[0].startswith(hook)]
    assert len(found) == 1, (hook, script)
    return found[0][1:]


def test_replaces_its_own_table_atomically() -> None:
    lines = [line for line in render_rules(pod_ip=POD).splitlines() if not line.startswith("#")]
    assert lines[:3] == [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    assert lines[-1] == "}"
    assert render_remove() == f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def test_is_deterministic() -> None:
    assert render_rules(pod_ip=POD) == render_rules(pod_ip=POD)
    assert render_rules(pod_ip=POD) != render_rules(pod_ip="10.244.2.2")


def test_has_exactly_the_three_hooks_at_istio_priorities() -> None:
    heads = sorted(lines[0] for lines in chains(render_rules(pod_ip=POD)).values())
    assert heads == [
        "type nat hook output priority -100; policy accept;",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type route hook output priority mangle; policy accept;",
    ]


def test_outbound_capture_skips_proxy_replies_and_loopback_then_redirects() -> None:
    rules = chain_with_hook(render_rules(pod_ip=POD), "type nat hook output")
    assert rules == [
        "meta mark 0x539 return",
        "ct mark 0x111 return",
        "ip daddr 127.0.0.0/8 return",
        'oif "lo" return',
        "meta l4proto tcp redirect to :15001",
    ]


def test_inbound_capture_skips_hbone_proxy_connections_and_loopback_then_redirects() -> None:
    rules = chain_with_hook(render_rules(pod_ip=POD), "type nat hook prerouting")
    assert rules == [
        "tcp dport 15008 return",
        "ct mark 0x111 return",
        'iif "lo" return',
        "meta l4proto tcp redirect to :15006",
    ]


def test_mangle_marks_only_proxy_connections_to_the_app_and_restores_on_replies() -> None:
    rules = chain_with_hook(render_rules(pod_ip=POD), "type route hook output")
    assert rules == [
        f"meta mark 0x539 ip daddr {POD} ct direction original ct mark set 0x111",
        "ct direction reply ct mark 0x111 meta mark set ct mark",
    ]


def test_parameters_flow_into_every_rule() -> None:
    script = render_rules(pod_ip=POD, mark=0x1, conn_mark=0x2, outbound_port=1001,
                          inbound_port=1006, hbone_port=1008, table_id=7)
    assert "redirect to :1001" in script and "redirect to :1006" in script
    assert "tcp dport 1008 return" in script
    assert "meta mark 0x1 return" in script and "ct mark set 0x2" in script
    assert "lookup 7" in script
    assert "0x539" not in script and "0x111" not in script and "15001" not in script


def test_the_redirect_comes_last_in_each_nat_chain() -> None:
    script = render_rules(pod_ip=POD)
    for hook in ("type nat hook output", "type nat hook prerouting"):
        rules = chain_with_hook(script, hook)
        assert "redirect" in rules[-1] and all("redirect" not in r for r in rules[:-1])


@pytest.mark.parametrize("bad", ["", "10.244.1", "fd00::1", "10.244.1.3; flush ruleset"])
def test_refuses_anything_but_an_ipv4_pod_address(bad: str) -> None:
    with pytest.raises(ValueError):
        render_rules(pod_ip=bad)
