"""Loopback ports of the ingress gateway: kept across restarts when free, never shared, cleared when
the gateway is left out, left alone while a runner may hold them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from zeromesh.errors import ClusterError
from zeromesh.local import cluster
from zeromesh.local.state import ClusterConfig


def fake_free(busy: set[int], fresh: list[int]) -> Callable[[int], int]:
    """`free_port` over a made-up host: preferred ports not in `busy` are given back, 0 pops `fresh`."""
    def free(preferred: int) -> int:
        if preferred and preferred not in busy:
            return preferred
        return fresh.pop(0)
    return free


def test_recorded_ports_are_kept_when_free() -> None:
    have = {"80": 5002, "443": 5003}
    assert cluster.pick_ports(have, have, fake_free(set(), [])) == have


def test_busy_ports_are_replaced_and_new_keys_allocated() -> None:
    have = {"80": 5002}
    got = cluster.pick_ports(["80", "443"], {**have, "443": 5003}, fake_free({5003}, [6001]))
    assert got == {"80": 5002, "443": 6001}
    assert cluster.pick_ports(["80", "443"], have, fake_free(set(), [6002])) == {"80": 5002, "443": 6002}


def test_no_port_twice_nor_one_taken_elsewhere() -> None:
    # The ephemeral picker hands out 7000 twice and the control plane's port once.
    got = cluster.pick_ports(["80", "443"], {}, fake_free(set(), [7000, 7000, 9999, 7001]), taken={9999})
    assert got == {"80": 7000, "443": 7001}


def test_gives_up_rather_than_loop() -> None:
    with pytest.raises(ClusterError, match="no free loopback port"):
        cluster.pick_ports(["80"], {}, lambda _: 1, taken={1})


def cfg(**kw: object) -> ClusterConfig:
    return ClusterConfig(name="t", nodes=2, xds_port=4000, node_ports={"node1": {"metrics": 4001}},
                         **kw)  # type: ignore[arg-type]


def test_allocation_follows_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "free_port", fake_free({4000, 4001}, [4000, 4001, 8001, 8002]))
    c = cfg()
    cluster._allocate_ingress(c, bound=False)
    assert c.ingress and c.ingress_ports == {"80": 8001, "443": 8002}
    # While a runner runs, what is recorded stays (it may be the runner that holds the ports).
    c.ingress_ports = {"80": 2, "443": 3}
    cluster._allocate_ingress(c, bound=True)
    assert c.ingress_ports == {"80": 2, "443": 3}
    off = cfg(ingress=False, ingress_ports={"80": 2})
    cluster._allocate_ingress(off, bound=False)
    assert off.ingress_ports == {}


def test_older_cluster_json_gets_the_ingress_by_default() -> None:
    c = ClusterConfig(name="t", nodes=1)
    assert c.ingress is True and c.ingress_ports == {}
