"""The node agent: one per node, holding the node's push stream and (later) running its ztunnel.

It is a separate process from the node's runner, so restarting it never
touches the applications.
"""
