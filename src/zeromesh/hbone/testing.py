"""In-memory harness: a client and a server :class:`HboneConnection` joined by a fake link.

For our tests and for tests of code built on the core (pools, adapters): no
sockets, the bytes one side queues are fed to the other on demand.
"""

from __future__ import annotations

from zeromesh.hbone.connection import HboneConnection
from zeromesh.hbone.events import Event
from zeromesh.hbone.settings import HboneSettings


class FakeLink:
    """Two connected connections; ``to_server``/``to_client`` move what is queued, ``pump`` until quiet.

    ``join=False`` feeds each queued buffer separately (a DATA header, then its
    payload), exercising the parser's partial-frame and zero-copy paths;
    ``join=True`` feeds them as one chunk, like a socket read would.
    """

    def __init__(self, client_settings: HboneSettings | None = None,
                 server_settings: HboneSettings | None = None, *, handshake: bool = True,
                 join: bool = False) -> None:
        self.client = HboneConnection(client=True, settings=client_settings)
        self.server = HboneConnection(client=False, settings=server_settings)
        self.join = join
        self.client.initiate()
        self.server.initiate()
        if handshake:
            self.pump()

    def _move(self, sender: HboneConnection, receiver: HboneConnection) -> list[Event]:
        buffers = sender.data_to_send()
        if self.join:
            return receiver.receive(b"".join(buffers)) if buffers else []
        events: list[Event] = []
        for buffer in buffers:
            events += receiver.receive(buffer)
        return events

    def to_server(self) -> list[Event]:
        """Deliver what the client queued; the server's events."""
        return self._move(self.client, self.server)

    def to_client(self) -> list[Event]:
        """Deliver what the server queued; the client's events."""
        return self._move(self.server, self.client)

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Exchange until neither side has anything queued; (client events, server events)."""
        client_events: list[Event] = []
        server_events: list[Event] = []
        for _ in range(1000):
            got_server = self.to_server()
            got_client = self.to_client()
            server_events += got_server
            client_events += got_client
            idle = not self.client.wants_write and not self.server.wants_write
            if idle and not got_server and not got_client:
                return client_events, server_events
        raise RuntimeError("the link never went quiet")
