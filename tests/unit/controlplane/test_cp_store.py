"""The SQLite store: persistence, revisions, batches that roll back, change announcements."""

from pathlib import Path

import pytest

from zeromesh.controlplane.store import SqliteStore
from zeromesh.errors import Conflict


def obj(name: str, ns: str = "default", **extra: object) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, **extra}


def test_put_get_list_delete_and_revisions(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    seen: list[tuple[str, str, str]] = []
    s.subscribe(lambda t, r, o: seen.append((t, r, o["metadata"]["resourceVersion"])))
    a = s.put("pods", obj("a"))
    assert a["metadata"]["resourceVersion"] == "1"
    s.put("pods", obj("b", "other"))
    s.put("pods", obj("a", spec={"x": 1}))
    assert [p["metadata"]["name"] for p in s.list("pods")] == ["a", "b"]
    assert [p["metadata"]["name"] for p in s.list("pods", "other")] == ["b"]
    assert s.get("pods", "default", "a")["spec"] == {"x": 1}
    gone = s.delete("pods", "default", "a")
    assert gone is not None and gone["metadata"]["resourceVersion"] == "4"
    assert s.delete("pods", "default", "a") is None
    assert seen == [("ADDED", "pods", "1"), ("ADDED", "pods", "2"), ("MODIFIED", "pods", "3"),
                    ("DELETED", "pods", "4")]
    assert s.revision() == 4


def test_survives_restart(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    s.put("services", obj("svc", spec={"clusterIP": "10.96.0.10"}))
    s.close()
    s2 = SqliteStore(str(tmp_path / "db"))
    assert s2.get("services", "default", "svc")["spec"]["clusterIP"] == "10.96.0.10"
    assert s2.revision() == 1


def test_batch_is_all_or_nothing(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    s.put("pods", obj("keep"))
    seen: list[str] = []
    s.subscribe(lambda t, r, o: seen.append(o["metadata"]["name"]))
    with pytest.raises(RuntimeError), s.batch():
        s.put("pods", obj("x"))
        s.delete("pods", "default", "keep")
        raise RuntimeError("boom")
    assert s.get("pods", "default", "x") is None
    assert s.get("pods", "default", "keep") is not None
    assert seen == [] and s.revision() == 1
    s.close()
    assert SqliteStore(str(tmp_path / "db")).get("pods", "default", "x") is None


def test_announcements_wait_for_the_batch(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    seen: list[str] = []
    s.subscribe(lambda t, r, o: seen.append(o["metadata"]["name"]))
    with s.batch():
        s.put("pods", obj("a"))
        s.put("pods", obj("b"))
        assert seen == []
    assert seen == ["a", "b"]


def test_optimistic_concurrency(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    a = s.put("pods", obj("a"))
    s.put("pods", a, expect_version=a["metadata"]["resourceVersion"])
    with pytest.raises(Conflict):
        s.put("pods", a, expect_version=a["metadata"]["resourceVersion"])


def test_returned_objects_are_copies(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "db"))
    s.put("pods", obj("a", spec={"v": 1}))
    got = s.get("pods", "default", "a")
    got["spec"]["v"] = 2
    assert s.get("pods", "default", "a")["spec"]["v"] == 1
