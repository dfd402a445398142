"""The cluster DNS server: `dnsanswer.answer` served over UDP and TCP with asyncio.

Sockets are passed in already bound (and, for TCP, listening) because the
runner creates them inside a node's network namespace, which this process's
event loop cannot enter by address. All DNS semantics live in the pure
`dnsanswer` module; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

import dns.rcode

from zeromesh.local.dnsanswer import DnsRecords, answer, error_reply

__all__ = ["IDLE_TIMEOUT", "DnsRecords", "DnsServer"]

log = logging.getLogger(__name__)

# How long a TCP client may stay silent before we hang up (RFC 7766 suggests seconds).
IDLE_TIMEOUT = 10.0


def _reply(query: bytes, get_records: Callable[[], DnsRecords], *, tcp: bool) -> bytes | None:
    """Answer one query; a failure on our side becomes SERVFAIL instead of a client timeout."""
    try:
        return answer(query, get_records(), tcp=tcp)
    except Exception:
        log.exception("cluster DNS failed to answer a query")
        return error_reply(query, dns.rcode.SERVFAIL)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, get_records: Callable[[], DnsRecords]) -> None:
        self._get_records = get_records
        self._transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport at runtime.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = _reply(data, self._get_records, tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends (client went away); nothing to do.
        log.debug("cluster DNS UDP error: %s", exc)


class DnsServer:
    """Serves `answer` on an already-bound UDP socket and an already-listening TCP socket.

    The sockets may belong to another network namespace, which is why sockets
    and not addresses are passed in. The server owns them once started:
    `close()` closes both.
    """

    def __init__(self, get_records: Callable[[], DnsRecords]) -> None:
        self._get_records = get_records
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._udp, self._udp_protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._get_records), sock=udp_sock
        )
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries, answered in order, until EOF, garbage or idle timeout."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    size = int.from_bytes(
                        await asyncio.wait_for(reader.readexactly(2), IDLE_TIMEOUT), "big"
                    )
                    query = await asyncio.wait_for(reader.readexactly(size), IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = _reply(query, self._get_records, tcp=True)
                if reply is None:
                    return  # not DNS: hang up rather than keep the client waiting
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop serving, drop open TCP connections and close both sockets."""
        if self._udp is not None and self._udp_protocol is not None:
            self._udp.close()
            await self._udp_protocol.closed  # the socket is closed once this resolves
            self._udp = self._udp_protocol = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None
