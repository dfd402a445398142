"""zeromesh: a sidecarless (ambient) service mesh that accepts Istio ambient YAML.

Vocabulary: a *cluster* is a set of *nodes* (network namespaces) running *pods*
(network namespaces with real processes); the *control plane* owns the store;
a per-node *runner* plays kubelet, kube-proxy and cluster DNS for its node.
"""

__version__ = "0.1.0"
