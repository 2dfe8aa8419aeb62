"""All of rtsip's TLS material, in one state directory: a local CA, the SIP server cert, leaf certs.

Why one CA: the softphone verifies the SIP/TLS listener exactly as a real trunk verifies
``sip.api.openai.com``, the HTTPS interception proxy (:mod:`mock_api.proxy`) presents
certificates for ``api.openai.com`` and ``<resource>.openai.azure.com`` that apps verify, and
the mock's own HTTPS/WSS listener (``rtsip mock --tls-port``) presents the SIP server's certificate.  Users
trust ``<state>/tls/ca.pem`` once (``SSL_CERT_FILE``) and keep it across runs, so the CA's private
key is persisted too (``ca.key``, mode 0600) and reused to issue leaf certificates on demand.

Layout of ``<state>/tls``::

    ca.pem  ca.key                  the local CA (key 0600)
    sip-server.pem  sip-server.key  the SIP/TLS and HTTPS/WSS listeners (SANs 127.0.0.1, localhost, ::1)
    hosts/<host>.pem  <host>.key    leaves issued for intercepted hostnames, reused across runs

Files are reused while they parse, chain to the current CA and stay valid for at least a week;
otherwise they are regenerated.  ECDSA P-256 (trustme's default) — the combination measured to
verify in the pjsua2 wheel (docs/architecture.md, 'What the pjsua2 wheel imposes', item 5).
Generation holds an ``flock`` on ``tls/.lock`` and writes via rename, so concurrent processes
sharing a state directory never see half a file or a CA that does not match its key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

TLS_DIR = "tls"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "sip-server.pem"
KEY_FILE = "sip-server.key"
HOSTS_DIR = "hosts"
LOCK_FILE = ".lock"
DEFAULT_NAMES = ("127.0.0.1", "localhost", "::1")
MIN_VALID_DAYS = 7
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


@dataclass(frozen=True)
class CertPaths:
    ca: Path
    cert: Path
    key: Path
    created: bool
    ca_key: Path | None = None


# ---- small file helpers ---------------------------------------------------------------------------


def tls_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / TLS_DIR


def ca_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the CA certificate lives (what ``SSL_CERT_FILE`` / softphones point at)."""
    return tls_dir(state_dir) / CA_FILE


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # Temp name then rename, so a concurrent reader never sees half a file.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc >= dt.datetime.now(dt.UTC) + dt.timedelta(days=MIN_VALID_DAYS)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _nonempty(*paths: Path) -> bool:
    try:
        return all(p.is_file() and p.stat().st_size > 0 for p in paths)
    except OSError:
        return False


# ---- the CA ------------------------------------------------------------------------------------------


def _load_ca(directory: Path) -> trustme.CA | None:
    cert = _load_cert(directory / CA_FILE)
    key_p = directory / CA_KEY_FILE
    if cert is None or not _fresh(cert) or not _nonempty(key_p):
        return None
    try:
        key_pem = key_p.read_bytes()
        # the key must be the one the certificate was made for
        key_pub = load_pem_private_key(key_pem, password=None).public_key()
        if _spki(key_pub) != _spki(cert.public_key()):
            return None
        return trustme.CA.from_pem(cert.public_bytes(Encoding.PEM), key_pem)
    except (OSError, ValueError, TypeError):
        return None


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _ensure_ca_locked(directory: Path) -> tuple[trustme.CA, bool]:
    ca = _load_ca(directory)
    if ca is not None:
        return ca, False
    ca = trustme.CA(organization_name="rtsip local CA", organization_unit_name="rtsip local CA")
    _write(directory / CA_KEY_FILE, ca.private_key_pem.bytes(), private=True)
    _write(directory / CA_FILE, ca.cert_pem.bytes())
    return ca, True


def ensure_ca(state_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The CA certificate and key in ``state_dir/tls``, generated on first use: ``(ca.pem, ca.key)``."""
    directory = tls_dir(state_dir)
    with _locked(directory):
        _ensure_ca_locked(directory)
    return directory / CA_FILE, directory / CA_KEY_FILE


# ---- the SIP server certificate --------------------------------------------------------------------


def ensure_certs(state_dir: str | os.PathLike[str], names: tuple[str, ...] = DEFAULT_NAMES) -> CertPaths:
    """Return the CA, SIP server cert and key in ``state_dir/tls``, generating them on first use.

    ``created`` is true when the server certificate (and possibly the CA) was (re)generated.
    """
    directory = tls_dir(state_dir)
    ca_p, cert_p, key_p, ca_key_p = (directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE,
                                     directory / CA_KEY_FILE)
    with _locked(directory):
        ca, ca_created = _ensure_ca_locked(directory)
        server = _load_cert(cert_p)
        ca_cert = _load_cert(ca_p)
        if (not ca_created and server is not None and ca_cert is not None and _nonempty(key_p)
                and _fresh(server) and _issued_by(server, ca_cert)):
            return CertPaths(ca_p, cert_p, key_p, created=False, ca_key=ca_key_p)
        leaf = ca.issue_cert(*names)
        _write(key_p, leaf.private_key_pem.bytes(), private=True)
        _write(cert_p, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return CertPaths(ca_p, cert_p, key_p, created=True, ca_key=ca_key_p)


def https_context(state_dir: str | os.PathLike[str]) -> ssl.SSLContext:
    """Server TLS for the mock's own HTTPS/WSS listener: the SIP server's certificate (127.0.0.1, localhost,
    ::1) from the same CA, so an app that trusts ``ca.pem`` (``SSL_CERT_FILE``) trusts the listener too.

    Why a listener at all: the ``AzureOpenAI`` client always opens its socket as ``wss://``."""
    paths = ensure_certs(state_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(paths.cert), str(paths.key))
    ctx.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
    return ctx


# ---- leaves for arbitrary hostnames (HTTPS interception) -------------------------------------------------


def normalize_host(host: str) -> str:
    """Lower-case, no trailing dot, IDNA A-labels; raises ValueError for anything that is not a hostname."""
    name = host.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a hostname: {host!r}") from exc
    if not _HOSTNAME.match(name):
        raise ValueError(f"not a hostname: {host!r}")
    return name


class CertStore:
    """Issues, caches (in memory and under ``tls/hosts``) and reuses leaf certificates signed by the local CA."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = tls_dir(state_dir)
        self.ca_path, self.ca_key_path = ensure_ca(state_dir)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def leaf_files(self, host: str) -> tuple[Path, Path]:
        """``(cert chain PEM, key PEM)`` for ``host``, issued on first use and reused while valid."""
        name = normalize_host(host)
        hosts = self.dir / HOSTS_DIR
        cert_p, key_p = hosts / f"{name}.pem", hosts / f"{name}.key"
        ca_cert = _load_cert(self.ca_path)
        if self._usable(cert_p, key_p, ca_cert):
            return cert_p, key_p
        with _locked(self.dir):
            ca, _ = _ensure_ca_locked(self.dir)
            ca_cert = _load_cert(self.ca_path)
            if self._usable(cert_p, key_p, ca_cert):
                return cert_p, key_p
            hosts.mkdir(parents=True, exist_ok=True)
            leaf = ca.issue_cert(name)
            _write(key_p, leaf.private_key_pem.bytes(), private=True)
            _write(cert_p, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        return cert_p, key_p

    @staticmethod
    def _usable(cert_p: Path, key_p: Path, ca_cert: x509.Certificate | None) -> bool:
        cert = _load_cert(cert_p)
        return (cert is not None and ca_cert is not None and _nonempty(key_p) and _fresh(cert)
                and _issued_by(cert, ca_cert))

    def leaf_for(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``host`` (HTTP/1.1 only via ALPN)."""
        name = normalize_host(host)
        with self._lock:
            ctx = self._contexts.get(name)
            if ctx is not None:
                return ctx
            cert_p, key_p = self.leaf_files(name)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert_p), str(key_p))
            ctx.set_alpn_protocols(["http/1.1"])  # the relay speaks HTTP/1.1 to the mock
            self._contexts[name] = ctx
            return ctx


_STORES: dict[Path, CertStore] = {}
_STORES_LOCK = threading.Lock()


def store(state_dir: str | os.PathLike[str]) -> CertStore:
    """The (process-wide, cached) :class:`CertStore` of a state directory."""
    key = Path(state_dir).resolve()
    with _STORES_LOCK:
        found = _STORES.get(key)
        if found is None or not found.ca_path.is_file():
            found = _STORES[key] = CertStore(key)
        return found


def leaf_for(state_dir: str | os.PathLike[str], host: str) -> ssl.SSLContext:
    """Server TLS context for ``host`` signed by the state directory's CA (cached and reused)."""
    return store(state_dir).leaf_for(host)

