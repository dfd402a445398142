#!/usr/bin/env bash
# Install everything (as root), start a 2-node local cluster and walk through the demo.
# The cluster stays up afterwards so you can explore; `zeromesh --cluster demo down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
export ZEROMESH_CLUSTER="${ZEROMESH_CLUSTER:-demo}"
DEMO=examples/istio-ambient-demo
PAUSE="${DEMO_PAUSE:-0}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; local rc=$?; [ "$PAUSE" = 0 ] || sleep "$PAUSE"; return $rc; }
expect_ok() { if "$@"; then echo "   -> OK"; else echo "   -> UNEXPECTED FAILURE" >&2; exit 1; fi; }
expect_refused() { if "$@"; then echo "   -> UNEXPECTED SUCCESS" >&2; exit 1; else echo "   -> refused, as expected"; fi; }
NS2_ECHO=http://echoserver-service-ns2.ns2.svc.cluster.local
NS1_ECHO=http://echoserver-service-ns1.ns1.svc.cluster.local

step "Start a local cluster: nodes and pods are network namespaces, apps are real processes"
run zeromesh up --nodes 2 --image-table "$DEMO/zeromesh-images.yaml"

step "zeromesh's own sample: an echo service on node2, a curl client on node1"
run zeromesh apply -f examples/
run zeromesh wait pods --all -n sample-server --timeout 60 >/dev/null
run zeromesh wait pods --all -n sample-client --timeout 60 >/dev/null
run zeromesh get pods -A -o wide
expect_ok run zeromesh exec -n sample-client deploy/curl -- curl -s -m 5 http://echo.sample-server/hello

step "Istio ambient conference demo, step 1: apply its manifests unchanged"
run zeromesh get nodes --show-labels
run zeromesh apply -f "$DEMO/resources-ns1.yaml" -f "$DEMO/resources-ns2.yaml"
run zeromesh wait pods --all -n ns1 --timeout 60 >/dev/null
run zeromesh wait pods --all -n ns2 --timeout 60 >/dev/null
run zeromesh get pods -n ns1 -o wide
run zeromesh get pods -n ns2 -o wide

step "Step 2: ns1's sleep calls ns2's echo service by its cluster name, over HBONE mTLS"
for i in $(seq 50); do zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 2 -o /dev/null "$NS2_ECHO" && break; sleep 0.2; done
expect_ok run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 "$NS2_ECHO"
run zeromesh ztunnel-config certificates

step "Step 3: deny everything in both namespaces (an AuthorizationPolicy with no spec)"
run zeromesh apply -f "$DEMO/deny-all-l4.yaml"
sleep 1
expect_refused run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 "$NS2_ECHO"

step "Step 4: allow ns1's sleep (by its SPIFFE principal) to reach ns2's echo"
run zeromesh apply -f "$DEMO/allow-comms-echo-ns2.yaml"
sleep 1
expect_ok run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 "$NS2_ECHO"
expect_refused run zeromesh exec -n ns2 deploy/sleep-depl-ns2 -- curl -s -m 5 "$NS1_ECHO"

step "Step 5: an Istio Gateway on the ingress gateway (published on this host's loopback) + a VirtualService to ns1's echo"
run zeromesh get svc -n istio-system
GW_PORT=$(zeromesh get svc istio-ingressgateway -n istio-system -o json \
  | python3 -c 'import json,sys; print(next(p["nodePort"] for p in json.load(sys.stdin)["spec"]["ports"] if p["port"] == 80))')
run zeromesh apply -f "$DEMO/istio-gateway.yaml"
for i in $(seq 50); do c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/"); [ "$c" != 404 ] && [ "$c" != 000 ] && break; sleep 0.3; done
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/")
echo "curl http://127.0.0.1:$GW_PORT/ -> $code (ns1 is deny-all: the gateway's identity is refused there)"
[ "$code" != 200 ] || { echo "   -> UNEXPECTED SUCCESS" >&2; exit 1; }

step "Step 6: allow the ingress gateway's principal into ns1's echo"
run zeromesh apply -f "$DEMO/allow-comms-echo-ns1.yaml"
for i in $(seq 50); do [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/")" = 200 ] && break; sleep 0.3; done
expect_ok run curl -s -m 5 -f "http://127.0.0.1:$GW_PORT/"
run zeromesh get gateway -A

step "Step 7: a waypoint for ns2's echo service account; an L7 policy allows only GET from ns1's sleep"
run zeromesh apply -f "$DEMO/waypoint-proxy.yaml" -f "$DEMO/allow-get-to-echo-ns2.yaml"
run zeromesh wait pods -n ns2 -l istio.io/gateway-name=echo-service-account-ns2-gw --timeout 60 >/dev/null || true
for i in $(seq 50); do [ "$(zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 2 -o /dev/null -w '%{http_code}' "$NS2_ECHO")" = 200 ] && break; sleep 0.3; done
run zeromesh get pods -n ns2 -o wide
expect_ok run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 -f -o /dev/null -w 'GET -> %{http_code}\n' "$NS2_ECHO"
code=$(zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST "$NS2_ECHO")
echo "POST -> $code (RBAC denial from the waypoint)"
[ "$code" = 403 ] || { echo "   -> UNEXPECTED: expected 403" >&2; exit 1; }

step "Step 8: canary — a VirtualService sends 90% to v1 and 10% to v2 (DestinationRule subsets)"
run zeromesh apply -f "$DEMO/canary.yaml"
sleep 1
run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- sh -c "for i in \$(seq 100); do curl -s -m 5 $NS2_ECHO; echo; done" \
  | grep -o 'echoserver-depl-ns2-v[12]' | sort | uniq -c

step "Step 9: observe — proxies in sync, how the mesh treats ns2's echo, the waypoint's routes"
run zeromesh ps
ECHO_POD=$(zeromesh get pods -n ns2 -o name | grep echoserver-depl-ns2-v1 | head -1 | cut -d/ -f2)
run zeromesh x describe pod "$ECHO_POD" -n ns2
WP_POD=$(zeromesh get pods -n ns2 -l istio.io/gateway-name=echo-service-account-ns2-gw -o name | head -1 | cut -d/ -f2)
run zeromesh pc routes "$WP_POD" -n ns2

cat <<'MSG'

See the live service graph (ns1 -> ns2 with mTLS and HTTP edges) with
  zeromesh --cluster demo dashboard
and point Prometheus at the cluster with `zeromesh x prometheus-config` (README).

The cluster is still running. Explore it, for example:
  zeromesh --cluster demo get pods -A -o wide
  zeromesh --cluster demo waypoint list -A
  zeromesh --cluster demo down
MSG
