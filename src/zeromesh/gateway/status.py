"""Gateway API status for Gateways of class ``istio`` and their HTTPRoutes (pure).

The control plane writes these fragments; they come from the same
:class:`~zeromesh.gateway.attachment.GatewayApiView` the gateway's data plane is built from,
so "Accepted" means "served". Conditions carry ``observedGeneration`` (when the object has a
generation) but no ``lastTransitionTime``: the writer sets it when a condition changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zeromesh.gateway.attachment import (
    CONTROLLER_NAME,
    PUBLISHED_PORTS,
    ApiGateway,
    Condition,
    GatewayApiView,
)


def route_statuses(state: Mapping[str, Mapping[str, Any]], controller_name: str = CONTROLLER_NAME, *,
                   namespaces: Mapping[str, Mapping[str, str]] | None = None,
                   ports: Iterable[int] = PUBLISHED_PORTS) -> dict[str, list[dict[str, Any]]]:
    """HTTPRoute "namespace/name" → its ``status.parents`` entries for Gateway parents of class
    ``istio`` (and parents naming a Gateway that does not exist): ``parentRef`` as written,
    ``controllerName``, and the ``Accepted`` and ``ResolvedRefs`` conditions saying why."""
    view = GatewayApiView.build(state, namespaces=namespaces, ports=ports)
    out: dict[str, list[dict[str, Any]]] = {}
    for route in view.routes:
        out[route.key] = [{
            "parentRef": dict(p.ref),
            "controllerName": controller_name,
            "conditions": [p.accepted.to_dict(route.generation), route.resolved.to_dict(route.generation)],
        } for p in route.parents]
    return out


def gateway_statuses(state: Mapping[str, Mapping[str, Any]], *,
                     namespaces: Mapping[str, Mapping[str, str]] | None = None,
                     ports: Iterable[int] = PUBLISHED_PORTS,
                     address: str | None = None) -> dict[str, dict[str, Any]]:
    """Gateway "namespace/name" → status fragment (``conditions``, ``listeners``, and
    ``addresses`` when ``address`` is given) for every Gateway of class ``istio``."""
    view = GatewayApiView.build(state, namespaces=namespaces, ports=ports)
    out: dict[str, dict[str, Any]] = {}
    for gw in view.gateways.values():
        listeners = []
        for lst in gw.listeners:
            listeners.append({
                "name": lst.name,
                "supportedKinds": [{"group": g, "kind": k} for g, k in lst.supported_kinds],
                "attachedRoutes": view.attached(lst),
                "conditions": [c.to_dict(gw.generation)
                               for c in (lst.accepted, lst.resolved, lst.programmed)],
            })
        status: dict[str, Any] = {
            "conditions": [c.to_dict(gw.generation) for c in _gateway_conditions(gw)],
            "listeners": listeners,
        }
        if address:
            status["addresses"] = [{"type": "IPAddress", "value": address}]
        out[gw.key] = status
    return out


def _gateway_conditions(gw: ApiGateway) -> tuple[Condition, Condition]:
    bad = [lst for lst in gw.listeners if not lst.accepted.status]
    if not bad:
        accepted = Condition("Accepted", True, "Accepted",
                             "served by the shared ingress gateway in istio-system")
    else:
        text = "; ".join(f"listener {lst.name}: {lst.accepted.message}" for lst in bad)
        accepted = Condition("Accepted", len(bad) < len(gw.listeners), "ListenersNotValid", text)
    unprogrammed = [lst for lst in gw.listeners if not lst.programmed.status]
    if not unprogrammed:
        programmed = Condition("Programmed", True, "Programmed",
                               "every listener is served by the shared ingress gateway")
    else:
        programmed = Condition("Programmed", False, "Invalid", "; ".join(
            f"listener {lst.name}: {lst.programmed.message}" for lst in unprogrammed))
    return accepted, programmed
