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

step "Step 2: ns1's sleep calls ns2's echo service by its cluster name"
expect_ok run zeromesh exec -n ns1 deploy/sleep-depl-ns1 -- curl -s -m 5 http://echoserver-service-ns2.ns2.svc.cluster.local

cat <<'MSG'

The remaining steps of examples/istio-ambient-demo/SCENARIO.md (mTLS over HBONE,
deny-all and allow policies, the ingress gateway, the waypoint and the canary)
arrive with the mesh's data plane; see the README's status table.

The cluster is still running. Explore it, for example:
  zeromesh --cluster demo get pods -A -o wide
  zeromesh --cluster demo logs -n ns2 deploy/echoserver-depl-ns2-v1
  zeromesh --cluster demo down
MSG
