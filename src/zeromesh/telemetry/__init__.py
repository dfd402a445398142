"""Telemetry shared by every component, as pure values and functions (no IO).

- `prometheus`: the catalogue of metric names zeromesh exports (Istio's standard
  names for traffic; `zeromesh_*` plus istiod's names for health), the node
  agent's proxy relay contract (`/proxy/NS/POD/PATH`), and the Prometheus scrape
  configuration `zeromesh x prometheus-config` prints;
- `masking`: sensitive values replaced before an access-log line or a span is written;
- `tracing`: spans and trace-context propagation at waypoints and the gateway.

Vocabulary: a *component* is what a scrape target is (controlplane, ztunnel,
waypoint, gateway); a *proxy pod* is a waypoint or gateway pod, reached through
its node agent's relay because its port 15020 lives in the pod's network
namespace.
"""
