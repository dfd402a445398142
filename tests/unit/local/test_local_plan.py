"""Addresses and names of a local cluster: pure, so checked exhaustively here."""

import ipaddress

import pytest

from zeromesh.local.plan import ClusterPlan, allocate, check_cluster_name, veth_name


@pytest.mark.parametrize("name", ["a", "zeromesh", "test-1", "a1b2c3d4e5f6g7h8i9j0"])
def test_valid_cluster_names(name: str) -> None:
    assert check_cluster_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a.b", "a_b", "x" * 21, "a/b"])
def test_invalid_cluster_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid cluster name"):
        check_cluster_name(name)


def test_prefix_never_matches_another_cluster() -> None:
    a, ab = ClusterPlan("a", 2), ClusterPlan("a-b", 2)
    assert not ab.node_netns("node1").startswith(a.prefix)
    assert not a.node_netns("node1").startswith(ab.prefix)


def test_node_ranges_are_disjoint_and_gateways_first() -> None:
    plan = ClusterPlan("c", 5)
    cidrs = [plan.node_pod_cidr(n) for n in plan.node_names()]
    for i, x in enumerate(cidrs):
        for y in cidrs[i + 1:]:
            assert not x.overlaps(y)
    assert plan.node_gateway("node3") == ipaddress.IPv4Address("10.244.3.1")
    assert plan.node_underlay_ip("node2") == ipaddress.IPv4Address("10.255.0.2")


@pytest.mark.parametrize("bad", ["node0", "node6", "worker1", "node", "nodex"])
def test_unknown_nodes_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ClusterPlan("c", 5).node_index(bad)


@pytest.mark.parametrize("nodes", [0, 201])
def test_node_count_bounds(nodes: int) -> None:
    with pytest.raises(ValueError, match="--nodes"):
        ClusterPlan("c", nodes)


def test_pod_netns_readable_then_hashed() -> None:
    plan = ClusterPlan("c", 1)
    assert plan.pod_netns("ns1", "echo-abc") == "zm.c.ns1.echo-abc"
    long = plan.pod_netns("n" * 63, "p" * 200)
    assert long.startswith("zm.c.") and len(long) < 120
    assert long != plan.pod_netns("n" * 63, "p" * 199)


def test_allocate_lowest_free_after_reserved() -> None:
    cidr = ipaddress.IPv4Network("10.244.1.0/24")
    assert str(allocate(cidr, [], reserved=1)) == "10.244.1.2"
    assert str(allocate(cidr, ["10.244.1.2", "10.244.1.3"], reserved=1)) == "10.244.1.4"
    assert str(allocate(cidr, ["10.244.1.3"], reserved=1)) == "10.244.1.2"


def test_allocate_full_range() -> None:
    cidr = ipaddress.IPv4Network("10.0.0.0/29")   # hosts .1-.6
    used = [f"10.0.0.{i}" for i in range(2, 7)]
    assert allocate(cidr, used, reserved=1) is None


def test_veth_names_fit_the_kernel_limit_and_differ() -> None:
    names = {veth_name(f"uid-{i}") for i in range(1000)}
    assert len(names) == 1000
    assert all(len(n) <= 15 for n in names)
