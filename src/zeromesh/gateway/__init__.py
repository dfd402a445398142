"""zeromesh.gateway: the shared ingress gateway's view of the configuration (pure).

Role: one ingress gateway pod in ``istio-system`` (labels ``istio: ingressgateway``,
``app: istio-ingressgateway``) publishes ports 80 and 443 on the host's loopback and serves
both Istio ``Gateway`` + ``VirtualService`` and Gateway API ``Gateway`` (class ``istio``) +
``HTTPRoute``. This package decides everything about it without IO: which listeners and
certificates exist, which routes a Host gets, which policies apply, who the client is, and
the Gateway API status the control plane writes. The L7 engine of the waypoint does the IO.

Simplification: Istio deploys one proxy per Gateway API Gateway; zeromesh serves every
Gateway of class ``istio`` from the one shared pod (their listeners on the same port share
it; a LocalRateLimit or AuthorizationPolicy naming one Gateway still applies only to the
requests that came through that Gateway's listeners or routes).

Vocabulary:
- *listener*: an Istio server or a Gateway API listener on a published port (:class:`Listener`).
- *route table entry* (virtual host): the routes for one hostname pattern on one port
  (:class:`VirtualHost`); a Host picks the most specific entry.
- *listener destination*: port + Host of one request (:class:`ListenerDestination`), what
  the engine passes back to :class:`GatewayConfig` as a waypoint passes a service VIP.
- *attachment*: an HTTPRoute on a listener with the hostnames it serves there
  (:mod:`zeromesh.gateway.attachment`), shared by routing and status.
- *trusted hops*: how many X-Forwarded-For entries the gateway believes (:func:`client_address`).
"""

from zeromesh.gateway.attachment import CONTROLLER_NAME, GATEWAY_CLASS, PUBLISHED_PORTS, Certificate
from zeromesh.gateway.config import (
    GatewayConfig,
    GatewayRef,
    Listener,
    ListenerDestination,
    VirtualHost,
)
from zeromesh.gateway.forwarded import client_address, trusted_hops_from_annotations
from zeromesh.gateway.status import gateway_statuses, route_statuses

__all__ = [
    "CONTROLLER_NAME",
    "GATEWAY_CLASS",
    "PUBLISHED_PORTS",
    "Certificate",
    "GatewayConfig",
    "GatewayRef",
    "Listener",
    "ListenerDestination",
    "VirtualHost",
    "client_address",
    "gateway_statuses",
    "route_statuses",
    "trusted_hops_from_annotations",
]
