"""TLS for the controller's IEC 60870-5-104 link (IEC 62351-3 profile) and a lab PKI.

`client_context` builds the controlling station's side: TLS 1.2 or later, mutual
authentication (our certificate and key; the outstation's certificate must chain to the given
CA, be within its validity and, unless `check_hostname` is off, name the host we dial, an IP
SAN for an address), no compression and no renegotiation (Python's defaults). The private key
must be mode 0600 like every other secret (read_secret_file). Used by Iec104Link.

`make_test_pki` writes a CA and CA-signed server/client certificates (EC P-256) for loopback
labs and tests (`gridtwin controller pki DIR`); in the field the operator's PKI provides them.

c104's own TLS client is not used: c104 2.2.1's bundled mbedtls refuses to verify a server
certificate unless a hostname was set (-0x5d80) and c104 cannot set one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.security.keys import read_secret_file, write_secret_file


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: str, pub, signer, ca: bool, usage=None, days: int = 30):
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(pub).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(signer, hashes.SHA256())


def make_test_pki(folder: str | Path, ca_name: str = "gridtwin test CA") -> dict[str, Path]:
    """CA + server + client certificates and keys in `folder`; returns their paths."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    paths = {"ca_cert": d / "ca.pem"}
    paths["ca_cert"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"gridtwin {who}", ca_name, key.public_key(), ca_key, False, usage)
        paths[f"{who}_cert"] = d / f"{who}.pem"
        paths[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{who}_key"] = write_secret_file(d / f"{who}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class TlsConfigError(ValueError):
    """A TLS file cannot be used; one line naming the file."""


def client_context(cert_file: str | Path, key_file: str | Path, ca_file: str | Path,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """The controlling station's TLS context (see module docstring)."""
    read_secret_file(key_file, private=True)  # refuses a key others may read before ssl loads it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    for what, f in (("ca_file", ca_file), ("cert_file", cert_file)):
        if not Path(f).is_file():
            raise TlsConfigError(f"{f}: {what} not found")
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as e:
        raise TlsConfigError(f"{ca_file}: not a PEM CA certificate ({e.reason})") from None
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as e:
        raise TlsConfigError(f"{cert_file} / {key_file}: certificate and key do not load or match "
                             f"({e.reason})") from None
    return ctx
