"""The local cluster runs ordinary manifests as real processes in network namespaces."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

from e2ekit import ROOT, Cluster

EXAMPLES = ROOT / "examples"


def echo_pods(c: Cluster) -> list[dict]:
    return [p for p in c.pods("sample-server") if p["metadata"]["name"].startswith("echo-")]


def pid_of(pod: dict) -> int:
    cid = pod["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("process://")
    return int(cid.removeprefix("process://"))


def test_examples_reachable_by_service_names(cluster: Cluster) -> None:
    out = cluster.apply(EXAMPLES)
    assert "deployment.apps/echo created" in out
    cluster.wait_ready("sample-server", count=2)
    cluster.wait_ready("sample-client", count=1)
    (echo,) = echo_pods(cluster)
    assert echo["spec"]["nodeName"] == "node2"
    client = cluster.pods("sample-client")[0]
    assert client["spec"]["nodeName"] == "node1"
    for url in ("http://echo.sample-server", "http://echo.sample-server.svc.cluster.local/p?q=1"):
        r = cluster.curl("sample-client", "deploy/curl", url)
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["pod"] == echo["metadata"]["name"]
        assert body["node"] == "node2" and body["namespace"] == "sample-server"
        assert body["remote_ip"] == client["status"]["podIP"]
    assert json.loads(cluster.curl("sample-client", "deploy/curl",
                                   "http://echo.sample-server/p?q=1").stdout)["path"] == "/p?q=1"
    # Bare names resolve only inside the service's own namespace.
    r = cluster.curl("sample-server", "deploy/neighbour", "http://echo")
    assert r.returncode == 0 and json.loads(r.stdout)["pod"] == echo["metadata"]["name"]
    assert cluster.curl("sample-client", "deploy/curl", "http://echo").returncode == 6


def test_cluster_dns_never_forwards(cluster: Cluster) -> None:
    cluster.wait_ready("sample-client", count=1)
    r = cluster.exec("sample-client", "deploy/curl", "getent", "hosts", "example.com", check=False)
    assert r.returncode != 0 and r.stdout == ""
    r = cluster.exec("sample-client", "deploy/curl", "getent", "hosts",
                     "echo.sample-server.svc.cluster.local", check=False)
    svc = cluster.get("services", "sample-server", "echo")
    assert r.stdout.split()[0] == svc["spec"]["clusterIP"]


def test_pods_run_unprivileged_with_their_identity(cluster: Cluster) -> None:
    cluster.wait_ready("sample-server", count=2)
    (echo,) = echo_pods(cluster)
    st = os.stat(f"/proc/{pid_of(echo)}")
    assert st.st_uid == 65534
    env = Path(f"/proc/{pid_of(echo)}/environ").read_bytes().split(b"\0")
    assert f"POD_NAME={echo['metadata']['name']}".encode() in env
    assert b"SERVICE_ACCOUNT=echo" in env and b"NODE_NAME=node2" in env
    r = cluster.exec("sample-client", "deploy/curl", "id", "-u")
    assert r.stdout.strip() == "65534"


def test_exec_passes_stdin_and_exit_code(cluster: Cluster) -> None:
    cluster.wait_ready("sample-client", count=1)
    r = cluster.z("exec", "-n", "sample-client", "deploy/curl", "--", "sh", "-c",
                  "cat; exit 7", input="hello\n", check=False)
    assert r.returncode == 7 and r.stdout == "hello\n"


def test_killed_container_is_restarted(cluster: Cluster) -> None:
    cluster.wait_ready("sample-server", count=2)
    (echo,) = echo_pods(cluster)
    old = pid_of(echo)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        (pod,) = echo_pods(cluster)
        cs = pod["status"]["containerStatuses"][0]
        if cs["restartCount"] >= 1 and cs["ready"]:
            break
        assert time.monotonic() < deadline, f"not restarted: {cs}"
        time.sleep(0.05)
    assert pid_of(pod) != old
    assert cs["lastState"]["terminated"]["exitCode"] != 0
    r = cluster.curl("sample-client", "deploy/curl", "http://echo.sample-server")
    assert r.returncode == 0 and json.loads(r.stdout)["pod"] == pod["metadata"]["name"]
    table = cluster.z("get", "pods", "-n", "sample-server").stdout
    assert "RESTARTS" in table and "1 (" in table


def test_reapply_changes_nothing_and_template_change_replaces_pods(cluster: Cluster) -> None:
    cluster.wait_ready("sample-server", count=2)
    out = cluster.apply(EXAMPLES)
    assert all(line.endswith("unchanged") for line in out.splitlines()), out
    before = {p["metadata"]["name"] for p in echo_pods(cluster)}
    text = (EXAMPLES / "server.yaml").read_text().replace(
        "          image: zeromesh/http-echo\n",
        "          image: zeromesh/http-echo\n          env:\n            - {name: MODE, value: new}\n")
    out = cluster.apply("-", input=text)
    assert "deployment.apps/echo configured" in out
    deadline = time.monotonic() + 30
    while True:
        pods = echo_pods(cluster)
        names = {p["metadata"]["name"] for p in pods}
        if len(pods) == 1 and not names & before and pods[0]["status"].get("phase") == "Running":
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.1)
    cluster.wait_ready("sample-server", count=2)
    env = Path(f"/proc/{pid_of(pods[0])}/environ").read_bytes().split(b"\0")
    assert b"MODE=new" in env
    cluster.apply(EXAMPLES)   # back to the original template


def test_labels_survive_reapply(cluster: Cluster) -> None:
    cluster.apply(EXAMPLES)
    r = cluster.z("label", "namespace", "sample-client", "team=blue")
    assert "namespace/sample-client labeled" in r.stdout
    cluster.apply(EXAMPLES)
    ns = cluster.get("namespaces", None, "sample-client")
    assert ns["metadata"]["labels"]["team"] == "blue"
    r = cluster.z("label", "namespace", "sample-client", "team=red", check=False)
    assert r.returncode == 1 and "--overwrite" in r.stderr
    cluster.z("label", "namespace", "sample-client", "team-")
    ns = cluster.get("namespaces", None, "sample-client")
    assert "team" not in ns["metadata"].get("labels", {})
    cluster.z("label", "node", "node1", "disk=ssd")
    assert cluster.get("nodes", None, "node1")["metadata"]["labels"]["disk"] == "ssd"


def test_bad_manifests_are_refused_whole_with_location(cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata:
          name: must-not-exist
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: broken
          namespace: must-not-exist
        spec:
          selector:
            matchLabels: {app: a}
          template:
            metadata:
              labels: {app: b}
            spec:
              containers:
                - name: c
                  image: x
                  ports: [{containerPort: 70000}]
        """))
    r = cluster.z("apply", "-f", str(bad), check=False)
    assert r.returncode == 1
    assert "bad.yaml: document 2 (Deployment must-not-exist/broken)" in r.stderr
    assert "containerPort" in r.stderr and "spec.selector" in r.stderr
    assert cluster.z("get", "namespace", "must-not-exist", check=False).returncode == 1
    (tmp_path / "bad2.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x\n")
    r = cluster.z("apply", "-f", str(tmp_path / "bad2.yaml"), check=False)
    assert r.returncode == 1 and "bad2.yaml: document 1" in r.stderr and "YAML" in r.stderr
    (tmp_path / "bad3.yaml").write_text("apiVersion: v9\nkind: Gizmo\nmetadata: {name: x}\n")
    r = cluster.z("apply", "-f", str(tmp_path / "bad3.yaml"), check=False)
    assert r.returncode == 1 and "Gizmo" in r.stderr and "bad3.yaml: document 1" in r.stderr
    (tmp_path / "bad4.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n")
    r = cluster.z("apply", "-f", str(tmp_path / "bad4.yaml"), check=False)
    assert r.returncode == 1 and "namespace 'nowhere' not found" in r.stderr


def test_image_without_command_or_entry_fails_with_event(cluster: Cluster) -> None:
    manifest = textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: noimage}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: mixed, namespace: noimage}
        spec:
          containers:
            - name: unknown
              image: example/not-in-table:1.0
            - name: web
              image: zeromesh/http-echo
              ports: [{containerPort: 8080}]
        """)
    cluster.apply("-", input=manifest)
    deadline = time.monotonic() + 20
    while True:
        pod = cluster.get("pods", "noimage", "mixed")
        states = {c["name"]: c["state"] for c in pod["status"].get("containerStatuses", [])}
        if "waiting" in states.get("unknown", {}) and "running" in states.get("web", {}) \
                and states["unknown"]["waiting"]["reason"] == "ImageNotInTable":
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    assert "example/not-in-table:1.0" in states["unknown"]["waiting"]["message"]
    events = cluster.get("events", "noimage")["items"]
    assert any("no command and no entry in the image table" in e["message"] for e in events)
    assert "ImageNotInTable" in cluster.z("get", "pods", "-n", "noimage").stdout
    # The rest of the pod's namespace keeps working.
    ip = pod["status"]["podIP"]
    r = cluster.curl("sample-client", "deploy/curl", f"http://{ip}:8080/")
    assert r.returncode == 0 and json.loads(r.stdout)["pod"] == "mixed"
    cluster.z("delete", "namespace", "noimage")


def test_delete_removes_pods_and_their_namespaces(cluster: Cluster, tmp_path: Path) -> None:
    f = tmp_path / "tmp.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: scratch}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: spin, namespace: scratch}
        spec:
          replicas: 3
          selector: {matchLabels: {app: spin}}
          template:
            metadata: {labels: {app: spin}}
            spec:
              containers: [{name: s, image: busybox, command: [/bin/sleep, infinity]}]
        """))
    cluster.apply(f)
    cluster.wait_ready("scratch", count=3)
    pods = cluster.pods("scratch")
    assert {p["spec"]["nodeName"] for p in pods} == {"node1", "node2"}   # spread
    pids = [pid_of(p) for p in pods]
    out = cluster.z("delete", "-f", str(f)).stdout
    assert "namespace/scratch deleted" in out
    deadline = time.monotonic() + 20
    while cluster.z("get", "namespace", "scratch", check=False).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    from e2ekit import leftovers
    assert not [x for x in leftovers(cluster.name) if ".scratch." in x]


def test_get_tables_and_errors(cluster: Cluster) -> None:
    out = cluster.z("get", "pods", "-A", "-o", "wide").stdout
    assert out.splitlines()[0].split()[:6] == ["NAMESPACE", "NAME", "READY", "STATUS",
                                               "RESTARTS", "AGE"]
    assert "node2" in out
    svc = cluster.z("get", "svc", "-n", "sample-server").stdout
    assert "ClusterIP" in svc and "80/TCP" in svc
    nodes = cluster.z("get", "nodes").stdout
    assert "node1" in nodes and "Ready" in nodes
    r = cluster.z("get", "widgets", check=False)
    assert r.returncode == 1 and 'resource type "widgets"' in r.stderr
    y = cluster.z("get", "deploy", "echo", "-n", "sample-server", "-o", "yaml").stdout
    assert "kind: Deployment" in y and "readyReplicas: 1" in y


def test_dead_pod_leaves_the_endpoints(cluster: Cluster) -> None:
    manifest = textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: mortal}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: mortal}
        spec:
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: once, namespace: mortal, labels: {app: web}}
        spec:
          restartPolicy: Never
          containers:
            - {name: web, image: zeromesh/http-echo, ports: [{containerPort: 8080}]}
        """)
    cluster.apply("-", input=manifest)
    cluster.wait_ready("mortal", count=1)
    ep = cluster.get("endpoints", "mortal", "web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == \
        [cluster.get("pods", "mortal", "once")["status"]["podIP"]]
    assert cluster.curl("sample-client", "deploy/curl", "http://web.mortal").returncode == 0
    os.kill(pid_of(cluster.get("pods", "mortal", "once")), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(s.get("addresses") for s in cluster.get("endpoints", "mortal", "web")["subsets"]):
        assert time.monotonic() < deadline, "endpoint kept after the pod died"
        time.sleep(0.05)
    pod = cluster.get("pods", "mortal", "once")
    assert pod["status"]["phase"] == "Failed"
    # With no endpoint left the node refuses the service address (connection refused).
    assert cluster.curl("sample-client", "deploy/curl", "http://web.mortal").returncode == 7
    cluster.z("delete", "namespace", "mortal")
