"""Pure HTTP routing core for the waypoint: compile VirtualService / HTTPRoute into
ordered routes, match requests, pick weighted backends, rewrite and redirect.

No sockets, no asyncio, no clock; randomness is passed in as ``rng() -> [0, 1)``.
"""

from zeromesh.routing.compile import compile_http_routes, compile_virtual_service, destination_rule_subsets
from zeromesh.routing.model import (
    Backend,
    Fault,
    HeaderOps,
    HttpRequest,
    Mirror,
    PathModifier,
    Redirect,
    RequestMatch,
    RetryPolicy,
    Rewrite,
    Route,
    RouteAction,
    StringMatch,
)
from zeromesh.routing.select import (
    apply_header_ops,
    fault_decision,
    find_route,
    match_route,
    mirror_decision,
    pick_backend,
    redirect_location,
    rewrite_request,
    subset_endpoints,
)

__all__ = [
    "Backend", "Fault", "HeaderOps", "HttpRequest", "Mirror", "PathModifier", "Redirect",
    "RequestMatch", "RetryPolicy", "Rewrite", "Route", "RouteAction", "StringMatch",
    "apply_header_ops", "compile_http_routes", "compile_virtual_service",
    "destination_rule_subsets", "fault_decision", "find_route", "match_route",
    "mirror_decision", "pick_backend", "redirect_location", "rewrite_request",
    "subset_endpoints",
]
