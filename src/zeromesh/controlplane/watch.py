"""Recent changes kept in memory so runners and proxies can resume a watch by revision."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    type: str           # ADDED | MODIFIED | DELETED
    resource: str
    object: dict[str, Any]


class WatchHub:
    """A bounded log of events; a watcher too far behind is told to re-list."""

    def __init__(self, start_revision: int, capacity: int = 20000) -> None:
        self._log: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._oldest = start_revision      # events after this revision are all in the log
        self._latest = start_revision
        self._cond: asyncio.Condition | None = None

    def record(self, type_: str, resource: str, obj: dict[str, Any]) -> None:
        rev = int(obj["metadata"]["resourceVersion"])
        if len(self._log) == self._log.maxlen:
            self._oldest = self._log[0].revision
        self._log.append(Event(rev, type_, resource, obj))
        self._latest = rev
        if self._cond is not None:
            cond = self._cond

            async def wake() -> None:
                async with cond:
                    cond.notify_all()

            asyncio.get_running_loop().create_task(wake())

    @property
    def latest(self) -> int:
        return self._latest

    def since(self, revision: int, resources: frozenset[str] | None) -> list[Event] | None:
        """Events after `revision`, or None when they are no longer all known."""
        if revision < self._oldest:
            return None
        return [e for e in self._log if e.revision > revision
                and (resources is None or e.resource in resources)]

    async def wait(self, revision: int, timeout: float) -> None:
        """Return once something newer than `revision` exists, or on timeout."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        if self._latest > revision:
            return
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self._latest > revision), timeout)
