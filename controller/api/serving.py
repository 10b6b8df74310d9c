"""How the service exposes its API: refuse a non-loopback host without TLS (or the explicit
`allow_plaintext_remote` flag), give uvicorn the certificate and key, say in one line when no
token is configured, and check the mode of the secrets the service reads."""

from __future__ import annotations

import logging

from controller.config import ConfigError
from controller.security.keys import SecretError, read_secret_file

log = logging.getLogger("controller.api")


class ExposureError(ConfigError):
    """The API would be exposed unsafely (one line naming the setting)."""


def uvicorn_options(api, resolve) -> dict:
    """host/port (+ ssl_certfile/ssl_keyfile) for uvicorn.run from the `api:` settings."""
    opts = {"host": api.host, "port": api.port}
    if bool(api.tls_cert_file) != bool(api.tls_key_file):
        raise ExposureError("api: tls_cert_file and tls_key_file go together")
    if api.tls_cert_file:
        cert, key = resolve(api.tls_cert_file), resolve(api.tls_key_file)
        if not cert.is_file():
            raise ExposureError(f"api.tls_cert_file: {cert} not found")
        try:
            read_secret_file(key, private=True)
        except SecretError as e:
            raise ExposureError(f"api.tls_key_file: {e}") from None
        opts.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
    elif not api.is_loopback() and not api.allow_plaintext_remote:
        raise ExposureError(f"api.host: {api.host} is not loopback: give api.tls_cert_file and "
                            f"api.tls_key_file, or set api.allow_plaintext_remote: true (behind a TLS proxy)")
    return opts


def check_secret(path, where: str) -> None:
    """Refuse a secret file its group or others can read (one line)."""
    try:
        read_secret_file(path, private=True)
    except SecretError as e:
        raise ExposureError(f"{where}: {e}") from None


def say_tokens(store, log_=log) -> None:
    if len(store) == 0:
        log_.warning("no API tokens configured (api.tokens_file, GRIDTWIN_API_TOKENS): "
                     "every API request will be refused with 401")
