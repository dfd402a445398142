"""The control plane: the store, the controllers that act on it, and the API the CLI and runners use.

Vocabulary: *resource* is a plural resource id ("pods", "deployments.apps");
a *key* is (resource, namespace, name) with "" for cluster-scoped kinds; every
write bumps one cluster-wide *revision* that watchers resume from.
"""
