"""SIP digest authentication on the answering side (RFC 3261 §22, RFC 2617 MD5), sans-I/O.

pjsua2 answers challenges as a client but never issues one, so a trunk that wants credentials (the
``rtsip answer`` UAS) challenges in Python: the first INVITE is answered 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``) and the retried INVITE's ``Authorization`` / ``Proxy-Authorization`` is checked here.

Rules:

1. A challenge carries a fresh random nonce, the realm, ``algorithm=MD5`` and ``qop="auth"``.
2. A credential passes when its scheme is Digest, its username and realm are the expected ones, its nonce
   is one this challenger issued, and its ``response`` is the MD5 digest of the password for the request's
   method and the credential's ``uri`` (with ``qop=auth``: over nonce, nc, cnonce and qop too). An
   algorithm other than MD5 fails.
3. Each nonce is good for one successful INVITE; a wrong answer leaves it unused (a new challenge is sent).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*,?')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def parse_credentials(value: str) -> tuple[str, dict[str, str]]:
    """``Digest username="u", realm="r", ...`` → ("digest", {"username": "u", ...})."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        name, raw, quoted = m.group(1), m.group(2), m.group(3)
        params[name.lower()] = quoted.replace('\\"', '"') if quoted is not None else raw
    return scheme.lower(), params


def expected_response(params: dict[str, str], method: str, password: str) -> str:
    """The ``response`` a client knowing ``password`` sends for these parameters."""
    ha1 = _md5(f"{params.get('username', '')}:{params.get('realm', '')}:{password}")
    ha2 = _md5(f"{method}:{params.get('uri', '')}")
    if params.get("qop", "").lower() == "auth":
        return _md5(f"{ha1}:{params.get('nonce', '')}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
    return _md5(f"{ha1}:{params.get('nonce', '')}:{ha2}")


@dataclass
class Challenger:
    """One UAS's credentials and the nonces it has handed out."""

    username: str
    password: str
    realm: str = "rtsip"
    proxy: bool = False  # 407 Proxy-Authenticate instead of 401 WWW-Authenticate
    _nonces: set[str] = field(default_factory=set)

    @property
    def status(self) -> int:
        return 407 if self.proxy else 401

    @property
    def credentials_header(self) -> str:
        """The request header the client answers with."""
        return "Proxy-Authorization" if self.proxy else "Authorization"

    def challenge(self) -> dict[str, str]:
        """Rule 1: the header of a new challenge."""
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        return {name: f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'}

    def check(self, method: str, headers: list[tuple[str, str]]) -> str | None:
        """Rule 2: None when the request's credentials pass, else why not (``missing`` when it has none)."""
        values = [v for k, v in headers if k.lower() == self.credentials_header.lower()]
        if not values:
            return "missing"
        scheme, params = parse_credentials(values[-1])
        if scheme != "digest":
            return f"scheme {scheme!r}"
        if params.get("algorithm", "MD5").upper() != "MD5":
            return f"algorithm {params.get('algorithm')!r}"
        if params.get("realm") != self.realm:
            return "wrong realm"
        if params.get("nonce") not in self._nonces:
            return "unknown nonce"
        if params.get("username") != self.username:
            return "wrong username"
        if not hmac.compare_digest(params.get("response", "").lower(),
                                   expected_response(params, method, self.password)):
            return "wrong password"
        self._nonces.discard(params["nonce"])  # rule 3
        return None
