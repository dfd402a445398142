"""The CA: self-signed root persistence, Istio plug-in CA files, CSR rules, audit log.

Chains are checked twice: with our ``verify_chain`` and with the real ``openssl
verify``, an implementation that is not ours.
"""

from __future__ import annotations

import base64
import re
import stat
from collections.abc import Callable
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zeromesh.errors import CsrRefused, IdentityError, ZeromeshError
from zeromesh.identity import (
    DEFAULT_TTL,
    MAX_TTL,
    CertificateAuthority,
    NodeId,
    PodId,
    generate_key,
    load_chain,
    make_csr,
    pem,
    verify_chain,
)

TD = "cluster.local"
URI = "spiffe://cluster.local/ns/ns1/sa/sleep"
ALLOW: Callable[[str], str | None] = lambda uri: None  # noqa: E731


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(cls)


# ---- self-signed root ----------------------------------------------------------------------------


def test_root_is_created_with_private_files(tmp_path: Path, clock: Any) -> None:
    d = tmp_path / "state" / "ca"
    ca = CertificateAuthority.load_or_create(d, clock=clock)
    assert sorted(p.name for p in d.iterdir()) == ["ca-cert.pem", "ca-key.pem", "root-cert.pem"]
    assert _mode(d) == 0o700
    assert _mode(d / "ca-key.pem") == 0o600
    assert (d / "ca-cert.pem").read_text() == (d / "root-cert.pem").read_text() == ca.root_pem
    assert ca.trust_bundle_pem() == ca.root_pem
    assert ca.trust_domain == TD and ca.default_ttl == DEFAULT_TTL == timedelta(hours=24)
    assert ca.max_ttl == MAX_TTL == timedelta(days=90)


def test_root_certificate_shape(ca: CertificateAuthority, clock: Any) -> None:
    root = ca.signing_cert
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "zeromesh"
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "zeromesh root CA cluster.local"
    bc = _ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = _ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    pub = root.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert root.not_valid_after_utc - root.not_valid_before_utc == timedelta(days=3650)
    assert root.not_valid_before_utc <= clock.now
    root.verify_directly_issued_by(root)


def test_reload_gives_the_same_root(tmp_path: Path, clock: Any,
                                    workload_key: ec.EllipticCurvePrivateKey) -> None:
    first = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    again = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    assert again.root_pem == first.root_pem
    signed = again.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
    verify_chain(signed.leaf, [], load_chain(first.trust_bundle_pem()), at=clock.now)


def test_partial_directory_is_an_error(tmp_path: Path, clock: Any) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.load_or_create(d, clock=clock)
    (d / "ca-key.pem").unlink()
    with pytest.raises(IdentityError, match=r"CA files incomplete, missing ca-key\.pem"):
        CertificateAuthority.load_or_create(d, clock=clock)


def test_reload_checks_the_key(tmp_path: Path, clock: Any) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.load_or_create(d, clock=clock)
    (d / "ca-key.pem").write_text(pem(generate_key()))
    with pytest.raises(IdentityError, match=r"ca-key\.pem: private key does not match"):
        CertificateAuthority.load_or_create(d, clock=clock)


def test_bad_construction_arguments(tmp_path: Path, clock: Any) -> None:
    with pytest.raises(ValueError, match="trust domain"):
        CertificateAuthority.load_or_create(tmp_path / "ca", "Not Valid", clock=clock)
    with pytest.raises(ValueError, match="default_ttl"):
        CertificateAuthority.load_or_create(tmp_path / "ca", default_ttl=timedelta(days=91), clock=clock)


# ---- plug-in CA ----------------------------------------------------------------------------------


def test_plugin_ca_chain_order_and_verification(plugin: Any, tmp_path: Path, clock: Any,
                                                workload_key: ec.EllipticCurvePrivateKey,
                                                openssl_verify: Any) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "unused", plugin_dir=plugin.directory, clock=clock)
    assert not (tmp_path / "unused").exists()  # nothing is created when a plug-in CA is given
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
    assert signed.chain_pem == [pem(signed.leaf), pem(plugin.intermediate), pem(plugin.root)]
    assert signed.leaf.issuer == plugin.intermediate.subject
    assert ca.root_pem == pem(plugin.root) == ca.trust_bundle_pem()
    verify_chain(signed.leaf, [plugin.intermediate], [plugin.root], at=clock.now)
    result = openssl_verify(signed.chain_pem)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip().endswith(": OK")


def test_plugin_cert_chain_without_root_or_ca_cert(plugin: Any, tmp_path: Path, clock: Any,
                                                   workload_key: ec.EllipticCurvePrivateKey) -> None:
    """cert-chain.pem holding only the intermediate (or only the root) gives the same answer."""
    for chain_text in (pem(plugin.intermediate), pem(plugin.root)):
        plugin.write("cert-chain.pem", chain_text)
        ca = CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
        signed = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
        assert signed.chain_pem[1:] == [pem(plugin.intermediate), pem(plugin.root)]


def test_plugin_four_levels(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                            ec_keys: list[ec.EllipticCurvePrivateKey],
                            workload_key: ec.EllipticCurvePrivateKey, openssl_verify: Any) -> None:
    second = make_ca_cert("Cluster CA", ec_keys[1], plugin.intermediate, plugin.intermediate_key)
    plugin.write("ca-cert.pem", pem(second))
    plugin.write("ca-key.pem", pem(ec_keys[1]))
    plugin.write("cert-chain.pem", pem(second) + pem(plugin.intermediate) + pem(plugin.root))
    ca = CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
    assert signed.chain_pem == [pem(signed.leaf), pem(second), pem(plugin.intermediate), pem(plugin.root)]
    verify_chain(signed.leaf, [plugin.intermediate, second], [plugin.root], at=clock.now)  # any order
    assert openssl_verify(signed.chain_pem).returncode == 0


def test_plugin_with_several_roots(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                                   ec_keys: list[ec.EllipticCurvePrivateKey],
                                   workload_key: ec.EllipticCurvePrivateKey) -> None:
    """During a root rotation root-cert.pem holds two roots: both are trusted, the chain ends at ours."""
    new_root = make_ca_cert("New Root CA", ec_keys[2])
    plugin.write("root-cert.pem", pem(new_root) + pem(plugin.root))
    ca = CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
    assert ca.trust_bundle_pem() == pem(new_root) + pem(plugin.root)
    assert ca.root_pem == pem(plugin.root)
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
    assert signed.chain_pem[-1] == pem(plugin.root)


def test_leaf_never_outlives_the_plugin_chain(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                                              rsa_root_key: rsa.RSAPrivateKey,
                                              workload_key: ec.EllipticCurvePrivateKey) -> None:
    short = make_ca_cert("Intermediate CA", plugin.intermediate_key, plugin.root, rsa_root_key,
                         not_before=clock.now - timedelta(hours=1), lifetime=timedelta(hours=11))
    plugin.write("ca-cert.pem", pem(short))
    plugin.write("cert-chain.pem", pem(short) + pem(plugin.root))
    ca = CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)
    assert signed.not_after == short.not_valid_after_utc
    assert ca.recent()[-1].reason == "not_after capped at the CA chain's expiry"


PLUGIN_FILES = ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"]


@pytest.mark.parametrize("name", PLUGIN_FILES)
def test_plugin_missing_file(plugin: Any, tmp_path: Path, clock: Any, name: str) -> None:
    (plugin.directory / name).unlink()
    with pytest.raises(IdentityError, match=rf"{re.escape(str(plugin.directory / name))}: missing"):
        CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)


@pytest.mark.parametrize("name", PLUGIN_FILES)
def test_plugin_garbage_file(plugin: Any, tmp_path: Path, clock: Any, name: str) -> None:
    plugin.write(name, "this is not PEM\n")
    expected = rf"{re.escape(name)}: not (a PEM certificate|an unencrypted PEM)"
    with pytest.raises(IdentityError, match=expected):
        CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)


def _load_error(plugin: Any, tmp_path: Path, clock: Any) -> str:
    with pytest.raises(IdentityError) as exc:
        CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
    return str(exc.value)


def test_plugin_key_mismatch(plugin: Any, tmp_path: Path, clock: Any,
                             ec_keys: list[ec.EllipticCurvePrivateKey]) -> None:
    plugin.write("ca-key.pem", pem(ec_keys[3]))
    message = _load_error(plugin, tmp_path, clock)
    assert message.startswith(f"{plugin.directory / 'ca-key.pem'}: private key does not match")
    assert "ca-cert.pem" in message


def test_plugin_ca_cert_not_a_ca(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                                 rsa_root_key: rsa.RSAPrivateKey) -> None:
    leafish = make_ca_cert("Intermediate CA", plugin.intermediate_key, plugin.root, rsa_root_key, ca=False)
    plugin.write("ca-cert.pem", pem(leafish))
    message = _load_error(plugin, tmp_path, clock)
    assert message.startswith(f"{plugin.directory / 'ca-cert.pem'}: ")
    assert "not a CA certificate (BasicConstraints CA:FALSE)" in message


def test_plugin_broken_chain(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                             ec_keys: list[ec.EllipticCurvePrivateKey]) -> None:
    """cert-chain.pem ending at a different root than root-cert.pem."""
    stranger = make_ca_cert("Root CA", ec_keys[2])  # same name, other key
    plugin.write("cert-chain.pem", pem(plugin.intermediate) + pem(stranger))
    message = _load_error(plugin, tmp_path, clock)
    assert message.startswith(
        f"{plugin.directory / 'cert-chain.pem'}: does not chain ca-cert.pem to root-cert.pem")


def test_plugin_root_not_matching(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                                  ec_keys: list[ec.EllipticCurvePrivateKey]) -> None:
    plugin.write("root-cert.pem", pem(make_ca_cert("Other Root", ec_keys[2])))
    plugin.write("cert-chain.pem", pem(plugin.intermediate))
    message = _load_error(plugin, tmp_path, clock)
    assert "cert-chain.pem: does not chain ca-cert.pem to root-cert.pem" in message
    assert "is not signed by any certificate in root-cert.pem" in message


def test_plugin_expired_ca_cert(plugin: Any, tmp_path: Path, clock: Any) -> None:
    clock.advance(timedelta(days=400))
    message = _load_error(plugin, tmp_path, clock)
    assert message.startswith(f"{plugin.directory / 'ca-cert.pem'}: certificate 'CN=Intermediate CA,O=Istio' "
                              "expired at")


def test_plugin_key_type(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                         rsa_root_key: rsa.RSAPrivateKey) -> None:
    weak = ec.generate_private_key(ec.SECP256K1())
    plugin.write("ca-key.pem", pem(weak))
    plugin.write("ca-cert.pem", pem(make_ca_cert("Intermediate CA", weak, plugin.root, rsa_root_key)))
    message = _load_error(plugin, tmp_path, clock)
    assert message == f"{plugin.directory / 'ca-key.pem'}: key type EC secp256k1 not accepted " \
                      "(EC P-256/P-384 or RSA >= 2048 only)"


def test_plugin_root_not_a_ca(plugin: Any, tmp_path: Path, clock: Any, make_ca_cert: Any,
                              ec_keys: list[ec.EllipticCurvePrivateKey]) -> None:
    plugin.write("root-cert.pem", pem(plugin.root) + pem(make_ca_cert("Leaf", ec_keys[2], ca=False)))
    message = _load_error(plugin, tmp_path, clock)
    assert message.startswith(
        f"{plugin.directory / 'root-cert.pem'}: certificate 2 'CN=Leaf,O=Istio' is not a CA")


# ---- sign_csr: the happy path --------------------------------------------------------------------


def test_sign_csr_leaf_shape(ca: CertificateAuthority, clock: Any, workload_key: ec.EllipticCurvePrivateKey,
                             openssl_verify: Any) -> None:
    seen: list[str] = []

    def allowed(uri: str) -> str | None:
        seen.append(uri)
        return None

    signed = ca.sign_csr(make_csr(workload_key, URI), caller="node1", allowed=allowed)
    leaf = signed.leaf
    assert seen == [URI]
    assert signed.identity == URI
    assert len(leaf.subject) == 0
    assert leaf.issuer == ca.signing_cert.subject
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [x509.UniformResourceIdentifier(URI)]
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(leaf, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        workload_key.public_key())
    assert (_ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
            == _ext(ca.signing_cert, x509.SubjectKeyIdentifier).value.digest)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert 0 < leaf.serial_number < 2**128
    assert signed.serial == f"{leaf.serial_number:x}"
    assert leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == \
        workload_key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    # validity: a minute of skew allowance, then the default 24 h
    assert leaf.not_valid_before_utc == clock.now - timedelta(minutes=1)
    assert leaf.not_valid_after_utc == clock.now + timedelta(hours=24)   # lifetime counted from now
    assert signed.not_after == leaf.not_valid_after_utc
    # chain: leaf, root last; verifies with ours and with openssl
    assert signed.chain_pem == [pem(leaf), ca.root_pem]
    verify_chain(leaf, [], ca.roots, at=clock.now)
    result = openssl_verify(signed.chain_pem)
    assert result.returncode == 0, result.stderr + result.stdout
    # audited
    (record,) = ca.recent()
    assert (record.caller, record.identity, record.outcome, record.serial, record.not_after) == (
        "node1", URI, "signed", signed.serial, signed.not_after)
    assert record.at == clock.now and record.reason == ""


def test_csr_subject_and_extensions_are_ignored(ca: CertificateAuthority,
                                                workload_key: ec.EllipticCurvePrivateKey) -> None:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(workload_key, hashes.SHA256()))
    leaf = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), caller="n1", allowed=ALLOW).leaf
    assert len(leaf.subject) == 0
    assert not _ext(leaf, x509.BasicConstraints).value.ca
    assert _ext(leaf, x509.SubjectAlternativeName).critical


@pytest.mark.parametrize(("ttl", "expected", "note"), [
    (None, timedelta(hours=24), ""),
    (timedelta(0), timedelta(hours=24), ""),
    (timedelta(seconds=-5), timedelta(hours=24), ""),
    (timedelta(hours=1), timedelta(hours=1), ""),
    (timedelta(days=90), timedelta(days=90), ""),
    (timedelta(days=365), timedelta(days=90), "requested ttl 365 days, 0:00:00 capped at 90 days, 0:00:00"),
])
def test_ttl(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey, ttl: timedelta | None,
             expected: timedelta, note: str) -> None:
    leaf = ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW, ttl=ttl).leaf
    # The lifetime counts from the signing time; not_before is backdated a minute for clock skew.
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == expected + timedelta(minutes=1)
    assert ca.recent()[-1].reason == note


def test_custom_default_and_max_ttl(tmp_path: Path, clock: Any,
                                    workload_key: ec.EllipticCurvePrivateKey) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock, default_ttl=timedelta(hours=2),
                                             max_ttl=timedelta(hours=4))
    csr = make_csr(workload_key, URI)
    assert ca.sign_csr(csr, caller="n", allowed=ALLOW).not_after == clock.now + timedelta(hours=2)
    assert ca.sign_csr(csr, caller="n", allowed=ALLOW, ttl=timedelta(days=1)).not_after == \
        clock.now + timedelta(hours=4)


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: rsa.generate_private_key(65537, 2048),
], ids=["P-384", "RSA-2048"])
def test_other_accepted_key_types(ca: CertificateAuthority, clock: Any, make_key: Any) -> None:
    signed = ca.sign_csr(make_csr(make_key(), URI), caller="n1", allowed=ALLOW)
    verify_chain(signed.leaf, [], ca.roots, at=clock.now)


def test_sign_accepts_str_pem(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> None:
    signed = ca.sign_csr(make_csr(workload_key, URI).decode(), caller="n1", allowed=ALLOW)  # type: ignore[arg-type]
    assert signed.identity == URI


# ---- sign_csr: every refusal ---------------------------------------------------------------------


def _csr(key: Any, names: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def _tampered(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A ztunnel CSR whose requested identity was changed after signing."""
    der = x509.load_pem_x509_csr(make_csr(key, URI)).public_bytes(serialization.Encoding.DER)
    der = der.replace(b"/sa/sleep", b"/sa/admin")
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n".encode()


OTHER_TD = "spiffe://other.example/ns/ns1/sa/sleep"
NODE = NodeId(TD, "node1").uri
POD = PodId(TD, "ns1", "sleep-1", "sleep").uri
U = x509.UniformResourceIdentifier

REFUSALS: list[tuple[str, Callable[[ec.EllipticCurvePrivateKey], bytes], str, str]] = [
    ("bad-pem", lambda k: b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
     "", "CSR is not a PEM certificate request"),
    ("not-pem", lambda k: b"hello", "", "CSR is not a PEM certificate request"),
    ("tampered", _tampered, "spiffe://cluster.local/ns/ns1/sa/admin", "CSR signature does not verify"),
    ("dsa", lambda k: make_csr(dsa.generate_private_key(1024), URI), URI,
     "key type DSA-1024 not accepted (EC P-256/P-384 or RSA >= 2048 only)"),
    ("rsa-1024", lambda k: make_csr(rsa.generate_private_key(65537, 1024), URI), URI,
     "key type RSA-1024 not accepted (EC P-256/P-384 or RSA >= 2048 only)"),
    ("ed25519", lambda k: make_csr(ed25519.Ed25519PrivateKey.generate(), URI), URI,
     "key type Ed25519 not accepted (EC P-256/P-384 or RSA >= 2048 only)"),
    ("p521", lambda k: make_csr(ec.generate_private_key(ec.SECP521R1()), URI), URI,
     "key type EC P-521 not accepted"),
    ("no-san", lambda k: _csr(k, []), "", "CSR has no subjectAltName"),
    ("two-uris", lambda k: _csr(k, [U(URI), U("spiffe://cluster.local/ns/ns1/sa/other")]),
     f"{URI},spiffe://cluster.local/ns/ns1/sa/other",
     f"CSR has 2 SANs (URI {URI}, URI spiffe://cluster.local/ns/ns1/sa/other); "
     "exactly one URI SAN is accepted"),
    ("uri-and-dns", lambda k: _csr(k, [U(URI), x509.DNSName("sleep.ns1.svc")]), f"{URI},sleep.ns1.svc",
     "CSR has 2 SANs"),
    ("dns", lambda k: _csr(k, [x509.DNSName("sleep.ns1.svc")]), "sleep.ns1.svc",
     "CSR SAN is a DNS name (sleep.ns1.svc); only a single URI SAN (the SPIFFE id) is accepted"),
    ("ip", lambda k: _csr(k, [x509.IPAddress(IPv4Address("10.0.0.1"))]), "10.0.0.1",
     "CSR SAN is an IP address (10.0.0.1)"),
    ("other-trust-domain", lambda k: make_csr(k, OTHER_TD), OTHER_TD,
     f"{OTHER_TD} is in trust domain 'other.example', but this CA signs for trust domain 'cluster.local'"),
    ("non-spiffe", lambda k: make_csr(k, "https://example.com/ns/a/sa/b"), "https://example.com/ns/a/sa/b",
     "requested identity is not a workload SPIFFE id: 'https://example.com/ns/a/sa/b' is not a SPIFFE id"),
    ("bad-spiffe", lambda k: make_csr(k, "spiffe://cluster.local/ns/ns1/sa/sleep/x"),
     "spiffe://cluster.local/ns/ns1/sa/sleep/x", "requested identity is not a workload SPIFFE id"),
    ("node-bootstrap", lambda k: make_csr(k, NODE), NODE,
     f"{NODE} is a zeromesh bootstrap identity; CSRs may only request workload identities"),
    ("pod-bootstrap", lambda k: make_csr(k, POD), POD, f"{POD} is a zeromesh bootstrap identity"),
]


@pytest.mark.parametrize(("make", "identity", "reason"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_refusals(ca: CertificateAuthority, clock: Any, workload_key: ec.EllipticCurvePrivateKey,
                  make: Callable[[ec.EllipticCurvePrivateKey], bytes], identity: str, reason: str) -> None:
    asked: list[str] = []

    def allowed(uri: str) -> str | None:
        asked.append(uri)
        return None

    with pytest.raises(CsrRefused) as exc:
        ca.sign_csr(make(workload_key), caller="node1", allowed=allowed)
    assert str(exc.value).startswith(reason)
    assert asked == []  # the policy is consulted only for well-formed requests
    (record,) = ca.recent()
    assert (record.caller, record.identity, record.outcome, record.reason) == (
        "node1", identity, "refused", str(exc.value))
    assert (record.at, record.serial, record.not_after) == (clock.now, "", None)


def test_allowed_refusing(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> None:
    reason = "node agent on node1 may not obtain ns2/sa/x: no such pod on node1"
    uri = "spiffe://cluster.local/ns/ns2/sa/x"
    with pytest.raises(CsrRefused, match=f"^{re.escape(reason)}$"):
        ca.sign_csr(make_csr(workload_key, uri), caller="node1",
                    allowed=lambda u: reason if u == uri else None)
    (record,) = ca.recent()
    assert (record.caller, record.identity, record.outcome, record.reason) == (
        "node1", uri, "refused", reason)


def test_refusal_is_an_identity_error() -> None:
    assert issubclass(CsrRefused, IdentityError) and issubclass(IdentityError, ZeromeshError)


def test_expired_ca_refuses_to_sign(ca: CertificateAuthority, clock: Any,
                                    workload_key: ec.EllipticCurvePrivateKey) -> None:
    clock.advance(timedelta(days=3651))
    with pytest.raises(IdentityError, match="the CA chain expired at") as exc:
        ca.sign_csr(make_csr(workload_key, URI), caller="node1", allowed=ALLOW)
    assert not isinstance(exc.value, CsrRefused)  # the CA's fault, not the caller's
    assert ca.recent()[-1].outcome == "refused"


def test_naive_clock_is_rejected(tmp_path: Path, clock: Any,
                                 workload_key: ec.EllipticCurvePrivateKey) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    clock.now = clock.now.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.sign_csr(make_csr(workload_key, URI), caller="n1", allowed=ALLOW)


# ---- issue ---------------------------------------------------------------------------------------


def test_issue_server_cert(ca: CertificateAuthority, clock: Any, workload_key: ec.EllipticCurvePrivateKey,
                          openssl_verify: Any) -> None:
    uri = "spiffe://cluster.local/ns/istio-system/sa/istiod"
    signed = ca.issue(workload_key.public_key(), uri, timedelta(days=30),
                      dns_names=["istiod.istio-system.svc", "zeromesh-cp"],
                      ips=[IPv4Address("10.96.0.10"), IPv6Address("::1")], server=True)
    leaf = signed.leaf
    assert leaf.subject.rfc4514_string() == "CN=istiod.istio-system.svc"
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert san.value.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc", "zeromesh-cp"]
    assert san.value.get_values_for_type(x509.IPAddress) == [IPv4Address("10.96.0.10"), IPv6Address("::1")]
    assert ExtendedKeyUsageOID.SERVER_AUTH in _ext(leaf, x509.ExtendedKeyUsage).value
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=30, minutes=1)
    verify_chain(leaf, [], ca.roots, at=clock.now)
    assert openssl_verify(signed.chain_pem).returncode == 0
    record = ca.recent()[-1]
    assert (record.caller, record.identity, record.outcome) == ("control-plane", uri, "signed")


def test_issue_server_cert_with_only_ips(ca: CertificateAuthority,
                                         workload_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = ca.issue(workload_key.public_key(), "spiffe://cluster.local/ns/zeromesh/sa/cp", None,
                    ips=[IPv4Address("172.18.0.2")], server=True).leaf
    assert leaf.subject.rfc4514_string() == "CN=172.18.0.2"


@pytest.mark.parametrize("uri", [NODE, POD])
def test_issue_bootstrap_credentials(ca: CertificateAuthority, clock: Any,
                                     workload_key: ec.EllipticCurvePrivateKey, uri: str) -> None:
    signed = ca.issue(workload_key.public_key(), uri, timedelta(hours=1))
    assert len(signed.leaf.subject) == 0
    assert _ext(signed.leaf, x509.SubjectAlternativeName).critical
    assert signed.identity == uri and signed.chain_pem[-1] == ca.root_pem
    verify_chain(signed.leaf, [], ca.roots, at=clock.now)


@pytest.mark.parametrize(("uri", "key", "message"), [
    ("spiffe://other.example/zeromesh/node/n1", None, "is not in trust domain 'cluster.local'"),
    ("https://example.com", None, "not a zeromesh identity"),
    (NODE, "rsa1024", "key type RSA-1024 not accepted"),
])
def test_issue_refusals(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey, uri: str,
                        key: str | None, message: str) -> None:
    public = rsa.generate_private_key(65537, 1024).public_key() if key else workload_key.public_key()
    with pytest.raises(IdentityError, match=re.escape(message)):
        ca.issue(public, uri, timedelta(hours=1))
    record = ca.recent()[-1]
    assert (record.caller, record.outcome, record.identity) == ("control-plane", "refused", uri)


# ---- audit log -----------------------------------------------------------------------------------


def test_recent_is_a_bounded_tail(ca: CertificateAuthority, clock: Any,
                                  workload_key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(workload_key, URI)
    for i in range(5):
        ca.sign_csr(csr, caller=f"node{i}", allowed=ALLOW)
        clock.advance(timedelta(seconds=1))
    assert [r.caller for r in ca.recent()] == [f"node{i}" for i in range(5)]
    assert [r.caller for r in ca.recent(limit=2)] == ["node3", "node4"]
    assert ca.recent(limit=0) == []
