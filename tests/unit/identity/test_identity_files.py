"""Credentials on disk: private modes, atomic replacement, mismatches caught on read."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from zeromesh.errors import IdentityError
from zeromesh.identity import (
    CertificateAuthority,
    generate_key,
    key_matches,
    make_csr,
    pem,
    read_credential,
    write_credential,
    write_file_atomic,
)
from zeromesh.identity.files import credential_paths

URI = "spiffe://cluster.local/ns/ns1/sa/sleep"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def chain(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> list[str]:
    return ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=lambda u: None).chain_pem


def test_round_trip_with_private_modes(tmp_path: Path, workload_key: ec.EllipticCurvePrivateKey,
                                       chain: list[str]) -> None:
    d = tmp_path / "creds"
    write_credential(d, "ns1~sleep", workload_key, chain)
    key, certs = read_credential(d, "ns1~sleep")
    assert key_matches(key, certs[0])
    assert [pem(c) for c in certs] == chain
    key_path, chain_path = credential_paths(d, "ns1~sleep")
    assert (key_path.name, chain_path.name) == ("ns1~sleep-key.pem", "ns1~sleep-chain.pem")
    assert _mode(d) == 0o700 and _mode(key_path) == 0o600 and _mode(chain_path) == 0o600
    # no temporary files are left behind
    assert sorted(p.name for p in d.iterdir()) == ["ns1~sleep-chain.pem", "ns1~sleep-key.pem"]


def test_rotation_replaces_both(tmp_path: Path, ca: CertificateAuthority,
                                workload_key: ec.EllipticCurvePrivateKey, chain: list[str]) -> None:
    write_credential(tmp_path, "w", workload_key, "".join(chain))
    new_key = generate_key()
    new_chain = ca.sign_csr(make_csr(new_key, URI), caller="t", allowed=lambda u: None).chain_pem
    write_credential(tmp_path, "w", new_key, new_chain)
    key, certs = read_credential(tmp_path, "w")
    assert pem(key) == pem(new_key) and pem(certs[0]) == new_chain[0]


def test_mismatched_pair_is_rejected(tmp_path: Path, workload_key: ec.EllipticCurvePrivateKey,
                                     chain: list[str]) -> None:
    write_credential(tmp_path, "w", generate_key(), chain)
    with pytest.raises(IdentityError, match=r"w-key\.pem: key does not match the first certificate"):
        read_credential(tmp_path, "w")


def test_missing_and_garbage_files_are_named(tmp_path: Path, workload_key: ec.EllipticCurvePrivateKey,
                                             chain: list[str]) -> None:
    with pytest.raises(IdentityError, match=r"w-key\.pem: missing"):
        read_credential(tmp_path, "w")
    write_credential(tmp_path, "w", workload_key, chain)
    (tmp_path / "w-chain.pem").write_text("junk")
    with pytest.raises(IdentityError, match=r"w-chain\.pem: not a PEM certificate bundle"):
        read_credential(tmp_path, "w")
    (tmp_path / "w-key.pem").write_text("junk")
    with pytest.raises(IdentityError, match=r"w-key\.pem: not an unencrypted PEM private key"):
        read_credential(tmp_path, "w")


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain file-name stem"):
        credential_paths(tmp_path, name)


def test_write_file_atomic_mode_ignores_umask(tmp_path: Path) -> None:
    target = tmp_path / "f.pem"
    target.write_text("old")
    target.chmod(0o644)
    write_file_atomic(target, "new", 0o600)
    assert target.read_text() == "new" and _mode(target) == 0o600
    write_file_atomic(target, b"bytes", 0o640)
    assert target.read_bytes() == b"bytes" and _mode(target) == 0o640


def test_write_file_atomic_leaves_nothing_on_failure(tmp_path: Path, monkeypatch: Any) -> None:
    import os

    def boom(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_file_atomic(tmp_path / "f.pem", "x")
    assert list(tmp_path.iterdir()) == []
