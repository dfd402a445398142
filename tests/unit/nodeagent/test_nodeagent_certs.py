"""Workload certificate manager: on-demand fetch, prefetch, half-life renewal, back-off, drop,
and the TLS contexts HBONE uses — handshakes run in memory (ssl.MemoryBIO), with a real CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from zeromesh.identity.ca import CertificateAuthority
from zeromesh.nodeagent.certs import BACKOFF_MAX, CertManager

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)   # real time: OpenSSL checks validity with it


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", clock=lambda: T0)


class Signer:
    """The real CA behind the node agent's request function; can be told to fail."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.calls = 0
        self.fail = False

    async def __call__(self, csr: bytes) -> list[str]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("control plane away")
        return self.ca.sign_csr(csr, caller="test", allowed=lambda uri: None).chain_pem


def test_concurrent_callers_share_one_fetch(ca: CertificateAuthority, tmp_path: Path) -> None:
    signer = Signer(ca)
    mgr = CertManager("cluster.local", signer, tmp_path / "certs", clock=Clock())

    async def go() -> None:
        certs = await asyncio.gather(*(mgr.get("ns1", "sleep") for _ in range(20)))
        assert len({id(c) for c in certs}) == 1
        assert certs[0].identity.uri == "spiffe://cluster.local/ns/ns1/sa/sleep"
        assert signer.calls == 1
        assert (await mgr.get("ns1", "sleep")) is certs[0] and signer.calls == 1
    asyncio.run(go())


def test_renewal_at_half_life_and_drop(ca: CertificateAuthority, tmp_path: Path) -> None:
    clock = Clock()
    signer = Signer(ca)
    mgr = CertManager("cluster.local", signer, tmp_path / "certs", clock=clock)

    async def go() -> None:
        mgr.want({("ns1", "a")})
        assert mgr.next_due() == (("ns1", "a"), 0.0)
        first = await mgr.get("ns1", "a")
        ident, delay = mgr.next_due()
        # 24 h from now (not_before backdated a minute): refresh at half of what is left.
        assert ident == ("ns1", "a") and 11.9 * 3600 < delay <= 12 * 3600
        first.server_context(ca.trust_bundle_pem())
        files = sorted(p.name for p in (tmp_path / "certs").iterdir())
        assert len(files) == 2
        clock.now = first.refresh_at + dt.timedelta(seconds=1)
        assert mgr.next_due()[1] == 0.0
        task = asyncio.create_task(mgr.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if mgr.certs[("ns1", "a")] is not first:
                break
        second = mgr.certs[("ns1", "a")]
        assert second is not first and second.leaf.serial_number != first.leaf.serial_number
        # The last pod of the account leaves: the certificate and its files go.
        second.client_context(ca.trust_bundle_pem())
        mgr.want(set())
        assert mgr.certs == {} and list((tmp_path / "certs").iterdir()) == []
        task.cancel()
    asyncio.run(go())


def test_failures_back_off_and_are_visible(ca: CertificateAuthority, tmp_path: Path) -> None:
    signer = Signer(ca)
    signer.fail = True
    mgr = CertManager("cluster.local", signer, tmp_path / "certs", clock=Clock())

    async def go() -> None:
        mgr.want({("ns1", "a")})
        task = asyncio.create_task(mgr.run())
        for _ in range(50):
            await asyncio.sleep(0.01)
            if ("ns1", "a") in mgr.failures:
                break
        task.cancel()
        assert mgr.failures[("ns1", "a")][0] >= 1
        view = mgr.view()
        assert view[0]["failures"] >= 1 and "control plane away" in view[0]["error"]
        mgr.failures[("ns1", "a")] = (20, "x")
        assert mgr.next_due()[1] == BACKOFF_MAX
    asyncio.run(go())


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake in memory, no sockets."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=None)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done_c = done_s = False
    for _ in range(10):
        for obj, name in ((c, "c"), (s, "s")):
            try:
                obj.do_handshake()
                if name == "c":
                    done_c = True
                else:
                    done_s = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done_c and done_s:
            # TLS 1.3: the server verifies the client's certificate after the client is done.
            c.write(b"x")
            s_in.write(c_out.read())
            assert s.read(1) == b"x"
            return c, s
    raise AssertionError("handshake did not finish")


def test_hbone_tls_contexts_mutual_tls13_h2_and_peer_identity(ca: CertificateAuthority,
                                                              tmp_path: Path) -> None:
    mgr = CertManager("cluster.local", Signer(ca), tmp_path / "certs", clock=Clock())

    async def certs() -> tuple:  # type: ignore[type-arg]
        return await mgr.get("ns1", "client"), await mgr.get("ns2", "server")
    cli, srv = asyncio.run(certs())
    roots = ca.trust_bundle_pem()
    c, s = _handshake(cli.client_context(roots), srv.server_context(roots))
    assert c.version() == "TLSv1.3" and c.selected_alpn_protocol() == "h2"
    assert "GCM" in c.cipher()[0] or "CHACHA" in c.cipher()[0]
    peer = x509.load_der_x509_certificate(c.getpeercert(binary_form=True))
    sans = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == \
        ["spiffe://cluster.local/ns/ns2/sa/server"]
    client_seen = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
    assert client_seen.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/ns1/sa/client"]


def test_server_requires_a_client_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    mgr = CertManager("cluster.local", Signer(ca), tmp_path / "certs", clock=Clock())
    srv = asyncio.run(mgr.get("ns2", "server"))
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=ca.trust_bundle_pem())
    bare.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError, match=r"PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED"):
        _handshake(bare, srv.server_context(ca.trust_bundle_pem()))


def test_client_refuses_a_server_from_another_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", clock=lambda: T0)
    mine = CertManager("cluster.local", Signer(ca), tmp_path / "a", clock=Clock())
    theirs = CertManager("cluster.local", Signer(other), tmp_path / "b", clock=Clock())
    cli = asyncio.run(mine.get("ns1", "client"))
    srv = asyncio.run(theirs.get("ns2", "server"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cli.client_context(ca.trust_bundle_pem()),
                   srv.server_context(other.trust_bundle_pem()))
