"""Local CA and server certificate for the SIP/TLS listener, created once per state directory.

Why: the softphone verifies the server by default, exactly as a real SIP trunk would verify
``sip.api.openai.com``; a stable local CA lets users point their own SIP clients at ``ca.pem``
once and keep it across runs.  Files are reused as long as they parse and stay valid for at least
a week; otherwise they are regenerated.  ECDSA P-256 (trustme's default), SANs 127.0.0.1,
localhost and ::1 — the combination measured to verify in the pjsua2 wheel (notes §2).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

CA_FILE = "ca.pem"
CERT_FILE = "sip-server.pem"
KEY_FILE = "sip-server.key"
DEFAULT_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class CertPaths:
    ca: Path
    cert: Path
    key: Path
    created: bool


def _still_valid(paths: list[Path], min_days: int = 7) -> bool:
    try:
        for p in paths:
            if not p.is_file() or p.stat().st_size == 0:
                return False
        limit = dt.datetime.now(dt.UTC) + dt.timedelta(days=min_days)
        for p in paths[:2]:
            cert = x509.load_pem_x509_certificate(p.read_bytes())
            if cert.not_valid_after_utc < limit:
                return False
    except (OSError, ValueError):
        return False
    return True


def ensure_certs(state_dir: str | os.PathLike[str], names: tuple[str, ...] = DEFAULT_NAMES) -> CertPaths:
    """Return the CA, server cert and key in ``state_dir/tls``, generating them on first use."""
    tls_dir = Path(state_dir) / "tls"
    ca_p, cert_p, key_p = tls_dir / CA_FILE, tls_dir / CERT_FILE, tls_dir / KEY_FILE
    if _still_valid([ca_p, cert_p, key_p]):
        return CertPaths(ca_p, cert_p, key_p, created=False)
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="rtsip local CA")
    server = ca.issue_cert(*names)
    # Write to temp names then rename, so a concurrent reader never sees half a file.
    for path, data in (
        (key_p, server.private_key_pem.bytes()),
        (cert_p, b"".join(blob.bytes() for blob in server.cert_chain_pems)),
        (ca_p, ca.cert_pem.bytes()),
    ):
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        if path is key_p:
            tmp.chmod(0o600)
        tmp.replace(path)
    return CertPaths(ca_p, cert_p, key_p, created=True)
