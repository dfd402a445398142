"""The local cluster: nodes and pods as network namespaces, processes, services and DNS."""
