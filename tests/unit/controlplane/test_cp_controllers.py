"""Controllers driven by store events, with no process or socket: deployments, scheduling,
addresses and endpoints settle to what Kubernetes would show."""

from pathlib import Path
from typing import Any

import pytest

from zeromesh.controlplane import objects as o
from zeromesh.controlplane.controllers import Controllers, endpoint_subsets
from zeromesh.controlplane.store import SqliteStore
from zeromesh.local.plan import ClusterPlan


class Cluster:
    def __init__(self, tmp: Path, nodes: int = 2) -> None:
        self.store = SqliteStore(str(tmp / "db"))
        self.events: list[tuple[str, str, str]] = []
        self.c = Controllers(self.store, ClusterPlan("t", nodes),
                             lambda obj, t, r, m: self.events.append((obj["metadata"]["name"], r, m)))
        self.store.subscribe(self.c.on_change)
        for i in range(1, nodes + 1):
            node = {"metadata": {"name": f"node{i}", "labels": {"name": f"node{i}"}},
                    "status": {}}
            o.set_condition(node["status"], "Ready", "True")
            self.store.put("nodes", node)
        self.c.drain()

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("uid", o.new_uid())
        obj["metadata"].setdefault("creationTimestamp", o.now())
        self.store.put(resource, obj)
        self.c.drain()

    def pods(self, ns: str = "default") -> list[dict[str, Any]]:
        return self.store.list("pods", ns)

    def make_ready(self, pod: dict[str, Any], ready: bool = True) -> None:
        st = pod["status"]
        o.set_condition(st, "Ready", "True" if ready else "False")
        self.store.put("pods", pod)
        self.c.drain()


def deployment(name: str, replicas: int = 1, labels: dict[str, str] | None = None,
               node: str | None = None, image: str = "x") -> dict[str, Any]:
    labels = labels or {"app": name}
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": image,
                                            "ports": [{"name": "http", "containerPort": 8080}]}]}
    if node:
        spec["nodeSelector"] = {"name": node}
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


@pytest.fixture
def cl(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_deployment_creates_named_scheduled_addressed_pods(cl: Cluster) -> None:
    cl.put("deployments.apps", deployment("echo", replicas=3))
    pods = cl.pods()
    assert len(pods) == 3
    for p in pods:
        name = p["metadata"]["name"]
        thash = p["metadata"]["labels"]["pod-template-hash"]
        assert name.startswith(f"echo-{thash}-") and len(name.split("-")[-1]) == 5
        assert p["spec"]["nodeName"] in ("node1", "node2")
        assert p["status"]["podIP"].startswith("10.244.")
    assert sorted(p["spec"]["nodeName"] for p in pods).count("node1") in (1, 2)  # spread
    assert len({p["status"]["podIP"] for p in pods}) == 3


def test_node_selector_and_unschedulable_event(cl: Cluster) -> None:
    cl.put("deployments.apps", deployment("pinned", node="node2"))
    assert cl.pods()[0]["spec"]["nodeName"] == "node2"
    cl.put("deployments.apps", deployment("nowhere", node="node9"))
    stuck = next(p for p in cl.pods() if p["metadata"]["name"].startswith("nowhere"))
    cond = o.condition(stuck, "PodScheduled")
    assert cond and cond["status"] == "False" and "name=node9" in cond["message"]
    assert any(r == "FailedScheduling" for _, r, _ in cl.events)
    # Labelling a node makes it schedulable.
    node = cl.store.get("nodes", "", "node1")
    node["metadata"]["labels"]["name"] = "node9"
    cl.put("nodes", node)
    stuck = next(p for p in cl.pods() if p["metadata"]["name"].startswith("nowhere"))
    assert stuck["spec"]["nodeName"] == "node1"


def test_scale_and_template_change_replace_pods(cl: Cluster) -> None:
    d = deployment("web", replicas=2)
    cl.put("deployments.apps", d)
    first = {p["metadata"]["name"] for p in cl.pods()}
    d = cl.store.get("deployments.apps", "default", "web")
    d["spec"]["replicas"] = 1
    cl.put("deployments.apps", d)
    # Bound pods on a ready node are marked; their node's runner finishes the deletion.
    assert len([p for p in cl.pods() if not o.is_terminating(p)]) == 1
    d = cl.store.get("deployments.apps", "default", "web")
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "y"
    cl.put("deployments.apps", d)
    live = [p for p in cl.pods() if not o.is_terminating(p)]
    assert len(live) == 1 and live[0]["metadata"]["name"] not in first
    assert live[0]["spec"]["containers"][0]["image"] == "y"


def test_deleting_a_deployment_marks_its_pods(cl: Cluster) -> None:
    cl.put("deployments.apps", deployment("gone", replicas=2))
    cl.store.delete("deployments.apps", "default", "gone")
    cl.c.drain()
    assert all(o.is_terminating(p) for p in cl.pods())


def test_deleted_pod_is_recreated(cl: Cluster) -> None:
    cl.put("deployments.apps", deployment("again"))
    p = cl.pods()[0]
    cl.store.delete("pods", "default", p["metadata"]["name"])
    cl.c.drain()
    pods = cl.pods()
    assert len(pods) == 1 and pods[0]["metadata"]["name"] != p["metadata"]["name"]


def test_services_get_addresses_and_endpoints_follow_readiness(cl: Cluster) -> None:
    cl.put("deployments.apps", deployment("echo", replicas=2))
    cl.put("services", {"metadata": {"name": "echo", "namespace": "default"},
                        "spec": {"selector": {"app": "echo"},
                                 "ports": [{"name": "web", "port": 80, "targetPort": "http",
                                            "protocol": "TCP"}]}})
    svc = cl.store.get("services", "default", "echo")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    ep = cl.store.get("endpoints", "default", "echo")
    assert "addresses" not in ep["subsets"][0]
    assert len(ep["subsets"][0]["notReadyAddresses"]) == 2
    assert ep["subsets"][0]["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    for p in cl.pods():
        cl.make_ready(p)
    ep = cl.store.get("endpoints", "default", "echo")
    assert len(ep["subsets"][0]["addresses"]) == 2
    cl.make_ready(cl.pods()[0], ready=False)
    ep = cl.store.get("endpoints", "default", "echo")
    assert len(ep["subsets"][0]["addresses"]) == 1
    cl.store.delete("services", "default", "echo")
    cl.c.drain()
    assert cl.store.get("endpoints", "default", "echo") is None


def test_second_service_gets_next_address(cl: Cluster) -> None:
    for n in ("a", "b"):
        cl.put("services", {"metadata": {"name": n, "namespace": "default"},
                            "spec": {"ports": [{"port": 80}]}})
    assert cl.store.get("services", "default", "b")["spec"]["clusterIP"] == "10.96.0.11"


def test_endpoint_subsets_skip_unresolvable_named_ports() -> None:
    svc = {"spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": "missing"}]}}
    pod = {"metadata": {"name": "p", "namespace": "d", "labels": {"app": "a"}},
           "spec": {"containers": [{"name": "c"}], "nodeName": "node1"},
           "status": {"podIP": "10.244.1.2"}}
    assert endpoint_subsets(svc, [pod]) == [{"notReadyAddresses": [
        {"ip": "10.244.1.2", "nodeName": "node1",
         "targetRef": {"kind": "Pod", "name": "p", "namespace": "d", "uid": ""}}], "ports": []}]


def test_namespace_gets_default_service_account_and_cascades(cl: Cluster) -> None:
    cl.put("namespaces", {"metadata": {"name": "team"}})
    assert cl.store.get("serviceaccounts", "team", "default") is not None
    cl.put("configmaps", {"metadata": {"name": "cm", "namespace": "team"}})
    ns = cl.store.get("namespaces", "", "team")
    ns["metadata"]["deletionTimestamp"] = o.now()
    cl.put("namespaces", ns)
    assert cl.store.get("configmaps", "team", "cm") is None
    assert cl.store.get("namespaces", "", "team") is None
