"""The only code that touches network namespaces, links, routes and nftables.

Vocabulary: an *underlay* namespace joins the *node* namespaces with a bridge;
each node namespace has a `cni0` bridge for its *pod* namespaces. Nothing here
ever runs `ip` or `nft` in the host's own namespace: every command names the
namespace it acts on, so the host's routes and ruleset stay exactly as they were.
"""
