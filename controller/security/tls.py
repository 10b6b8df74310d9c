"""IEC 60870-5-104 over TLS (IEC 62351-3 style) with c104's TransportSecurity, and a test PKI.

`make_test_pki` writes a CA and CA-signed server/client certificates (EC P-256) for loopback
labs and tests; in the field the operator's PKI provides these files. Private keys are
written mode 600 and pass the same world-readable guard as every other secret.

What works with c104 2.2.1 (checked on loopback, see tests/test_security_tls.py): a c104
`Server` with `transport_security` completes mutually authenticated TLS 1.2/1.3 with a
standard TLS client and serves IEC 104 over it; it refuses clients without a certificate
or with one the CA did not sign. What does not: a c104 `Client` with TLS. Its bundled
mbedtls (>= 3.6.3) refuses to verify a server certificate unless a hostname was set
(MBEDTLS_ERR_SSL_CERTIFICATE_VERIFICATION_WITHOUT_HOSTNAME, -0x5d80), and c104 2.2.1 has no
way to set one (`set_hostname_verification` came later upstream); `validate=False` does not
help because lib60870 always configures VERIFY_REQUIRED.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.security.keys import read_secret_file, write_secret_file

C104_CLIENT_TLS_WORKS = False  # see module docstring; flip when c104 can set a hostname


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


def transport_security(cert: str | Path, key: str | Path, ca_cert: str | Path,
                       allowed_peer_certs: list[str | Path] | None = None):
    """A c104.TransportSecurity that validates peers against the CA (chain and time) and, when
    `allowed_peer_certs` is given, accepts only those certificates. TLS 1.2 minimum."""
    import c104

    read_secret_file(key)  # refuses a world-readable key before c104 reads it
    tls = c104.TransportSecurity(validate=True, only_known=bool(allowed_peer_certs))
    tls.set_certificate(cert=str(cert), key=str(key))
    tls.set_ca_certificate(cert=str(ca_cert))
    tls.set_version(min=c104.TlsVersion.TLS_1_2, max=c104.TlsVersion.TLS_1_3)
    for peer in allowed_peer_certs or []:
        tls.add_allowed_remote_certificate(cert=str(peer))
    return tls
