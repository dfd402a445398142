"""SPIFFE ids: strict parsing (a lenient parser would let lookalikes match policies)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeromesh.identity.spiffe import NodeId, PodId, SpiffeId, parse_any


@pytest.mark.parametrize(("uri", "td", "ns", "sa"), [
    ("spiffe://cluster.local/ns/default/sa/default", "cluster.local", "default", "default"),
    ("spiffe://cluster.local/ns/ns1/sa/sleep", "cluster.local", "ns1", "sleep"),
    ("spiffe://td/ns/a/sa/b", "td", "a", "b"),
    ("spiffe://my_corp-1.example/ns/istio-system/sa/istiod", "my_corp-1.example", "istio-system", "istiod"),
    ("spiffe://cluster.local/ns/a/sa/svc.account-1", "cluster.local", "a", "svc.account-1"),
    (f"spiffe://cluster.local/ns/{'a' * 63}/sa/{'b' * 253}", "cluster.local", "a" * 63, "b" * 253),
])
def test_parse_good(uri: str, td: str, ns: str, sa: str) -> None:
    sid = SpiffeId.parse(uri)
    assert sid == SpiffeId(td, ns, sa)
    assert sid.uri == uri == str(sid)
    assert sid.principal == uri.removeprefix("spiffe://")


def test_principal_is_the_authorization_policy_form() -> None:
    assert SpiffeId("cluster.local", "ns1", "sleep").principal == "cluster.local/ns/ns1/sa/sleep"


@pytest.mark.parametrize(("uri", "message"), [
    ("http://cluster.local/ns/a/sa/b", "must start with 'spiffe://'"),
    ("SPIFFE://cluster.local/ns/a/sa/b", "must start with 'spiffe://'"),
    ("cluster.local/ns/a/sa/b", "must start with 'spiffe://'"),
    ("spiffe://", "trust domain is empty"),
    ("spiffe:///ns/a/sa/b", "trust domain is empty"),
    ("spiffe://cluster.local", "has no path"),
    ("spiffe://cluster.local/", "has no path"),
    ("spiffe://Cluster.local/ns/a/sa/b", "trust domain 'Cluster.local' is not valid"),
    ("spiffe://-cluster/ns/a/sa/b", "trust domain '-cluster' is not valid"),
    ("spiffe://cluster.local:8080/ns/a/sa/b", "a port"),
    ("spiffe://user@cluster.local/ns/a/sa/b", "user info"),
    ("spiffe://cluster.local/ns/a/sa/b?x=1", "a query"),
    ("spiffe://cluster.local/ns/a/sa/b#frag", "a fragment"),
    ("spiffe://cluster.local/ns/a%2Fb/sa/b", "percent-encoding"),
    ("spiffe://cluster.local/ns/a/sa", "expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"),
    ("spiffe://cluster.local/ns/a/sa/b/", "not a workload SPIFFE id"),
    ("spiffe://cluster.local/ns/a/sa/b/c", "not a workload SPIFFE id"),
    ("spiffe://cluster.local/sa/b/ns/a", "not a workload SPIFFE id"),
    ("spiffe://cluster.local/namespace/a/sa/b", "not a workload SPIFFE id"),
    ("spiffe://cluster.local//ns/a/sa/b", "not a workload SPIFFE id"),
    ("spiffe://cluster.local/ns//sa/b", "namespace is empty"),
    ("spiffe://cluster.local/ns/a/sa/", "service account is empty"),
    ("spiffe://cluster.local/ns/A/sa/b", "namespace 'A' is not valid"),
    ("spiffe://cluster.local/ns/a.b/sa/b", "namespace 'a.b' is not valid"),
    ("spiffe://cluster.local/ns/-a/sa/b", "namespace '-a' is not valid"),
    (f"spiffe://cluster.local/ns/{'a' * 64}/sa/b", "is not valid"),
    ("spiffe://cluster.local/ns/a/sa/b.", "service account 'b.' is not valid"),
    ("spiffe://cluster.local/ns/a/sa/b_c", "service account 'b_c' is not valid"),
    ("spiffe://cluster.local/ns/a/sa/..", "service account '..' is not valid"),
    ("spiffe://cluster.local/zeromesh/node/n1", "bootstrap identity, not a workload identity"),
    ("spiffe://cluster.local/zeromesh/pod/ns1/p/sa/s", "bootstrap identity, not a workload identity"),
    ("spiffe://cluster.local/ns/a/sa/" + "b" * 2040, "longer than 2048 bytes"),
])
def test_parse_bad(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SpiffeId.parse(uri)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        SpiffeId.parse(b"spiffe://cluster.local/ns/a/sa/b")  # type: ignore[arg-type]


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="namespace 'Bad' is not valid"):
        SpiffeId("cluster.local", "Bad", "x")
    with pytest.raises(ValueError, match="trust domain is empty"):
        SpiffeId("", "a", "b")


def test_node_and_pod_ids() -> None:
    node = NodeId("cluster.local", "node1.example")
    assert node.uri == str(node) == "spiffe://cluster.local/zeromesh/node/node1.example"
    assert NodeId.parse(node.uri) == node
    pod = PodId("cluster.local", "ns1", "sleep-7d9f", "sleep")
    assert pod.uri == str(pod) == "spiffe://cluster.local/zeromesh/pod/ns1/sleep-7d9f/sa/sleep"
    assert PodId.parse(pod.uri) == pod


@pytest.mark.parametrize(("uri", "kind"), [
    ("spiffe://cluster.local/ns/a/sa/b", SpiffeId),
    ("spiffe://cluster.local/zeromesh/node/n1", NodeId),
    ("spiffe://cluster.local/zeromesh/pod/ns1/p1/sa/s1", PodId),
])
def test_parse_any_dispatches(uri: str, kind: type) -> None:
    parsed = parse_any(uri)
    assert isinstance(parsed, kind)
    assert parsed.uri == uri


@pytest.mark.parametrize(("uri", "message"), [
    ("spiffe://cluster.local/zeromesh/node", "not a node identity"),
    ("spiffe://cluster.local/zeromesh/node/n1/x", "not a node identity"),
    ("spiffe://cluster.local/zeromesh/node/N1", "node 'N1' is not valid"),
    ("spiffe://cluster.local/zeromesh/pod/ns1/p1/sa", "not a pod identity"),
    ("spiffe://cluster.local/zeromesh/pod/ns1/p1/xx/s1", "not a pod identity"),
    ("spiffe://cluster.local/zeromesh/other/x", "bootstrap identity"),
    ("https://cluster.local/ns/a/sa/b", "must start with"),
])
def test_parse_any_bad(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_any(uri)


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_subdomain = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True)
_td = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?", fullmatch=True)


@given(_td, _label, _subdomain)
def test_roundtrip_property(td: str, ns: str, sa: str) -> None:
    sid = SpiffeId(td, ns, sa)
    assert SpiffeId.parse(sid.uri) == sid
    assert parse_any(sid.uri) == sid


@given(st.text(max_size=80))
def test_parse_never_crashes(text: str) -> None:
    """Any string either parses to an id that prints back as itself, or raises ValueError."""
    try:
        sid = SpiffeId.parse(text)
    except ValueError:
        return
    assert sid.uri == text
