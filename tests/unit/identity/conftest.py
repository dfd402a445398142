"""Shared fixtures for the zeromesh.identity tests: a fixed clock, keys made once, CA sets.

Keys are generated once per session (P-256 is fast, RSA/DSA less so) so the whole
identity suite stays well under five seconds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from zeromesh.identity import CertificateAuthority, generate_key, pem

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca(tmp_path: Path, clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)


@pytest.fixture(scope="session")
def workload_key() -> ec.EllipticCurvePrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def rsa_root_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="session")
def ec_keys() -> list[ec.EllipticCurvePrivateKey]:
    """A few P-256 keys for intermediates and impostors."""
    return [generate_key() for _ in range(4)]


def _ku(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


MakeCaCert = Callable[..., x509.Certificate]


@pytest.fixture(scope="session")
def make_ca_cert() -> MakeCaCert:
    """Build a CA certificate like Istio's cert tooling does (issuer None: self-signed)."""

    def make(cn: str, key: CertificateIssuerPrivateKeyTypes, issuer: x509.Certificate | None = None,
             issuer_key: CertificateIssuerPrivateKeyTypes | None = None, *, ca: bool = True,
             not_before: datetime = NOW - timedelta(days=1),
             lifetime: timedelta = timedelta(days=365)) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        signer_key = issuer_key if issuer_key is not None else key
        builder = (x509.CertificateBuilder()
                   .subject_name(name)
                   .issuer_name(issuer.subject if issuer is not None else name)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_before + lifetime)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(_ku(cert_sign=ca), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                                  critical=False))
        return builder.sign(signer_key, hashes.SHA256())

    return make


@dataclass
class PluginSet:
    directory: Path
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    def write(self, name: str, text: str) -> None:
        (self.directory / name).write_text(text)


@pytest.fixture
def plugin(tmp_path: Path, make_ca_cert: MakeCaCert, rsa_root_key: rsa.RSAPrivateKey,
           ec_keys: list[ec.EllipticCurvePrivateKey]) -> PluginSet:
    """A real 3-level plug-in set in Istio's layout: RSA root → EC intermediate (ca-cert) → leaves."""
    root = make_ca_cert("Root CA", rsa_root_key, lifetime=timedelta(days=3650))
    inter = make_ca_cert("Intermediate CA", ec_keys[0], root, rsa_root_key)
    d = tmp_path / "cacerts"
    d.mkdir()
    ps = PluginSet(d, root, inter, ec_keys[0])
    ps.write("root-cert.pem", pem(root))
    ps.write("ca-cert.pem", pem(inter))
    ps.write("ca-key.pem", pem(ec_keys[0]))
    ps.write("cert-chain.pem", pem(inter) + pem(root))
    return ps


OpensslVerify = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def openssl_verify(tmp_path: Path) -> OpensslVerify:
    """Run the real ``openssl verify`` (an implementation that is not ours) on a chain, at ``at``."""

    def run(chain_pem: list[str], at: datetime = NOW) -> subprocess.CompletedProcess[str]:
        d = tmp_path / "openssl"
        d.mkdir(exist_ok=True)
        (d / "leaf.pem").write_text(chain_pem[0])
        (d / "root.pem").write_text(chain_pem[-1])
        cmd = ["openssl", "verify", "-attime", str(int(at.timestamp())), "-CAfile", str(d / "root.pem")]
        if len(chain_pem) > 2:
            (d / "chain.pem").write_text("".join(chain_pem[1:-1]))
            cmd += ["-untrusted", str(d / "chain.pem")]
        cmd.append(str(d / "leaf.pem"))
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)

    return run
