"""kubectl-compatible tables: every resource, wide, all-namespaces and the tricky cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from zeromesh.cli.tables import COLUMN_SETS, age, render_table

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, ns: str | None = "default", ago: float = 300) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "creationTimestamp": ts(ago)}
    if ns is not None:
        m["namespace"] = ns
    return m


def lines(*rows: str) -> str:
    return "\n".join(rows)


# --------------------------------------------------------------------------- age

M, H, D = 60, 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (-0.5, "0s"),
        (-1.9, "0s"),  # up to a second of clock skew reads as now
        (-2, "<invalid>"),
        (5, "5s"),
        (59, "59s"),
        (60, "60s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (192, "3m12s"),
        (9 * M + 59, "9m59s"),
        (10 * M, "10m"),
        (10 * M + 30, "10m"),
        (45 * M, "45m"),
        (3 * H - 1, "179m"),
        (3 * H, "3h"),
        (3 * H + 20 * M, "3h20m"),
        (8 * H - 1, "7h59m"),
        (8 * H, "8h"),
        (47 * H + 59 * M, "47h"),
        (48 * H, "2d"),
        (3 * D + 4 * H, "3d4h"),
        (8 * D - 1, "7d23h"),
        (8 * D, "8d"),
        (30 * D, "30d"),
        (2 * 365 * D - 1, "729d"),
        (2 * 365 * D, "2y"),
        (2 * 365 * D + 10 * D, "2y10d"),
        (8 * 365 * D, "8y"),
        (20 * 365 * D + 100 * D, "20y"),
    ],
)
def test_age_follows_kubectl_human_duration(seconds: float, expected: str) -> None:
    stamp = (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert age(stamp, NOW) == expected


@pytest.mark.parametrize("stamp", [None, "", "yesterday"])
def test_age_unknown(stamp: str | None) -> None:
    assert age(stamp, NOW) == "<unknown>"


def test_age_accepts_fractions_offsets_and_naive_now() -> None:
    assert age("2026-11-23T09:59:50.123456Z", NOW) == "9s"
    assert age("2026-11-23T11:59:00+02:00", NOW) == "60s"
    assert age(ts(30), NOW.replace(tzinfo=None)) == "30s"


# --------------------------------------------------------------------------- pods


def pod(name: str, *, statuses: list[dict[str, Any]] | None = None, containers: int = 1,
        phase: str = "Running", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": meta(name, "ns1", 192),
        "spec": {"containers": [{"name": f"c{i}"} for i in range(containers)]},
        "status": {"phase": phase, "containerStatuses": statuses or []},
    }
    for key, value in extra.items():
        p[key].update(value)
    return p


RUNNING = {"ready": True, "restartCount": 0, "state": {"running": {"startedAt": ts(100)}}}


@pytest.mark.parametrize(
    ("obj", "ready", "status", "restarts"),
    [
        (pod("a", statuses=[RUNNING]), "1/1", "Running", "0"),
        (pod("a", statuses=[RUNNING, {"ready": False, "state": {"running": {}}}], containers=2),
         "1/2", "Running", "0"),
        (pod("a", phase="Pending"), "0/1", "Pending", "0"),
        (pod("a", phase="Pending", statuses=[
            {"ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}]),
         "0/1", "ContainerCreating", "0"),
        (pod("a", phase="Pending", statuses=[
            {"ready": False, "state": {"waiting": {"reason": "ImageNotInTable"}}}]),
         "0/1", "ImageNotInTable", "0"),
        (pod("a", statuses=[{
            "ready": False, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ts(12)}},
        }]), "0/1", "CrashLoopBackOff", "3 (12s ago)"),
        # restarts without a known finish time show just the count
        (pod("a", statuses=[{**RUNNING, "restartCount": 2}]), "1/1", "Running", "2"),
        # the most recent termination across containers counts
        (pod("a", containers=2, statuses=[
            {**RUNNING, "restartCount": 1,
             "lastState": {"terminated": {"finishedAt": ts(3 * H)}}},
            {**RUNNING, "restartCount": 4,
             "lastState": {"terminated": {"finishedAt": ts(200)}}},
        ]), "2/2", "Running", "5 (3m20s ago)"),
        (pod("a", phase="Failed", statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
         "0/1", "Error", "0"),
        (pod("a", phase="Succeeded", statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
         "0/1", "Completed", "0"),
        (pod("a", phase="Failed", statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 137}}}]),
         "0/1", "ExitCode:137", "0"),
        (pod("a", phase="Failed", statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 0, "signal": 9}}}]),
         "0/1", "Signal:9", "0"),
        # first container's reason wins (kubectl walks them backwards)
        (pod("a", containers=2, statuses=[
            {"ready": False, "state": {"waiting": {"reason": "ErrImagePull"}}},
            {"ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}},
        ]), "0/2", "ErrImagePull", "0"),
        # one finished, one still running and ready → Running (or NotReady)
        (pod("a", containers=2, statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            RUNNING,
        ], status={"conditions": [{"type": "Ready", "status": "True"}]}),
         "1/2", "Running", "0"),
        (pod("a", containers=2, statuses=[
            {"ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            RUNNING,
        ]), "1/2", "NotReady", "0"),
        (pod("a", statuses=[RUNNING], metadata={"deletionTimestamp": ts(5)}),
         "1/1", "Terminating", "0"),
        (pod("a", phase="Succeeded", metadata={"deletionTimestamp": ts(5)}),
         "0/1", "Succeeded", "0"),
        (pod("a", metadata={"deletionTimestamp": ts(5)}, status={"reason": "NodeLost"}),
         "0/1", "Unknown", "0"),
        (pod("a", phase="Failed", status={"reason": "Evicted"}), "0/1", "Evicted", "0"),
        (pod("a", phase="Pending", status={"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
         "0/1", "SchedulingGated", "0"),
        # init containers
        (pod("a", phase="Pending", spec={"initContainers": [{"name": "i0"}, {"name": "i1"}]},
             status={"initContainerStatuses": [
                 {"state": {"terminated": {"exitCode": 0}}},
                 {"state": {"running": {}}}]}),
         "0/1", "Init:1/2", "0"),
        (pod("a", phase="Pending", spec={"initContainers": [{"name": "i0"}]},
             status={"initContainerStatuses": [
                 {"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                  "lastState": {"terminated": {"finishedAt": ts(7)}}}]}),
         "0/1", "Init:CrashLoopBackOff", "2 (7s ago)"),
        (pod("a", phase="Pending", spec={"initContainers": [{"name": "i0"}]},
             status={"initContainerStatuses": [
                 {"state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}),
         "0/1", "Init:Error", "0"),
    ],
)
def test_pod_ready_status_restarts(obj: dict[str, Any], ready: str, status: str,
                                   restarts: str) -> None:
    header, row = render_table("pods", [obj], now=NOW).split("\n")
    assert header.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    cells = [c for c in row.split("   ") if c]
    assert [c.strip() for c in cells] == ["a", ready, status, restarts, "3m12s"]


def test_pods_table_layout() -> None:
    pods = [
        pod("echo-5d9c7b-x2x4z", statuses=[RUNNING]),
        pod("b", phase="Pending", statuses=[
            {"ready": False, "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"finishedAt": ts(12)}}}]),
    ]
    assert render_table("pods", pods, now=NOW) == lines(
        "NAME                READY   STATUS             RESTARTS      AGE",
        "echo-5d9c7b-x2x4z   1/1     Running            0             3m12s",
        "b                   0/1     CrashLoopBackOff   3 (12s ago)   3m12s",
    )


def test_pods_wide_and_all_namespaces() -> None:
    pods = [
        pod("a", statuses=[RUNNING], spec={"nodeName": "node-1"},
            status={"podIP": "10.244.1.3"}),
        pod("b", phase="Pending", metadata={"namespace": "ns2"}),
        pod("c", statuses=[RUNNING], spec={"readinessGates": [
            {"conditionType": "x/one"}, {"conditionType": "x/two"}]},
            status={"podIPs": [{"ip": "10.244.2.9"}], "nominatedNodeName": "node-2",
                    "conditions": [{"type": "x/one", "status": "True"}]}),
    ]
    assert render_table("pods", pods, wide=True, all_namespaces=True, now=NOW) == lines(
        "NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE     IP           NODE     "
        "NOMINATED NODE   READINESS GATES",
        "ns1         a      1/1     Running   0          3m12s   10.244.1.3   node-1   "
        "<none>           <none>",
        "ns2         b      0/1     Pending   0          3m12s   <none>       <none>   "
        "<none>           <none>",
        "ns1         c      1/1     Running   0          3m12s   10.244.2.9   <none>   "
        "node-2           1/2",
    )


# --------------------------------------------------------------------------- services


def svc(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": meta(name, "ns1", 3600), "spec": spec, "status": status or {}}


@pytest.mark.parametrize(
    ("obj", "wide", "external"),
    [
        (svc("s", {"clusterIP": "10.96.0.5"}), False, "<none>"),
        (svc("s", {"type": "ClusterIP", "externalIPs": ["1.2.3.4", "5.6.7.8"]}), False,
         "1.2.3.4,5.6.7.8"),
        (svc("s", {"type": "NodePort"}), False, "<none>"),
        (svc("s", {"type": "LoadBalancer"}), False, "<pending>"),
        (svc("s", {"type": "LoadBalancer"},
             {"loadBalancer": {"ingress": [{"ip": "172.18.0.9"}, {"hostname": "lb.example"}]}}),
         False, "172.18.0.9,lb..."),
        (svc("s", {"type": "LoadBalancer"},
             {"loadBalancer": {"ingress": [{"ip": "172.18.0.9"}, {"hostname": "lb.example"}]}}),
         True, "172.18.0.9,lb.example"),
        (svc("s", {"type": "LoadBalancer"},
             {"loadBalancer": {"ingress": [{"ip": "172.18.0.9"}]}}), False, "172.18.0.9"),
        (svc("s", {"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]},
             {"loadBalancer": {"ingress": [{"ip": "172.18.0.9"}]}}), False,
         "172.18.0.9,1.1.1.1"),
        (svc("s", {"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]}), False, "1.1.1.1"),
        (svc("s", {"type": "ExternalName", "externalName": "db.example.com"}), False,
         "db.example.com"),
    ],
)
def test_service_external_ip(obj: dict[str, Any], wide: bool, external: str) -> None:
    header, row = render_table("services", [obj], wide=wide, now=NOW).split("\n")
    start = header.index("EXTERNAL-IP")
    assert row[start:].split("   ")[0].strip() == external


def test_services_table() -> None:
    objs = [
        svc("echo", {"type": "NodePort", "clusterIP": "10.96.0.10",
                     "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}],
                     "selector": {"version": "v1", "app": "echo"}}),
        svc("headless", {"clusterIP": "None", "ports": [{"port": 8080}]}),
        svc("bare", {}),
    ]
    assert render_table("services", objs, now=NOW) == lines(
        "NAME       TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)               AGE",
        "echo       NodePort    10.96.0.10   <none>        80:30080/TCP,53/UDP   60m",
        "headless   ClusterIP   None         <none>        8080/TCP              60m",
        "bare       ClusterIP   <none>       <none>        <none>                60m",
    )
    assert render_table("services", objs, wide=True, now=NOW).split("\n")[0:2] == [
        "NAME       TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)               AGE   SELECTOR",
        "echo       NodePort    10.96.0.10   <none>        80:30080/TCP,53/UDP   60m   "
        "app=echo,version=v1",
    ]
    assert render_table("services", objs, wide=True, now=NOW).split("\n")[2].endswith(
        "60m   <none>"
    )


# --------------------------------------------------------------------------- workloads


def test_deployments_and_wide() -> None:
    objs = [
        {"metadata": meta("echo", ago=45 * M),
         "spec": {"replicas": 3, "selector": {
             "matchLabels": {"app": "echo"},
             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                  {"key": "canary", "operator": "DoesNotExist"}]},
                  "template": {"spec": {"containers": [
                      {"name": "echo", "image": "echo:1"}, {"name": "side", "image": "sd:2"}]}}},
         "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
                    "availableReplicas": 2}},
        {"metadata": meta("new", ago=5), "spec": {}},
    ]
    assert render_table("deployments.apps", objs, now=NOW) == lines(
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE",
        "echo   2/3     3            2           45m",
        "new    0/1     0            0           5s",
    )
    assert render_table("deployments.apps", objs, wide=True, now=NOW) == lines(
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES        SELECTOR",
        "echo   2/3     3            2           45m   echo,side    echo:1,sd:2   "
        "app=echo,!canary,tier in (a,b)",
        "new    0/1     0            0           5s",
    )


def test_replicasets() -> None:
    objs = [{"metadata": meta("echo-5d9c7b", ago=2 * D),
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "echo"}}},
             "status": {"replicas": 2, "readyReplicas": 1}}]
    assert render_table("replicasets.apps", objs, now=NOW) == lines(
        "NAME          DESIRED   CURRENT   READY   AGE",
        "echo-5d9c7b   2         2         1       2d",
    )


# --------------------------------------------------------------------------- cluster objects


def test_namespaces_are_cluster_scoped() -> None:
    objs = [{"metadata": meta("default", None, 8 * D)},
            {"metadata": meta("gone", None, 60), "status": {"phase": "Terminating"}}]
    expected = lines(
        "NAME      STATUS        AGE",
        "default   Active        8d",
        "gone      Terminating   60s",
    )
    assert render_table("namespaces", objs, now=NOW) == expected
    assert render_table("namespaces", objs, all_namespaces=True, wide=True, now=NOW) == expected


def test_nodes() -> None:
    objs = [
        {"metadata": {**meta("node-1", None, H), "labels": {
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
            "kubernetes.io/hostname": "node-1"}},
         "spec": {"podCIDR": "10.244.1.0/24"},
         "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "Hostname", "address": "node-1"},
                                  {"type": "InternalIP", "address": "172.30.0.2"}],
                    "nodeInfo": {"kubeletVersion": "v1.31.0"}}},
        {"metadata": {**meta("node-2", None, H), "labels": {"kubernetes.io/role": "edge"}},
         "spec": {"unschedulable": True},
         "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"metadata": meta("node-3", None, H)},
    ]
    assert render_table("nodes", objs, all_namespaces=True, now=NOW) == lines(
        "NAME     STATUS                        ROLES                  AGE   VERSION",
        "node-1   Ready                         control-plane,worker   60m   v1.31.0",
        "node-2   NotReady,SchedulingDisabled   edge                   60m   zeromesh",
        "node-3   Unknown                       <none>                 60m   zeromesh",
    )
    wide = render_table("nodes", objs, wide=True, now=NOW).split("\n")
    assert wide[0].endswith("VERSION    INTERNAL-IP   POD-CIDR")
    assert wide[1].endswith("v1.31.0    172.30.0.2    10.244.1.0/24")
    assert wide[3].endswith("zeromesh   <none>        <none>")


def test_small_namespaced_tables() -> None:
    sa = [{"metadata": meta("default"), "secrets": [{"name": "t"}]},
          {"metadata": meta("bookinfo-productpage")}]
    assert render_table("serviceaccounts", sa, now=NOW) == lines(
        "NAME                   SECRETS   AGE",
        "default                1         5m",
        "bookinfo-productpage   0         5m",
    )
    secrets = [{"metadata": meta("tls"), "type": "kubernetes.io/tls",
                "data": {"tls.crt": "", "tls.key": ""}},
               {"metadata": meta("s"), "data": {"a": ""}, "stringData": {"a": "x", "b": "y"}}]
    assert render_table("secrets", secrets, now=NOW) == lines(
        "NAME   TYPE                DATA   AGE",
        "tls    kubernetes.io/tls   2      5m",
        "s      Opaque              2      5m",
    )
    cms = [{"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}},
           {"metadata": meta("empty")}]
    assert render_table("configmaps", cms, now=NOW) == lines(
        "NAME    DATA   AGE",
        "cfg     3      5m",
        "empty   0      5m",
    )


def test_small_tables_all_namespaces() -> None:
    cms = [{"metadata": meta("cfg", "kube-system"), "data": {"a": "1"}}]
    assert render_table("configmaps", cms, all_namespaces=True, now=NOW) == lines(
        "NAMESPACE     NAME   DATA   AGE",
        "kube-system   cfg    1      5m",
    )


# --------------------------------------------------------------------------- endpoints


def ep(name: str, subsets: list[dict[str, Any]] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": meta(name)}
    if subsets is not None:
        obj["subsets"] = subsets
    return obj


def addrs(*ips: str) -> list[dict[str, str]]:
    return [{"ip": ip} for ip in ips]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ep("e", None), "<none>"),
        (ep("e", []), "<none>"),
        (ep("e", [{"notReadyAddresses": addrs("10.0.0.1"), "ports": [{"port": 80}]}]), "<none>"),
        (ep("e", [{"addresses": addrs("10.244.2.5", "10.244.1.3"), "ports": [{"port": 80}]}]),
         "10.244.2.5:80,10.244.1.3:80"),
        (ep("e", [{"addresses": addrs("10.0.0.1", "10.0.0.2")}]), "10.0.0.1,10.0.0.2"),
        (ep("e", [{"addresses": addrs("10.0.0.1", "10.0.0.2"),
                   "ports": [{"port": 80}, {"port": 443}]}]),
         "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."),
        (ep("e", [{"addresses": addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"),
                   "ports": [{"port": 8080}]}]),
         "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 2 more..."),
        (ep("e", [{"addresses": addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"),
                   "ports": [{"port": 80}]},
                  {"addresses": addrs("10.0.1.1"), "ports": [{"port": 81}]}]),
         "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."),
        (ep("e", [{"addresses": addrs("fd00::1"), "ports": [{"port": 80}]}]), "[fd00::1]:80"),
    ],
)
def test_endpoints(obj: dict[str, Any], expected: str) -> None:
    header, row = render_table("endpoints", [obj], now=NOW).split("\n")
    width = max(len("ENDPOINTS"), len(expected)) + 3
    assert header == "NAME   " + "ENDPOINTS".ljust(width) + "AGE"
    assert row == "e      " + expected.ljust(width) + "5m"


# --------------------------------------------------------------------------- events


def test_events_sorted_by_last_seen() -> None:
    events = [
        {"metadata": meta("e1", ago=50), "type": "Normal", "reason": "Started",
         "involvedObject": {"kind": "Pod", "name": "echo-1"}, "message": " Started container \n",
         "lastTimestamp": ts(10), "firstTimestamp": ts(40), "count": 2,
         "source": {"component": "kubelet", "host": "node-1"}},
        {"metadata": meta("e2", ago=50), "type": "Warning", "reason": "BackOff",
         "involvedObject": {"kind": "Pod", "name": "echo-2", "fieldPath": "spec.containers{c}"},
         "message": "Back-off restarting", "eventTime": "2026-11-23T09:59:00.000000Z",
         "reportingComponent": "zeromesh-runner", "reportingInstance": "node-2"},
        {"metadata": meta("e3", ago=600), "type": "Normal", "reason": "ScalingReplicaSet",
         "involvedObject": {"kind": "Deployment", "name": "echo"}, "message": "Scaled up"},
        {"metadata": meta("e4", ago=30), "type": "Normal", "reason": "Sync",
         "involvedObject": {"kind": "Node"}, "message": "x",
         "series": {"count": 7, "lastObservedTime": "2026-11-23T09:59:58.5Z"}},
    ]
    assert render_table("events", events, now=NOW) == lines(
        "LAST SEEN   TYPE      REASON              OBJECT            MESSAGE",
        "10m         Normal    ScalingReplicaSet   deployment/echo   Scaled up",
        "60s         Warning   BackOff             pod/echo-2        Back-off restarting",
        "10s         Normal    Started             pod/echo-1        Started container",
        "1s          Normal    Sync                node              x",
    )
    wide = render_table("events", events, wide=True, all_namespaces=True, now=NOW).split("\n")
    assert wide[0] == (
        "NAMESPACE   LAST SEEN   TYPE      REASON              OBJECT            "
        "SUBOBJECT            SOURCE                    MESSAGE               FIRST SEEN   "
        "COUNT   NAME"
    )
    assert wide[2] == (
        "default     60s         Warning   BackOff             pod/echo-2        "
        "spec.containers{c}   zeromesh-runner, node-2   Back-off restarting   60s          "
        "1       e2"
    )
    assert wide[3].endswith(
        "kubelet, node-1           Started container     40s          2       e1"
    )
    assert wide[4].endswith("7       e4")


# --------------------------------------------------------------------------- mesh resources


def test_gateway_api_gateways() -> None:
    objs = [
        {"metadata": meta("bookinfo-gateway"), "spec": {"gatewayClassName": "istio"},
         "status": {"addresses": [{"type": "IPAddress", "value": "172.18.0.50"},
                                  {"value": "172.18.0.51"}],
                    "conditions": [{"type": "Accepted", "status": "True"},
                                   {"type": "Programmed", "status": "False"}]}},
        {"metadata": meta("waypoint"), "spec": {"gatewayClassName": "istio-waypoint"}},
    ]
    assert render_table("gateways.gateway.networking.k8s.io", objs, now=NOW) == lines(
        "NAME               CLASS            ADDRESS       PROGRAMMED   AGE",
        "bookinfo-gateway   istio            172.18.0.50   False        5m",
        "waypoint           istio-waypoint                 Unknown      5m",
    )


def test_gateway_classes_are_cluster_scoped() -> None:
    objs = [{"metadata": meta("istio", None),
             "spec": {"controllerName": "istio.io/gateway-controller", "description": "d"},
             "status": {"conditions": [{"type": "Accepted", "status": "True"}]}}]
    assert render_table(
        "gatewayclasses.gateway.networking.k8s.io", objs, all_namespaces=True, wide=True, now=NOW
    ) == lines(
        "NAME    CONTROLLER                    ACCEPTED   AGE   DESCRIPTION",
        "istio   istio.io/gateway-controller   True       5m    d",
    )


def test_istio_and_route_tables() -> None:
    vs = [{"metadata": meta("reviews"),
           "spec": {"hosts": ["reviews", "reviews.ns1.svc.cluster.local"],
                    "gateways": ["gateway-ns1"]}},
          {"metadata": meta("ratings"), "spec": {"hosts": ["ratings"]}}]
    assert render_table("virtualservices.networking.istio.io", vs, now=NOW) == lines(
        "NAME      GATEWAYS          HOSTS                                         AGE",
        'reviews   ["gateway-ns1"]   ["reviews","reviews.ns1.svc.cluster.local"]   5m',
        'ratings                     ["ratings"]                                   5m',
    )
    dr = [{"metadata": meta("reviews"), "spec": {"host": "reviews"}}]
    assert render_table("destinationrules.networking.istio.io", dr, now=NOW) == lines(
        "NAME      HOST      AGE",
        "reviews   reviews   5m",
    )
    ap = [{"metadata": meta("deny"), "spec": {"action": "DENY"}},
          {"metadata": meta("allow-all"), "spec": {}}]
    assert render_table("authorizationpolicies.security.istio.io", ap, now=NOW) == lines(
        "NAME        ACTION   AGE",
        "deny        DENY     5m",
        "allow-all            5m",
    )
    pa = [{"metadata": meta("default", "istio-system"), "spec": {"mtls": {"mode": "STRICT"}}}]
    assert render_table("peerauthentications.security.istio.io", pa, all_namespaces=True,
                        now=NOW) == lines(
        "NAMESPACE      NAME      MODE     AGE",
        "istio-system   default   STRICT   5m",
    )
    hr = [{"metadata": meta("web"), "spec": {"hostnames": ["a.example", "<b>&"]}},
          {"metadata": meta("any"), "spec": {}}]
    assert render_table("httproutes.gateway.networking.k8s.io", hr, now=NOW) == lines(
        "NAME   HOSTNAMES                             AGE",
        'web    ["a.example","\\u003cb\\u003e\\u0026"]   5m',
        "any                                          5m",
    )
    gw = [{"metadata": meta("ingress"), "spec": {"servers": []}}]
    assert render_table("gateways.networking.istio.io", gw, now=NOW) == lines(
        "NAME      AGE",
        "ingress   5m",
    )


def test_generic_resources() -> None:
    objs = [{"metadata": meta("w", "ns1")}]
    assert render_table("telemetries.telemetry.istio.io", objs, now=NOW) == lines(
        "NAME   AGE",
        "w      5m",
    )
    assert render_table("telemetries.telemetry.istio.io", objs, all_namespaces=True,
                        now=NOW) == lines(
        "NAMESPACE   NAME   AGE",
        "ns1         w      5m",
    )
    # Without namespaces on the objects, an unknown resource is cluster-scoped.
    crs = [{"metadata": {"name": "cr"}}]
    assert render_table("clusterthings.example.com", crs, all_namespaces=True, now=NOW) == lines(
        "NAME   AGE",
        "cr     <unknown>",
    )


# --------------------------------------------------------------------------- layout rules


def test_empty_list_renders_nothing() -> None:
    for resource in [*COLUMN_SETS, "unknown.example.com"]:
        assert render_table(resource, [], now=NOW) == ""


@pytest.mark.parametrize("resource", sorted(COLUMN_SETS))
@pytest.mark.parametrize("wide", [False, True])
def test_every_table_tolerates_bare_objects(resource: str, wide: bool) -> None:
    out = render_table(resource, [{"metadata": {"name": "x"}}, {}], wide=wide,
                       all_namespaces=True, now=NOW)
    header, *rows = out.split("\n")
    assert header == header.upper() and len(rows) == 2
    assert all(line == line.rstrip() for line in out.split("\n"))


def test_default_now_is_current_time() -> None:
    fresh = {"metadata": {"name": "x", "creationTimestamp": datetime.now(UTC).isoformat()}}
    assert render_table("configmaps", [fresh]).split("\n")[1].split()[-1] in {"0s", "1s", "2s"}
