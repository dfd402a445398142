"""The cluster's embedded store: SQLite on disk, a dict in memory, behind a small interface.

The interface is what a Kubernetes-API-backed store would also offer, so the
rest of the control plane never knows which one it talks to.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from zeromesh.errors import Conflict

Key = tuple[str, str, str]
Obj = dict[str, Any]
Listener = Callable[[str, str, Obj], None]   # (ADDED|MODIFIED|DELETED, resource, object)


def key_of(resource: str, obj: Obj) -> Key:
    md = obj["metadata"]
    return (resource, md.get("namespace", ""), md["name"])


class Store(Protocol):
    def get(self, resource: str, namespace: str, name: str) -> Obj | None: ...
    def list(self, resource: str, namespace: str | None = None) -> list[Obj]: ...
    def put(self, resource: str, obj: Obj, expect_version: str | None = None) -> Obj: ...
    def delete(self, resource: str, namespace: str, name: str) -> Obj | None: ...
    def revision(self) -> int: ...
    def batch(self) -> contextlib.AbstractContextManager[None]: ...
    def subscribe(self, listener: Listener) -> None: ...


class SqliteStore:
    """Write-through: reads come from memory, every write is committed before it is announced."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects (resource TEXT NOT NULL, namespace TEXT NOT NULL,"
            " name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (resource, namespace, name))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        self._rev = int(row[0]) if row else 0
        self._objs: dict[Key, Obj] = {}
        self._by_resource: dict[str, dict[Key, Obj]] = {}
        self._by_namespace: dict[tuple[str, str], dict[Key, Obj]] = {}
        for resource, ns, name, body in self._db.execute(
            "SELECT resource, namespace, name, body FROM objects"
        ):
            obj = json.loads(body)
            self._index((resource, ns, name), obj)
        self._listeners: list[Listener] = []
        self._depth = 0
        self._pending: list[tuple[str, str, Obj]] = []

    def _index(self, key: Key, obj: Obj) -> None:
        self._objs[key] = obj
        self._by_resource.setdefault(key[0], {})[key] = obj
        self._by_namespace.setdefault((key[0], key[1]), {})[key] = obj

    def _unindex(self, key: Key) -> Obj | None:
        self._by_resource.get(key[0], {}).pop(key, None)
        self._by_namespace.get((key[0], key[1]), {}).pop(key, None)
        return self._objs.pop(key, None)

    def close(self) -> None:
        self._db.close()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def revision(self) -> int:
        return self._rev

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        obj = self._objs.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        objs = (self._by_resource.get(resource, {}) if namespace is None
                else self._by_namespace.get((resource, namespace), {}))
        return [copy.deepcopy(o) for _, o in sorted(objs.items())]

    def iter_raw(self, resource: str, namespace: str | None = None) -> Iterator[Obj]:
        """Read-only view without copies, for controllers scanning many objects."""
        if namespace is None:
            yield from list(self._by_resource.get(resource, {}).values())
        else:
            yield from list(self._by_namespace.get((resource, namespace), {}).values())

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """All writes inside commit together or not at all (apply is all-or-nothing)."""
        if self._depth == 0:
            self._db.execute("BEGIN")
            snapshot = (dict(self._objs), {r: dict(m) for r, m in self._by_resource.items()},
                        {r: dict(m) for r, m in self._by_namespace.items()}, self._rev)
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
                self._objs, self._by_resource, self._by_namespace, self._rev = snapshot
                self._pending.clear()
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")
            pending, self._pending = self._pending, []
            for ev in pending:
                self._announce(*ev)

    def _bump(self) -> int:
        self._rev += 1
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)",
                         (str(self._rev),))
        return self._rev

    def put(self, resource: str, obj: Obj, expect_version: str | None = None) -> Obj:
        key = key_of(resource, obj)
        old = self._objs.get(key)
        if expect_version is not None:
            have = old["metadata"].get("resourceVersion") if old else None
            if have != expect_version:
                raise Conflict(f"{resource} {key[1]}/{key[2]} changed (have {have}, "
                               f"expected {expect_version})")
        with self.batch():
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = str(self._bump())
            self._db.execute(
                "INSERT OR REPLACE INTO objects (resource, namespace, name, body) VALUES (?,?,?,?)",
                (*key, json.dumps(stored, separators=(",", ":"))),
            )
            self._index(key, stored)
            self._pending.append(("MODIFIED" if old else "ADDED", resource, stored))
        return copy.deepcopy(stored)

    def delete(self, resource: str, namespace: str, name: str) -> Obj | None:
        key = (resource, namespace, name)
        if key not in self._objs:
            return None
        with self.batch():
            old = self._unindex(key)
            assert old is not None
            rev = self._bump()
            self._db.execute(
                "DELETE FROM objects WHERE resource=? AND namespace=? AND name=?", key
            )
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(rev)
            self._pending.append(("DELETED", resource, gone))
        return gone

    def _announce(self, kind: str, resource: str, obj: Obj) -> None:
        for listener in self._listeners:
            listener(kind, resource, obj)
