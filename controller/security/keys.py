"""Ed25519 keys and secrets from files or environment; never from the repository.

A secret file readable by everyone (mode & 0o004) is refused with a one-line error,
as is a key given both nowhere and nowhere else.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SecretError(ValueError):
    """A key or secret cannot be used; message is one line naming the file or variable."""


def read_secret_file(path: str | Path, private: bool = False) -> bytes:
    """Bytes of a secret file, refusing world-readable files (and, with `private`, any file
    its group or others may read or write: API tokens and keys must be 0600)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise SecretError(f"{p}: cannot read secret: {e.strerror}") from None
    if mode & stat.S_IROTH:
        raise SecretError(f"{p}: secret file is world-readable (mode {stat.S_IMODE(mode):o}); "
                          f"run: chmod 600 {p}")
    if private and mode & 0o077:
        raise SecretError(f"{p}: secret file is open to its group or others (mode "
                          f"{stat.S_IMODE(mode):o}); run: chmod 600 {p}")
    return p.read_bytes()


def write_secret_file(path: str | Path, data: bytes) -> Path:
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return p


def generate_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_secret_file(path, pem)
    return key


def load_private_key(path: str | Path | None = None, env: str | None = None) -> Ed25519PrivateKey:
    """From a PEM file (mode 600) or an environment variable holding the PEM or raw base64."""
    if path:
        data = read_secret_file(path)
        where = str(path)
    elif env and os.environ.get(env):
        data = os.environ[env].encode()
        where = f"${env}"
    else:
        raise SecretError(f"no private key: give a key file or set ${env or 'GRIDTWIN_KEY'}")
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip()))
    except (ValueError, TypeError) as e:
        raise SecretError(f"{where}: not an Ed25519 private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretError(f"{where}: key is not Ed25519")
    return key


def load_trusted_keys(path: str | Path | None = None, env: str | None = None) -> dict[str, Ed25519PublicKey]:
    """Trusted signers {name: Ed25519 public key} from a JSON file {name: hex} or an
    environment variable holding the same JSON. The file goes through the same mode check as
    secrets: who may command the hardware is security configuration."""
    import json

    if path:
        raw, where = read_secret_file(path), str(path)
    elif env and os.environ.get(env):
        raw, where = os.environ[env].encode(), f"${env}"
    else:
        raise SecretError(f"no trusted keys: give a file or set ${env or 'GRIDTWIN_TRUSTED_KEYS'}")
    try:
        return {str(k): Ed25519PublicKey.from_public_bytes(bytes.fromhex(v)) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise SecretError(f"{where}: expected JSON {{name: hex Ed25519 public key}} ({e})") from None


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
