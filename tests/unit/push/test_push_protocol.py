"""Push protocol: messages round-trip, malformed ones are refused, state applies, status tracks."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeromesh.push import protocol as p


@pytest.mark.parametrize("msg", [
    p.Hello("nodeagent", "ztunnel-node1", "node1"),
    p.Hello("waypoint", "wp-abc", ""),
    p.Update(3, "17", True, {"workload": {"u1": {"ip": "10.0.0.1"}, "u2": None}}),
    p.Update(4, "18", False, {}),
    p.Ack(3, "17"),
    p.Nack(4, "18", "workload u9: missing ip"),
])
def test_round_trip(msg: p.Message) -> None:
    assert p.decode(p.encode(msg)) == msg


@pytest.mark.parametrize("text,why", [
    ("not json", "not JSON"),
    ("[1]", "not an object"),
    ('{"type": "bogus"}', "unknown message type"),
    ('{"type": "hello", "kind": "sidecar", "name": "x"}', "unknown proxy kind"),
    ('{"type": "hello", "kind": "nodeagent"}', "malformed hello"),
    ('{"type": "update", "nonce": "x", "version": "1", "full": true, "resources": {}}',
     "malformed update"),
    ('{"type": "update", "nonce": 1, "version": "1", "full": true, "resources": {"w": []}}',
     "type -> {key: record}"),
    ('{"type": "ack", "version": "1"}', "malformed ack"),
])
def test_malformed_messages(text: str, why: str) -> None:
    with pytest.raises(p.ProtocolError, match=why):
        p.decode(text)


@given(st.text())
def test_decode_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.decode(text)


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(
    st.text(), c), max_leaves=10))
def test_decode_arbitrary_json(value: object) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.decode(json.dumps(value))


def test_apply_update_incremental_full_and_immutable() -> None:
    s0: dict = {}
    s1 = p.apply_update(s0, p.Update(1, "1", True, {"workload": {"a": {"n": 1}, "b": {"n": 2}}}))
    assert s1 == {"workload": {"a": {"n": 1}, "b": {"n": 2}}} and s0 == {}
    s2 = p.apply_update(s1, p.Update(2, "2", False, {"workload": {"a": None, "c": {"n": 3}},
                                                     "service": {"s": {"x": 1}}}))
    assert s2 == {"workload": {"b": {"n": 2}, "c": {"n": 3}}, "service": {"s": {"x": 1}}}
    assert s1 == {"workload": {"a": {"n": 1}, "b": {"n": 2}}}      # untouched: a NACK keeps it
    s3 = p.apply_update(s2, p.Update(3, "3", True, {"service": {"t": {}}}))
    assert s3 == {"service": {"t": {}}}


def test_relevance_by_proxy_kind() -> None:
    changes = {"workload": {"a": {}}, "virtualservices.networking.istio.io": {"ns/vs": {}},
               "authorizationpolicies.security.istio.io": {"ns/ap": {}}, "service": {}}
    assert set(p.filter_for("nodeagent", changes)) == {
        "workload", "authorizationpolicies.security.istio.io"}
    assert set(p.filter_for("waypoint", changes)) == {
        "workload", "virtualservices.networking.istio.io",
        "authorizationpolicies.security.istio.io"}


def test_merge_changes_latest_wins() -> None:
    merged = p.merge_changes([{"workload": {"a": {"v": 1}}}, {"workload": {"a": None, "b": {}}}])
    assert merged == {"workload": {"a": None, "b": {}}}


def test_proxy_status_tracks_acks_and_nacks() -> None:
    st_ = p.ProxyStatus("id", "nodeagent", "z", "node1", "spiffe://x", "now")
    st_.sent(1, "10")
    assert not st_.in_sync()
    st_.answered(p.Ack(1, "10"))
    assert st_.in_sync()
    st_.sent(2, "11")
    assert not st_.in_sync()
    st_.answered(p.Nack(2, "11", "bad"))
    assert not st_.in_sync() and st_.acked_version == "10" and st_.last_nack == "bad"
    assert st_.view()["nacks"] == 1
    with pytest.raises(p.ProtocolError, match="unknown nonce"):
        st_.answered(p.Ack(99, "11"))
    st_.sent(3, "12")
    st_.answered(p.Ack(3, "12"))
    assert st_.in_sync() and st_.last_nack == ""


def test_tls_secrets_reach_only_the_ingress_gateway() -> None:
    assert p.relevant(p.GATEWAY, "secrets")
    assert not p.relevant(p.WAYPOINT, "secrets")
    assert not p.relevant(p.NODE_AGENT, "secrets")
    assert p.relevant(p.GATEWAY, "virtualservices.networking.istio.io")


def test_only_tls_secrets_enter_the_model() -> None:
    from zeromesh.controlplane.model import MeshModel
    m = MeshModel()
    tls = {"metadata": {"name": "cert", "namespace": "istio-system"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": "eA==", "tls.key": "eA=="}}
    opaque = {"metadata": {"name": "pw", "namespace": "istio-system"}, "type": "Opaque",
              "data": {"password": "eA=="}}
    m.load([("secrets", tls), ("secrets", opaque)])
    assert list(m.snapshot()["secrets"]) == ["istio-system/cert"]
