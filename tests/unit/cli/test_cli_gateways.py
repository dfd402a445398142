"""`get gateway` lists Istio and Gateway API gateways in one table with where each is reachable;
`get svc -n istio-system` shows the ingress Service as kubectl shows a LoadBalancer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from zeromesh.cli.main import BOTH_GATEWAYS, ingress_line
from zeromesh.cli.tables import gateway_address, render_gateways, render_table
from zeromesh.controlplane import ingress

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ISTIO = "networking.istio.io/v1"
GAPI = "gateway.networking.k8s.io/v1"
PORTS = {"80": 40002, "443": 40003}


def meta(name: str, ns: str = "default", ago: float = 300) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"name": name, "namespace": ns, "creationTimestamp": created}


def ingress_svc() -> dict[str, Any]:
    svc = ingress.service(PORTS)
    svc["metadata"].update(creationTimestamp=meta("x", ago=120)["creationTimestamp"])
    svc["spec"]["clusterIP"] = "10.96.0.10"
    return svc


def istio_gw(name: str, ns: str, ports: list[int], selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"servers": [{"port": {"number": p, "name": f"p{p}", "protocol": "HTTP"},
                                         "hosts": ["*"]} for p in ports]}
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": ISTIO, "kind": "Gateway", "metadata": meta(name, ns), "spec": spec}


def api_gw(name: str, ns: str, cls: str, ports: list[int], status: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"apiVersion": GAPI, "kind": "Gateway", "metadata": meta(name, ns),
            "spec": {"gatewayClassName": cls,
                     "listeners": [{"name": f"l{p}", "port": p, "protocol": "HTTP"} for p in ports]},
            **({"status": status} if status else {})}


def test_load_balancer_row_like_kubectl() -> None:
    assert render_table("services", [ingress_svc()], now=NOW) == "\n".join([
        "NAME                   TYPE           CLUSTER-IP   EXTERNAL-IP   "
        "PORT(S)                                AGE",
        "istio-ingressgateway   LoadBalancer   10.96.0.10   127.0.0.1     "
        "15021/TCP,80:40002/TCP,443:40003/TCP   2m",
    ])


def test_both_kinds_in_one_table() -> None:
    waypoint_status = {"addresses": [{"type": "IPAddress", "value": "10.96.0.12"}],
                       "conditions": [{"type": "Programmed", "status": "True"}]}
    objs = [
        api_gw("waypoint", "ns2", "istio-waypoint", [15008], waypoint_status),
        istio_gw("web", "ns1", [443, 80], {"istio": "ingressgateway"}),
        api_gw("web", "ns1", "istio", [8080, 80],
               {"conditions": [{"type": "Programmed", "status": "False"}]}),
        istio_gw("egress", "ns1", [80], {"istio": "egressgateway"}),
        istio_gw("any", "ns1", [80]),                    # no selector: every gateway, ours included
        istio_gw("odd", "ns1", [9000], {"istio": "ingressgateway"}),
    ]
    out = render_gateways(objs, ingress_svc(), all_namespaces=True, now=NOW)
    assert out == "\n".join([
        "NAMESPACE   NAME       CLASS                 ADDRESS           PROGRAMMED   AGE",
        "ns1         any        networking.istio.io   127.0.0.1:40002   Unknown      5m",
        "ns1         egress     networking.istio.io                     Unknown      5m",
        "ns1         odd        networking.istio.io                     Unknown      5m",
        "ns1         web        networking.istio.io   127.0.0.1:40003   Unknown      5m",
        "ns1         web        istio                 127.0.0.1:40002   False        5m",
        "ns2         waypoint   istio-waypoint        10.96.0.12        True         5m",
    ])
    one_ns = render_gateways(objs[:1], None, now=NOW).splitlines()
    assert one_ns[0].split() == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
    labelled = render_gateways(objs[:1], None, show_labels=True, now=NOW).splitlines()
    assert labelled[0].split()[-1] == "LABELS" and labelled[1].endswith("<none>")
    assert render_gateways([], None) == ""


def test_address_without_the_ingress_gateway() -> None:
    gw = api_gw("web", "ns1", "istio", [80], {"addresses": [{"value": "172.18.0.50"}]})
    assert gateway_address(gw, None) == "172.18.0.50"           # what its status says, if anything
    assert gateway_address(istio_gw("web", "ns1", [80]), None) == ""
    assert gateway_address(gw, ingress_svc()) == "127.0.0.1:40002"


def test_which_names_mean_both_kinds_and_the_up_line() -> None:
    from zeromesh.api import resolve_cli_name
    for name in ("gateway", "gateways", "gw"):
        assert {i.resource for i in resolve_cli_name(name)} == BOTH_GATEWAYS, name
    for name in ("gtw", "gateways.networking.istio.io", "gateways.gateway.networking.k8s.io"):
        assert len(resolve_cli_name(name)) == 1, name
    assert ingress_line(PORTS) == ("ingress gateway: http://127.0.0.1:40002 (80), "
                                   "https://127.0.0.1:40003 (443)")
