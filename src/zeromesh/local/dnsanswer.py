"""Cluster DNS answers (CoreDNS's kubernetes plugin, minus forwarding), as a pure function.

Every pod resolves through this, so two properties matter most:

* It never forwards: names outside the cluster zone get NXDOMAIN with RA=0.
  Pods must not reach anything outside the cluster by name.
* It answers quickly and definitively inside the zone: existing names with no
  data of the asked type get NOERROR/NODATA (so an AAAA lookup next to an A
  lookup does not fail the whole getaddrinfo), absent names get an
  authoritative NXDOMAIN with the zone's SOA (so resolvers walking the search
  path, e.g. `echo.ns1.svc.cluster.local.ns1.svc.cluster.local.`, move on).

Names served, under zone Z (e.g. `cluster.local`):

* `<svc>.<ns>.svc.Z.`   A (TTL 5) for the service's addresses; ANY also gets them.
* `<ns>.svc.Z.`, `svc.Z.`, `Z.`   exist, without data (NODATA); `Z.` SOA is answered.
  A namespace exists when at least one service lives in it.
* `<d>.<c>.<b>.<a>.in-addr.arpa.`   PTR to every service name having that address.

Wire-level rules: a query that is too short for a header, or is itself a
response, gets no answer (None) so that we can never loop with another server.
A header followed by a bad body gets FORMERR; more or fewer than one question
FORMERR; an opcode other than QUERY NOTIMP; EDNS versions above 0 BADVERS; a
class other than IN REFUSED. Responses carry EDNS (payload 1232) when the
query did. Over UDP they are cut to 512 bytes without EDNS, or to the client's
EDNS size capped at our 1232 with it, setting TC so the client retries on TCP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

__all__ = ["EDNS_PAYLOAD", "TTL", "DnsRecords", "answer", "error_reply"]

TTL = 5
# The DNS flag day 2020 recommendation: avoids IP fragmentation.
EDNS_PAYLOAD = 1232
_CLASSIC_UDP = 512
_TCP_MAX = 65535
_HEADER = 12
_SVC = b"svc"
_REVERSE_V4 = dns.name.from_text("in-addr.arpa.")


def _is_ipv4(ip: str) -> bool:
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return True


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DnsRecords:
    """Immutable snapshot of what the cluster DNS knows.

    `services` maps (namespace, service) to IPv4 addresses: the ClusterIP, or
    the ready endpoint IPs of a headless service. `pods` is reserved for pod
    records and is not served yet. The mappings are copied on construction, so
    later changes by the caller do not leak in. Entries that are not IPv4
    addresses are dropped (the name still exists, with fewer A records): one odd
    service must not take DNS down for every pod.
    """

    zone: str
    services: Mapping[tuple[str, str], tuple[str, ...]]
    pods: Mapping[str, str] = field(default_factory=_empty)
    # Lookup structures derived once per snapshot, not per query.
    _origin: dns.name.Name = field(init=False, repr=False, compare=False)
    _by_name: Mapping[tuple[bytes, bytes], tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )
    _namespaces: frozenset[bytes] = field(init=False, repr=False, compare=False)
    _by_ip: Mapping[str, tuple[dns.name.Name, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        origin = dns.name.from_text(self.zone.strip(".") + ".")
        services = MappingProxyType(
            {(ns, svc): tuple(ip for ip in ips if _is_ipv4(ip))
             for (ns, svc), ips in self.services.items()}
        )
        by_name: dict[tuple[bytes, bytes], tuple[str, ...]] = {}
        by_ip: dict[str, list[dns.name.Name]] = {}
        for (ns, svc), ips in sorted(services.items()):
            key = (ns.lower().encode("ascii"), svc.lower().encode("ascii"))
            by_name[key] = ips
            name = dns.name.Name((key[1], key[0], _SVC)).concatenate(origin)
            for ip in ips:
                names = by_ip.setdefault(ip, [])
                if name not in names:
                    names.append(name)
        object.__setattr__(self, "services", services)
        object.__setattr__(self, "pods", MappingProxyType(dict(self.pods)))
        object.__setattr__(self, "_origin", origin)
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_namespaces", frozenset(ns for ns, _ in by_name))
        object.__setattr__(
            self, "_by_ip", MappingProxyType({ip: tuple(n) for ip, n in by_ip.items()})
        )


# --------------------------------------------------------------------------- resolution


@dataclass(slots=True)
class _Result:
    rcode: dns.rcode.Rcode
    authoritative: bool
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)


def _soa(records: DnsRecords) -> dns.rrset.RRset:
    """The zone's SOA: negative answers carry it so resolvers may cache them for TTL seconds."""
    origin = records._origin
    return dns.rrset.from_text(
        origin, TTL, "IN", "SOA",
        f"ns.dns.{origin} hostmaster.{origin} 1 7200 1800 86400 {TTL}",
    )


def _in_zone(qname: dns.name.Name, qtype: int, records: DnsRecords) -> _Result:
    labels = tuple(label.lower() for label in qname.relativize(records._origin).labels)
    nodata = _Result(dns.rcode.NOERROR, True, authority=[_soa(records)])
    nxdomain = _Result(dns.rcode.NXDOMAIN, True, authority=[_soa(records)])
    if labels == ():
        if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            return _Result(dns.rcode.NOERROR, True, answer=[_soa(records)])
        return nodata
    if labels == (_SVC,):
        return nodata
    if len(labels) == 2 and labels[1] == _SVC:
        return nodata if labels[0] in records._namespaces else nxdomain
    if len(labels) == 3 and labels[2] == _SVC:
        ips = records._by_name.get((labels[1], labels[0]))
        if ips is None:
            return nxdomain
        if qtype in (dns.rdatatype.A, dns.rdatatype.ANY) and ips:
            rrset = dns.rrset.from_text_list(qname, TTL, "IN", "A", list(ips))
            return _Result(dns.rcode.NOERROR, True, answer=[rrset])
        return nodata
    return nxdomain


def _reverse(qname: dns.name.Name, qtype: int, records: DnsRecords) -> _Result:
    try:
        ip = dns.reversename.to_address(qname)
    except (dns.exception.DNSException, ValueError):
        ip = ""
    names = records._by_ip.get(ip) if len(qname.labels) == 7 else None
    if not names:
        return _Result(dns.rcode.NXDOMAIN, False)
    if qtype not in (dns.rdatatype.PTR, dns.rdatatype.ANY):
        return _Result(dns.rcode.NOERROR, True)
    rrset = dns.rrset.from_text_list(qname, TTL, "IN", "PTR", [n.to_text() for n in names])
    return _Result(dns.rcode.NOERROR, True, answer=[rrset])


def _resolve(qname: dns.name.Name, qtype: int, records: DnsRecords) -> _Result:
    if qname.is_subdomain(records._origin):
        return _in_zone(qname, qtype, records)
    if qname.is_subdomain(_REVERSE_V4):
        return _reverse(qname, qtype, records)
    # Not ours, and we never forward.
    return _Result(dns.rcode.NXDOMAIN, False)


# --------------------------------------------------------------------------- wire


def error_reply(query: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A header-only reply with `rcode`, for queries we cannot (or will not) parse further.

    None when `query` has no complete header or is itself a response.
    """
    if len(query) < _HEADER or query[2] & 0x80:
        return None
    opcode_rd = query[2] & 0x79  # opcode bits and RD
    flags = bytes([0x80 | opcode_rd, int(rcode) & 0x0F])
    return query[:2] + flags + bytes(8)


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return _CLASSIC_UDP
    return max(_CLASSIC_UDP, min(query.payload, EDNS_PAYLOAD))


def answer(query: bytes, records: DnsRecords, *, tcp: bool = False) -> bytes | None:
    """The wire-format response to the wire-format `query`, or None to drop it.

    `tcp=True` lifts the UDP size limit (the caller adds the 2-byte length).
    """
    if len(query) < _HEADER or query[2] & 0x80:
        return None
    # Decided on the header alone: other opcodes have other wire layouts.
    if dns.opcode.from_flags(int.from_bytes(query[2:4], "big")) != dns.opcode.QUERY:
        return error_reply(query, dns.rcode.NOTIMP)
    try:
        msg = dns.message.from_wire(query)
    except dns.message.ShortHeader:
        return None
    except Exception:  # any parse failure past the header is the client's fault
        return error_reply(query, dns.rcode.FORMERR)
    if len(msg.question) != 1:
        return error_reply(query, dns.rcode.FORMERR)

    response = dns.message.make_response(msg, our_payload=EDNS_PAYLOAD)
    limit = _TCP_MAX if tcp else _udp_limit(msg)
    if msg.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
        return response.to_wire(max_size=limit, prefer_truncation=True)

    question = msg.question[0]
    if question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        return response.to_wire(max_size=limit, prefer_truncation=True)

    result = _resolve(question.name, question.rdtype, records)
    response.set_rcode(result.rcode)
    if result.authoritative:
        response.flags |= dns.flags.AA
    # Answers are built with our lower-cased names; echo the asker's spelling.
    for rrset in result.answer:
        rrset.name = question.name
    response.answer = result.answer
    response.authority = result.authority
    return response.to_wire(max_size=limit, prefer_truncation=True)
