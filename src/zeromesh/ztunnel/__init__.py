"""The node-local L4 proxy (Istio ambient's ztunnel): in-pod listeners, capture plumbing, relaying."""
