"""Scheduling honours nodeSelector and spreads replicas."""

from zeromesh.local.scheduling import NodeView, Unschedulable, schedule


def nodes(**pods: int) -> list[NodeView]:
    return [NodeView(name, {"name": name}, True, count) for name, count in pods.items()]


def test_node_selector_wins_over_spreading() -> None:
    assert schedule({"name": "node2"}, nodes(node1=0, node2=9)) == "node2"


def test_spreads_by_sibling_then_total_then_name() -> None:
    ns = [NodeView("node1", {}, True, 1, same_owner_pods=1),
          NodeView("node2", {}, True, 5, same_owner_pods=0)]
    assert schedule({}, ns) == "node2"
    assert schedule({}, nodes(node1=3, node2=1)) == "node2"
    assert schedule({}, nodes(node2=0, node10=0, node1=0)) == "node1"


def test_natural_order_of_names() -> None:
    assert schedule({}, nodes(node10=0, node9=0)) == "node9"


def test_no_match_explains_why() -> None:
    r = schedule({"name": "node3"}, nodes(node1=0, node2=0))
    assert isinstance(r, Unschedulable)
    assert "0/2 nodes are available" in r.reason and "name=node3" in r.reason


def test_not_ready_nodes_are_skipped_and_reported() -> None:
    ns = [NodeView("node1", {"name": "node1"}, False, 0), NodeView("node2", {}, True, 0)]
    assert schedule({}, ns) == "node2"
    r = schedule({"name": "node1"}, ns)
    assert isinstance(r, Unschedulable) and "1 node(s) not ready" in r.reason


def test_empty_cluster() -> None:
    assert isinstance(schedule({}, []), Unschedulable)
