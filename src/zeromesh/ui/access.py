"""Who may read the dashboard (pure): it shows the whole mesh, but listens on loopback, where
every local user and any web page the user visits can reach it.

- The Host header must name the loopback address and port we listen on: a web page whose
  DNS name was rebound to 127.0.0.1 sends its own name and is refused.
- The JSON API needs the token printed with the URL (the page reads it from its address
  and sends it as a header), so local users without that URL read nothing.
"""

from __future__ import annotations

import hmac

TOKEN_HEADER = "X-Zeromesh-Token"


def host_allowed(host: str | None, port: int) -> bool:
    return (host or "").lower() in (f"127.0.0.1:{port}", f"localhost:{port}")


def token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def decide(path: str, host: str | None, given_token: str | None, port: int, token: str) -> int:
    """The HTTP status to refuse with, or 0 to serve: static files need a loopback Host only,
    the API also the token."""
    if not host_allowed(host, port):
        return 421
    if path.startswith("/api/") and not token_ok(given_token, token):
        return 401
    return 0
