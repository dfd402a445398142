"""Socket plumbing for the in-pod ztunnel: listeners and upstream sockets living in a pod's netns.

No protocol here, only the kernel features Istio's ztunnel relies on:

* every socket the proxy makes in a pod carries ``SO_MARK`` 0x539, which the
  pod's capture rules (`zeromesh.netns.podredirect`) skip, so the proxy's own
  traffic is never captured again;
* a connection accepted from a listener inherits the listener's mark (the
  kernel copies it to the request and then to the child socket, unless the
  namespace sets ``net.ipv4.tcp_fwmark_accept=1``, which pods never do), so
  marking the listener is enough; `mark` is there for sockets made elsewhere;
* ``SO_ORIGINAL_DST`` gives the destination a REDIRECTed connection was meant
  for;
* ``IP_TRANSPARENT`` + ``IP_FREEBIND`` let the proxy bind the *client's*
  address when it connects to the app, so the app sees its real peer.

Sockets are created on a thread that joined the pod's netns and keep that
namespace for life; the caller drives them from its own asyncio loop.
"""

from __future__ import annotations

import socket
import struct

from zeromesh.netns.enter import call_in_netns

SOL_IP = getattr(socket, "SOL_IP", 0)
SO_MARK = getattr(socket, "SO_MARK", 36)
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_ORIGINAL_DST = 80          # linux/netfilter_ipv4.h; Python has no constant for it
PROXY_MARK = 0x539            # Istio's PACKET_MARK (1337)


def mark(sock: socket.socket, value: int = PROXY_MARK) -> None:
    """Mark a socket as the proxy's own so the capture rules let its packets through."""
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, value)


def get_mark(sock: socket.socket) -> int:
    """The socket's ``SO_MARK`` (to check what an accepted socket inherited)."""
    return sock.getsockopt(socket.SOL_SOCKET, SO_MARK)


def listen_in_netns(netns: str, port: int, *, transparent: bool = False, backlog: int = 1024,
                    mark_value: int = PROXY_MARK) -> socket.socket:
    """A non-blocking TCP listener on 0.0.0.0:port inside the pod's netns, marked as the proxy's.

    ``SO_REUSEPORT`` lets a new proxy bind next to an old one during a restart,
    as Istio's ztunnel does.
    """
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # accepted sockets inherit it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            mark(s, mark_value)
            if transparent:
                s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            s.bind(("0.0.0.0", port))
            s.listen(backlog)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s
    return call_in_netns(netns, make)


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a REDIRECTed connection was going (the conntrack entry's original destination)."""
    raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port


def new_connect_socket(mark_value: int = PROXY_MARK,
                       transparent_source: tuple[str, int] | None = None) -> socket.socket:
    """A marked, non-blocking TCP socket in the *calling thread's* namespace (see
    `connect_socket_in_netns`, or run it on a `NetnsWorker` of the pod)."""
    # IPPROTO_TCP explicitly: asyncio only turns Nagle off for sockets whose proto says TCP,
    # and a relay must never hold small writes back (tunnels share one TLS connection).
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark_value)
        if transparent_source is not None:
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            s.setsockopt(SOL_IP, IP_FREEBIND, 1)
            s.bind(transparent_source)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def connect_socket_in_netns(netns: str, *, mark: int = PROXY_MARK,
                            transparent_source: tuple[str, int] | None = None) -> socket.socket:
    """A non-blocking, marked TCP socket inside the pod's netns, ready for ``loop.sock_connect``.

    With ``transparent_source`` the socket is bound to that (usually foreign)
    address so the peer sees the original client; the replies reach this
    socket only through the pod's policy route (see `podredirect`).
    """
    return call_in_netns(netns, lambda: new_connect_socket(mark, transparent_source))
