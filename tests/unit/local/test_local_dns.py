"""Cluster DNS: the pure answer() table, then the asyncio server on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

import zeromesh.local.dns as dnsserver
from zeromesh.local.dns import DnsServer
from zeromesh.local.dnsanswer import EDNS_PAYLOAD, TTL, DnsRecords, answer, error_reply

RECORDS = DnsRecords(
    zone="cluster.local",
    services={
        ("ns1", "echo"): ("10.96.0.10",),
        ("ns1", "headless"): ("10.244.1.3", "10.244.2.5"),
        ("ns1", "no-endpoints"): (),
        ("istio-system", "istiod"): ("10.96.0.2",),
        ("ns2", "echo"): ("10.96.0.11",),
        ("ns2", "alias"): ("10.96.0.11",),
        ("big", "many"): tuple(f"10.244.3.{i}" for i in range(1, 61)),
        ("big", "huge"): tuple(f"10.244.4.{i}" for i in range(1, 101)),
    },
)


def ask(name: str, rdtype: str = "A", records: DnsRecords = RECORDS, *, tcp: bool = False,
        **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    wire = answer(query.to_wire(), records, tcp=tcp)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert query.is_response(response)
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("echo.ns1.svc.cluster.local.", ["10.96.0.10"]),
        ("ECHO.Ns1.SVC.Cluster.Local.", ["10.96.0.10"]),
        ("echo.ns2.svc.cluster.local.", ["10.96.0.11"]),
        ("istiod.istio-system.svc.cluster.local.", ["10.96.0.2"]),
        ("headless.ns1.svc.cluster.local.", ["10.244.1.3", "10.244.2.5"]),
    ],
)
def test_service_a_records(name: str, expected: list[str]) -> None:
    response = ask(name)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert addresses(response) == expected
    assert all(rrset.ttl == TTL for rrset in response.answer)
    # the asker's spelling is echoed in the answer, as 0x20-randomising resolvers expect
    assert response.answer[0].name.to_text() == name


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("echo.ns1.svc.cluster.local.", "AAAA"),
        ("echo.ns1.svc.cluster.local.", "TXT"),
        ("echo.ns1.svc.cluster.local.", "SRV"),
        ("no-endpoints.ns1.svc.cluster.local.", "A"),
        ("ns1.svc.cluster.local.", "A"),
        ("NS1.svc.cluster.local.", "AAAA"),
        ("istio-system.svc.cluster.local.", "A"),
        ("svc.cluster.local.", "A"),
        ("cluster.local.", "A"),
        ("cluster.local.", "NS"),
    ],
)
def test_existing_names_without_data_are_nodata(name: str, rdtype: str) -> None:
    response = ask(name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    # the SOA lets resolvers cache the negative answer
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]
    assert response.authority[0].name.to_text() == "cluster.local."


@pytest.mark.parametrize(
    "name",
    [
        "missing.ns1.svc.cluster.local.",
        "echo.nsx.svc.cluster.local.",
        "nsx.svc.cluster.local.",
        "echo.ns1.svc.cluster.local.ns1.svc.cluster.local.",  # search-path expansion
        "echo.ns1.svc.cluster.local.svc.cluster.local.",
        "example.com.ns1.svc.cluster.local.",
        "echo.ns1.cluster.local.",
        "pod.cluster.local.",
        "_http._tcp.echo.ns1.svc.cluster.local.",
        "sub.echo.ns1.svc.cluster.local.",
    ],
)
def test_absent_names_in_the_zone_are_authoritative_nxdomain(name: str) -> None:
    response = ask(name)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("example.com.", "A"),
        ("example.com.", "AAAA"),
        ("localhost.", "A"),
        ("local.", "A"),
        ("cluster.local.example.com.", "A"),
        ("google.com.", "MX"),
        (".", "NS"),
    ],
)
def test_names_outside_the_zone_are_never_forwarded(name: str, rdtype: str) -> None:
    response = ask(name, rdtype)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert not response.flags & (dns.flags.AA | dns.flags.RA)
    assert response.answer == [] and response.authority == []


def test_zone_apex_soa_and_any() -> None:
    soa = ask("cluster.local.", "SOA")
    assert soa.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in soa.answer] == [dns.rdatatype.SOA]
    anything = ask("echo.ns1.svc.cluster.local.", "ANY")
    assert addresses(anything) == ["10.96.0.10"]


def test_zone_spelling_is_normalised() -> None:
    records = DnsRecords("Cluster.Local.", {("NS1", "Echo"): ("10.96.0.10",)})
    assert addresses(ask("echo.ns1.svc.cluster.local.", records=records)) == ["10.96.0.10"]
    other = DnsRecords("zeromesh.test", {("ns1", "echo"): ("10.96.0.10",)})
    assert addresses(ask("echo.ns1.svc.zeromesh.test.", records=other)) == ["10.96.0.10"]
    assert ask("echo.ns1.svc.cluster.local.", records=other).rcode() == dns.rcode.NXDOMAIN


# --------------------------------------------------------------------------- PTR


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "targets"),
    [
        ("10.0.96.10.in-addr.arpa.", "PTR", dns.rcode.NOERROR, ["echo.ns1.svc.cluster.local."]),
        ("10.0.96.10.IN-ADDR.ARPA.", "PTR", dns.rcode.NOERROR, ["echo.ns1.svc.cluster.local."]),
        ("11.0.96.10.in-addr.arpa.", "PTR", dns.rcode.NOERROR,
         ["alias.ns2.svc.cluster.local.", "echo.ns2.svc.cluster.local."]),
        ("10.0.96.10.in-addr.arpa.", "A", dns.rcode.NOERROR, []),
        ("99.0.96.10.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN, []),
        ("0.96.10.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN, []),
        ("x.0.96.10.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN, []),
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", "PTR",
         dns.rcode.NXDOMAIN, []),
    ],
)
def test_ptr(name: str, rdtype: str, rcode: dns.rcode.Rcode, targets: list[str]) -> None:
    response = ask(name, rdtype)
    assert response.rcode() == rcode
    assert addresses(response) == targets
    if targets:
        assert response.flags & dns.flags.AA and response.answer[0].ttl == TTL


# --------------------------------------------------------------------------- wire rules


def test_response_echoes_id_question_and_rd() -> None:
    query = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
    query.id = 4242
    query.flags &= ~dns.flags.RD
    response = dns.message.from_wire(answer(query.to_wire(), RECORDS) or b"")
    assert response.id == 4242
    assert response.flags & dns.flags.QR and not response.flags & dns.flags.RD
    assert response.question == query.question
    assert response.edns < 0  # no EDNS asked, none given


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x12\x34\x01\x00\x00\x01", b"x" * 11])
def test_garbage_without_a_header_is_dropped(garbage: bytes) -> None:
    assert answer(garbage, RECORDS) is None


def test_responses_are_never_answered() -> None:
    query = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
    response = answer(query.to_wire(), RECORDS) or b""
    assert answer(response, RECORDS) is None
    assert error_reply(response, dns.rcode.FORMERR) is None


@pytest.mark.parametrize(
    "wire",
    [
        # header claims one question, the body is cut short
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05hello",
        # question with a label pointing past the end
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\xff\x00\x01\x00\x01",
        # trailing junk after a complete question
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01junk",
    ],
)
def test_bad_body_is_formerr(wire: bytes) -> None:
    reply = answer(wire, RECORDS)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == 0x1234
    assert response.rcode() == dns.rcode.FORMERR
    assert response.flags & dns.flags.QR and response.flags & dns.flags.RD


def test_question_count_must_be_one() -> None:
    two = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
    two.question.append(dns.message.make_query("example.com.", "A").question[0])
    none = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
    none.question = []
    for query in (two, none):
        response = dns.message.from_wire(answer(query.to_wire(), RECORDS) or b"")
        assert response.rcode() == dns.rcode.FORMERR
        assert query.is_response(response)


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY,
                                    dns.opcode.UPDATE])
def test_other_opcodes_are_notimp(opcode: dns.opcode.Opcode) -> None:
    query = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
    query.set_opcode(opcode)
    response = dns.message.from_wire(answer(query.to_wire(), RECORDS) or b"")
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == opcode
    assert response.id == query.id


def test_non_internet_class_is_refused() -> None:
    response = ask("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    assert response.rcode() == dns.rcode.REFUSED


def test_edns_is_echoed_with_our_payload() -> None:
    response = ask("echo.ns1.svc.cluster.local.", use_edns=0, payload=4096)
    assert response.edns == 0
    assert response.payload == EDNS_PAYLOAD
    assert addresses(response) == ["10.96.0.10"]


def test_unknown_edns_version_is_badvers() -> None:
    response = ask("echo.ns1.svc.cluster.local.", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


@pytest.mark.parametrize(
    ("service", "kw", "tcp", "truncated"),
    [
        ("many", {}, False, True),  # 60 addresses: over 512 bytes
        ("many", {"use_edns": 0, "payload": 512}, False, True),
        ("many", {"use_edns": 0, "payload": 1232}, False, False),
        ("many", {"use_edns": 0, "payload": 4096}, False, False),
        ("many", {}, True, False),
        ("huge", {"use_edns": 0, "payload": 4096}, False, True),  # capped at our 1232
        ("huge", {"use_edns": 0, "payload": 4096}, True, False),
        ("echo", {}, False, False),
    ],
)
def test_udp_truncation(service: str, kw: dict[str, int], tcp: bool, truncated: bool) -> None:
    query = dns.message.make_query(f"{service}.big.svc.cluster.local.", "A", **kw)
    records = DnsRecords("cluster.local", {**RECORDS.services, ("big", "echo"): ("10.96.9.9",)})
    wire = answer(query.to_wire(), records, tcp=tcp)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert bool(response.flags & dns.flags.TC) == truncated
    if truncated:
        assert response.answer == []
        limit = 512 if not kw or kw["payload"] == 512 else EDNS_PAYLOAD
        assert len(wire) <= limit
    else:
        expected = {"many": 60, "huge": 100, "echo": 1}[service]
        assert len(addresses(response)) == expected


def test_error_reply_keeps_opcode_and_rd() -> None:
    query = dns.message.make_query("x.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    reply = error_reply(query.to_wire(), dns.rcode.SERVFAIL) or b""
    flags = struct.unpack("!H", reply[2:4])[0]
    assert reply[:2] == query.to_wire()[:2]
    assert dns.opcode.from_flags(flags) == dns.opcode.NOTIFY
    assert flags & dns.flags.RD and flags & dns.flags.QR
    assert dns.rcode.from_flags(flags, 0) == dns.rcode.SERVFAIL
    assert reply[4:] == bytes(8)


def test_records_snapshot_drops_non_ipv4_and_copies() -> None:
    odd = DnsRecords("cluster.local", {("ns1", "odd"): ("10.96.0.300", "fd00::1", "10.96.0.7")})
    assert odd.services == {("ns1", "odd"): ("10.96.0.7",)}
    assert addresses(ask("odd.ns1.svc.cluster.local.", records=odd)) == ["10.96.0.7"]
    services = {("ns1", "echo"): ("10.96.0.10",)}
    records = DnsRecords("cluster.local", services)
    services[("ns1", "late")] = ("10.96.0.12",)
    assert ask("late.ns1.svc.cluster.local.", records=records).rcode() == dns.rcode.NXDOMAIN
    assert records == DnsRecords("cluster.local", {("ns1", "echo"): ("10.96.0.10",)})
    assert dict(records.pods) == {}


# --------------------------------------------------------------------------- server


@contextmanager
def local_sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    try:
        yield udp, tcp
    finally:
        udp.close()
        tcp.close()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_server_answers_udp_and_tcp() -> None:
    async def scenario() -> None:
        with local_sockets() as (udp, tcp):
            udp_port, tcp_port = udp.getsockname()[1], tcp.getsockname()[1]
            server = DnsServer(lambda: RECORDS)
            await server.start(udp, tcp)
            try:
                query = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
                response = await asyncio.to_thread(
                    dns.query.udp, query, "127.0.0.1", timeout=2, port=udp_port
                )
                assert addresses(response) == ["10.96.0.10"]

                missing = dns.message.make_query("example.com.", "A")
                response = await asyncio.to_thread(
                    dns.query.udp, missing, "127.0.0.1", timeout=2, port=udp_port
                )
                assert response.rcode() == dns.rcode.NXDOMAIN

                big = dns.message.make_query("many.big.svc.cluster.local.", "A")
                response = await asyncio.to_thread(
                    dns.query.udp, big, "127.0.0.1", timeout=2, port=udp_port,
                    raise_on_truncation=False,
                )
                assert response.flags & dns.flags.TC
                response = await asyncio.to_thread(
                    dns.query.tcp, big, "127.0.0.1", timeout=2, port=tcp_port
                )
                assert len(addresses(response)) == 60

                def two_on_one_connection() -> list[dns.message.Message]:
                    with socket.create_connection(("127.0.0.1", tcp_port), timeout=2) as s:
                        return [
                            dns.query.tcp(dns.message.make_query(name, "A"), "127.0.0.1",
                                          timeout=2, sock=s)
                            for name in ("echo.ns1.svc.cluster.local.",
                                         "echo.ns2.svc.cluster.local.")
                        ]

                first, second = await asyncio.to_thread(two_on_one_connection)
                assert addresses(first) == ["10.96.0.10"]
                assert addresses(second) == ["10.96.0.11"]

                # garbage over UDP is dropped without harming the server
                await asyncio.to_thread(_send_udp, b"\x01", udp_port)
                response = await asyncio.to_thread(
                    dns.query.udp, query, "127.0.0.1", timeout=2, port=udp_port
                )
                assert addresses(response) == ["10.96.0.10"]
            finally:
                await server.close()
            assert udp.fileno() == -1 and tcp.fileno() == -1

    run(scenario())


def _send_udp(data: bytes, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


def test_server_hangs_up_on_idle_and_garbage_and_closes_open_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dnsserver, "IDLE_TIMEOUT", 0.2)

    async def scenario() -> None:
        with local_sockets() as (udp, tcp):
            port = tcp.getsockname()[1]
            server = DnsServer(lambda: RECORDS)
            await server.start(udp, tcp)
            try:
                # idle: the server closes the connection after IDLE_TIMEOUT
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await asyncio.wait_for(reader.read(), 2) == b""
                writer.close()

                # a framed message that is not DNS: hang up
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x00\x03abc")
                assert await asyncio.wait_for(reader.read(), 2) == b""
                writer.close()

                # a connection still open when the server closes
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await asyncio.sleep(0.05)
            finally:
                await server.close()
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()

    run(scenario())


def test_server_turns_its_own_failures_into_servfail() -> None:
    def broken() -> DnsRecords:
        raise RuntimeError("store unavailable")

    async def scenario() -> None:
        with local_sockets() as (udp, tcp):
            server = DnsServer(broken)
            await server.start(udp, tcp)
            try:
                query = dns.message.make_query("echo.ns1.svc.cluster.local.", "A")
                response = await asyncio.to_thread(
                    dns.query.udp, query, "127.0.0.1", timeout=2, port=udp.getsockname()[1]
                )
                assert response.rcode() == dns.rcode.SERVFAIL
            finally:
                await server.close()

    run(scenario())
