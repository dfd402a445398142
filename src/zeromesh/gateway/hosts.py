"""Host names as the gateway matches them: the request's Host, listener and route hostnames.

One matcher serves routing (Host → route table), TLS (SNI → certificate) and attachment
(listener and route hostname intersection), so the three never disagree. Patterns are an
exact name, a wildcard ``*.suffix`` (matches one or more labels in front of ``.suffix``,
never ``suffix`` itself, as in Envoy and the Gateway API) or ``*`` (anything).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

ANY = "*"

V = TypeVar("V")


def normalize_host(host: str) -> str:
    """The Host header (or SNI) as matched: lower-case, without a ``:port`` suffix or the
    brackets of an IPv6 literal."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return host


def matches(pattern: str, host: str) -> bool:
    """Whether ``host`` (already normalized) falls under ``pattern``."""
    pattern = pattern.lower()
    if pattern == ANY:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect(a: str, b: str) -> str | None:
    """The more specific of two patterns when one includes the other, else None.

    Listener and route hostnames (Gateway API), server and VirtualService hosts (Istio) are
    both intersected this way: ``*.example.com`` and ``foo.example.com`` → ``foo.example.com``,
    ``*`` and anything → that thing, ``foo.com`` and ``bar.com`` → None."""
    a, b = a.lower(), b.lower()
    if _covers(a, b):
        return b
    if _covers(b, a):
        return a
    return None


def _covers(general: str, specific: str) -> bool:
    """Every name ``specific`` matches is matched by ``general``."""
    if general in (ANY, specific):
        return True
    if specific == ANY or not general.startswith("*."):
        return False
    # "*.example.com" covers "foo.example.com" and "*.foo.example.com", not "example.com".
    probe = specific[2:] if specific.startswith("*.") else specific
    return matches(general, probe)


def candidates(host: str) -> Iterator[str]:
    """The patterns that could match ``host``, most specific first: the exact name, then
    wildcards from the longest suffix to the shortest, then ``*`` (Envoy's virtual host and
    filter chain order)."""
    yield host
    parts = host.split(".")
    for i in range(1, len(parts)):
        yield "*." + ".".join(parts[i:])
    yield ANY


def lookup(table: Mapping[str, V], host: str) -> tuple[str, V] | None:
    """The most specific entry of ``table`` (pattern → value) matching ``host``."""
    for pattern in candidates(host):
        if pattern in table:
            return pattern, table[pattern]
    return None
