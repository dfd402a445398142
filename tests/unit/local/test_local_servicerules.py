"""The node's ClusterIP translation script, checked as text (nft itself runs in e2e)."""

from zeromesh.local.servicerules import ServicePortRule, render


def test_single_endpoint_uses_plain_dnat() -> None:
    s = render([ServicePortRule("10.96.0.10", 80, "TCP", [("10.244.2.2", 8080)])], [])
    assert "ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.2.2:8080" in s


def test_several_endpoints_are_picked_at_random() -> None:
    s = render([ServicePortRule("10.96.0.10", 80, "TCP",
                                [("10.244.2.3", 80), ("10.244.1.2", 80)])], [])
    assert ("dnat ip to numgen random mod 2 map { 0 : 10.244.1.2 . 80, 1 : 10.244.2.3 . 80 }"
            in s)


def test_service_without_endpoints_has_no_translation_and_is_refused() -> None:
    s = render([ServicePortRule("10.96.0.11", 53, "UDP", [])], [])
    assert "10.96.0.11" not in s
    assert "ip daddr 10.96.0.0/16 meta l4proto tcp reject with tcp reset" in s


def test_udp_and_hairpin() -> None:
    s = render([ServicePortRule("10.96.0.12", 53, "UDP", [("10.244.1.5", 5353)])],
               ["10.244.1.5", "10.244.1.5", "10.244.1.6"])
    assert "ip daddr 10.96.0.12 udp dport 53 dnat to 10.244.1.5:5353" in s
    assert "elements = { 10.244.1.5 . 10.244.1.5, 10.244.1.6 . 10.244.1.6 }" in s


def test_replaces_the_whole_table_atomically() -> None:
    s = render([], [])
    lines = s.splitlines()
    assert lines[:3] == ["table ip zeromesh", "delete table ip zeromesh", "table ip zeromesh {"]
    assert s == render([], [])
