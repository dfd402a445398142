"""Credentials on disk: written atomically, private (0600), read back checked.

A reader (a TLS listener reloading its cert, an operator's ``cat``) must never see a
half-written PEM, so every file is written to a temporary name in the same
directory, fsynced, and renamed over the old one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from zeromesh.errors import IdentityError
from zeromesh.identity.certs import key_matches, load_chain, load_key, pem


def write_file_atomic(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one rename; the file has ``mode`` whatever the umask."""
    payload = data.encode("ascii") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def credential_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """Where ``name``'s key and certificate chain live: ``<name>-key.pem``, ``<name>-chain.pem``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"credential name {name!r} must be a plain file-name stem")
    return directory / f"{name}-key.pem", directory / f"{name}-chain.pem"


def write_credential(directory: Path, name: str, key: PrivateKeyTypes,
                     chain_pem: Sequence[str] | str) -> None:
    """Store a key and its chain (leaf first), both 0600, creating ``directory`` 0700 if needed.

    The chain is written first and the key last; :func:`read_credential` rejects a pair
    that does not match, so a reader racing a rotation retries instead of using a wrong key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, chain_path = credential_paths(directory, name)
    chain_text = chain_pem if isinstance(chain_pem, str) else "".join(chain_pem)
    write_file_atomic(chain_path, chain_text, 0o600)
    write_file_atomic(key_path, pem(key), 0o600)


def read_credential(directory: Path, name: str) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
    """Load what :func:`write_credential` stored; IdentityError names the file if anything is off."""
    key_path, chain_path = credential_paths(directory, name)
    try:
        key_bytes, chain_bytes = key_path.read_bytes(), chain_path.read_bytes()
    except FileNotFoundError as e:
        raise IdentityError(f"{e.filename}: missing") from e
    try:
        key = load_key(key_bytes)
    except IdentityError as e:
        raise IdentityError(f"{key_path}: {e}") from e
    try:
        chain = load_chain(chain_bytes)
    except IdentityError as e:
        raise IdentityError(f"{chain_path}: {e}") from e
    if not key_matches(key, chain[0]):
        raise IdentityError(f"{key_path}: key does not match the first certificate of {chain_path.name}")
    return key, chain
