"""zeromesh.ui: `zeromesh dashboard`, a live web UI of one local cluster on host loopback.

Role: show what the mesh is doing without installing anything else — a service graph
built from the mesh's own Prometheus metrics, and pages for workloads, services,
waypoints, policies, certificates and recent traces. Everything it shows is computed
by pure functions from what it scraped; only ``collect`` and ``server`` do IO.

Vocabulary:
- *target*: one place scraped (a node agent's ``/metrics``, a waypoint's stats through
  the node agent's relay); *sample*: one Prometheus sample of one target
  (:mod:`zeromesh.ui.metrics`).
- *scrape*: all samples of one collection round; two successive scrapes give rates.
- *graph*: nodes (workloads, services, waypoints, the gateway, ``unknown``) and edges
  (traffic edges from Istio's TCP and HTTP metrics; ``endpoint`` edges from a service to
  the workloads behind it) (:mod:`zeromesh.ui.graph`).
- *inputs*: everything one round collected; *state*: the JSON the browser polls
  (:mod:`zeromesh.ui.state`).
"""
