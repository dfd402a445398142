"""`zeromesh waypoint`: istioctl's generate output, flags and errors, and what apply/list/delete ask
of the control plane (a fake API client; no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from zeromesh.api import load_text, validate_all
from zeromesh.cli import waypoint as cli
from zeromesh.cli.client import ApiError
from zeromesh.cli.main import main
from zeromesh.controlplane.model import waypoint_of

GW = "gateways.gateway.networking.k8s.io"
Obj = dict[str, Any]


def expected(name: str = "waypoint", ns: str | None = None, traffic: str | None = None) -> Obj:
    md: Obj = {"name": name}
    if ns:
        md["namespace"] = ns
    if traffic:
        md["labels"] = {"istio.io/waypoint-for": traffic}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": md,
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["waypoint", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "want"), [
    ([], expected()),
    (["-n", "ns1"], expected(ns="ns1")),
    (["--name", "wp", "-n", "ns1", "--for", "workload"], expected("wp", "ns1", "workload")),
    (["--for", "none"], expected(traffic="none")),
    (["--name", ""], expected()),                          # istioctl: empty means the default name
])
def test_generate_prints_istioctls_gateway(capsys: pytest.CaptureFixture[str], args: list[str],
                                           want: Obj) -> None:
    code, out, _ = run(capsys, "generate", *args)
    assert code == 0
    assert yaml.safe_load(out) == want
    assert out.startswith("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n")
    (v,) = validate_all(load_text(out, "gen.yaml"))
    assert waypoint_of(v.obj).ok


@pytest.mark.parametrize(("args", "code", "message"), [
    (["generate", "--name", "none"], 1, "'none' is a reserved value"),
    (["generate", "--name", "Bad_Name"], 1, "invalid waypoint name 'Bad_Name'"),
    (["apply", "--name", "1wp"], 1, "invalid waypoint name '1wp'"),
    (["delete"], 1, "must specify a waypoint name or delete all using --all"),
    (["delete", "wp", "--all"], 1, "cannot specify waypoint names when deleting all waypoints"),
])
def test_argument_errors(capsys: pytest.CaptureFixture[str], args: list[str], code: int,
                         message: str) -> None:
    rc, _, err = run(capsys, *args)
    assert rc == code and message in err


def test_unknown_traffic_type_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["waypoint", "generate", "--for", "bogus"])
    assert e.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_bare_waypoint_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys)
    assert rc == 2 and "generate" in out and "delete" in out


# ---- against a fake control plane -----------------------------------------------------------------
class FakeClient:
    """Enough of zeromesh.cli.client.Client: objects by (resource, ns, name), calls recorded."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.programmed_after = 0          # gets of the Gateway before it reports Programmed=True

    def add(self, resource: str, obj: Obj) -> None:
        md = obj["metadata"]
        self.objects[(resource, md.get("namespace", ""), md["name"])] = obj

    def get(self, resource: str, namespace: str | None = None, name: str | None = None) -> Any:
        if name:
            obj = self.objects.get((resource, namespace or "", name))
            if obj is None:
                raise ApiError(404, f'{resource} "{name}" not found', [])
            if resource == GW and self.programmed_after >= 0:
                self.programmed_after -= 1
                if self.programmed_after < 0:
                    obj["status"] = {"conditions": [{"type": "Programmed", "status": "True"}]}
            return {"items": [copy.deepcopy(obj)]}
        return {"items": [copy.deepcopy(o) for (r, ns, _), o in sorted(self.objects.items())
                          if r == resource and (namespace is None or ns == namespace)]}

    def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        self.calls.append((method, path, body if body is not None else params))
        if path == "/v1/apply":
            for d in body["documents"]:
                self.add(GW, copy.deepcopy(d["body"]))
            return {"results": [], "warnings": []}
        if path == "/v1/label":
            ns = self.objects[("namespaces", "", body["name"])]
            ns["metadata"].setdefault("labels", {}).update(body["set"])
            return {"changed": True}
        if method == "DELETE":
            assert params is not None
            if self.objects.pop((GW, params["namespace"], params["name"]), None) is None:
                raise ApiError(404, "not found", [])
            return {}
        raise AssertionError(f"unexpected call {method} {path}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    client.add("namespaces", {"metadata": {"name": "ns1", "labels": {"istio.io/dataplane-mode": "ambient"}}})
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return client


def waypoint_obj(name: str, ns: str = "ns1", labels: dict[str, str] | None = None,
                 status: str | None = None, cls: str = "istio-waypoint") -> Obj:
    gw = expected(name, ns)
    gw["spec"]["gatewayClassName"] = cls
    if labels:
        gw["metadata"]["labels"] = labels
    if status:
        gw["status"] = {"addresses": [{"type": "IPAddress", "value": "10.96.0.20"}],
                        "conditions": [{"type": "Programmed", "status": status, "reason": "R",
                                        "message": "M"}]}
    return gw


def test_apply_writes_the_gateway_and_enrolls_the_namespace(capsys: pytest.CaptureFixture[str],
                                                             fake: FakeClient) -> None:
    rc, out, err = run(capsys, "apply", "-n", "ns1", "--name", "wp", "--for", "service",
                       "--enroll-namespace")
    assert rc == 0, err
    assert out.splitlines() == ["waypoint ns1/wp applied",
                                'namespace ns1 labeled with "istio.io/use-waypoint: wp"']
    (apply_call,) = [c for c in fake.calls if c[1] == "/v1/apply"]
    assert apply_call[2]["documents"][0]["body"] == expected("wp", "ns1", "service")
    assert fake.objects[("namespaces", "", "ns1")]["metadata"]["labels"]["istio.io/use-waypoint"] == "wp"


def test_apply_does_not_steal_a_namespace_without_overwrite(capsys: pytest.CaptureFixture[str],
                                                           fake: FakeClient) -> None:
    fake.objects[("namespaces", "", "ns1")]["metadata"]["labels"]["istio.io/use-waypoint"] = "other"
    rc, out, err = run(capsys, "apply", "-n", "ns1", "--enroll-namespace")
    assert rc == 0 and "already uses waypoint 'other'" in err and "--overwrite" in err
    assert not fake.calls
    rc, out, _ = run(capsys, "apply", "-n", "ns1", "--enroll-namespace", "--overwrite")
    assert rc == 0 and "labeled" in out
    labels = fake.objects[("namespaces", "", "ns1")]["metadata"]["labels"]
    assert labels["istio.io/use-waypoint"] == "waypoint"


def test_apply_to_a_missing_namespace(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    rc, _, err = run(capsys, "apply", "-n", "nope")
    assert rc == 1 and "namespace 'nope' not found" in err


def test_apply_wait(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    fake.programmed_after = 2
    rc, out, _ = run(capsys, "apply", "-n", "ns1", "--name", "wp", "--wait")
    assert rc == 0 and out.splitlines() == ["waypoint ns1/wp applied", "waypoint ns1/wp is ready"]


def test_apply_wait_times_out_naming_the_waypoint(capsys: pytest.CaptureFixture[str],
                                                  fake: FakeClient) -> None:
    fake.programmed_after = -1
    rc, _, err = run(capsys, "apply", "-n", "ns1", "--name", "wp", "-w", "--waypoint-timeout", "0.3")
    assert rc == 1 and "timed out after 0.3s waiting for waypoint ns1/wp to be programmed" in err


def test_list(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    rc, out, _ = run(capsys, "list", "-n", "ns1")
    assert rc == 0 and out == "No waypoints found.\n"
    fake.add(GW, waypoint_obj("wp", status="True"))
    fake.add(GW, waypoint_obj("wl", labels={"istio.io/waypoint-for": "workload"}))
    fake.add(GW, waypoint_obj("ingress", cls="istio"))
    fake.add(GW, waypoint_obj("far", ns="ns2", status="False"))
    rc, out, _ = run(capsys, "list", "-n", "ns1")
    rows = [line.split() for line in out.splitlines()]
    assert rows == [["NAME", "TRAFFIC", "TYPE", "PROGRAMMED", "ADDRESS"],
                    ["wl", "workload", "False", "<none>"],
                    ["wp", "service", "True", "10.96.0.20"]]
    rc, out, _ = run(capsys, "list", "-A")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:2] == ["NAMESPACE", "NAME"] and [r[:2] for r in rows[1:]] == [
        ["ns1", "wl"], ["ns1", "wp"], ["ns2", "far"]]


def test_status(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    fake.add(GW, waypoint_obj("wp", status="False"))
    rc, out, _ = run(capsys, "status", "-n", "ns1")
    assert rc == 0 and out.splitlines()[1].split() == ["wp", "False", "Programmed", "R", "M"]
    rc, _, err = run(capsys, "status", "-n", "ns1", "nope")
    assert rc == 1 and "waypoint ns1/nope not found" in err


def test_delete(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    fake.add(GW, waypoint_obj("wp"))
    fake.add(GW, waypoint_obj("ingress", cls="istio"))
    fake.objects[("namespaces", "", "ns1")]["metadata"]["labels"]["istio.io/use-waypoint"] = "wp"
    rc, out, err = run(capsys, "delete", "wp", "ingress", "-n", "ns1")
    assert rc == 1
    assert out == "waypoint ns1/wp deleted\n"
    assert "error: waypoint ns1/ingress not found" in err         # not a waypoint: left alone
    assert "istio.io/use-waypoint=wp" in err                      # the label istioctl leaves behind
    assert (GW, "ns1", "ingress") in fake.objects and (GW, "ns1", "wp") not in fake.objects


def test_delete_all(capsys: pytest.CaptureFixture[str], fake: FakeClient) -> None:
    fake.add(GW, waypoint_obj("a"))
    fake.add(GW, waypoint_obj("b"))
    fake.add(GW, waypoint_obj("c", ns="ns2"))
    rc, out, err = run(capsys, "delete", "--all", "-n", "ns1")
    assert rc == 0 and out.splitlines() == ["waypoint ns1/a deleted", "waypoint ns1/b deleted"]
    assert err == "" and (GW, "ns2", "c") in fake.objects
